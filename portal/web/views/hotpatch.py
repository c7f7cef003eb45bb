"""The Hotpatch blade (status, Assess now, Install updates now, compliance, history), live operation
status and the hotpatch calendar.

One Operation row is what every view here reads; `services.start_operation` is the only way one
starts. The blade's fragments are partials of its own template: htmx names the one it wants in
HX-Target, which is also the element's id and the partial's name.
"""

from datetime import datetime, timedelta

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling, trigger_client_event

from patching import calendar, services
from patching.models import (
    IN_FLIGHT,
    Classification,
    HotpatchStatus,
    Operation,
    OperationKind,
    OperationStatus,
    PatchResult,
)
from portal.web.forms import InstallForm
from vms import access, clock, images
from vms.models import VirtualMachine
from vms.vocabulary import PatchMode

from .common import HtmxHttpRequest, get_vm, in_flight_operations, partial_for, portal_view, vm_context
from .maintenance import vm_maintenance_context

BLADE = "patching/hotpatch.html"
INSTALL_PAGE = "patching/install.html"
POLL_EVERY = "1s"
FINISHED_EVENT = "operation-finished"  # the compliance, history and summary panels re-fetch on it
STARTED_EVENT = "operation-started"  # the history panel re-fetches, to list the new operation

HISTORY_RANGES = {
    "30d": ("Last 30 days", timedelta(days=30)),
    "15d": ("Last 15 days", timedelta(days=15)),
    "7d": ("Last 7 days", timedelta(days=7)),
    "24h": ("Last 24 hours", timedelta(hours=24)),
}
HISTORY_STATUSES = [
    ("InProgress", "In progress"),
    (OperationStatus.SUCCEEDED, "Succeeded"),
    (OperationStatus.COMPLETED_WITH_WARNINGS, "Completed with warnings"),
    (OperationStatus.FAILED, "Failed"),
]
HISTORY_PAGE_SIZE = 50


# --- The header cards -----------------------------------------------------------------------------


def next_patch_tuesday(now: datetime):
    """The next monthly release day (a rebooting cumulative update for VMs outside hotpatch)."""
    day = calendar.patch_tuesday(now.year, now.month)
    if calendar.release_moment(day) <= now:
        year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
        day = calendar.patch_tuesday(year, month)
    return day


def next_reboot(vm: VirtualMachine, guest, now: datetime) -> dict:
    """When Azure-orchestrated patching is next expected to reboot the VM, and why then."""
    if guest and guest.reboot_pending:
        return {"date": None, "text": "Now: a reboot is pending to finish installing updates"}
    if vm.patch_mode != "AutomaticByPlatform":
        return {"date": None, "text": f"Not planned by Azure (patch orchestration: {PatchMode(vm.patch_mode).label})"}
    enrolled = vm.enable_hotpatching and vm.hotpatch_capable
    if enrolled and guest and guest.hotpatch_status == HotpatchStatus.ACTION_REQUIRED:
        return {"date": None, "text": "At its next off-peak window, when the missing baseline installs"}
    if enrolled:
        return {"date": calendar.next_baseline_date(vm.product, now), "text": "With the next baseline"}
    return {"date": next_patch_tuesday(now), "text": "With the next monthly cumulative update"}


def summary_context(vm: VirtualMachine) -> dict:
    now = clock.now()
    guest = services.guest_state(vm)
    product = images.PRODUCTS.get(vm.product)
    return {
        "next_baseline": calendar.next_baseline_date(vm.product, now) if product and product.has_hotpatch else None,
        "next_reboot": next_reboot(vm, guest, now),
        "enrolled": vm.enable_hotpatching and vm.hotpatch_capable,
        **vm_maintenance_context(vm),
    }


# --- Tabs: Update compliance and Update history ---------------------------------------------------


def compliance_context(request: HtmxHttpRequest, vm: VirtualMachine, notices: list[str]) -> dict:
    """The last assessment's available updates that are still not installed, grouped by classification."""
    guest = services.guest_state(vm)
    results = []
    if guest and guest.last_assessment_id:
        results = list(
            PatchResult.objects.still_available(guest)
            .select_related("update")
            .order_by("update__classification", "-update__published_at", "update__kb")
        )
    counts: dict[str, int] = {}
    for result in results:
        counts[result.update.classification] = counts.get(result.update.classification, 0) + 1
    chosen = request.GET.get("classification", "")
    known = {c.lower(): c for c in Classification.values}
    if chosen and chosen.lower() not in known:
        notices.append(f"Ignored the classification filter “{chosen}”: not a classification.")
        chosen = ""
    chosen = known.get(chosen.lower(), "")
    shown = [r for r in results if not chosen or r.update.classification == chosen]
    # Critical and Security first (what automatic patching installs), then the rest.
    order = {c: i for i, c in enumerate(Classification.values)}
    groups: dict[str, list] = {}
    for result in sorted(shown, key=lambda r: order[r.update.classification]):
        groups.setdefault(result.update.classification, []).append(result)
    latest = vm.operations.filter(kind=OperationKind.ASSESSMENT).finished().select_related("user").first()
    return {
        "compliance_groups": [
            {"classification": c, "label": Classification(c).label, "results": rows} for c, rows in groups.items()
        ],
        "classification_counts": [
            {"value": c, "label": Classification(c).label, "count": counts[c]}
            for c in sorted(counts, key=lambda c: order[c])
        ],
        "classification": chosen,
        "available_total": len(results),
        "latest_assessment": latest,
    }


