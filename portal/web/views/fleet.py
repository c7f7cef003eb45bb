"""The fleet: the Virtual machines list with its tiles, filters and sorting, and its CSV export."""

import csv
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from django.core.paginator import Paginator
from django.db.models import F, Q, QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET
from django_htmx.http import push_url

from patching import fleet as figures
from patching import rollup
from patching.models import (
    HotpatchStatus,
    Operation,
)
from vms import access, clock, images, regions, vocabulary
from vms.models import (
    ResourceGroup,
    Role,
    RoleAssignment,
    VirtualMachine,
)
from vms.vocabulary import PatchMode

from .common import HtmxHttpRequest, active_halts, partial_for, portal_view

# --- The fleet ------------------------------------------------------------------------------------

# sort parameter -> the column it orders by; "-name" sorts descending.
SORTS = {
    "name": "name",
    "resource_group": "resource_group__name",
    "location": "location",
    "image": "image_sku",
    "power_state": "power_state",
    "orchestration": "patch_mode",
    "hotpatch": "guest__hotpatch_status",
    "critical": "guest__critical_security_count",
    "other": "guest__other_count",
    "reboot": "guest__reboot_pending",
    "assessed": "guest__assessed_at",
}
COLUMNS = [
    ("name", "Name"),
    ("resource_group", "Resource group"),
    ("location", "Location"),
    ("image", "Image"),
    ("power_state", "Status"),
    ("orchestration", "Patch orchestration"),
    ("hotpatch", "Hotpatch status"),
    ("critical", "Critical + security"),
    ("other", "Other updates"),
    ("reboot", "Reboot pending"),
    ("assessed", "Last assessed"),
]
PAGE_SIZE = 50


@dataclass
class FleetFilter:
    param: str
    label: str
    choices: list[tuple[str, str]]
    lookup: Callable[[str], Q]
    value: str = ""


@dataclass
class Fleet:
    """The filtered fleet of one request, with what the page says about its filters."""

    vms: "QuerySet[VirtualMachine]"  # noqa: F821
    filters: list[FleetFilter]
    search: str
    sort: str
    notices: list[str]

    @property
    def active(self) -> list[FleetFilter]:
        return [f for f in self.filters if f.value]


def fleet_for(request: HttpRequest, only: tuple[str, ...] | None = None) -> Fleet:
    """Apply the URL's filters to the user's VMs; unknown values are dropped, with a notice each.

    `only` names the filters a page offers (the fleet pages' scope); the others, the name search and
    the sort are then not read."""
    vms = access.vms_for(request.user)
    subscriptions = list(access.subscriptions_for(request.user).values_list("pk", "display_name"))
    # Distinct in the database: one row per name or region, not one per VM.
    groups = sorted(
        set(
            ResourceGroup.objects.filter(subscription__in=[pk for pk, _ in subscriptions])
            .order_by()
            .values_list("name", flat=True)
            .distinct()
        ),
        key=str.lower,
    )
    locations = sorted(vms.order_by().values_list("location", flat=True).distinct())
    filters = [
        FleetFilter(
            "subscription",
            "Subscription",
            [(str(pk), name) for pk, name in subscriptions],
            lambda v: Q(resource_group__subscription_id=v),
        ),
        FleetFilter(
            "resource_group", "Resource group", [(g, g) for g in groups], lambda v: Q(resource_group__name__iexact=v)
        ),
        FleetFilter(
            "location", "Location", [(r, regions.REGIONS.get(r, r)) for r in locations], lambda v: Q(location=v)
        ),
        FleetFilter("os", "Operating system", images.PRODUCT_CHOICES, lambda v: Q(product=v)),
        FleetFilter(
            "orchestration",
            "Patch orchestration",
            PatchMode.choices,
            lambda v: Q(patch_mode=v),
        ),
        FleetFilter(
            "hotpatch",
            "Hotpatch status",
            HotpatchStatus.choices,
            lambda v: Q(guest__hotpatch_status=v),
        ),
        FleetFilter(
            "update_status",
            "Update status",
            [(key, label) for key, (label, _) in figures.UPDATE_STATUS.items()],
            lambda v: figures.UPDATE_STATUS[v][1],
        ),
    ]
    if only is not None:
        filters = [f for f in filters if f.param in only]
    notices = []
    for f in filters:
        raw = request.GET.get(f.param, "").strip()
        if not raw:
            continue
        # Values match case-insensitively ("WestEurope", "rg-WEB-prod"); the canonical one is kept.
        known = {value.lower(): value for value, _ in f.choices}
        if f.param == "location":
            raw = regions.normalize_region(raw) or raw
        value = known.get(raw.lower())
        if value is None:
            notices.append(f"Ignored the {f.label.lower()} filter: “{raw}” is not one of the choices.")
            continue
        f.value = value
        vms = vms.filter(f.lookup(value))

    search = request.GET.get("q", "").strip()[:64] if only is None else ""
    if search:
        vms = vms.filter(name__icontains=search)

    sort = request.GET.get("sort", "name") if only is None else "name"
    if sort.removeprefix("-") not in SORTS:
        notices.append(f"Ignored the sort order “{sort}”: sort by one of the column names.")
        sort = "name"
    column = F(SORTS[sort.removeprefix("-")])
    order = column.desc(nulls_last=True) if sort.startswith("-") else column.asc(nulls_first=True)
    vms = vms.order_by(order, "name", "pk")
    return Fleet(vms=vms, filters=filters, search=search, sort=sort, notices=notices)


