"""Request-level safety shared by the pages and the API: the caller's address, query parameters the
database could choke on, Secure cookies on https, and what a locked-out sign-in sees (django-axes).

Settings wire these in by dotted path (MIDDLEWARE, AXES_CLIENT_IP_CALLABLE, AXES_LOCKOUT_CALLABLE);
portal.arm imports `client_address` from here, so this module imports nothing of portal.arm or
portal.web.
"""

import ipaddress
import re

from django.conf import settings
from django.contrib.messages.storage.cookie import CookieStorage
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render

# C0 controls and DEL. NUL is the one PostgreSQL refuses outright (a 500 from deep in a query); the
# others have no business in a search, a filter, a sort or a page number either.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f]")


def client_address(request: HttpRequest) -> str:
    """The caller's address for rate limiting. Behind our own TLS proxy every request comes from the
    proxy, so there the nearest hop the proxy recorded in X-Forwarded-For is the caller."""
    if settings.BEHIND_TLS_PROXY:
        forwarded = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
        if forwarded:
            return forwarded[-1][:64]
    return request.META.get("REMOTE_ADDR", "") or "unknown"


def axes_client_ip(request: HttpRequest) -> str | None:
    """The same address for django-axes, which stores it in an IP address column: None when there is
    none that parses (a request made by the test client's force_login, a proxy sending garbage)."""
    address = client_address(request)
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


class RefuseControlCharactersMiddleware:
    """400 for any query parameter (name or value) with a control character, before a view sees it.

    Checked once here rather than in every view, so no GET parameter anywhere can reach a query, and a
    streamed export is refused before it starts instead of dying half-way. Under /arm/ and /adfs/ the
    ArmMiddleware (outside this one) turns the 400 into their JSON error shapes.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        for name, values in request.GET.lists():
            if CONTROL_CHARACTERS.search(name) or any(CONTROL_CHARACTERS.search(v) for v in values):
                return HttpResponseBadRequest(
                    "Bad request: a query parameter contains a control character (such as NUL). "
                    "Remove it from the address and try again.",
                    content_type="text/plain; charset=utf-8",
                )
        return self.get_response(request)


class SecureCookiesOverHttpsMiddleware:
    """Marks the session, CSRF and messages cookies `Secure` on responses to https requests.

    SESSION_COOKIE_SECURE would mark them on every response, but `make demo` serves the same app over
    http (the browser) and https (the Azure CLI); a Secure cookie set over http is dropped by browsers.
    Placed outside SessionMiddleware, CsrfViewMiddleware and MessageMiddleware, so it sees their cookies.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.is_secure():
            names = (settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME, CookieStorage.cookie_name)
            for name in names:
                if name in response.cookies:
                    response.cookies[name]["secure"] = True
        return response


def lockout_response(request: HttpRequest, original_response, credentials) -> HttpResponse:
    """What django-axes answers a locked-out sign-in: the sign-in page again, saying why (429)."""
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60) if settings.AXES_COOLOFF_TIME else 0
    context = {"cooloff_minutes": minutes, "next": request.POST.get("next", "")}
    return render(request, "registration/locked_out.html", context, status=429)
