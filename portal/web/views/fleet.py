"""The fleet: the Virtual machines list with its tiles, filters and sorting, and its CSV export."""

import csv
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from django.db.models import Q, QuerySet
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

from . import keyset
from .common import HtmxHttpRequest, active_halts, partial_for, portal_view

# --- The fleet ------------------------------------------------------------------------------------

# sort parameter -> its order; "-name" sorts descending (`col DESC NULLS LAST, name DESC, pk DESC`, the
# exact reverse). Each order has its index (vms.models.sort_indexes), read forwards or backwards: the
# VM's columns on the VM, the guest's on GuestState next to a copy of the VM's name, so a page is one
# index range whatever the fleet's size.
SORTS = {
    "name": ("name", "name"),
    "resource_group": ("resource_group_name", "name"),
    "location": ("location", "name"),
    "image": ("image_sku", "name"),
    "power_state": ("power_state", "name"),
    "orchestration": ("patch_mode", "name"),
    "hotpatch": ("guest__hotpatch_status", "guest__vm_name"),
    "critical": ("guest__critical_security_count", "guest__vm_name"),
    "other": ("guest__other_count", "guest__vm_name"),
    "reboot": ("guest__reboot_pending", "guest__vm_name"),
    "assessed": ("guest__assessed_at", "guest__vm_name"),
}


def sort_order(sort: str) -> keyset.Order:
    column, name = SORTS[sort.removeprefix("-")]
    return keyset.Order(
        column,
        name,
        descending=sort.startswith("-"),
        nullable=column == "guest__assessed_at",
        datetime=column == "guest__assessed_at",
    )


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
GROUP_CHOICES_MAX = 300
GUEST_SORTS = {key for key, (column, _) in SORTS.items() if column.startswith("guest__")}


@dataclass
class FleetFilter:
    param: str
    label: str
    choices: list[tuple[str, str]]
    lookup: Callable[[str], Q]
    value: str = ""
    # Too many choices for a list (resource groups of a large fleet): a text field, and this finds the
    # canonical value of what was typed (None: there is none).
    find: Callable[[str], str | None] | None = None

    @property
    def typed(self) -> bool:
        return self.find is not None


@dataclass
class Fleet:
    """The filtered fleet of one request, with what the page says about its filters."""

    vms: "QuerySet[VirtualMachine]"  # noqa: F821
    filters: list[FleetFilter]
    search: str
    sort: str
    notices: list[str]

    @property
    def order(self) -> keyset.Order:
        return sort_order(self.sort)

    @property
    def table(self) -> "QuerySet[VirtualMachine]":  # noqa: F821
        """The rows of the table. Sorted by a guest column, the guest's index leads: an inner join (every
        VM has its guest from its creation on, provision_guests)."""
        if self.sort.removeprefix("-") in GUEST_SORTS:
            return self.vms.filter(guest__isnull=False)
        return self.vms

    @property
    def active(self) -> list[FleetFilter]:
        return [f for f in self.filters if f.value]


