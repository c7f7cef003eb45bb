"""Maintenance configurations: the list, the create/edit form with its live occurrence preview, a
configuration's page (upcoming windows and cancelling them, assignments, runs, webhooks and their
delivery log), a run's page, and assigning a VM from its Guest + host updates page."""

from datetime import datetime

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, Q
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from patching.maintenance import recurrence, scope, services
from patching.maintenance.models import (
    ConfigurationAssignment,
    MaintenanceConfiguration,
    MaintenanceRun,
    WebhookDelivery,
)
from patching.maintenance.timezones import canonical, zone
from vms import access, clock
from vms.models import ResourceGroup, Role, VirtualMachine

from ..forms import RECUR_EXAMPLES, MaintenanceConfigurationForm
from .common import HtmxHttpRequest, get_vm, portal_view

PREVIEW_COUNT = 10
RUNS_SHOWN = 30
DELIVERIES_SHOWN = 30
MATCHES_SHOWN = 20


def _configurations(user):
    return MaintenanceConfiguration.objects.filter(
        resource_group__subscription__in=access.subscriptions_for(user)
    ).select_related("resource_group__subscription")


def _get(request, pk: int, *, act: bool = False) -> tuple[MaintenanceConfiguration, bool]:
    config = get_object_or_404(_configurations(request.user), pk=pk)
    can_act = access.can_act(request.user, config.resource_group.subscription_id)
    if act and not can_act:
        raise PermissionDenied("Your role on this subscription is Reader: you can look but not change anything.")
    return config, can_act


def _groups(user):
    """The resource groups the user may create configurations in (Contributor or Owner)."""
    groups = ResourceGroup.objects.select_related("subscription").order_by("subscription__display_name", "name")
    if user.is_superuser:
        return groups
    return groups.filter(
        subscription__role_assignments__user=user,
        subscription__role_assignments__role__in=[Role.CONTRIBUTOR, Role.OWNER],
    )


@require_GET
@portal_view
def configuration_list(request: HtmxHttpRequest) -> HttpResponse:
    """Maintenance configurations the user can see, with their next window and assignment counts."""
    now = clock.now()
    configs = list(
        _configurations(request.user)
        .annotate(
            machines=Count("assignments", filter=Q(assignments__vm__isnull=False)),
            scopes=Count("assignments", filter=Q(assignments__vm__isnull=True)),
        )
        .order_by("resource_group__subscription__display_name", "resource_group__name", "name")
    )
    rows = [(c, next(iter(services.upcoming(c, now, 1)), None)) for c in configs]
    return render(
        request,
        "maintenance/list.html",
        {"nav": "maintenance", "rows": rows, "can_create": _groups(request.user).exists()},
    )


class _Refused(Exception):
    """Rolls the whole form back: nothing half-written."""


def _save(request, form: MaintenanceConfigurationForm, existing: MaintenanceConfiguration | None):
    """Configuration, dynamic scope, machines and webhook in one transaction; problems on the form."""
    rg = form.cleaned_data["resource_group"] if existing is None else existing.resource_group
    name = form.cleaned_data["name"].strip() if existing is None else existing.name
    try:
        with transaction.atomic():
            if (
                existing is None
                and MaintenanceConfiguration.objects.filter(resource_group=rg, name__iexact=name).exists()
            ):
                form.add_error("name", f"A configuration named {name} already exists in {rg.name}.")
                raise _Refused
            config, _, problems = services.save_configuration(rg, name, form.arm_body(), user=request.user)
            if problems:
                form.add_problems(problems)
                raise _Refused
            flt = form.scope_filter()
            scope_name = f"{config.name}-scope"[:80]
            if flt:
                services.assign_scope(config, rg.subscription, scope_name, flt, user=request.user)
            else:
                config.assignments.filter(vm__isnull=True, name__iexact=scope_name).delete()
            names = form.machine_names()
            found = (
                {
                    vm.name.lower(): vm
                    for vm in VirtualMachine.objects.filter(resource_group__subscription_id=rg.subscription_id)
                    .filter(name__in=names)
                    .select_related("resource_group")
                }
                if names
                else {}
            )
            missing = [n for n in names if n.lower() not in found]
            if missing:
                form.add_error("machines", f"No VM named {', '.join(missing)} in {rg.subscription.display_name}.")
                raise _Refused
            keep = {vm.pk for vm in found.values()}
            config.assignments.filter(vm__isnull=False).exclude(vm_id__in=keep).delete()
            already = set(config.assignments.filter(vm_id__in=keep).values_list("vm_id", flat=True))
            for vm in found.values():
                if vm.pk not in already:
                    services.assign_vm(config, vm, f"{config.name}-{vm.name}"[:80], user=request.user)
            url = form.cleaned_data["webhook_url"].strip()
            if url and not config.webhooks.filter(url=url).exists():
                services.add_webhook(config, url)
    except services.ScheduleError as e:
        field = {"url": "webhook_url", "properties.filter": "scope_resource_groups"}.get(e.target or "")
        if field is None and ("machine" in e.message.lower() or "assigned" in e.message):
            field = "machines"
        form.add_error(field, e.message)
        return None
    except _Refused:
        return None
    return config


