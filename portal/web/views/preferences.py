"""Portal preferences: the time zone times are shown in."""

from urllib.parse import unquote

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from portal.web.forms import TimeZoneForm

from .common import TIME_ZONE_COOKIE, portal_view


@require_http_methods(["GET", "POST"])
@portal_view
def preferences(request: HttpRequest) -> HttpResponse:
    """Portal settings: the time zone times are shown in (default: the browser's, else UTC)."""
    if request.method == "POST":
        form = TimeZoneForm(request.POST)
        if form.is_valid():
            chosen = form.cleaned_data["time_zone"]
            if chosen:
                request.session["time_zone"] = chosen
            else:
                request.session.pop("time_zone", None)
            messages.success(request, f"Times are now shown in {chosen or 'your browser’s time zone'}.")
            return redirect("vms:preferences")
    else:
        form = TimeZoneForm(initial={"time_zone": request.session.get("time_zone", "")})
    browser = unquote(request.COOKIES.get(TIME_ZONE_COOKIE, ""))
    return render(request, "vms/preferences.html", {"form": form, "browser_zone": browser, "nav": ""})