def history_context(request: HtmxHttpRequest, vm: VirtualMachine, notices: list[str]) -> dict:
    range_key = request.GET.get("range", "30d")
    if range_key not in HISTORY_RANGES:
        notices.append(f"Ignored the time range “{range_key}”: showing the last 30 days.")
        range_key = "30d"
    status = request.GET.get("status", "")
    if status and status not in dict(HISTORY_STATUSES):
        notices.append(f"Ignored the status filter “{status}”: not a status.")
        status = ""
    kind = request.GET.get("operation_kind", "")
    if kind and kind not in OperationKind.values:
        notices.append(f"Ignored the operation filter “{kind}”.")
        kind = ""
    operations = vm.operations.since(clock.now() - HISTORY_RANGES[range_key][1]).select_related(
        "user", "maintenance_result__run__configuration"
    )
    if status == "InProgress":
        operations = operations.filter(status__in=IN_FLIGHT)
    elif status:
        operations = operations.filter(status=status)
    if kind:
        operations = operations.filter(kind=kind)
    page = Paginator(operations.order_by("-created_at", "-pk"), HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))

    opened = None
    opened_results = []
    raw = request.GET.get("operation", "")
    if raw:
        opened = (
            vm.operations.select_related("user", "maintenance_result__run__configuration")
            .filter(pk=int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 19 else None)
            .first()
        )
        if opened is None:
            notices.append("That operation is not in this VM's history.")
        else:
            opened_results = list(opened.results.select_related("update").order_by("state", "update__kb"))
    return {
        "history_page": page,
        "range": range_key,
        "ranges": [(key, label) for key, (label, _) in HISTORY_RANGES.items()],
        "status": status,
        "statuses": HISTORY_STATUSES,
        "operation_kind": kind,
        "opened": opened,
        "opened_results": opened_results,
    }


def tab_context(request: HtmxHttpRequest, vm: VirtualMachine) -> dict:
    tab = request.GET.get("tab", "compliance")
    notices: list[str] = []
    if tab not in ("compliance", "history"):
        notices.append(f"Ignored the tab “{tab}”.")
        tab = "compliance"
    context = {"tab": tab, "tab_notices": notices, "panel_url": request.get_full_path()}
    if tab == "compliance":
        context.update(compliance_context(request, vm, notices))
    else:
        context.update(history_context(request, vm, notices))
    return context


# --- The blade ------------------------------------------------------------------------------------