def _initial(config: MaintenanceConfiguration) -> dict:
    windows = config.windows_parameters
    flt = (
        config.assignments.filter(vm__isnull=True, name__iexact=f"{config.name}-scope")
        .values_list("filter", flat=True)
        .first()
    ) or {}
    tags = (flt.get("tagSettings") or {}).get("tags") or {}
    return {
        "resource_group": config.resource_group_id,
        "name": config.name,
        "location": config.location,
        "start_date_time": config.start_date_time,
        "time_zone": config.time_zone,
        "duration": recurrence.format_duration(config.duration),
        "recur_every": config.recur_every,
        "expiration_date_time": config.expiration_date_time,
        "reboot_setting": config.reboot_setting,
        "classifications": windows.get("classificationsToInclude", []),
        "kbs_to_include": ", ".join(windows.get("kbNumbersToInclude", [])),
        "kbs_to_exclude": ", ".join(windows.get("kbNumbersToExclude", [])),
        "exclude_kbs_requiring_reboot": windows.get("excludeKbsRequiringReboot", False),
        "pre_event_minutes": config.pre_event_minutes,
        "scope_resource_groups": ", ".join(flt.get("resourceGroups", [])),
        "scope_locations": flt.get("locations", []),
        "scope_tags": "\n".join(f"{k}={v}" for k, values in tags.items() for v in (values or [""])),
        "scope_operator": (flt.get("tagSettings") or {}).get("filterOperator", "Any"),
        "machines": ", ".join(config.assignments.filter(vm__isnull=False).values_list("vm__name", flat=True)),
    }


@require_http_methods(["GET", "POST"])
@portal_view
def configuration_form(request: HtmxHttpRequest, pk: int | None = None) -> HttpResponse:
    """Create (pk None) or edit a configuration: Basics · Dynamic scopes · Machines · Updates · Events."""
    existing = None
    if pk is not None:
        existing, _ = _get(request, pk, act=True)
    groups = _groups(request.user)
    if existing is None and not groups.exists():
        raise PermissionDenied("You need the Contributor role on a subscription to create a maintenance configuration.")
    if request.method == "POST":
        form = MaintenanceConfigurationForm(request.POST, groups=groups)
        if existing is not None:
            form.fields["resource_group"].required = form.fields["name"].required = False
            form.fields["resource_group"].disabled = form.fields["name"].disabled = True
            form.initial = {"resource_group": existing.resource_group_id, "name": existing.name}
        if form.is_valid():
            config = _save(request, form, existing)
            if config is not None:
                messages.success(request, f"Saved the maintenance configuration {config.name}.")
                return redirect("maintenance:detail", config.pk)
    else:
        initial = _initial(existing) if existing else {"start_date_time": _default_start()}
        form = MaintenanceConfigurationForm(initial=initial, groups=groups)
        if existing is not None:
            form.fields["resource_group"].disabled = form.fields["name"].disabled = True
    context = {"nav": "maintenance", "form": form, "config": existing, "examples": RECUR_EXAMPLES}
    context.update(_preview(request.user, form.data if form.is_bound else {**form.initial, **_initial_strings(form)}))
    return render(request, "maintenance/form.html", context)


def _initial_strings(form) -> dict:
    return {
        name: form[name].value()
        for name in ("start_date_time", "time_zone", "duration", "recur_every", "expiration_date_time")
    }


