"""Maintenance configurations: every write (validated once, for the pages and the API) and the runs.

`run_due(now)` is the scheduler's one step, set-based: it sends the pre-events that are due, starts
the occurrences whose window has opened (installations for every running VM in scope, queued in one
go through services.queue_operations), and closes the windows that have ended (results, counts,
post-events). A Celery beat calls it in real time; a simulated clock calls it with its own `now`
(`execute=True` runs the installations at once). `next_due(now)` says when it next has work.
"""

import logging
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count

from patching import services
from patching.models import IN_FLIGHT, Classification, Operation, OperationKind, OperationStatus, StartedBy
from patching.parameters import InstallParameters, InvalidParameters, from_arm
from vms import clock, regions
from vms.models import ResourceGroup, Subscription, VirtualMachine
from vms.patch_settings import Problem

from . import recurrence, scope, webhooks
from .models import (
    ConfigurationAssignment,
    MachineStatus,
    MaintenanceConfiguration,
    MaintenanceRun,
    RunMachine,
    RunStatus,
    ScheduleReboot,
    Visibility,
    WebhookSubscription,
)

log = logging.getLogger(__name__)

# Learn, "Manage pre and post events" (update-manager/manage-pre-post-events): a pre-event is sent
# up to 20 minutes before the window; a scheduled run can be cancelled until 10 minutes before it.
MAX_PRE_EVENT_MINUTES = 20
CANCEL_CUTOFF = timedelta(minutes=10)
# No new installation is started when less than this remains of the window (Learn, "Scheduling recurring
# updates", Timeline of Maintenance Window: Windows updates need 15 minutes left, else they are skipped).
END_MARGIN = timedelta(minutes=15)
SCHEDULE_REBOOT = {"IfRequired": "IfRequired", "Never": "NeverReboot", "Always": "AlwaysReboot"}
CLASSIFICATIONS = {c.lower(): c for c in Classification.values} | {"updaterollup": Classification.UPDATE_ROLLUP}
P = "properties"
IP = f"{P}.installPatches"