def fleet_operations(user, found: Fleet) -> QuerySet[Operation]:
    """The operations of the fleet's machines: of the VMs the user can see, within the filters.

    An operation carries its VM's subscription, so visibility and a subscription filter are that
    column (no pass over the VMs); only the VMs' own filters join them. Operations of deleted VMs
    are no machine's any more and are left out.
    """
    operations = Operation.objects.filter(vm__isnull=False)
    if not user.is_superuser:
        operations = operations.filter(subscription__in=access.subscriptions_for(user).values("pk"))
    active = {f.param: f.value for f in found.filters if f.value}
    if "subscription" in active:
        operations = operations.filter(subscription_id=active.pop("subscription"))
    if active or found.search:
        operations = operations.filter(vm__in=found.vms.order_by().values("pk"))
    return operations


# Fleet filter parameter -> the rollup scope's name for it.
SCOPE_NAMES = {
    "subscription": "subscription",
    "resource_group": "resource_group",
    "location": "location",
    "os": "product",
    "orchestration": "patch_mode",
    "hotpatch": "hotpatch",
    "update_status": "update_status",
}


def rollup_scope(user, found: Fleet) -> rollup.Scope | None:
    """The fleet's filters and the user's visibility as a rollup scope; None for a name search (the
    rollups do not key names: the figures are then aggregated directly)."""
    if found.search:
        return None
    visible = None
    if not user.is_superuser:
        choices = next(f.choices for f in found.filters if f.param == "subscription")
        visible = tuple(value for value, _ in choices)
    return rollup.Scope(visible=visible, **{SCOPE_NAMES[f.param]: f.value for f in found.filters if f.value})


def fleet_tiles(user, found: Fleet, *, installs: bool = True, guest: bool = False) -> dict:
    """The summary tiles: one query from the rollups (two with the 30-day installations tile), whatever
    the fleet size. With `guest`, the overview's per-VM figures come in the same query (guest_aggregates'
    names); without `installs` there is no installations tile and its query."""
    now, scope = clock.now(), rollup_scope(user, found)
    counts = rollup.fleet_counts(found.vms, scope, now, guest=guest)
    tile = None
    if installs:
        zone = timezone.get_current_timezone()
        recent = rollup.installation_counts(fleet_operations(user, found), scope, now, zone)
        tile = figures.installations_tile(recent)
    total = counts["total"] or 1
    statuses, offset = [], 0.0
    for key, (label, _) in figures.UPDATE_STATUS.items():
        share = 100 * counts[f"status_{key}"] / total
        statuses.append(
            {"key": key, "label": label, "count": counts[f"status_{key}"], "share": share, "offset": offset}
        )
        offset += share
    modes = [{"key": mode, "label": mode.label, "count": counts[f"mode_{mode}"]} for mode in PatchMode]
    return {"total": counts["total"], "statuses": statuses, "modes": modes, "installs": tile, **counts}