def _default_start() -> str:
    tomorrow = clock.now().date().toordinal() + 1
    return datetime.fromordinal(tomorrow).strftime("%Y-%m-%d") + " 22:00"


def _preview(user, data) -> dict:
    """The next ten windows in the chosen time zone, and the VMs the dynamic scope matches now."""
    get = data.get if hasattr(data, "get") else dict(data).get
    window, problems = recurrence.window(
        str(get("start_date_time") or ""),
        str(get("duration") or ""),
        str(get("time_zone") or ""),
        str(get("recur_every") or ""),
        str(get("expiration_date_time") or "") or None,
    )
    preview = {"preview_problems": problems, "occurrences": [], "preview_zone": canonical(str(get("time_zone") or ""))}
    if window is not None:
        tz = zone(window.time_zone)
        # Wall-clock text in the configuration's zone (the date filter would show the viewer's zone).
        preview["occurrences"] = [
            (
                start.astimezone(tz).strftime("%a %Y-%m-%d %H:%M"),
                (start + window.duration).astimezone(tz).strftime("%H:%M"),
                start,
            )
            for start in window.next(clock.now(), PREVIEW_COUNT)
        ]
        preview["rule_text"] = window.rule.describe()
    group_id = get("resource_group")
    rg = None
    if group_id and str(group_id).isdigit() and len(str(group_id)) < 12:
        rg = (
            ResourceGroup.objects.filter(pk=int(group_id), subscription__in=access.subscriptions_for(user))
            .select_related("subscription")
            .first()
        )
    groups = [g.strip() for g in str(get("scope_resource_groups") or "").split(",") if g.strip()]
    locations = data.getlist("scope_locations") if hasattr(data, "getlist") else list(get("scope_locations") or [])
    tags = {}
    for line in str(get("scope_tags") or "").splitlines():
        if line.strip():
            key, _, value = line.partition("=")
            tags.setdefault(key.strip(), [])
            if value.strip():
                tags[key.strip()].append(value.strip())
    flt = {}
    if groups:
        flt["resourceGroups"] = groups
    if locations:
        flt["locations"] = locations
    if tags:
        flt["tagSettings"] = {"tags": tags, "filterOperator": "All" if get("scope_operator") == "All" else "Any"}
    if rg is not None and flt:
        matched = scope.dynamic_matches(rg.subscription_id, flt)
        preview["scope_count"] = matched.count()
        preview["scope_names"] = list(matched.order_by("name").values_list("name", flat=True)[:MATCHES_SHOWN])
        preview["scope_subscription"] = rg.subscription
    return preview


@require_GET
@portal_view
def preview(request: HtmxHttpRequest) -> HttpResponse:
    """htmx: the form's preview panel, recomputed from the fields as they are typed."""
    return render(request, "maintenance/form.html#preview", _preview(request.user, request.GET))


@require_GET
@portal_view
def configuration_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    config, can_act = _get(request, pk)
    now = clock.now()
    tz = config.window.zone
    upcoming = [
        (start, start.astimezone(tz).strftime("%a %Y-%m-%d %H:%M"), start - services.CANCEL_CUTOFF >= now)
        for start in services.upcoming(config, now, PREVIEW_COUNT)
    ]
    cancelled = set(config.runs.filter(status="Cancelled").values_list("scheduled_start", flat=True))
    assignments = list(
        config.assignments.select_related("vm__resource_group", "subscription", "resource_group").order_by(
            "vm__name", "name"
        )
    )
    context = {
        "nav": "maintenance",
        "config": config,
        "can_act": can_act,
        "upcoming": upcoming,
        "cancelled": cancelled,
        "static": [a for a in assignments if a.vm_id],
        "dynamic": [a for a in assignments if not a.vm_id],
        "runs": list(config.runs.all()[:RUNS_SHOWN]),
        "webhooks": list(config.webhooks.all()),
        "deliveries": list(
            WebhookDelivery.objects.filter(webhook__configuration=config).select_related("webhook", "run")[
                :DELIVERIES_SHOWN
            ]
        ),
        "body": services.configuration_to_body(config),
    }
    return render(request, "maintenance/detail.html", context)


