"""Portal pages of the inventory: the fleet, a VM's overview and Guest + host updates, create and
delete, subscriptions and their preview features.

Function views, one template per page; htmx asks for a named partial of the same template (the
partial name is the id of the element it replaces, which htmx sends as HX-Target). Every rule lives
in `patching.services`, `vms.features` and `vms.access`; these views only collect and show.
"""

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps
from urllib.parse import unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, F, OuterRef, Q, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling, push_url
from django_htmx.middleware import HtmxDetails

from patching import services
from patching.models import (
    IN_FLIGHT,
    HotpatchStatus,
    Operation,
    OperationKind,
    OperationStatus,
    RolloutHalt,
)

from . import access, features, images, regions
from .forms import TIME_ZONES, CreateVmForm, DeleteVmForm, PatchSettingsForm, TimeZoneForm
from .models import (
    FeatureRegistration,
    ProviderRegistration,
    RegistrationState,
    ResourceGroup,
    Role,
    RoleAssignment,
    Subscription,
    VirtualMachine,
)
from .patch_settings import PATCH_MODES, defaults_for_image
from .templatetags.portal import HOTPATCH_STATUS_LABELS, PATCH_MODE_LABELS


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


def guest_of(vm: VirtualMachine):
    """The VM's guest state, or None for a VM created without one (the admin allows it)."""
    try:
        return vm.guest
    except VirtualMachine.guest.RelatedObjectDoesNotExist:
        return None


def active_halts(product: str | None = None):
    """Halted rollouts (not resumed yet), for the banner."""
    halts = RolloutHalt.objects.filter(resumed_at__isnull=True)
    return list(halts.filter(product=product) if product else halts)


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


# --- The fleet ------------------------------------------------------------------------------------

# Update status as the fleet tiles and filter count it: one state per VM, the first that applies.
UPDATE_STATUS: dict[str, tuple[str, Q]] = {
    "reboot": ("Reboot required", Q(guest__reboot_pending=True)),
    "available": (
        "Updates available",
        Q(guest__reboot_pending=False, guest__assessed_at__isnull=False)
        & (Q(guest__critical_security_count__gt=0) | Q(guest__other_count__gt=0)),
    ),
    "none": (
        "No updates",
        Q(
            guest__reboot_pending=False,
            guest__assessed_at__isnull=False,
            guest__critical_security_count=0,
            guest__other_count=0,
        ),
    ),
    "nodata": ("No assessment yet", Q(guest__assessed_at__isnull=True) & ~Q(guest__reboot_pending=True)),
}

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


def fleet_for(request: HttpRequest) -> Fleet:
    """Apply the URL's filters to the user's VMs; unknown values are dropped, with a notice each."""
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
            [(m, PATCH_MODE_LABELS[m]) for m in PATCH_MODES],
            lambda v: Q(patch_mode=v),
        ),
        FleetFilter(
            "hotpatch",
            "Hotpatch status",
            [(s, HOTPATCH_STATUS_LABELS[s]) for s in HotpatchStatus.values],
            lambda v: Q(guest__hotpatch_status=v),
        ),
        FleetFilter(
            "update_status",
            "Update status",
            [(key, label) for key, (label, _) in UPDATE_STATUS.items()],
            lambda v: UPDATE_STATUS[v][1],
        ),
    ]
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

    search = request.GET.get("q", "").strip()[:64]
    if search:
        vms = vms.filter(name__icontains=search)

    sort = request.GET.get("sort", "name")
    if sort.removeprefix("-") not in SORTS:
        notices.append(f"Ignored the sort order “{sort}”: sort by one of the column names.")
        sort = "name"
    column = F(SORTS[sort.removeprefix("-")])
    order = column.desc(nulls_last=True) if sort.startswith("-") else column.asc(nulls_first=True)
    vms = vms.order_by(order, "name", "pk")
    return Fleet(vms=vms, filters=filters, search=search, sort=sort, notices=notices)


