"""What every portal page shares: sign-in and the viewer's time zone, htmx partials, the VM a page is about."""

from collections.abc import Callable
from functools import wraps
from urllib.parse import unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django_htmx.middleware import HtmxDetails

from patching import services
from patching.models import (
    Operation,
    RolloutHalt,
)
from vms import access, images, regions
from vms.models import (
    VirtualMachine,
)


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


# --- Shared by every portal page ------------------------------------------------------------------

TIME_ZONE_COOKIE = "portal_tz"  # set by static/portal/portal.js from the browser's own zone


def _display_zone(request: HttpRequest) -> ZoneInfo | None:
    """The zone the viewer chose, else their browser's (portal.js), else None (UTC, the server's)."""
    # The cookie is URL-encoded by portal.js ("Europe%2FStockholm").
    for name in (request.session.get("time_zone"), unquote(request.COOKIES.get(TIME_ZONE_COOKIE, ""))):
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return None


def portal_view(view: Callable) -> Callable:
    """Sign-in required; times render in the viewer's time zone."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        zone = _display_zone(request)
        if zone is not None:
            timezone.activate(zone)
        try:
            return view(request, *args, **kwargs)
        finally:
            timezone.deactivate()

    return login_required(wrapper)


def partial_for(request: HtmxHttpRequest, names: tuple[str, ...]) -> str | None:
    """The partial an htmx request asks for (its HX-Target), or None for a full page.

    Boosted requests and history restores want the whole page (NetBox's rule).
    """
    htmx = request.htmx
    if not htmx or htmx.boosted or htmx.history_restore_request:
        return None
    return htmx.target if htmx.target in names else None


VM_RELATED = ("resource_group__subscription", "guest", "guest__baseline")


def get_vm(request: HttpRequest, pk: int, *, act: bool = False) -> tuple[VirtualMachine, bool]:
    """The VM if the user may see it (else 404) and whether they may act on it; act=True demands it (403)."""
    vm = get_object_or_404(access.vms_for(request.user).select_related(*VM_RELATED), pk=pk)
    can_act = access.can_act(request.user, vm.resource_group.subscription_id)
    if act and not can_act:
        raise PermissionDenied("Your role on this subscription is Reader: you can look but not change anything.")
    return vm, can_act


def active_halts(product: str | None = None):
    """Halted rollouts (not resumed yet), for the banner."""
    halts = RolloutHalt.objects.filter(resumed_at__isnull=True)
    return list(halts.filter(product=product) if product else halts)


# --- One VM's pages ----------------------------------------------------------------------------------


def in_flight_operations(vm: VirtualMachine) -> dict[str, Operation]:
    """The assessment and installation running on the VM now, by kind (one query)."""
    return {op.kind: op for op in vm.operations.in_flight().select_related("user")}


BLADE_TITLES = {
    "overview": "Overview",
    "guest-updates": "Guest + host updates",
    "hotpatch": "Hotpatch",
    "delete": "Delete",
}


def vm_context(request: HttpRequest, vm: VirtualMachine, can_act: bool, section: str) -> dict:
    return {
        "blade_title": BLADE_TITLES[section],
        "vm": vm,
        "guest": services.guest_state(vm),
        "can_act": can_act,
        "section": section,
        "subscription": vm.resource_group.subscription,
        "product": images.PRODUCTS.get(vm.product),
        "region_name": regions.REGIONS.get(vm.location, vm.location),
        "halts": active_halts(vm.product),
    }
