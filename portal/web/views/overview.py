"""The fleet at a glance: the Overview (charts) and the By-update view with its install action.

Both are scoped by the fleet list's own filters (`fleet_for(request, only=SCOPE)`) and count from the
per-VM summaries (patching.fleet): a fixed number of queries whatever the fleet size.
"""

from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_POST

from patching import fleet as figures
from patching import rollup, services
from patching.models import (
    OperationKind,
    OperationStatus,
    StartedBy,
    Update,
)
from patching.vocabulary import Classification, RebootBehavior
from portal.web import charts
from portal.web.forms import InstallForm
from vms import clock
from vms.models import Role, RoleAssignment, Subscription

from .common import HtmxHttpRequest, partial_for, portal_view
from .fleet import Fleet, fleet_for, fleet_operations, fleet_tiles, rollup_scope

# The filters the fleet pages are scoped by (the fleet list's own, by the same names).
SCOPE = ("subscription", "resource_group", "location", "os", "orchestration")
POLL_SECONDS = 5
INSTALL_SERIES = [
    (OperationStatus.SUCCEEDED.value, "Succeeded"),
    (OperationStatus.COMPLETED_WITH_WARNINGS.value, "Completed with warnings"),
    (OperationStatus.FAILED.value, "Failed"),
]
TREND_DAYS = (30, 90)


def scope_query(found: Fleet, **more) -> str:
    """The scope's filters (and more parameters) as a query string, for links to the other fleet pages."""
    params = {f.param: f.value for f in found.filters if f.value}
    params.update({k: v for k, v in more.items() if v not in (None, "")})
    return urlencode(params)


# --- The overview ---------------------------------------------------------------------------------


@require_GET
@portal_view
def overview(request: HtmxHttpRequest) -> HttpResponse:
    """Charts of the fleet in scope; while operations are in flight the page re-reads itself."""
    found = fleet_for(request, only=SCOPE)
    now, zone = clock.now(), timezone.get_current_timezone()
    # The fleet list's tiles (the same definitions, one query), with the overview's own per-VM figures
    # in the same pass; the installations are drawn per day below instead of the tile's totals.
    tiles = fleet_tiles(request.user, found, installs=False, guest=True)
    operations = fleet_operations(request.user, found)

    # The fleet list's own tiles (the same definitions), each row one click from its machines.
    fleet_list, updates_list = reverse("vms:list"), reverse("patching:updates")
    for row in tiles["statuses"]:
        row["url"] = f"{fleet_list}?{scope_query(found, update_status=row['key'])}"
    for row in tiles["modes"]:
        row["url"] = f"{fleet_list}?{scope_query(found, orchestration=row['key'])}"
    missing = figures.missing_by_classification(tiles)
    for row in missing:
        row["url"] = f"{updates_list}?{scope_query(found, classification=row['key'])}"
    statuses = charts.share_bars(tiles["statuses"], tiles["total"])
    modes = charts.share_bars(tiles["modes"], tiles["total"])
    classes = charts.share_bars(missing, tiles["total"])

    today = now.astimezone(zone).date()
    days = [today - timedelta(days=n) for n in range(figures.INSTALLATION_DAYS - 1, -1, -1)]
    scope = rollup_scope(request.user, found)
    per_day = figures.installations_per_day(rollup.installation_counts(operations, scope, now, zone))
    bars, bars_top = charts.stacked_bars(days, INSTALL_SERIES, per_day)
    for bar in bars:
        for segment in bar.segments:
            segment.url = history_url(found, day=bar.day, status=segment.key)
        bar.url = history_url(found, day=bar.day)

    trend_days = 90 if request.GET.get("trend") == "90" else 30
    chosen = next((f.value for f in found.filters if f.param == "subscription" and f.value), None)
    subscriptions = [chosen] if chosen else [value for value, _ in found.filters[0].choices]
    trend = figures.compliance_trend(subscriptions, today - timedelta(days=trend_days - 1), today)
    for point in trend:
        point["share"] = 100 * point["compliant"] / point["assessed"] if point["assessed"] else None
    lines, dots = charts.trend_lines([point["share"] for point in trend])
    latest = next((point for point in reversed(trend) if point["share"] is not None), None)

    hotpatch = figures.hotpatch_year(tiles, now)
    this_year = f"{reverse('patching:history')}?" + scope_query(
        found, kind=OperationKind.INSTALLATION.value, **{"from": hotpatch["since"].date().isoformat()}
    )
    hotpatch_rows = [
        {"key": "enabled", "label": "Enrolled (hotpatch on)", "count": tiles["hotpatch_enabled"],
         "url": f"{fleet_list}?{scope_query(found, hotpatch='Enabled')}"},
        {"key": "without-reboot", "label": "Installed without reboot", "count": hotpatch["without_reboot"],
         "url": this_year},
        {"key": "avoided", "label": "Reboots avoided", "count": hotpatch["reboots_avoided"], "url": this_year},
    ]  # fmt: skip
    totals = {key: sum(per_day.get((day, key), 0) for day in days) for key, _ in INSTALL_SERIES}

    context = {
        "fleet": found,
        "tiles": tiles,
        "statuses": statuses,
        "modes": modes,
        "classes": classes,
        "bars": bars,
        "bars_top": bars_top,
        "series_totals": [{"key": key, "label": label, "total": totals[key]} for key, label in INSTALL_SERIES],
        "installs_total": sum(totals.values()),
        "chart": {
            "bars_w": charts.BARS_WIDTH,
            "bars_h": charts.BARS_HEIGHT,
            "trend_w": charts.TREND_WIDTH,
            "trend_h": charts.TREND_HEIGHT,
            "trend_mid": charts.TREND_HEIGHT // 2,
        },  # fmt: skip
        "trend": trend,
        "trend_last_day": today,
        "trend_days": trend_days,
        "trend_periods": TREND_DAYS,
        "trend_lines": lines,
        "trend_dots": dots,
        "trend_latest": latest,
        "trend_scoped": any(f.value for f in found.filters if f.param != "subscription"),
        "grace_days": figures.COMPLIANCE_GRACE.days,
        "hotpatch": hotpatch,
        "hotpatch_bars": charts.share_bars(hotpatch_rows, max(tiles["total"], *(r["count"] for r in hotpatch_rows))),
        "retention_days": settings.PORTAL_HISTORY_RETENTION_DAYS,
        "in_flight": operations.in_flight().exists(),
        "poll_seconds": POLL_SECONDS,
        "scope": scope_query(found),
        "nav": "overview",
    }
    template = "patching/overview.html"
    if partial_for(request, ("overview",)):
        return render(request, template + "#overview", context)
    return render(request, template, context)