def fleet_tiles(vms) -> dict:
    """The summary tiles: two aggregate queries, whatever the fleet size."""
    counts = vms.order_by().aggregate(
        total=Count("pk"),
        **{f"status_{key}": Count("pk", filter=q) for key, (_, q) in UPDATE_STATUS.items()},
        **{f"mode_{mode}": Count("pk", filter=Q(patch_mode=mode)) for mode in PATCH_MODES},
        hotpatch_enabled=Count("pk", filter=Q(guest__hotpatch_status=HotpatchStatus.ENABLED)),
        hotpatch_action=Count("pk", filter=Q(guest__hotpatch_status=HotpatchStatus.ACTION_REQUIRED)),
    )
    since = timezone.now() - timedelta(days=30)
    installs = Operation.objects.filter(
        kind=OperationKind.INSTALLATION, created_at__gte=since, vm__in=vms.order_by().values("pk")
    ).aggregate(
        runs=Count("pk"),
        succeeded=Count("pk", filter=Q(status=OperationStatus.SUCCEEDED)),
        warnings=Count("pk", filter=Q(status=OperationStatus.COMPLETED_WITH_WARNINGS)),
        failed=Count("pk", filter=Q(status=OperationStatus.FAILED)),
        running=Count("pk", filter=Q(status__in=IN_FLIGHT)),
        patches_installed=Coalesce(Sum("installed_count"), 0),
        patches_failed=Coalesce(Sum("failed_count"), 0),
    )
    total = counts["total"] or 1
    statuses, offset = [], 0.0
    for key, (label, _) in UPDATE_STATUS.items():
        share = 100 * counts[f"status_{key}"] / total
        statuses.append(
            {"key": key, "label": label, "count": counts[f"status_{key}"], "share": share, "offset": offset}
        )
        offset += share
    modes = [{"key": mode, "label": PATCH_MODE_LABELS[mode], "count": counts[f"mode_{mode}"]} for mode in PATCH_MODES]
    return {"total": counts["total"], "statuses": statuses, "modes": modes, "installs": installs, **counts}


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
        "tiles": fleet_tiles(found.vms),
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

    def rows() -> Iterator[str]:
        yield writer.writerow(CSV_HEADER)
        for (name, sub, sub_id, rg, location, sku, product, power, mode, hotpatch, status, build, crit, other,
             reboot, assessed) in vms.iterator(chunk_size=2000):  # fmt: skip
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
                    PATCH_MODE_LABELS.get(mode, mode),
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


# --- One VM ---------------------------------------------------------------------------------------


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
        "guest": guest_of(vm),
        "can_act": can_act,
        "section": section,
        "subscription": vm.resource_group.subscription,
        "product": images.PRODUCTS.get(vm.product),
        "region_name": regions.REGIONS.get(vm.location, vm.location),
        "halts": active_halts(vm.product),
    }