def can_create_anywhere(user) -> bool:
    if user.is_superuser:
        return True
    return RoleAssignment.objects.filter(user=user, role__in=[Role.CONTRIBUTOR, Role.OWNER]).exists()


@require_GET
@portal_view
def fleet(request: HtmxHttpRequest) -> HttpResponse:
    """Virtual machines: filters in the URL, summary tiles, a sortable, paginated table."""
    # The filter form sends every field; the URL people share and go back to keeps only the chosen ones.
    chosen = request.GET.copy()
    for key in [k for k, v in request.GET.items() if not v.strip()]:
        del chosen[key]
    clean_url = f"{request.path}?{chosen.urlencode()}" if chosen else request.path
    if len(chosen) != len(request.GET) and not request.htmx:
        return redirect(clean_url)
    found = fleet_for(request)
    page = Paginator(found.vms.select_related("resource_group__subscription", "guest"), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    context = {
        "fleet": found,
        "page": page,
        # 1 2 … 49 50 51 … 1999 2000: never a link per page of a 100,000-VM fleet.
        "page_range": page.paginator.get_elided_page_range(page.number, on_each_side=2, on_ends=1),
        "tiles": fleet_tiles(request.user, found),
        "columns": [
            {
                "label": label,
                "next": f"-{key}" if found.sort == key else key,
                "arrow": "▲" if found.sort == key else "▼" if found.sort == f"-{key}" else "",
                "num": key in ("critical", "other"),
            }
            for key, label in COLUMNS
        ],
        "halts": active_halts(),
        "can_create": can_create_anywhere(request.user),
        "export_query": chosen.urlencode(),
        "nav": "vms",
    }
    template = "vms/fleet.html"
    if partial_for(request, ("fleet",)):
        return push_url(render(request, template + "#fleet", context), clean_url)
    return render(request, template, context)


class _Echo:
    """csv.writer writes into this and gets the line back, so the response can stream it."""

    def write(self, value: str) -> str:
        return value


CSV_HEADER = [
    "Name",
    "Subscription",
    "Resource group",
    "Location",
    "Image",
    "Operating system",
    "Power state",
    "Patch orchestration",
    "Hotpatch enabled",
    "Hotpatch status",
    "Build",
    "Critical and security updates",
    "Other updates",
    "Reboot pending",
    "Last assessed (UTC)",
    "Resource ID",
]


@require_GET
@portal_view
def fleet_export(request: HttpRequest) -> StreamingHttpResponse:
    """The filtered fleet as CSV, streamed in chunks: flat memory for any fleet size."""
    vms = fleet_for(request).vms.values_list(
        "name",
        "resource_group__subscription__display_name",
        "resource_group__subscription_id",
        "resource_group__name",
        "location",
        "image_sku",
        "product",
        "power_state",
        "patch_mode",
        "enable_hotpatching",
        "guest__hotpatch_status",
        "guest__build",
        "guest__critical_security_count",
        "guest__other_count",
        "guest__reboot_pending",
        "guest__assessed_at",
    )
    products = dict(images.PRODUCT_CHOICES)
    writer = csv.writer(_Echo())

    # The query runs (and any error in it surfaces, as an ordinary error page) here, before the response
    # starts: once the first bytes are sent, a failure could only cut the file short.
    found = vms.iterator(chunk_size=2000)
    first = next(found, None)
    found = itertools.chain([first], found) if first is not None else iter(())

    def rows() -> Iterator[str]:
        yield writer.writerow(CSV_HEADER)
        for (name, sub, sub_id, rg, location, sku, product, power, mode, hotpatch, status, build, crit, other,
             reboot, assessed) in found:  # fmt: skip
            arm_id = f"/subscriptions/{sub_id}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"
            yield writer.writerow(
                [
                    name,
                    sub,
                    rg,
                    location,
                    sku,
                    products.get(product, product),
                    power,
                    vocabulary.label(PatchMode, mode),
                    "yes" if hotpatch else "no",
                    status or "",
                    build or "",
                    crit if crit is not None else "",
                    other if other is not None else "",
                    "yes" if reboot else "no",
                    assessed.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ") if assessed else "",
                    arm_id,
                ]
            )

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="virtual-machines-{stamp}.csv"'
    return response