class ScheduleError(Exception):
    """A refusal with Azure's code and HTTP status (the API answers it; the pages show the message)."""

    def __init__(self, status: int, code: str, message: str, target: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.target = status, code, message, target


# --- Configurations ------------------------------------------------------------------------------


@dataclass
class ConfigurationFields:
    values: dict = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def read_configuration(body: dict) -> ConfigurationFields:
    """The model fields of an ARM MaintenanceConfiguration body, every problem with its property path."""
    out = ConfigurationFields()
    problems = out.problems
    props = body.get("properties") if isinstance(body.get("properties"), dict) else {}
    scope_name = props.get("maintenanceScope")
    if str(scope_name or "").lower() != "inguestpatch":
        problems.append(
            Problem(
                f"{P}.maintenanceScope", "maintenanceScope must be InGuestPatch: this portal schedules guest patching."
            )
        )
    visibility = props.get("visibility") or Visibility.CUSTOM
    if visibility not in Visibility.values:
        problems.append(Problem(f"{P}.visibility", "visibility must be Custom or Public."))
    extension = props.get("extensionProperties") or {}
    if not isinstance(extension, dict) or not all(isinstance(v, str) for v in extension.values()):
        problems.append(Problem(f"{P}.extensionProperties", "extensionProperties must be an object of strings."))
        extension = {}
    mode = next((v for k, v in extension.items() if k.lower() == "inguestpatchmode"), "User")
    if str(mode).lower() not in ("user", "platform"):
        problems.append(
            Problem(f"{P}.extensionProperties.InGuestPatchMode", "InGuestPatchMode must be User or Platform.")
        )
    window = props.get("maintenanceWindow") if isinstance(props.get("maintenanceWindow"), dict) else {}
    strings = {}
    for key in ("startDateTime", "duration", "timeZone", "recurEvery", "expirationDateTime"):
        value = window.get(key)
        if value is not None and not isinstance(value, str):
            problems.append(Problem(f"{P}.maintenanceWindow.{key}", f"{key} must be a string."))
            value = None
        strings[key] = value
    parsed, window_problems = recurrence.window(
        strings["startDateTime"] or "",
        strings["duration"] or "",
        strings["timeZone"] or "",
        strings["recurEvery"] or "",
        strings["expirationDateTime"] or None,
    )
    problems.extend(window_problems)
    tags = body.get("tags") or {}
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        problems.append(Problem("tags", "Tag values must be strings."))
        tags = {}
    install = props.get("installPatches") if isinstance(props.get("installPatches"), dict) else {}
    reboot = install.get("rebootSetting") or ScheduleReboot.IF_REQUIRED
    if not isinstance(reboot, str) or reboot not in ScheduleReboot.values:
        reboot = str(reboot)
        problems.append(Problem(f"{IP}.rebootSetting", "rebootSetting must be IfRequired, Never or Always."))
    windows = install.get("windowsParameters") or {}
    if not isinstance(windows, dict):
        problems.append(Problem(f"{IP}.windowsParameters", "windowsParameters must be an object."))
        windows = {}
    windows = {**windows}
    if isinstance(windows.get("classificationsToInclude"), list):
        windows["classificationsToInclude"] = [
            CLASSIFICATIONS.get(str(c).lower(), c) for c in windows["classificationsToInclude"]
        ]
    if not windows.get("classificationsToInclude") and not windows.get("kbNumbersToInclude"):
        windows["classificationsToInclude"] = [Classification.CRITICAL, Classification.SECURITY]
    try:
        chosen = from_arm({"rebootSetting": SCHEDULE_REBOOT.get(reboot, "IfRequired"), "windowsParameters": windows})
        windows = chosen.to_json()["windowsParameters"]
        windows.pop("maxPatchPublishDate", None)
    except InvalidParameters as e:
        problems.extend(Problem(f"{IP}.{p.target}", p.message) for p in e.problems)
    linux = install.get("linuxParameters") or {}
    if not isinstance(linux, dict):
        problems.append(Problem(f"{IP}.linuxParameters", "linuxParameters must be an object."))
        linux = {}
    location = body.get("location")
    if not isinstance(location, str) or regions.normalize_region(location) is None:
        problems.append(Problem("location", f"location '{location}' is not an Azure region, e.g. westeurope."))
    pre_event = props.get("preEventMinutes", MAX_PRE_EVENT_MINUTES)
    if not isinstance(pre_event, int) or isinstance(pre_event, bool) or not 0 <= pre_event <= MAX_PRE_EVENT_MINUTES:
        problems.append(Problem(f"{P}.preEventMinutes", "preEventMinutes must be a whole number from 0 to 20."))
    if problems:
        return out
    out.values = {
        "location": regions.normalize_region(location),
        "tags": tags,
        "visibility": visibility,
        "extension_properties": {"InGuestPatchMode": "Platform" if str(mode).lower() == "platform" else "User"},
        "start_date_time": parsed.start.strftime(recurrence.TIME_FORMAT),
        "duration": parsed.duration,
        "time_zone": parsed.time_zone,
        # As given ("9999-12-31 23:59:59" is Azure's own default), within the column's 19 characters.
        "expiration_date_time": strings["expirationDateTime"].strip()[:19] if parsed.expiration else "",
        "recur_every": " ".join(strings["recurEvery"].split()),
        "reboot_setting": reboot,
        "windows_parameters": windows,
        "linux_parameters": linux,
        "pre_event_minutes": pre_event,
    }
    return out


def configuration_limit() -> int:
    return settings.PORTAL_MAINTENANCE_MAX_CONFIGURATIONS


def save_configuration(rg: ResourceGroup, name: str, body: dict, *, user=None):
    """Create or replace a configuration from an ARM body: (configuration, created, [Problem])."""
    found = read_configuration(body)
    if not name or len(name) > 80 or not all(c.isalnum() or c in "-_." for c in name):
        found.problems.insert(0, Problem("name", "The name may have letters, digits, '-', '_' and '.', at most 80."))
    if found.problems:
        return None, False, found.problems
    now = clock.now()
    who = user.get_username() if user is not None and user.is_authenticated else ""
    with transaction.atomic():
        Subscription.objects.select_for_update().filter(pk=rg.subscription_id).first()  # serialises the limit
        config = (
            MaintenanceConfiguration.objects.select_for_update().filter(resource_group=rg, name__iexact=name).first()
        )
        if config is None:
            same_region = MaintenanceConfiguration.objects.filter(
                resource_group__subscription_id=rg.subscription_id, location=found.values["location"]
            ).count()
            if same_region >= configuration_limit():
                raise ScheduleError(
                    409,
                    "QuotaExceeded",
                    f"The subscription already has {same_region} maintenance configurations in "
                    f"{found.values['location']}; the limit is {configuration_limit()} per subscription and region.",
                )
            config = MaintenanceConfiguration(
                resource_group=rg, name=name, created_at=now, created_by=who, modified_at=now, modified_by=who
            )
            created = True
        else:
            if found.values["location"] != config.location:
                return None, False, [Problem("location", "The location of a maintenance configuration cannot change.")]
            created = False
            config.version += 1
        for key, value in found.values.items():
            setattr(config, key, value)
        config.modified_at, config.modified_by = now, who
        config.__dict__.pop("window", None)
        config.save()
    return config, created, []


def patch_configuration(config: MaintenanceConfiguration, changes: dict, *, user=None):
    """PATCH: the given properties merged over the stored ones, validated as a whole."""
    current = configuration_to_body(config)
    merged = _merge(current, changes)
    return save_configuration(config.resource_group, config.name, merged, user=user)


def _merge(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in (changes or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def configuration_to_body(config: MaintenanceConfiguration) -> dict:
    """The ARM body of a configuration's settings (what read_configuration reads)."""
    window = {
        "startDateTime": config.start_date_time,
        "duration": recurrence.format_duration(config.duration),
        "timeZone": config.time_zone,
        "recurEvery": config.recur_every,
    }
    if config.expiration_date_time:
        window["expirationDateTime"] = config.expiration_date_time
    return {
        "location": config.location,
        "tags": config.tags,
        "properties": {
            "namespace": "Microsoft.Maintenance",
            "maintenanceScope": "InGuestPatch",
            "visibility": config.visibility,
            "extensionProperties": config.extension_properties,
            "maintenanceWindow": window,
            "installPatches": {
                "rebootSetting": config.reboot_setting,
                "windowsParameters": config.windows_parameters,
                "linuxParameters": config.linux_parameters,
            },
            "preEventMinutes": config.pre_event_minutes,
        },
    }


def delete_configuration(config: MaintenanceConfiguration) -> None:
    config.delete()


def install_parameters(config: MaintenanceConfiguration, remaining: timedelta) -> InstallParameters:
    """The configuration's installPatches, with the time left in the window as maximumDuration."""
    duration = max(timedelta(minutes=10), min(timedelta(hours=4), remaining))
    duration = timedelta(minutes=int(duration.total_seconds() // 60))
    return from_arm(
        {
            "rebootSetting": SCHEDULE_REBOOT[config.reboot_setting],
            "maximumDuration": f"PT{int(duration.total_seconds() // 60)}M",
            "windowsParameters": config.windows_parameters,
        }
    )


# --- Assignments -------------------------------------------------------------------------------------


def static_limit() -> int:
    return settings.PORTAL_MAINTENANCE_MAX_MACHINES


def dynamic_limit() -> int:
    return settings.PORTAL_MAINTENANCE_MAX_DYNAMIC_SCOPES


def _check_name(name: str) -> None:
    if not name or len(name) > 80 or not all(c.isalnum() or c in "-_." for c in name):
        raise ScheduleError(
            400, "InvalidParameter", "The assignment name may have letters, digits, '-', '_' and '.'.", "name"
        )


def assign_vm(config: MaintenanceConfiguration, vm: VirtualMachine, name: str, *, user=None):
    """Assign a configuration to a VM (static): (assignment, created). ScheduleError on a refusal."""
    _check_name(name)
    if config.resource_group.subscription_id != vm.resource_group.subscription_id:
        raise ScheduleError(
            400,
            "InvalidParameter",
            f"The maintenance configuration '{config.name}' is in another subscription than the VM '{vm.name}'.",
            "properties.maintenanceConfigurationId",
        )
    now = clock.now()
    with transaction.atomic():
        MaintenanceConfiguration.objects.select_for_update().filter(pk=config.pk).first()  # serialises the count
        existing = ConfigurationAssignment.objects.filter(vm=vm, name__iexact=name).first()
        if existing is not None:
            if existing.configuration_id != config.pk:
                existing.configuration = config
                existing.save(update_fields=["configuration"])
            return existing, False
        count = config.assignments.filter(vm__isnull=False).count()
        if count >= static_limit():
            raise ScheduleError(
                409,
                "QuotaExceeded",
                f"The maintenance configuration '{config.name}' already has {count} machines; the limit is "
                f"{static_limit()} resource associations per schedule.",
            )
        assignment = ConfigurationAssignment.objects.create(
            configuration=config,
            name=name,
            vm=vm,
            subscription_id=vm.resource_group.subscription_id,
            created_at=now,
            created_by=user.get_username() if user is not None and user.is_authenticated else "",
        )
    return assignment, True


FILTER_KEYS = {"resourceTypes", "resourceGroups", "osTypes", "locations", "tagSettings"}


def read_filter(raw, *, criteria_needed: bool = True) -> dict:
    """A dynamic scope's filter, checked: at least one criterion (at subscription scope), lists of
    strings, Any/All. At resource-group scope the group itself is the criterion: the filter may be empty."""
    target = "properties.filter"
    if raw is None and not criteria_needed:
        return {}
    if not isinstance(raw, dict):
        raise ScheduleError(400, "InvalidParameter", "A dynamic scope needs properties.filter (an object).", target)
    flt = {}
    for key in ("resourceTypes", "resourceGroups", "osTypes", "locations"):
        value = next((v for k, v in raw.items() if k.lower() == key.lower()), None) or []
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise ScheduleError(400, "InvalidParameter", f"filter.{key} must be a list of names.", f"{target}.{key}")
        if value:
            flt[key] = value
    for name in flt.get("osTypes", []):
        if name.lower() not in ("windows", "linux"):
            raise ScheduleError(400, "InvalidParameter", "filter.osTypes are Windows and Linux.", f"{target}.osTypes")
    for name in flt.get("locations", []):
        if regions.normalize_region(name) is None and regions.normalize_region(scope.location_key(name)) is None:
            raise ScheduleError(400, "InvalidParameter", f"'{name}' is not an Azure region.", f"{target}.locations")
    tag_settings = next((v for k, v in raw.items() if k.lower() == "tagsettings"), None)
    if tag_settings:
        if not isinstance(tag_settings, dict):
            raise ScheduleError(
                400, "InvalidParameter", "filter.tagSettings must be an object.", f"{target}.tagSettings"
            )
        tags = tag_settings.get("tags") or {}
        operator = tag_settings.get("filterOperator") or "Any"
        if not isinstance(tags, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in tags.values()
        ):
            raise ScheduleError(
                400,
                "InvalidParameter",
                "filter.tagSettings.tags maps tag names to lists of values.",
                f"{target}.tagSettings.tags",
            )
        if operator not in ("Any", "All"):
            raise ScheduleError(
                400,
                "InvalidParameter",
                "filter.tagSettings.filterOperator must be Any or All.",
                f"{target}.tagSettings.filterOperator",
            )
        if tags:
            flt["tagSettings"] = {"tags": tags, "filterOperator": operator}
    if criteria_needed and not any(
        flt.get(k) for k in ("resourceGroups", "locations", "osTypes", "resourceTypes", "tagSettings")
    ):
        raise ScheduleError(
            400,
            "InvalidParameter",
            "A dynamic scope's filter needs at least one criterion: resourceGroups, locations, osTypes, resourceTypes "
            "or tagSettings.",
            target,
        )
    return flt


def assign_scope(
    config: MaintenanceConfiguration,
    subscription: Subscription,
    name: str,
    raw_filter,
    *,
    user=None,
    resource_group: ResourceGroup | None = None,
):
    """A dynamic scope: the VMs of the subscription (or of one resource group) the filter matches at
    each run. (assignment, created)."""
    _check_name(name)
    flt = read_filter(raw_filter, criteria_needed=resource_group is None)
    now = clock.now()
    with transaction.atomic():
        MaintenanceConfiguration.objects.select_for_update().filter(pk=config.pk).first()
        existing = ConfigurationAssignment.objects.filter(
            subscription=subscription, resource_group=resource_group, vm__isnull=True, name__iexact=name
        ).first()
        if existing is not None:
            existing.configuration, existing.filter = config, flt
            existing.save(update_fields=["configuration", "filter"])
            return existing, False
        count = config.assignments.filter(vm__isnull=True).count()
        if count >= dynamic_limit():
            raise ScheduleError(
                409,
                "QuotaExceeded",
                f"The maintenance configuration '{config.name}' already has {count} dynamic scopes; the limit is "
                f"{dynamic_limit()} per schedule.",
            )
        try:
            with transaction.atomic():
                assignment = ConfigurationAssignment.objects.create(
                    configuration=config,
                    name=name,
                    subscription=subscription,
                    resource_group=resource_group,
                    filter=flt,
                    created_at=now,
                    created_by=user.get_username() if user is not None and user.is_authenticated else "",
                )
        except IntegrityError:
            raise ScheduleError(409, "Conflict", f"The assignment '{name}' was created meanwhile; try again.") from None
    return assignment, True


def find_configuration(user_subscriptions, configuration_id: str) -> MaintenanceConfiguration:
    """The configuration an assignment body names by ARM id, among the caller's subscriptions."""
    parts = [p for p in str(configuration_id or "").split("/") if p]
    lowered = [p.lower() for p in parts]
    target = "properties.maintenanceConfigurationId"
    try:
        sub = parts[lowered.index("subscriptions") + 1]
        rg = parts[lowered.index("resourcegroups") + 1]
        name = parts[lowered.index("maintenanceconfigurations") + 1]
    except (ValueError, IndexError):
        raise ScheduleError(
            400,
            "InvalidParameter",
            "maintenanceConfigurationId must be the ARM id of a maintenance configuration: /subscriptions/{id}/"
            "resourceGroups/{rg}/providers/Microsoft.Maintenance/maintenanceConfigurations/{name}.",
            target,
        ) from None
    try:
        subscription_id = uuid.UUID(sub)
    except ValueError:
        subscription_id = None
    config = (
        MaintenanceConfiguration.objects.select_related("resource_group")
        .filter(
            resource_group__subscription__in=user_subscriptions,
            resource_group__subscription_id=subscription_id,
            resource_group__name__iexact=rg,
            name__iexact=name,
        )
        .first()
        if subscription_id
        else None
    )
    if config is None:
        raise ScheduleError(
            404, "ResourceNotFound", f"The maintenance configuration '{configuration_id}' was not found.", target
        )
    return config


def assignment_of(vm: VirtualMachine) -> ConfigurationAssignment | None:
    """The VM's static assignment, or the first dynamic scope matching it now."""
    static = ConfigurationAssignment.objects.select_related("configuration").filter(vm=vm).first()
    if static is not None:
        return static
    for assignment in ConfigurationAssignment.objects.select_related("configuration").filter(
        subscription_id=vm.resource_group.subscription_id, vm__isnull=True
    ):
        matches = scope.dynamic_matches(assignment.subscription_id, assignment.filter, assignment.resource_group_id)
        if matches.filter(pk=vm.pk).exists():
            return assignment
    return None


def is_schedule_patched(vm: VirtualMachine) -> bool:
    """Customer Managed Schedules: AutomaticByPlatform with bypassPlatformSafetyChecksOnUserSchedule.

    Without the flag an assignment is inert and the platform's own rules apply (Learn, "Configure
    schedule patching on Azure VMs for business continuity", prerequsite-for-schedule-patching).
    """
    return vm.patch_mode == "AutomaticByPlatform" and vm.bypass_platform_safety_checks


# --- Runs -------------------------------------------------------------------------------------------


def _since(config: MaintenanceConfiguration, now):
    """Occurrences from the configuration's creation on whose window is not over at `now` (a window the
    clock jumped over entirely is not started late)."""
    return max(config.created_at, now - config.duration + timedelta(seconds=1))


def upcoming(config: MaintenanceConfiguration, now, count: int = 10):
    """The next occurrences (UTC starts) not yet over, from now."""
    return config.window.next(now - config.duration + timedelta(seconds=1), count)


@dataclass
class Step:
    pre_events: int = 0
    started: list[int] = field(default_factory=list)  # run ids
    queued: int = 0
    closed: list[int] = field(default_factory=list)
    operations: list[int] = field(default_factory=list)


def run_due(now=None, *, execute: bool = False) -> Step:
    """One step of the scheduler at `now`: pre-events due, windows opened, windows ended.

    Each configuration's occurrences whose window is not over yet are looked at; a run row is made
    once per occurrence (unique), when its pre-event or its start comes, and every change of its
    status is a compare-and-swap: two beats, or a beat and the sandbox, do each thing once.
    """
    now = now or clock.now()
    step = Step()
    with_hooks = set(WebhookSubscription.objects.filter(pre_event=True).values_list("configuration_id", flat=True))
    for config in MaintenanceConfiguration.objects.select_related("resource_group"):
        lead = config.pre_event_lead if config.pk in with_hooks else timedelta(0)
        for start in config.window.next(_since(config, now), 2):
            if start - lead > now:
                break
            run = _run_for(config, start, start + config.duration)
            if run.is_pending and run.pre_event_at is None and lead and now < start:
                if MaintenanceRun.objects.filter(pk=run.pk, pre_event_at__isnull=True).update(pre_event_at=now):
                    webhooks.queue(run, webhooks.PRE_EVENT, now)
                    step.pre_events += 1
            if start <= now and run.is_pending:
                ids = start_run(run, now, execute=execute)
                if ids is not None:
                    step.started.append(run.pk)
                    step.queued += len(ids)
                    step.operations.extend(ids)
    for run in MaintenanceRun.objects.filter(status=RunStatus.IN_PROGRESS, window_end__lte=now).select_related(
        "configuration__resource_group"
    ):
        if close_run(run, now):
            step.closed.append(run.pk)
    return step


def _run_for(config, start, end) -> MaintenanceRun:
    run, _ = MaintenanceRun.objects.get_or_create(
        configuration=config, scheduled_start=start, defaults={"window_end": end}
    )
    return run


def start_run(run: MaintenanceRun, now, *, execute: bool = False) -> list[int] | None:
    """Open a run's window: queue installations for every running VM in scope (set-based); record the
    VMs that were off or whose assignment is inert as skipped. None if another step already did."""
    config = run.configuration
    remaining = run.window_end - now - END_MARGIN
    with transaction.atomic():
        if not MaintenanceRun.objects.filter(pk=run.pk, status=RunStatus.PENDING).update(
            status=RunStatus.IN_PROGRESS, started_at=now
        ):
            return None
        vms = list(
            scope.in_scope(config)
            .select_related("resource_group")
            .only(
                "pk",
                "name",
                "location",
                "power_state",
                "patch_mode",
                "bypass_platform_safety_checks",
                "resource_group__subscription_id",
                "resource_group__name",
            )
        )
        ready, skipped = [], []
        for vm in vms:
            if not is_schedule_patched(vm):
                skipped.append(
                    (
                        vm,
                        "Patch orchestration is not Customer Managed Schedules "
                        "(AutomaticByPlatform with bypassPlatformSafetyChecksOnUserSchedule): the "
                        "platform patches this VM and the assignment is inert.",
                    )
                )
            elif not vm.is_running:
                skipped.append((vm, f"The VM was {vm.get_power_state_display().lower()} when the window opened."))
            elif remaining <= timedelta(0):
                skipped.append((vm, "Less than 15 minutes of the window were left: no installation was started."))
            else:
                ready.append(vm)
        ids = []
        if ready:
            ids = services.queue_operations(
                ready,
                OperationKind.INSTALLATION,
                started_by=StartedBy.SCHEDULE,
                parameters=install_parameters(config, remaining),
                now=now,
                enqueue=not execute,
            )
        # An installation another run (an overlapping scope) queued at the same moment is not this run's.
        by_vm = dict(Operation.objects.filter(pk__in=ids, maintenance_result__isnull=True).values_list("vm_id", "pk"))
        ids = list(by_vm.values())
        rows = [
            RunMachine(run=run, vm=vm, vm_name=vm.name, operation_id=by_vm[vm.pk], status=MachineStatus.QUEUED)
            for vm in ready
            if vm.pk in by_vm
        ]
        rows += [
            RunMachine(
                run=run,
                vm=vm,
                vm_name=vm.name,
                status=MachineStatus.SKIPPED,
                reason="An installation was already running on the VM.",
            )
            for vm in ready
            if vm.pk not in by_vm
        ]
        rows += [
            RunMachine(run=run, vm=vm, vm_name=vm.name, status=MachineStatus.SKIPPED, reason=why) for vm, why in skipped
        ]
        RunMachine.objects.bulk_create(rows, batch_size=2000)
    if execute and ids:
        services.execute_operations(ids, now=now)
    return ids


def close_run(run: MaintenanceRun, now) -> bool:
    """The window has ended: each VM's result from its installation, the counts, the post-event."""
    with transaction.atomic():
        if not MaintenanceRun.objects.filter(pk=run.pk, status=RunStatus.IN_PROGRESS).update(
            status=RunStatus.COMPLETED, ended_at=now
        ):
            return False
        rows = RunMachine.objects.filter(run=run, status=MachineStatus.QUEUED).values_list(
            "pk", "operation__status", "operation__finished_at", "operation__maintenance_window_exceeded"
        )
        outcome = {MachineStatus.SUCCEEDED: [], MachineStatus.FAILED: [], MachineStatus.WINDOW_EXCEEDED: []}
        for pk, status, finished, exceeded in rows:
            if status in (None, *IN_FLIGHT) or finished is None or finished > run.window_end or exceeded:
                outcome[MachineStatus.WINDOW_EXCEEDED].append(pk)
            elif status == OperationStatus.FAILED:
                outcome[MachineStatus.FAILED].append(pk)
            else:
                outcome[MachineStatus.SUCCEEDED].append(pk)
        for status, pks in outcome.items():
            if pks:
                RunMachine.objects.filter(pk__in=pks).update(status=status)
        counts = dict(RunMachine.objects.filter(run=run).values_list("status").annotate(n=Count("pk")))
        MaintenanceRun.objects.filter(pk=run.pk).update(counts=counts)
        run.refresh_from_db()
        webhooks.queue(run, webhooks.POST_EVENT, now)
    return True


def prune_runs(now) -> int:
    """Runs (with their per-VM results and deliveries) older than the history's retention are deleted."""
    cutoff = now - timedelta(days=settings.PORTAL_HISTORY_RETENTION_DAYS)
    deleted, _ = MaintenanceRun.objects.filter(window_end__lt=cutoff).delete()
    return deleted


def cancel_occurrence(config: MaintenanceConfiguration, start, *, by: str, now=None) -> MaintenanceRun:
    """Cancel a scheduled occurrence until 10 minutes before it starts (ScheduleError otherwise)."""
    now = now or clock.now()
    if start not in config.window.next(start, 1):
        raise ScheduleError(
            404, "ResourceNotFound", f"No occurrence of '{config.name}' starts at {start:%Y-%m-%d %H:%M} UTC."
        )
    if now > start - CANCEL_CUTOFF:
        raise ScheduleError(
            409,
            "Conflict",
            f"The run at {start:%Y-%m-%d %H:%M} UTC can no longer be cancelled: cancellation closes 10 minutes "
            "before the window starts.",
        )
    run = _run_for(config, start, start + config.duration)
    if run.is_cancelled:
        return run
    if not MaintenanceRun.objects.filter(pk=run.pk, status=RunStatus.PENDING).update(
        status=RunStatus.CANCELLED, cancelled_by=by[:150], ended_at=now
    ):
        raise ScheduleError(409, "Conflict", "The run has already started.")
    run.refresh_from_db()
    return run


def next_due(now) -> object | None:
    """When run_due next has something to do (a pre-event, a start, a window's end), for a stepping clock."""
    moments = list(
        MaintenanceRun.objects.filter(status=RunStatus.IN_PROGRESS, window_end__gt=now)
        .order_by("window_end")
        .values_list("window_end", flat=True)[:1]
    )
    with_hooks = set(WebhookSubscription.objects.filter(pre_event=True).values_list("configuration_id", flat=True))
    for config in MaintenanceConfiguration.objects.all():
        lead = config.pre_event_lead if config.pk in with_hooks else timedelta(0)
        for start in config.window.next(_since(config, now), 2):
            future = [m for m in (start - lead, start) if m > now]
            if future:
                moments.append(min(future))
                break
    return min(moments, default=None)


def new_webhook_secret() -> str:
    return secrets.token_urlsafe(32)


def add_webhook(config: MaintenanceConfiguration, url: str, *, pre_event=True, post_event=True) -> WebhookSubscription:
    problem = webhooks.check_url(url)
    if problem:
        raise ScheduleError(400, "InvalidParameter", problem, "url")
    return WebhookSubscription.objects.create(
        configuration=config,
        url=url,
        secret=new_webhook_secret(),
        pre_event=pre_event,
        post_event=post_event,
        created_at=clock.now(),
    )


def visible_configurations(user):
    from vms.access import subscriptions_for

    return MaintenanceConfiguration.objects.filter(resource_group__subscription__in=subscriptions_for(user))