def fleet_for(request: HttpRequest, only: tuple[str, ...] | None = None) -> Fleet:
    """Apply the URL's filters to the user's VMs; unknown values are dropped, with a notice each.

    `only` names the filters a page offers (the fleet pages' scope); the others, the name search and
    the sort are then not read."""
    vms = access.vms_for(request.user)
    subscriptions = list(access.subscriptions_for(request.user).values_list("pk", "display_name"))
    # Distinct in the database: one row per name or region, not one per VM. Past GROUP_CHOICES_MAX
    # names the resource group is typed, not picked from a list that grows with the fleet.
    group_names = (
        ResourceGroup.objects.filter(subscription__in=[pk for pk, _ in subscriptions])
        .order_by("name")
        .values_list("name", flat=True)
        .distinct()
    )
    groups = sorted(set(group_names[: GROUP_CHOICES_MAX + 1]), key=str.lower)
    find_group = None
    if len(groups) > GROUP_CHOICES_MAX:
        groups = []

        def find_group(raw: str) -> str | None:
            return group_names.filter(name__iexact=raw).first()

    locations = fleet_locations(request.user, [pk for pk, _ in subscriptions])
    filters = [
        FleetFilter(
            "subscription",
            "Subscription",
            [(str(pk), name) for pk, name in subscriptions],
            lambda v: Q(resource_group__subscription_id=v),
        ),
        FleetFilter(
            "resource_group",
            "Resource group",
            [(g, g) for g in groups],
            lambda v: Q(resource_group__name__iexact=v),
            find=find_group,
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
        value = known.get(raw.lower()) if f.find is None else f.find(raw[:90])
        if value is None:
            notices.append(f"Ignored the {f.label.lower()} filter: “{raw}” is not one of the choices.")
            continue
        f.value = value
        if f.find is not None:
            f.choices = [(value, value)]  # for the active filter's pill
        vms = vms.filter(f.lookup(value))

    search = request.GET.get("q", "").strip()[:64] if only is None else ""
    if search:
        vms = vms.filter(name__icontains=search)

    sort = request.GET.get("sort", "name") if only is None else "name"
    if sort.removeprefix("-") not in SORTS:
        notices.append(f"Ignored the sort order “{sort}”: sort by one of the column names.")
        sort = "name"
    vms = vms.order_by(*sort_order(sort).by())
    return Fleet(vms=vms, filters=filters, search=search, sort=sort, notices=notices)


def fleet_locations(user, subscriptions: list) -> list[str]:
    """The regions of the user's VMs (in `subscriptions`, the ones they see), for the location filter:
    from the coarse fleet rollup (a few rows per subscription), not a DISTINCT over every VM."""
    if rollup.enabled():
        return rollup.locations(None if user.is_superuser else tuple(subscriptions))
    return sorted(access.vms_for(user).order_by().values_list("location", flat=True).distinct())


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


@dataclass
class Page:
    """One keyset page of the fleet table: its rows, where they stand, and the links around it."""

    object_list: list
    start: int  # 0-based position of the first row (exact from the first page on, approximate under inserts)
    count: int
    links: dict[str, str]

    @property
    def start_index(self) -> int:
        return self.start + 1 if self.object_list else 0

    @property
    def end_index(self) -> int:
        return self.start + len(self.object_list)


CURSOR_CONTEXT = "fleet"
NAVIGATION = ("after", "before", "page")


def fleet_page(request: HttpRequest, found: Fleet, rows: QuerySet, count: int) -> Page:
    """The page the URL asks for: the first, the last (page=last), or the one after/before a cursor.

    At most three index ranges a page (keyset.read), whatever the fleet's size or the page's depth."""
    order, size = found.order, PAGE_SIZE
    key_of = _key_of(found.sort)
    base = request.GET.copy()
    for name in [k for k, v in request.GET.items() if not v.strip() or k in NAVIGATION]:
        del base[name]

    def link(**params) -> str:
        query = base.copy()
        for name, value in params.items():
            query[name] = value
        encoded = query.urlencode()
        return f"?{encoded}" if encoded else "?"

    direction = next((d for d in ("after", "before") if request.GET.get(d, "").strip()), None)
    cursor = None
    if direction:
        cursor = keyset.load(request.GET[direction].strip(), CURSOR_CONTEXT, found.sort, order)
        if cursor is None:
            found.notices.append(
                "Ignored the page position: it is not one this list made for this sort order. Showing the first page."
            )
    rows_found, start, before_more, after_more = [], 0, False, False
    if cursor and direction == "after":
        key, position = cursor
        rows_found = keyset.read(rows, order, key, size + 1)
        after_more, before_more, start = len(rows_found) > size, True, position + 1
    elif cursor and direction == "before":
        key, position = cursor
        back = keyset.read(rows, order, key, size + 1, forward=False)
        if len(back) > size:  # a full page before it, and more: otherwise it is the first page
            rows_found, before_more, after_more = back[:size][::-1], True, True
            start = max(position - size, 0)
        else:
            cursor = None
    last = request.GET.get("page", "").strip() == "last"
    if cursor and direction == "after" and not rows_found:  # nothing after it any more: the last page
        last = True
    if last and not rows_found:
        back = keyset.read(rows, order, None, size + 1, forward=False)
        rows_found, before_more = back[:size][::-1], len(back) > size
        start = max(count - len(rows_found), 0)
    if not rows_found:
        rows_found = keyset.read(rows, order, None, size + 1)
        after_more, before_more, start = len(rows_found) > size, False, 0
    rows_found = rows_found[:size]
    links = {}
    if before_more:
        links["first"] = link()
        links["previous"] = link(before=keyset.dump(CURSOR_CONTEXT, found.sort, key_of(rows_found[0]), start))
    if after_more:
        end = start + len(rows_found) - 1
        links["next"] = link(after=keyset.dump(CURSOR_CONTEXT, found.sort, key_of(rows_found[-1]), end))
        links["last"] = link(page="last")
    return Page(rows_found, start, count, links)


def _key_of(sort: str) -> Callable:
    order = sort_order(sort)
    path = order.column.split("__")

    def key_of(vm: VirtualMachine) -> tuple:
        value = vm
        for step in path:
            value = getattr(value, step)
        return (order.key_value(value), vm.name, vm.pk)

    return key_of


@require_GET
@portal_view
def fleet(request: HtmxHttpRequest) -> HttpResponse:
    """Virtual machines: filters in the URL, summary tiles, a sortable table in keyset pages."""
    # The filter form sends every field; the URL people share and go back to keeps only the chosen ones.
    chosen = request.GET.copy()
    for key in [k for k, v in request.GET.items() if not v.strip()]:
        del chosen[key]
    clean_url = f"{request.path}?{chosen.urlencode()}" if chosen else request.path
    if len(chosen) != len(request.GET) and not request.htmx:
        return redirect(clean_url)
    found = fleet_for(request)
    tiles = fleet_tiles(request.user, found)
    # The tiles count the filtered fleet already; a name search may count apart (the tiles may come
    # from summaries that know no names).
    count = found.vms.count() if found.search else tiles["total"]
    page = fleet_page(request, found, found.table.select_related("resource_group__subscription", "guest"), count)
    export = chosen.copy()
    for name in NAVIGATION:
        export.pop(name, None)
    context = {
        "fleet": found,
        "page": page,
        "tiles": tiles,
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
        "export_query": export.urlencode(),
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