def history_url(found: Fleet, *, day=None, status=None) -> str:
    """The fleet history of the installations of one day (and status), in the same scope."""
    iso = day.isoformat() if day else None
    query = scope_query(found, kind=OperationKind.INSTALLATION.value, status=status, **{"from": iso, "to": iso})
    return f"{reverse('patching:history')}?{query}"


# --- By update ------------------------------------------------------------------------------------

UPDATE_SORTS = {
    "kb": lambda row: row.update.kb,
    "title": lambda row: row.update.title.lower(),
    "classification": lambda row: row.update.classification,
    "reboot": lambda row: row.update.reboot_behavior,
    "published": lambda row: row.update.published_at,
    "missing": lambda row: row.missing,
    "installed": lambda row: row.installed,
    "failed": lambda row: row.failed,
}
UPDATE_COLUMNS = [
    ("kb", "KB"),
    ("title", "Title"),
    ("classification", "Classification"),
    ("reboot", "Reboot behaviour"),
    ("published", "Published"),
    ("missing", "Machines missing"),
    ("installed", "Installed"),
    ("failed", "Failed"),
]


@require_GET
@portal_view
def updates(request: HtmxHttpRequest) -> HttpResponse:
    """Every update the machines in scope miss or failed, with machine counts; filter and sort."""
    found = fleet_for(request, only=SCOPE)
    rows = rollup.updates_missing_or_failed(found.vms, rollup_scope(request.user, found))
    notices = list(found.notices)

    classification = request.GET.get("classification", "").strip()
    if classification:
        known = {value.lower(): value for value in Classification.values}
        if classification.lower() in known:
            classification = known[classification.lower()]
            rows = [row for row in rows if row.update.classification == classification]
        else:
            notices.append(f"Ignored the classification filter: “{classification}” is not one of the choices.")
            classification = ""
    reboot = request.GET.get("reboot", "").strip()
    if reboot:
        if reboot in RebootBehavior.values:
            rows = [row for row in rows if row.update.reboot_behavior == reboot]
        else:
            notices.append(f"Ignored the reboot behaviour filter: “{reboot}” is not one of the choices.")
            reboot = ""
    search = request.GET.get("q", "").strip()[:64]
    if search:
        needle = search.lower().removeprefix("kb")
        rows = [row for row in rows if needle in row.update.kb or search.lower() in row.update.title.lower()]
    sort = request.GET.get("sort", "-missing")
    if sort.removeprefix("-") not in UPDATE_SORTS:
        notices.append(f"Ignored the sort order “{sort}”: sort by one of the column names.")
        sort = "-missing"
    rows.sort(key=lambda row: row.update.kb)
    rows.sort(key=UPDATE_SORTS[sort.removeprefix("-")], reverse=sort.startswith("-"))

    context = {
        "fleet": found,
        "rows": rows,
        "notices": notices,
        "classification": classification,
        "classifications": Classification.choices,
        "reboot": reboot,
        "reboot_behaviors": RebootBehavior.choices,
        "search": search,
        "sort": sort,
        "columns": [
            {
                "label": label,
                "next": f"-{key}" if sort == key else key,
                "arrow": "▲" if sort == key else "▼" if sort == f"-{key}" else "",
                "num": key in ("missing", "installed", "failed"),
            }
            for key, label in UPDATE_COLUMNS
        ],
        "scope": scope_query(found),
        "nav": "updates",
    }
    template = "patching/updates.html"
    if partial_for(request, ("updates",)):
        return render(request, template + "#updates", context)
    return render(request, template, context)