@require_POST
@portal_view
def cancel(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    config, _ = _get(request, pk, act=True)
    try:
        start = datetime.fromisoformat(request.POST.get("start", ""))
        if start.tzinfo is None:
            raise ValueError
    except ValueError:
        messages.error(request, "That is not a start time of this configuration.")
        return redirect("maintenance:detail", config.pk)
    try:
        services.cancel_occurrence(config, start, by=request.user.get_username())
    except services.ScheduleError as e:
        messages.error(request, e.message)
    else:
        messages.success(request, f"Cancelled the run of {config.name} starting {start:%Y-%m-%d %H:%M} UTC.")
    return redirect("maintenance:detail", config.pk)


@require_POST
@portal_view
def delete(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    config, _ = _get(request, pk, act=True)
    name = config.name
    services.delete_configuration(config)
    messages.success(request, f"Deleted the maintenance configuration {name}, its assignments and runs.")
    return redirect("maintenance:list")


@require_POST
@portal_view
def remove_assignment(request: HtmxHttpRequest, pk: int, assignment: int) -> HttpResponse:
    config, _ = _get(request, pk, act=True)
    deleted, _ = ConfigurationAssignment.objects.filter(configuration=config, pk=assignment).delete()
    if deleted:
        messages.success(request, "Removed the assignment.")
    return redirect("maintenance:detail", config.pk)


@require_POST
@portal_view
def remove_webhook(request: HtmxHttpRequest, pk: int, webhook: int) -> HttpResponse:
    config, _ = _get(request, pk, act=True)
    if config.webhooks.filter(pk=webhook).delete()[0]:
        messages.success(request, "Removed the webhook.")
    return redirect("maintenance:detail", config.pk)


@require_GET
@portal_view
def run_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(
        MaintenanceRun.objects.select_related("configuration__resource_group__subscription").filter(
            configuration__resource_group__subscription__in=access.subscriptions_for(request.user)
        ),
        pk=pk,
    )
    machines = run.machines.select_related("operation").order_by("status", "vm_name")
    return render(
        request,
        "maintenance/run.html",
        {
            "nav": "maintenance",
            "run": run,
            "config": run.configuration,
            "machines": machines[:2000],
            "total": machines.count(),
        },
    )


@require_POST
@portal_view
def vm_assignment(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """From the VM's Guest + host updates page: assign a configuration of its subscription, or remove it."""
    vm, _ = get_vm(request, pk, act=True)
    if request.POST.get("action") == "remove":
        ConfigurationAssignment.objects.filter(vm=vm).delete()
        messages.success(request, f"{vm.name} is no longer assigned to a maintenance configuration.")
        return redirect("vms:guest-updates", vm.pk)
    config_id = request.POST.get("configuration", "")
    config = (
        MaintenanceConfiguration.objects.filter(
            resource_group__subscription_id=vm.resource_group.subscription_id, pk=int(config_id)
        )
        .select_related("resource_group")
        .first()
        if config_id.isdigit() and len(config_id) < 12
        else None
    )
    if config is None:
        messages.error(request, "Choose a maintenance configuration of this VM's subscription.")
        return redirect("vms:guest-updates", vm.pk)
    try:
        services.assign_vm(config, vm, f"{config.name}-{vm.name}"[:80], user=request.user)
    except services.ScheduleError as e:
        messages.error(request, e.message)
    except VirtualMachine.DoesNotExist:
        raise Http404 from None
    else:
        messages.success(request, f"Assigned {vm.name} to the maintenance configuration {config.name}.")
    return redirect("vms:guest-updates", vm.pk)


def vm_maintenance_context(vm: VirtualMachine) -> dict:
    """What the VM's pages say about its schedule: the assignment, whether it is inert, the next window."""
    assignment = services.assignment_of(vm)
    context = {
        "maintenance_assignment": assignment,
        "maintenance_inert": assignment is not None and not services.is_schedule_patched(vm),
        "maintenance_choices": MaintenanceConfiguration.objects.filter(
            resource_group__subscription_id=vm.resource_group.subscription_id
        ).order_by("name")[:200],
        "maintenance_next": None,
    }
    if assignment is not None:
        upcoming = services.upcoming(assignment.configuration, clock.now(), 1)
        context["maintenance_next"] = upcoming[0] if upcoming else None
    return context