@require_GET
@portal_view
def overview(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    vm, can_act = get_vm(request, pk)
    context = vm_context(request, vm, can_act, "overview")
    try:
        local_now = timezone.now().astimezone(ZoneInfo(vm.time_zone))
    except (ZoneInfoNotFoundError, ValueError):
        local_now = None
    context.update(local_now=local_now, running=in_flight_operations(vm))
    return render(request, "vms/overview.html", context)


def hotpatch_prerequisites(vm: VirtualMachine) -> tuple[list[str], bool]:
    """What keeps hotpatch from being turned on now (the services' own rules), and whether the preview gate is one."""
    if vm.enable_hotpatching or not vm.hotpatch_capable:
        return [], False
    wanted = vm.patch_settings.with_changes(enable_hotpatching=True, patch_mode="AutomaticByPlatform")
    problems = [p.message for p in services.check_patch_settings(vm, wanted)]
    gate = bool(features.preview_gate_problems(vm.resource_group.subscription))
    return problems, gate


@require_http_methods(["GET", "POST"])
@portal_view
def guest_updates(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """VM › Guest + host updates: the guest OS update settings, editable, and the hotpatch card."""
    vm, can_act = get_vm(request, pk, act=request.method == "POST")
    if request.method == "POST":
        form = PatchSettingsForm.for_vm(vm, data=request.POST)
        if form.is_valid():
            problems = services.change_patch_settings(vm, form.patch_settings(vm.patch_settings))
            if not problems:
                messages.success(request, f"Saved the guest OS update settings of {vm.name}.")
                return redirect("vms:guest-updates", vm.pk)
            form.add_problems(problems)
            vm.refresh_from_db()  # the service may have copied the rejected values onto the instance
    else:
        form = PatchSettingsForm.for_vm(vm)
    if not can_act:
        for field in form.fields.values():
            field.disabled = True  # a Reader sees the settings, greyed out
    prerequisites, gate = hotpatch_prerequisites(vm)
    context = vm_context(request, vm, can_act, "guest-updates")
    context.update(form=form, prerequisites=prerequisites, preview_gate=gate)
    return render(request, "vms/guest_updates.html", context)


@require_http_methods(["GET", "POST"])
@portal_view
def delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Delete a VM, after typing its name on a confirmation page."""
    vm, can_act = get_vm(request, pk, act=True)
    form = DeleteVmForm(request.POST or None, vm=vm)
    if request.method == "POST" and form.is_valid():
        name = vm.name
        services.delete_virtual_machine(vm)
        messages.success(request, f"Deleted the virtual machine {name}. Its update history is kept.")
        return redirect("vms:list")
    context = vm_context(request, vm, can_act, "delete")
    context.update(form=form, running=in_flight_operations(vm))
    return render(request, "vms/delete.html", context)


# --- Create a VM ----------------------------------------------------------------------------------


def creatable_subscriptions(user):
    subscriptions = access.subscriptions_for(user)
    if not user.is_superuser:
        subscriptions = subscriptions.filter(
            role_assignments__user=user, role_assignments__role__in=[Role.CONTRIBUTOR, Role.OWNER]
        )
    return subscriptions.order_by("display_name")


def guest_os_updates_context(form: CreateVmForm) -> dict:
    """What the Management › Guest OS updates section offers for the chosen image, region and subscription."""
    sku = form.selected("image_sku", images.ALL_SKUS[0]).lower()
    region = regions.normalize_region(form.selected("location", "westeurope")) or "westeurope"
    product = images.product_for_image(images.PUBLISHER, images.OFFER, sku)
    capable = images.is_hotpatch_capable(images.PUBLISHER, images.OFFER, sku)
    government = regions.is_government(region)
    subscription = form.fields["subscription"].queryset.filter(pk=form.selected("subscription") or None).first()
    if subscription is None:
        subscription = form.fields["subscription"].queryset.first()
    gate = features.preview_gate_problems(subscription) if subscription and capable and not government else []
    return {
        "hotpatch_offered": capable and not government,
        "hotpatch_capable": capable,
        "government": government,
        "region_name": regions.REGIONS.get(region, region),
        "chosen_product": product,
        "chosen_subscription": subscription,
        "gate_problems": gate,
    }


def initial_for(sku: str, region: str) -> dict:
    """The seed's defaults for a new VM of this image in this region."""
    defaults = defaults_for_image(images.PUBLISHER, images.OFFER, sku, region)
    return {
        "patch_mode": defaults.patch_mode,
        "enable_hotpatching": defaults.enable_hotpatching,
        "assessment_mode": defaults.assessment_mode,
        "reboot_setting": defaults.reboot_setting,
    }


@require_http_methods(["GET", "POST"])
@portal_view
def create(request: HtmxHttpRequest) -> HttpResponse:
    """Create a virtual machine (the seed's getting-started path) through services.create_virtual_machine."""
    subscriptions = creatable_subscriptions(request.user)
    if not subscriptions.exists():
        raise PermissionDenied("Creating a virtual machine needs the Contributor or Owner role on a subscription.")
    if request.method == "POST" and "apply_defaults" not in request.POST:
        form = CreateVmForm(request.POST, subscriptions=subscriptions)
        if form.is_valid():
            data = form.cleaned_data
            vm, problems = services.create_virtual_machine(
                resource_group=data["resource_group"],
                name=data["name"].strip(),
                location=data["location"],
                image_sku=data["image_sku"],
                size=data["size"],
                time_zone=data["time_zone"].strip(),
                zone=data["zone"],
                availability_set=data["availability_set"].strip(),
                patch_settings=form.new_patch_settings(),
            )
            if vm is not None:
                messages.success(request, f"Created the virtual machine {vm.name}. Its first assessment is running.")
                return redirect("vms:overview", vm.pk)
            form.add_problems(problems)
    else:
        # A first visit, a no-JS "Apply image defaults", or htmx refreshing the Guest OS updates section.
        source = request.POST if request.method == "POST" else request.GET
        sku = source.get("image_sku") or CreateVmForm.base_fields["image_sku"].initial
        region = regions.normalize_region(source.get("location", "")) or "westeurope"
        initial = {**{k: v for k, v in source.items() if k != "csrfmiddlewaretoken"}, **initial_for(sku, region)}
        form = CreateVmForm(initial=initial, subscriptions=subscriptions)
    section = guest_os_updates_context(form)
    if form.is_bound and not section["hotpatch_offered"]:
        # Not offered for this image or region: show it off, whatever was ticked before the image changed.
        form.data = form.data.copy()
        form.data.pop("enable_hotpatching", None)
    context = {"form": form, "time_zones": TIME_ZONES, **section}
    template = "vms/create.html"
    if partial_for(request, ("guest-os-updates",)):
        template += "#guest-os-updates"
    return render(request, template, context)


# --- Subscriptions and preview features -----------------------------------------------------------


@require_GET
@portal_view
def subscriptions(request: HttpRequest) -> HttpResponse:
    """Subscriptions the user holds a role on, with their VMs and hotpatch onboarding."""
    rows = list(
        access.subscriptions_for(request.user)
        .annotate(
            vm_count=Coalesce(
                Subquery(
                    VirtualMachine.objects.filter(resource_group__subscription=OuterRef("pk"))
                    .order_by()
                    .values("resource_group__subscription")
                    .annotate(n=Count("pk"))
                    .values("n")
                ),
                0,
            )
        )
        .order_by("display_name")
    )
    ids = [s.pk for s in rows]
    registered: dict = {}
    for sub_id, name in FeatureRegistration.objects.filter(
        subscription__in=ids, namespace=FeatureRegistration.NAMESPACE, state=RegistrationState.REGISTERED
    ).values_list("subscription_id", "name"):
        if name in FeatureRegistration.HOTPATCH_FEATURES:
            registered[sub_id] = registered.get(sub_id, 0) + 1
    providers = dict(
        ProviderRegistration.objects.filter(subscription__in=ids, namespace=features.PROVIDER).values_list(
            "subscription_id", "state"
        )
    )
    roles = dict(RoleAssignment.objects.filter(user=request.user).values_list("subscription_id", "role"))
    for s in rows:
        s.features_registered = registered.get(s.pk, 0)
        s.provider_state = providers.get(s.pk, RegistrationState.NOT_REGISTERED)
        s.role = Role.OWNER if request.user.is_superuser else roles.get(s.pk)
        s.onboarded = s.features_registered == len(FeatureRegistration.HOTPATCH_FEATURES) and (
            s.provider_state == RegistrationState.REGISTERED
        )
    context = {"rows": rows, "feature_total": len(FeatureRegistration.HOTPATCH_FEATURES), "nav": "subscriptions"}
    return render(request, "vms/subscriptions.html", context)


def get_subscription(request: HttpRequest, subscription_id, *, act: bool = False) -> tuple[Subscription, bool]:
    subscription = get_object_or_404(access.subscriptions_for(request.user), pk=subscription_id)
    can_act = access.can_act(request.user, subscription.pk)
    if act and not can_act:
        raise PermissionDenied("Registering preview features needs the Contributor or Owner role.")
    return subscription, can_act


FEATURES_PAGE = "vms/preview_features.html"


def features_context(subscription: Subscription, can_act: bool) -> dict:
    order = {name: i for i, name in enumerate(FeatureRegistration.HOTPATCH_FEATURES)}
    # The seed's three features first, in its order; any other Microsoft.Compute feature after them.
    rows = sorted(
        features.features(subscription, FeatureRegistration.NAMESPACE),
        key=lambda f: (order.get(f.name, len(order)), f.name),
    )
    provider = features.provider(subscription)
    return {
        "subscription": subscription,
        "features": rows,
        "provider": provider,
        "can_act": can_act,
        "transitioning": any(f.is_transitioning for f in rows) or provider.is_transitioning,
        "all_registered": all(f.state == RegistrationState.REGISTERED for f in rows),
        "gate_problems": features.preview_gate_problems(subscription),
        "nav": "subscriptions",
        "poll_every": "2s",
    }


@require_GET
@portal_view
def preview_features(request: HtmxHttpRequest, subscription_id) -> HttpResponse:
    """Subscription › Preview features: the seed's three features and the provider, live."""
    subscription, can_act = get_subscription(request, subscription_id)
    context = features_context(subscription, can_act)
    if partial_for(request, ("features",)):
        response = render(request, f"{FEATURES_PAGE}#features", context)
        if not context["transitioning"]:
            # Settled: stop the poll (htmx swaps this last fragment, then stops).
            response.status_code = HttpResponseStopPolling.status_code
        return response
    return render(request, FEATURES_PAGE, context)


def _after_registration(request: HtmxHttpRequest, subscription: Subscription, message: str) -> HttpResponse:
    if request.htmx:
        return render(request, f"{FEATURES_PAGE}#features", features_context(subscription, True))
    messages.info(request, message)
    return redirect("vms:preview-features", subscription.pk)


@require_POST
@portal_view
def feature_action(request: HtmxHttpRequest, subscription_id, name: str, action: str) -> HttpResponse:
    """Register or unregister one Microsoft.Compute preview feature (a Celery task settles it)."""
    subscription, _ = get_subscription(request, subscription_id, act=True)
    if action not in ("register", "unregister"):
        raise Http404("No such action.")
    if name == "all":  # "Register all": the seed's three commands in one click
        names = list(FeatureRegistration.HOTPATCH_FEATURES)
    elif name in FeatureRegistration.HOTPATCH_FEATURES:
        names = [name]
    else:
        raise Http404("Only the hotpatch preview features are managed here.")
    change = features.register_feature if action == "register" else features.unregister_feature
    rows = [change(subscription, n) for n in names]
    return _after_registration(request, subscription, "; ".join(f"{row.name}: {row.state}" for row in rows) + ".")


@require_POST
@portal_view
def provider_action(request: HtmxHttpRequest, subscription_id, action: str) -> HttpResponse:
    """Register (or unregister) the Microsoft.Compute resource provider: the seed's last onboarding step."""
    subscription, _ = get_subscription(request, subscription_id, act=True)
    if action not in ("register", "unregister"):
        raise Http404("No such action.")
    if action == "register":
        row = features.register_provider(subscription)
    else:
        row = features.unregister_provider(subscription)
    return _after_registration(request, subscription, f"Microsoft.Compute: {row.state}.")
