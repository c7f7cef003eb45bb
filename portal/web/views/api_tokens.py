"""The API-token page: a user lists, creates and revokes their personal tokens for the ARM API.

A new token's secret is shown once, in the response to the POST that created it (never stored,
never in a URL, not cached); afterwards only its first characters identify it.
"""

from datetime import timedelta

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from vms.models import ApiToken

EXPIRY_CHOICES = [("30", "30 days"), ("90", "90 days"), ("365", "1 year"), ("", "Never")]


class ApiTokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the token is for, e.g. 'CI pipeline'.")
    expires_in = forms.ChoiceField(label="Expires", choices=EXPIRY_CHOICES, initial="90", required=False)

    def expires_at(self):
        days = self.cleaned_data.get("expires_in")
        return timezone.now() + timedelta(days=int(days)) if days else None


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def api_tokens(request: HttpRequest) -> HttpResponse:
    secret = None
    if request.method == "POST":
        form = ApiTokenForm(request.POST)
        if form.is_valid():
            token, secret = ApiToken.issue(request.user, form.cleaned_data["name"], expires_at=form.expires_at())
            form = ApiTokenForm()
    else:
        form = ApiTokenForm()
    context = {
        "form": form,
        "secret": secret,
        "tokens": request.user.api_tokens.all(),
        "arm_base_url": request.build_absolute_uri(reverse("arm", kwargs={"path": ""})),
        "openapi_url": request.build_absolute_uri(reverse("arm-openapi")),
    }
    return render(request, "vms/api_tokens.html", context)


@require_POST
@login_required
def revoke_api_token(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)  # another user's token: 404
    token.revoke()
    messages.success(request, f"The token '{token.name}' is revoked: requests with it are refused from now on.")
    return redirect("api-tokens")