MACHINES_PAGE_SIZE = 50


def _update_or_404(pk: int) -> Update:
    return get_object_or_404(Update, pk=pk)


class MachinesPage:
    """One keyset page of an update's machines, with the names the template and tests read."""

    def __init__(self, request, rows, count: int, more_before: bool, more_after: bool):
        self.object_list, self.count = rows, count
        self.paginator = self  # page.paginator.count, as a Django Page has it
        self.has_previous, self.has_next = more_before and bool(rows), more_after
        self.has_other_pages = self.has_previous or self.has_next
        query = request.GET.copy()
        query.pop("after", None)
        query.pop("before", None)
        self.previous_url = self.next_url = None
        if self.has_previous:
            query["before"] = rows[0].pk
            self.previous_url = f"?{query.urlencode()}"
            query.pop("before")
        if self.has_next:
            query["after"] = rows[-1].pk
            self.next_url = f"?{query.urlencode()}"


def _cursor(request, name: str) -> int | None:
    try:
        return max(0, int(request.GET.get(name, "")))
    except ValueError:
        return None


def _machines_context(request, found: Fleet, update: Update, form: InstallForm) -> dict:
    machines = figures.machines_missing(found.vms, update)
    per_subscription = rollup.missing_per_subscription(machines, update, rollup_scope(request.user, found))
    rows, more_before, more_after = figures.machines_page(
        machines.select_related("resource_group__subscription", "guest"),
        after=_cursor(request, "after"),
        before=_cursor(request, "before"),
        size=MACHINES_PAGE_SIZE,
    )
    return {
        "fleet": found,
        "update": update,
        # Counted above, with the subscriptions: no second scan.
        "page": MachinesPage(request, rows, sum(per_subscription.values()), more_before, more_after),
        "form": form,
        "blocked": _not_actable(request.user, per_subscription),
        "scope": scope_query(found),
        "nav": "updates",
    }


def _not_actable(user, subscription_ids) -> list[Subscription]:
    """Those of the subscriptions on which the user may not install (Reader): one query, two if any."""
    if user.is_superuser or not subscription_ids:
        return []
    actable = set(
        RoleAssignment.objects.filter(
            user=user, subscription_id__in=list(subscription_ids), role__in=[Role.CONTRIBUTOR, Role.OWNER]
        ).values_list("subscription_id", flat=True)
    )
    refused = set(subscription_ids) - actable
    return list(Subscription.objects.filter(pk__in=refused).order_by("display_name")) if refused else []


@require_GET
@portal_view
def update_machines(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The machines in scope that miss one update (or failed it), and the form to install it on them."""
    update = _update_or_404(pk)
    found = fleet_for(request, only=SCOPE)
    form = InstallForm(initial={"classifications": [], "kbs_to_include": f"KB{update.kb}"})
    return render(request, "patching/update_machines.html", _machines_context(request, found, update, form))


@require_POST
@portal_view
def install_update(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Install updates now on every machine in scope that misses the update: one operation per VM,
    queued set-based. Refused (403) if any of them is on a subscription the user may not change; a
    machine named in `vm` that is not theirs to see, or does not miss the update, is a 404."""
    update = _update_or_404(pk)
    found = fleet_for(request, only=SCOPE)
    form = InstallForm(request.POST)
    parameters = form.install_parameters()
    if parameters is None:
        context = _machines_context(request, found, update, form)
        return render(request, "patching/update_machines.html", context, status=400)
    machines = figures.machines_missing(found.vms, update)
    chosen = request.POST.getlist("vm")
    if chosen:
        try:
            ids = {int(value) for value in chosen}
        except ValueError:
            raise Http404("No such machine.") from None
        machines = machines.filter(pk__in=ids)
    targets = list(machines.select_related("resource_group").order_by("pk"))
    if chosen and len(targets) != len(ids):
        raise Http404("One of these machines is not yours to see or does not miss this update.")
    blocked = _not_actable(request.user, figures.missing_per_subscription(machines))
    if blocked:
        names = ", ".join(s.display_name for s in blocked)
        raise PermissionDenied(f"Your role on {names} is Reader: you can't install updates there.")
    queued = services.queue_operations(
        targets, OperationKind.INSTALLATION, started_by=StartedBy.USER, parameters=parameters, user=request.user
    )
    busy = len(targets) - len(queued)
    if not targets:
        messages.info(request, f"No machine in this scope misses KB{update.kb}: nothing to install.")
    else:
        text = f"Installation of KB{update.kb} queued on {len(queued)} machine{'s' if len(queued) != 1 else ''}."
        if busy:
            text += f" {busy} already had an installation running and were left to it."
        messages.success(request, text)
    query = scope_query(found, kind=OperationKind.INSTALLATION.value, kb=update.kb, started_by=StartedBy.USER.value)
    return redirect(f"{reverse('patching:history')}?{query}")