@require_GET
@portal_view
def hotpatch(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """VM › Hotpatch: status cards, Assess now, Install updates now, live status, compliance and history."""
    vm, can_act = get_vm(request, pk)
    wanted = partial_for(request, ("summary", "tab-panel"))
    if wanted == "summary":
        return render(
            request, f"{BLADE}#summary", {**vm_context(request, vm, can_act, "hotpatch"), **summary_context(vm)}
        )
    if wanted == "tab-panel":
        return render(request, f"{BLADE}#tab-panel", {"vm": vm, "can_act": can_act, **tab_context(request, vm)})
    running = in_flight_operations(vm)
    context = {
        **vm_context(request, vm, can_act, "hotpatch"),
        **summary_context(vm),
        **tab_context(request, vm),
        "assessment": running.get(OperationKind.ASSESSMENT),
        "installation": running.get(OperationKind.INSTALLATION),
    }
    return render(request, BLADE, context)


def status_context(operation: Operation | None, kind: str, **extra) -> dict:
    return {"operation": operation, "kind": kind, "poll_every": POLL_EVERY, **extra}


def start_or_404(vm: VirtualMachine, kind: str, **kwargs) -> tuple[Operation, bool]:
    """services.start_operation; a VM deleted since the page looked it up is a 404, as it would be now."""
    try:
        return services.start_operation(vm, kind, **kwargs)
    except VirtualMachine.DoesNotExist:
        raise Http404(f"The virtual machine '{vm.name}' was deleted.") from None


@require_POST
@portal_view
def assess(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Assess now: queue an assessment, or join the one in flight."""
    vm, _ = get_vm(request, pk, act=True)
    operation, created = start_or_404(vm, OperationKind.ASSESSMENT, user=request.user)
    if request.htmx:
        response = render(
            request, f"{BLADE}#operation-status", status_context(operation, operation.kind, joined=not created)
        )
        return trigger_client_event(response, STARTED_EVENT)
    if created:
        messages.info(request, f"Assessment of {vm.name} queued.")
    else:
        messages.info(request, f"An assessment of {vm.name} is already running; here is its progress.")
    return redirect("patching:hotpatch", vm.pk)


@require_http_methods(["GET", "POST"])
@portal_view
def install(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Install updates now: a dialog over the blade with htmx, a page of its own without JavaScript."""
    vm, can_act = get_vm(request, pk, act=True)
    form = InstallForm(request.POST or None)
    if request.method == "POST":
        parameters = form.install_parameters()
        if parameters is not None:
            operation, created = start_or_404(vm, OperationKind.INSTALLATION, user=request.user, parameters=parameters)
            if request.htmx:
                # Close the dialog and show the operation's live status in its slot on the blade.
                response = render(
                    request,
                    f"{INSTALL_PAGE}#install-started",
                    status_context(operation, operation.kind, joined=not created, oob=True),
                )
                return trigger_client_event(response, STARTED_EVENT)
            if created:
                messages.info(request, f"Installation on {vm.name} queued.")
            else:
                messages.warning(request, f"An installation is already running on {vm.name}; nothing new started.")
            return redirect(reverse("patching:hotpatch", args=[vm.pk]) + "?tab=history")
    guest = services.guest_state(vm)
    available = []
    if guest and guest.last_assessment_id:
        available = list(
            PatchResult.objects.still_available(guest).select_related("update").order_by("-update__published_at")
        )
    context = {**vm_context(request, vm, can_act, "hotpatch"), "form": form, "available": available}
    if request.htmx and not request.htmx.boosted:
        return render(request, f"{INSTALL_PAGE}#install-pane", {**context, "as_dialog": True})
    return render(request, INSTALL_PAGE, context)


@require_GET
@portal_view
def operation_status(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """One operation's live status; once finished: 286 (stop polling) and the event that refreshes the panels."""
    operation = get_object_or_404(
        Operation.objects.select_related("user").filter(subscription__in=access.subscriptions_for(request.user)),
        pk=pk,
    )
    if not operation.is_finished:
        return render(request, f"{BLADE}#operation-status", status_context(operation, operation.kind))
    follow_up = None
    if operation.kind == OperationKind.INSTALLATION and operation.vm_id:
        # The agent re-assesses after installing: show that one live too, in the assessment slot.
        follow_up = (
            Operation.objects.in_flight()
            .filter(vm_id=operation.vm_id, kind=OperationKind.ASSESSMENT)
            .select_related("user")
            .first()
        )
    response = render(
        request, f"{BLADE}#operation-finished", status_context(operation, operation.kind, follow_up=follow_up)
    )
    response.status_code = HttpResponseStopPolling.status_code
    trigger_client_event(response, FINISHED_EVENT, after="swap")
    return response


# --- The hotpatch calendar ------------------------------------------------------------------------

DEFAULT_CALENDAR_PRODUCT = "ws2022-azure"


@require_GET
@portal_view
def hotpatch_calendar(request: HtmxHttpRequest) -> HttpResponse:
    """A year of Patch Tuesdays per product: baseline, hotpatch or unplanned baseline (the seed's schedule)."""
    notices = []
    now = clock.now()
    product_code = request.GET.get("product", DEFAULT_CALENDAR_PRODUCT)
    if product_code not in images.PRODUCTS:
        notices.append(
            f"Ignored the product “{product_code}”: showing {images.PRODUCTS[DEFAULT_CALENDAR_PRODUCT].name}."
        )
        product_code = DEFAULT_CALENDAR_PRODUCT
    raw_year = request.GET.get("year", "")
    year = now.year
    if raw_year:
        if raw_year.isascii() and raw_year.isdigit() and len(raw_year) == 4 and 2000 <= int(raw_year) <= 2100:
            year = int(raw_year)
        else:
            notices.append(f"Ignored the year “{raw_year}”: showing {year}.")
    months = calendar.month_kinds(product_code, year)
    local_today = timezone.localdate()
    product = images.PRODUCTS[product_code]
    context = {
        "product": product,
        "products": list(images.PRODUCTS.values()),
        "year": year,
        "months": months,
        "current_month": (local_today.year, local_today.month),
        "notices": notices,
        "reboot_months": sum(1 for m in months if m.reboots),
        "hotpatch_months": sum(1 for m in months if m.kind == calendar.MonthKind.HOTPATCH),
        "unplanned_months": sum(1 for m in months if m.kind == calendar.MonthKind.UNPLANNED_BASELINE),
        "forecast_months": sum(1 for m in months if m.source == "forecast"),
        "nav": "calendar",
    }
    return render(request, "patching/calendar.html", context)
