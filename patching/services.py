"""The writes that span several models: provisioning a guest, starting and running operations.

Everything that assesses or installs goes through `start_operation` / `queue_operations` (one row per
run) and `execute_operations` (the one way to run them): the views, the API, the admin, the
platform's beat tasks, the fleet simulation and the demo seeder's simulated past.
"""

import dataclasses
import hashlib
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, F, OuterRef, Q, Subquery, When
from django.utils import timezone

from vms import clock as world_clock
from vms import fleet_import, images, regions
from vms.features import preview_gate_problems
from vms.models import RESOURCE_NAME_RE, ResourceGroup, VirtualMachine
from vms.patch_settings import PatchSettings, Problem, defaults_for_image

from . import calendar, faults, rollup
from . import guest as sim
from .models import (
    GuestState,
    HotpatchStatus,
    InstalledUpdate,
    MissingUpdate,
    Operation,
    OperationKind,
    OperationStatus,
    PatchResult,
    PatchState,
    RebootStatus,
    StartedBy,
    Update,
)
from .parameters import CRITICAL_AND_SECURITY, InstallParameters
from .vocabulary import UpdateKind

log = logging.getLogger(__name__)

# The Celery task (patching/tasks.py) that runs a queued operation, sent by name: tasks import this module.
RUN_OPERATION_TASK = "patching.tasks.run_operation"


def send_to_workers(operation_ids: list[int]) -> list[int]:
    """Hand committed operations to Celery (from transaction.on_commit, or the dispatcher); never raises.

    The committed row is the outbox: a publish that fails (the broker is down) is logged and left to
    `dispatch_queued`, because the operation was already accepted and the request must say so. Marks
    the ones published as dispatched and returns their ids.
    """
    sent = []
    try:
        for pk in operation_ids:
            current_app.send_task(RUN_OPERATION_TASK, (pk,))
            sent.append(pk)
    except Exception as exc:  # kombu's OperationalError, a socket error, a timeout: whatever the broker did
        # One line, no traceback: during an outage every request says it.
        log.warning(
            "Could not hand %d operation(s) to the broker (%s: %s); the dispatcher will send them",
            len(operation_ids) - len(sent),
            type(exc).__name__,
            exc,
        )
    if sent:
        Operation.objects.filter(pk__in=sent).update(dispatched_at=timezone.now())
    return sent


# A row younger than this is left to its own on_commit publish before the dispatcher sends it.
DISPATCH_GRACE = timedelta(seconds=5)
DISPATCH_BATCH = 500


def _dead_runs(now: datetime):
    """Runs in progress whose heartbeat stopped, that may still be taken over (see _claim)."""
    cutoff = now - settings.PORTAL_HEARTBEAT_TIMEOUT
    return Q(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff),
        status=OperationStatus.IN_PROGRESS,
        attempts__lt=settings.PORTAL_MAX_ATTEMPTS,
    )


def dispatch_queued(now: datetime | None = None, *, batch: int = DISPATCH_BATCH) -> int:
    """The outbox's sender (beat): hand to the workers what should be running and was not sent recently.

    That is: queued operations never handed over (the publish failed) or handed over more than
    PORTAL_DISPATCH_AGAIN_AFTER ago (the message was lost), and runs whose worker died (heartbeat
    stale), which a worker then takes over. Set-based, in batches; each batch is claimed by setting
    `dispatched_at` under SKIP LOCKED, so two beats send each row once (a second copy would be
    harmless anyway: the claim is compare-and-swap). Stops at the first publish that fails and gives
    the unsent rows back to the next beat. Returns how many were sent.
    """
    now = now or timezone.now()
    due = (
        Operation.objects.filter(
            Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=now - settings.PORTAL_DISPATCH_AGAIN_AFTER)
        )
        .filter(Q(status=OperationStatus.NOT_STARTED, created_at__lt=now - DISPATCH_GRACE) | _dead_runs(now))
        .order_by("created_at")
    )
    total = 0
    while True:
        with transaction.atomic():
            ids = list(due.select_for_update(skip_locked=True).values_list("pk", flat=True)[:batch])
            Operation.objects.filter(pk__in=ids).update(dispatched_at=now)
        sent = send_to_workers(ids)
        total += len(sent)
        if len(sent) < len(ids):
            unsent = set(ids) - set(sent)
            Operation.objects.filter(pk__in=unsent, dispatched_at=now).update(dispatched_at=None)
            return total
        if len(ids) < batch:
            return total


class AgentUnreachable(Exception):
    """The guest agent did not answer: transient, the task retries."""


# --- Reading state into the pure simulation -------------------------------------------------------


_fixed_catalogs: ContextVar[dict | None] = ContextVar("fixed_catalogs", default=None)


@contextmanager
def fixed_catalog():
    """Within this block each product's catalog is read once: for runs that know it does not change
    meanwhile (the fleet simulation, the demo's history), where reading it per operation dominates."""
    token = _fixed_catalogs.set({})
    try:
        yield
    finally:
        _fixed_catalogs.reset(token)


def fixed_catalogs() -> dict | None:
    """The catalogs memo of the enclosing fixed_catalog() block, or None outside one."""
    return _fixed_catalogs.get()


def catalog_for(product: str) -> list[sim.Patch]:
    """The product's whole catalog as the guest sees it (a few hundred rows, one query)."""
    fixed = _fixed_catalogs.get()
    if fixed is not None and product in fixed:
        return fixed[product]
    rows = Update.objects.filter(product=product).values_list(
        "id", "kb", "kind", "classification", "reboot_behavior", "published_at", "build", "baseline_id"
    )
    patches = [sim.Patch(*row) for row in rows]
    if fixed is not None:
        fixed[product] = patches
    return patches


def guest_state(vm: VirtualMachine) -> GuestState | None:
    """The VM's guest state, or None for a VM created without one (the admin allows it)."""
    try:
        return vm.guest
    except VirtualMachine.guest.RelatedObjectDoesNotExist:
        return None


def guests_of(vms: list[VirtualMachine]) -> dict[int, sim.Guest]:
    """The guest as the pure simulation sees it, for each VM (with its guest state loaded): one query."""
    installed: dict[int, set[int]] = {vm.pk: set() for vm in vms}
    for guest_id, update_id in InstalledUpdate.objects.filter(guest_id__in=list(installed)).values_list(
        "guest_id", "update_id"
    ):
        installed[guest_id].add(update_id)
    return {
        vm.pk: sim.Guest(
            hotpatch_enrolled=vm.enable_hotpatching and vm.hotpatch_capable,
            build=vm.guest.build,
            baseline_id=vm.guest.baseline_id,
            installed=frozenset(installed[vm.pk]),
            reboot_pending=vm.guest.reboot_pending,
        )
        for vm in vms
    }


def hotpatch_verdict(vm: VirtualMachine, state: GuestState, guest: sim.Guest, catalog: list[sim.Patch], now: datetime):
    baseline = sim.latest_baseline(catalog, now)
    label = f"the {baseline.published_at:%Y-%m} baseline KB{baseline.kb}" if baseline else ""
    return sim.hotpatch_status(
        capable=vm.hotpatch_capable,
        enabled=vm.enable_hotpatching,
        patch_mode=vm.patch_mode,
        assessed=state.assessed_at is not None,
        guest=guest,
        baseline=baseline,
        baseline_label=label,
    )


def refresh_hotpatch_status(vm: VirtualMachine, now: datetime | None = None, *, turned_on: bool = False) -> None:
    """Recompute the stored hotpatch status after a settings change.

    Turning hotpatch on is only confirmed by the next assessment: until then, PendingEvaluation.
    """
    now = now or world_clock.now()
    state = vm.guest
    verdict = hotpatch_verdict(vm, state, guests_of([vm])[vm.pk], catalog_for(vm.product), now)
    if turned_on and verdict.status in (HotpatchStatus.ENABLED, HotpatchStatus.ACTION_REQUIRED):
        verdict = sim.HotpatchVerdict(HotpatchStatus.PENDING_EVALUATION, "Waiting for the next assessment.")
    GuestState.objects.filter(pk=state.pk).update(hotpatch_status=verdict.status, hotpatch_status_reason=verdict.reason)


# --- The lock order -------------------------------------------------------------------------------


def lock_vms(pks: Iterable[int]) -> list[VirtualMachine]:
    """Lock VM rows (SELECT ... FOR UPDATE), in pk order; the ones that still exist. Inside a transaction.

    THE LOCK ORDER, for every path that writes a VM together with its guest state or operations
    (create, PATCH/PUT, DELETE, starting, recording and failing operations, power actions): first the
    VirtualMachine rows (this function, ordered by pk when there are several), then their GuestState
    rows, then their Operation rows, each set in pk order. Two paths that take the same locks in the
    same order wait for each other instead of deadlocking. A DELETE takes the VM lock first and wins:
    whoever comes after it finds the VM gone (404), whoever came before has committed.
    """
    return list(VirtualMachine.objects.select_for_update().filter(pk__in=list(pks)).order_by("pk"))


def lock_vm(pk: int) -> VirtualMachine | None:
    """lock_vms for one VM: the locked row, or None if it is gone."""
    locked = lock_vms([pk])
    return locked[0] if locked else None


# --- Patch settings -------------------------------------------------------------------------------


def check_patch_settings(
    vm: VirtualMachine, new: PatchSettings, *, creating: bool = False, now: datetime | None = None
) -> list[Problem]:
    """The patchSettings rules plus hotpatch re-enrolment: only once a baseline came out after turning it off."""
    problems = vm.validate_patch_settings(new, creating=creating)
    if new.enable_hotpatching and (creating or not vm.enable_hotpatching) and not problems:
        target = "properties.osProfile.windowsConfiguration.patchSettings.enableHotpatching"
        problems += [Problem(target, message) for message in preview_gate_problems(vm.resource_group.subscription)]
    if not creating and new.enable_hotpatching and not vm.enable_hotpatching and vm.hotpatch_disabled_at:
        now = now or world_clock.now()
        released = (
            Update.objects.baselines()
            .filter(product=vm.product, published_at__gt=vm.hotpatch_disabled_at, published_at__lte=now)
            .exists()
        )
        if not released:
            when = calendar.next_baseline_date(vm.product, vm.hotpatch_disabled_at)
            problems.append(
                Problem(
                    "properties.osProfile.windowsConfiguration.patchSettings.enableHotpatching",
                    f"Hotpatch was turned off on {vm.hotpatch_disabled_at:%Y-%m-%d}. It can be turned on again once "
                    f"the next baseline has been released, on {when:%Y-%m-%d}.",
                )
            )
    return problems


class StaleVersion(Exception):
    """The VM changed since the caller read it: its version is no longer the one the caller saw."""

    def __init__(self, vm: VirtualMachine):
        super().__init__(f"The virtual machine '{vm.name}' was changed meanwhile (now version {vm.version}).")
        self.vm = vm


def update_virtual_machine(
    vm_pk: int,
    changes: dict,
    *,
    size: str | None = None,
    versions: Collection[int] | None = None,
    now: datetime | None = None,
) -> tuple[VirtualMachine, list[Problem]]:
    """Merge patchSettings `changes` (PatchSettings field names) and a new size onto the VM as it is now.

    Under the VM's lock (see lock_vms): the values are read again there, so two concurrent updates of
    different fields both land. `versions` (If-Match, the settings form's hidden field) must contain the
    VM's current version, else StaleVersion. Returns (vm, problems); with problems nothing is written.
    Every write bumps the version (the etag). VirtualMachine.DoesNotExist if the VM is gone.
    """
    now = now or world_clock.now()
    with transaction.atomic():
        vm = lock_vm(vm_pk)
        if vm is None:
            raise VirtualMachine.DoesNotExist(f"VirtualMachine {vm_pk} was deleted.")
        if versions is not None and vm.version not in versions:
            raise StaleVersion(vm)
        new = vm.patch_settings.with_changes(**changes)
        settings_changed = new != vm.patch_settings
        if settings_changed and (problems := check_patch_settings(vm, new, now=now)):
            return vm, problems
        if not settings_changed and (not size or size == vm.size):
            return vm, []  # nothing to write: the etag stays
        turned_on = new.enable_hotpatching and not vm.enable_hotpatching
        if vm.enable_hotpatching and not new.enable_hotpatching:
            vm.hotpatch_disabled_at = now  # unenrolled: re-enrolment waits for the next baseline
        vm.apply_patch_settings(new)
        vm.size = size or vm.size
        vm.version += 1
        # Only these columns: power state changes elsewhere, with targeted updates of its own.
        vm.save(update_fields=[*VirtualMachine.PATCH_SETTINGS_FIELDS, "hotpatch_disabled_at", "size", "version"])
        if settings_changed:
            refresh_hotpatch_status(vm, now, turned_on=turned_on)  # the guest state: second in the lock order
    return vm, []


def change_patch_settings(vm: VirtualMachine, new: PatchSettings, *, now: datetime | None = None) -> list[Problem]:
    """Validate and apply whole new patchSettings to an existing VM; returns the problems, empty on success.

    `vm` gets the stored values. Callers that change some fields use update_virtual_machine (merged).
    """
    updated, problems = update_virtual_machine(vm.pk, dataclasses.asdict(new), now=now)
    if not problems:
        for name in (*VirtualMachine.PATCH_SETTINGS_FIELDS, "hotpatch_disabled_at", "version"):
            setattr(vm, name, getattr(updated, name))
    return problems


# --- Provisioning ---------------------------------------------------------------------------------


def provision_guest(vm: VirtualMachine, now: datetime, *, behind_by_months: int = 0) -> GuestState:
    """Install the image's current build on a new VM (see provision_guests)."""
    provision_guests([vm], now, behind_by_months=behind_by_months)
    return GuestState.objects.get(pk=vm.pk)


def provision_guests(vms: list[VirtualMachine], now: datetime, *, behind_by_months: int = 0) -> None:
    """Give new VMs their guest: the image's build is the latest baseline (or monthly update) by `now`.

    `behind_by_months` provisions an older image, e.g. VMs that have fallen off the baseline.
    Set-based: three queries whatever the number of VMs.
    """
    images: dict[tuple[str, bool], sim.Patch | None] = {}
    catalogs: dict[str, list[sim.Patch]] = {}
    states, installs = [], []
    for vm in vms:
        if vm.product not in catalogs:
            catalogs[vm.product] = [p for p in catalog_for(vm.product) if p.published_at <= now]
        key = (vm.product, vm.hotpatch_capable)
        if key not in images:
            kinds = sim.BASELINE_KINDS if vm.hotpatch_capable else sim.SECURITY_CUMULATIVE_KINDS
            cumulative = sorted((p for p in catalogs[vm.product] if p.kind in kinds), key=lambda p: p.published_at)
            images[key] = cumulative[-1 - min(behind_by_months, len(cumulative) - 1)] if cumulative else None
        image = images[key]
        state = GuestState(
            vm=vm,
            vm_name=vm.name,
            build=image.build if image else "",
            baseline_id=image.id if image and image.kind in sim.BASELINE_KINDS else None,
            last_boot_at=now,
        )
        guest = sim.Guest(
            vm.enable_hotpatching and vm.hotpatch_capable,
            state.build,
            state.baseline_id,
            frozenset({image.id} if image else ()),
        )
        verdict = hotpatch_verdict(vm, state, guest, catalogs[vm.product], now)
        state.hotpatch_status, state.hotpatch_status_reason = verdict.status, verdict.reason
        states.append(state)
        if image:
            installs.append(InstalledUpdate(guest=state, update_id=image.id, installed_at=now))
    GuestState.objects.bulk_create(states, batch_size=2000)
    InstalledUpdate.objects.bulk_create(installs, batch_size=2000)


# --- Creating and deleting VMs --------------------------------------------------------------------


def create_virtual_machine(
    *,
    resource_group: ResourceGroup,
    name: str,
    location: str,
    image_sku: str,
    size: str = "Standard_D2s_v5",
    image_publisher: str = images.PUBLISHER,
    image_offer: str = images.OFFER,
    time_zone: str = "UTC",
    zone: str = "",
    availability_set: str = "",
    patch_settings: PatchSettings | None = None,
    now: datetime | None = None,
) -> tuple[VirtualMachine | None, list[Problem]]:
    """Create a VM the way the portal's create form and the API's PUT do (the seed's getting-started path).

    Returns (vm, []) or (None, problems). The guest is provisioned on the image's current baseline and
    its first assessment is queued. `patch_settings` None means the defaults for the image.
    """
    now = now or world_clock.now()
    problems: list[Problem] = []
    region = regions.normalize_region(location or "")
    if region is None:
        problems.append(Problem("location", f"'{location}' is not a known region."))
    if not RESOURCE_NAME_RE.match(name or ""):
        problems.append(Problem("name", f"'{name}' is not a valid VM name: use 1-64 letters, digits, '-', '_' or '.'."))
    elif VirtualMachine.objects.filter(resource_group=resource_group, name__iexact=name).exists():
        problems.append(Problem("name", f"A VM named '{name}' already exists in resource group '{resource_group}'."))
    product = images.product_for_image(image_publisher, image_offer, image_sku)
    if product is None:
        problems.append(
            Problem(
                "properties.storageProfile.imageReference",
                f"Image {image_publisher}:{image_offer}:{image_sku} is not offered; use one of {', '.join(images.ALL_SKUS)}.",
            )
        )
    if zone and zone not in ("1", "2", "3"):
        problems.append(Problem("zones", f"Zone '{zone}' does not exist; use 1, 2 or 3."))
    if zone and availability_set:
        problems.append(Problem("zones", "A VM is either in an availability zone or in an availability set, not both."))
    try:
        ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(
            Problem("properties.osProfile.windowsConfiguration.timeZone", f"Unknown time zone '{time_zone}'.")
        )
    if problems:
        return None, problems

    settings_ = patch_settings or defaults_for_image(image_publisher, image_offer, image_sku, region)
    vm = VirtualMachine(
        resource_group=resource_group,
        name=name,
        location=region,
        zone=zone,
        availability_set=availability_set,
        update_domain=_next_update_domain(resource_group, availability_set) if availability_set else None,
        size=size,
        image_publisher=images.PUBLISHER,
        image_offer=images.OFFER,
        image_sku=image_sku.lower(),
        product=product.code,
        time_zone=time_zone,
        created_at=now,
    )
    problems = check_patch_settings(vm, settings_, creating=True, now=now)
    if problems:
        return None, problems
    vm.apply_patch_settings(settings_)
    with transaction.atomic():
        vm.save()
        provision_guests([vm], now)
        start_operation(vm, OperationKind.ASSESSMENT, started_by=StartedBy.PLATFORM, now=now)
    return vm, []


def _next_update_domain(resource_group: ResourceGroup, availability_set: str, domains: int = 5) -> int:
    """Azure spreads an availability set's VMs round-robin over its update domains."""
    return (
        VirtualMachine.objects.filter(resource_group=resource_group, availability_set=availability_set).count()
        % domains
    )


def delete_virtual_machine(vm: VirtualMachine) -> bool:
    """Delete a VM; its operations in flight fail cleanly, its history stays (without the VM link).

    In the lock order (lock_vms): the VM first, so a PATCH or a start that comes later waits and then
    finds the VM gone, and a run that finishes later records VMDeleted. False if it was already gone.
    """
    with transaction.atomic():
        if lock_vm(vm.pk) is None:
            return False
        list(GuestState.objects.select_for_update().filter(pk=vm.pk))  # second in the lock order
        in_flight = vm.operations.in_flight().select_for_update().order_by("pk").values_list("pk", flat=True)
        for pk in list(in_flight):
            fail_operation(pk, "VMDeleted", f"The virtual machine '{vm.name}' was deleted.")
        vm.delete()
    return True


# --- Starting operations --------------------------------------------------------------------------


def new_operation(vm: VirtualMachine, kind: str, started_by: str, user, body: dict, created_at: datetime) -> Operation:
    """An unsaved Operation row for a run on the VM (its name and location kept for when it is gone)."""
    return Operation(
        vm=vm,
        subscription_id=vm.resource_group.subscription_id,
        vm_name=vm.name,
        location=vm.location,
        kind=kind,
        started_by=started_by,
        user=user if started_by == StartedBy.USER else None,
        parameters=body,
        created_at=created_at,
    )


def start_operation(
    vm: VirtualMachine,
    kind: str,
    *,
    user=None,
    started_by: str = StartedBy.USER,
    parameters: InstallParameters | None = None,
    now: datetime | None = None,
    enqueue: bool = True,
) -> tuple[Operation, bool]:
    """Queue an assessment or installation, or return the one of that kind already in flight.

    Returns (operation, created). The database's partial unique index, not this code, guarantees
    that at most one of each kind is in flight per VM. VirtualMachine.DoesNotExist if the VM was
    deleted (the API answers 404).
    """
    if kind == OperationKind.INSTALLATION:
        parameters = parameters or CRITICAL_AND_SECURITY
    for _attempt in range(3):
        try:
            with transaction.atomic():
                # The VM's lock first (lock_vms): a DELETE cannot slip in between the check and the insert.
                if lock_vm(vm.pk) is None:
                    raise VirtualMachine.DoesNotExist(f"The virtual machine '{vm.name}' was deleted.")
                operation = new_operation(
                    vm, kind, started_by, user, parameters.to_json() if parameters else {}, now or world_clock.now()
                )
                operation.save()
        except IntegrityError as e:
            # PostgreSQL names the constraint; SQLite (the embedded default) does not: then read what is there.
            name = _constraint(e)
            if name is not None and name != IN_FLIGHT_CONSTRAINT:
                if VirtualMachine.objects.filter(pk=vm.pk).exists():
                    raise
                raise VirtualMachine.DoesNotExist(f"The virtual machine '{vm.name}' was deleted.") from e
            running = Operation.objects.in_flight().filter(vm_id=vm.pk, kind=kind).first()
            if running is not None:
                return running, False
            continue  # the one in flight finished meanwhile: try again
        if enqueue:
            transaction.on_commit(lambda pk=operation.pk: send_to_workers([pk]))
        return operation, True
    # Three runs started and finished under our feet: the VM is busy, name what is there now.
    running = Operation.objects.in_flight().filter(vm_id=vm.pk, kind=kind).first()
    if running is None:
        raise RuntimeError(f"Could not start a {kind} on '{vm.name}': runs keep starting and finishing.")
    return running, False


# The partial unique index that allows one operation in flight per VM and kind (patching/models.py).
IN_FLIGHT_CONSTRAINT = "one_in_flight_per_vm_and_kind"


def _constraint(error: IntegrityError) -> str | None:
    """The name of the constraint PostgreSQL reports for an IntegrityError (None on other databases)."""
    diag = getattr(error.__cause__, "diag", None)
    return getattr(diag, "constraint_name", None)


def start_operations(
    vms,
    kind: str,
    *,
    started_by: str = StartedBy.PLATFORM,
    parameters: InstallParameters | None = None,
    now: datetime | None = None,
) -> int:
    """Queue one operation of `kind` for each VM that has none in flight; set-based, for the platform.

    Returns how many were queued. VMs with one in flight are skipped by the database (ON CONFLICT).
    """
    return len(queue_operations(vms, kind, started_by=started_by, parameters=parameters, now=now))


def queue_operations(
    vms,
    kind: str,
    *,
    started_by: str = StartedBy.PLATFORM,
    parameters: InstallParameters | None = None,
    now: datetime | None = None,
    enqueue: bool = True,
    user=None,
) -> list[int]:
    """start_operations, returning the new operations' ids; `enqueue=False` leaves running them to the
    caller (a simulated clock runs them with execute_operations(ids, now=...)). `user` is who asked, for
    operations a person started on many VMs at once (the admin's actions)."""
    now = now or world_clock.now()
    if kind == OperationKind.INSTALLATION:
        parameters = parameters or CRITICAL_AND_SECURITY
    body = parameters.to_json() if parameters else {}
    rows = [new_operation(vm, kind, started_by, user, body, now) for vm in vms]
    with transaction.atomic():
        # The VMs' locks first (lock_vms): a VM deleted meanwhile gets no operation (and no FK violation).
        alive = {vm.pk for vm in lock_vms(row.vm_id for row in rows)}
        Operation.objects.bulk_create([r for r in rows if r.vm_id in alive], batch_size=2000, ignore_conflicts=True)
        queued = list(
            Operation.objects.filter(
                vm_id__in=alive, kind=kind, created_at=now, status=OperationStatus.NOT_STARTED
            ).values_list("pk", flat=True)
        )
        if enqueue:
            transaction.on_commit(lambda: send_to_workers(queued))
    return queued


# --- Running operations ---------------------------------------------------------------------------
# One way to run operations, for one or for thousands: claim them (compare-and-swap), read their VMs
# and guests set-based, simulate each guest (pure), let real time pass when the clock is real, and
# record every outcome set-based (compare-and-swap again). The Celery task runs a batch of one; the
# platform's rounds on a simulated clock, the fleet simulation and the demo's history run hundreds.


@dataclass(frozen=True)
class Executed:
    recorded: list[int]  # operations whose outcome was written
    # Operations whose VM agent did not answer, still in progress: the caller retries or fails them.
    unreachable: dict[int, str]


def _claim(operation_ids: list[int], now: datetime) -> list[Operation]:
    """NotStarted -> InProgress, once; or take over a run whose worker died (its heartbeat is stale).

    A redelivered task, or a second worker, finds nothing to claim while the run's heartbeat is fresh.
    Each claim counts an attempt, which `record_findings` checks: a presumed-dead worker that comes
    back cannot record over its successor. A run taken over starts again from the guest as recorded
    (a dead run recorded nothing: recording is one transaction); a VM it left restarting is running.
    The heartbeat is real time even on a simulated clock: it is about processes, not guests.
    """
    alive = timezone.now()
    with transaction.atomic():
        rows = list(
            Operation.objects.select_for_update(skip_locked=True)
            .filter(Q(status=OperationStatus.NOT_STARTED) | _dead_runs(alive), pk__in=operation_ids)
            .values_list("pk", "status", "reboot_status", "vm_id")
        )
        fresh = [pk for pk, status, _, _ in rows if status == OperationStatus.NOT_STARTED]
        taken_over = [pk for pk, status, _, _ in rows if status == OperationStatus.IN_PROGRESS]
        rebooting = [
            vm_id
            for _, status, reboot, vm_id in rows
            if status == OperationStatus.IN_PROGRESS and reboot == RebootStatus.STARTED and vm_id
        ]
        # Compare-and-swap on the status as well, for SQLite, where SELECT FOR UPDATE locks nothing.
        Operation.objects.filter(pk__in=fresh, status=OperationStatus.NOT_STARTED).update(
            status=OperationStatus.IN_PROGRESS, started_at=now, heartbeat_at=alive, attempts=F("attempts") + 1
        )
        if taken_over:
            log.warning("Taking over %d run(s) whose worker stopped: %s", len(taken_over), taken_over)
            Operation.objects.filter(_dead_runs(alive), pk__in=taken_over).update(
                heartbeat_at=alive, reboot_status=RebootStatus.UNKNOWN, attempts=F("attempts") + 1
            )
    if rebooting:
        # After the operations' transaction, not inside it: the lock order puts VMs before operations.
        VirtualMachine.objects.filter(pk__in=rebooting, power_state=VirtualMachine.PowerState.STARTING).update(
            power_state=VirtualMachine.PowerState.RUNNING
        )
    return list(Operation.objects.filter(pk__in=fresh + taken_over).order_by("pk"))


def release_for_retry(operation_id: int) -> None:
    """InProgress -> NotStarted, so the retried task can claim it again.

    Marked dispatched now: the retry's own message is the hand-off. If the worker holding it dies
    during the countdown, the dispatcher sends the operation again after PORTAL_DISPATCH_AGAIN_AFTER,
    instead of the VM waiting for Redis' visibility timeout.
    """
    Operation.objects.filter(pk=operation_id, status=OperationStatus.IN_PROGRESS).update(
        status=OperationStatus.NOT_STARTED, dispatched_at=timezone.now()
    )


def fail_operation(operation_id: int, code: str, message: str, now: datetime | None = None) -> bool:
    """Finish an in-flight operation as Failed; False if it had already finished."""
    return bool(
        Operation.objects.in_flight()
        .filter(pk=operation_id)
        .update(
            status=OperationStatus.FAILED, error_code=code, error_message=message, finished_at=now or world_clock.now()
        )
    )


def _agent_answers(operation: Operation) -> bool:
    """A deterministic per-attempt draw against PORTAL_AGENT_UNREACHABLE_RATE."""
    rate = settings.PORTAL_AGENT_UNREACHABLE_RATE
    digest = hashlib.sha256(f"{operation.activity_id}|{operation.attempts}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 >= rate


def execute_operation(
    operation_id: int,
    *,
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Operation | None:
    """Run one queued operation: execute_operations for a batch of one (what the Celery task calls).

    Returns the recorded operation, or None if there was nothing to run (already claimed, finished or
    gone) or it failed before the guest worked (VM deleted or stopped). AgentUnreachable if the VM
    agent did not answer: the operation stays in progress for the caller to retry or fail.
    """
    executed = execute_operations([operation_id], now=now, sleep=sleep)
    if operation_id in executed.unreachable:
        raise AgentUnreachable(executed.unreachable[operation_id])
    return Operation.objects.get(pk=operation_id) if executed.recorded else None


def execute_operations(
    operation_ids: list[int],
    *,
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Executed:
    """Run queued operations against their simulated guests and record the outcomes; safe to call twice.

    `now` fixes a simulated clock (the platform's rounds in a simulation, the demo's past): each run
    ends its simulated duration after `now`. Without it the clock is real: the simulated work takes
    PORTAL_SIM_SPEED-scaled seconds, an installation that reboots shows its VM restarting meanwhile,
    and each recorded installation is followed by an assessment, as the real agent does. In sandbox
    mode (vms.clock simulated) `now` None is the frozen simulated moment: the run happens then, at once,
    and is still followed by its assessment. A handful of queries for the whole batch, whatever its size.
    """
    follow_up = now is None
    if now is None and world_clock.is_simulated():
        now = world_clock.now()
    clock = now or world_clock.now()
    operations = _claim(operation_ids, clock) if operation_ids else []
    if not operations:
        return Executed([], {})
    vms = VirtualMachine.objects.select_related("resource_group", "guest").in_bulk(
        [op.vm_id for op in operations if op.vm_id]
    )
    guests = guests_of([vm for vm in vms.values() if guest_state(vm) is not None])

    def would_install(operation: Operation) -> set[str]:
        vm = vms[operation.vm_id]
        if operation.kind != OperationKind.INSTALLATION or vm.pk not in guests:
            return set()
        available = sim.applicable(guests[vm.pk], catalog_for(vm.product), clock)
        fate = sim.select(available, InstallParameters.from_stored(operation.parameters).selection)
        return {patch.kb for patch in available if fate[patch.id] == "Selected"}

    running = [op for op in operations if vms.get(op.vm_id) and vms[op.vm_id].is_running]
    injected = faults.hits(running, vms, would_install)
    findings, unreachable = [], {}
    for operation in operations:
        vm = vms.get(operation.vm_id)
        hit = injected.get(operation.pk, faults.NONE)
        if vm is None or guest_state(vm) is None:
            fail_operation(operation.pk, "VMDeleted", f"The virtual machine '{operation.vm_name}' was deleted.", clock)
        elif not vm.is_running:
            fail_operation(operation.pk, "VMNotRunning", _not_running(vm), clock)
        elif hit.unreachable or not _agent_answers(operation):
            unreachable[operation.pk] = f"The VM agent on '{vm.name}' did not answer." + (
                f" {hit.text}." if hit.unreachable else ""
            )
        elif hit.assessment_fails:
            fail_operation(operation.pk, "AssessmentFailed", f"The assessment failed (0x80244022). {hit.text}.", clock)
        else:
            findings.append(_simulate(operation, vm, guests[vm.pk], clock, hit.guest))
    if now is None:
        findings = _in_real_time(findings, _with_heartbeat([f.operation_id for f in findings], sleep))
    recorded = record_findings(findings)
    if follow_up:
        # What is left to install changed: refresh the compliance view, as the real agent does.
        installed_on = [f.vm for f in findings if f.outcome is not None and f.operation_id in recorded]
        queue_operations(installed_on, OperationKind.ASSESSMENT, started_by=StartedBy.PLATFORM)
    return Executed(recorded, unreachable)


def _with_heartbeat(operation_ids: list[int], sleep: Callable[[float], None]) -> Callable[[float], None]:
    """`sleep`, in slices of PORTAL_HEARTBEAT_SECONDS, refreshing the runs' heartbeat after each."""

    def sleep_alive(seconds: float) -> None:
        while seconds > 0:
            slice_ = min(seconds, settings.PORTAL_HEARTBEAT_SECONDS)
            sleep(slice_)
            seconds -= slice_
            Operation.objects.filter(pk__in=operation_ids, status=OperationStatus.IN_PROGRESS).update(
                heartbeat_at=timezone.now()
            )

    return sleep_alive


def _in_real_time(findings: list["Finding"], sleep: Callable[[float], None]) -> list["Finding"]:
    """Let the simulated work take its (PORTAL_SIM_SPEED-scaled) time; the runs end now.

    The guests of a batch work side by side, so the batch takes as long as its longest run. A VM that
    reboots is shown restarting meanwhile; both steps are compare-and-swap: a run failed as stale
    meanwhile, or a VM stopped by its owner, is left as it is.
    """
    speed = settings.PORTAL_SIM_SPEED
    if speed and findings:
        rebooting = [f for f in findings if f.outcome is not None and f.outcome.reboot_status == "Completed"]
        work = [
            sim.ASSESSMENT_SECONDS
            if f.outcome is None
            else f.outcome.simulated_seconds - (sim.REBOOT_SECONDS if f in rebooting else 0)
            for f in findings
        ]
        sleep(max(work) / speed)
        if rebooting:
            with transaction.atomic():
                lock_vms(f.vm.pk for f in rebooting)  # the lock order: VMs before their operations
                still_running = set(
                    Operation.objects.filter(
                        pk__in=[f.operation_id for f in rebooting], status=OperationStatus.IN_PROGRESS
                    ).values_list("pk", flat=True)
                )
                Operation.objects.filter(pk__in=still_running).update(reboot_status=RebootStatus.STARTED)
                VirtualMachine.objects.filter(
                    pk__in=[f.vm.pk for f in rebooting if f.operation_id in still_running],
                    power_state=VirtualMachine.PowerState.RUNNING,
                ).update(power_state=VirtualMachine.PowerState.STARTING)
            sleep(sim.REBOOT_SECONDS / speed)
    finished = world_clock.now()
    return [dataclasses.replace(f, finished=finished) for f in findings]


def _not_running(vm: VirtualMachine) -> str:
    return (
        f"The virtual machine '{vm.name}' is {vm.get_power_state_display().removeprefix('VM ')}: "
        "start it before assessing or installing updates."
    )


@dataclass(frozen=True)
class Finding:
    """What one run found (assessment) or did (installation), ready to record."""

    operation_id: int
    vm: VirtualMachine
    available: list[sim.Patch]
    finished: datetime
    guest: sim.Guest
    catalog: list[sim.Patch]
    outcome: sim.InstallOutcome | None = None  # None for an assessment
    attempt: int | None = None  # the claim this run holds (Operation.attempts); None: any


def _simulate(
    operation: Operation, vm: VirtualMachine, guest: sim.Guest, now: datetime, injected: sim.Injected = sim.NO_FAULTS
) -> Finding:
    """The pure part of a run on a simulated clock: what the guest offers, and what installing does."""
    catalog = catalog_for(vm.product)
    available = sim.applicable(guest, catalog, now)
    if operation.kind == OperationKind.ASSESSMENT:
        finished = now + timedelta(seconds=sim.ASSESSMENT_SECONDS)
        return Finding(operation.pk, vm, available, finished, guest, catalog, attempt=operation.attempts)
    outcome = _install(operation, vm, guest, available, now, injected)
    finished = now + timedelta(seconds=outcome.simulated_seconds)
    return Finding(operation.pk, vm, available, finished, guest, catalog, outcome, operation.attempts)


def _install(operation: Operation, vm: VirtualMachine, guest: sim.Guest, available, clock: datetime, injected):
    parameters = InstallParameters.from_stored(operation.parameters)
    return sim.install(
        guest,
        available,
        parameters.selection,
        reboot_setting=parameters.reboot_setting,
        maximum_duration=parameters.maximum_duration,
        vm_key=str(vm.vm_id),
        today=clock.date(),
        failure_rate=settings.PORTAL_PATCH_FAILURE_RATE,
        injected=injected,
    )


def record_findings(findings: list[Finding]) -> list[int]:
    """Write finished runs, set-based: the operations, per-patch rows, installed updates, guest states.

    Compare-and-swap: only operations still in progress under the same claim are written (one failed
    as stale meanwhile stays failed; one taken over from this worker is its successor's); a VM
    deleted while its guest worked fails its operation instead. Rows that change
    the same way are written by one UPDATE (a round's installations mostly end alike). Returns the
    ids of the operations recorded.
    """
    if not findings:
        return []
    with transaction.atomic():
        # The lock order (lock_vms): VMs, then guest states, then operations, each set by pk.
        lock_vms(f.vm.pk for f in findings)
        states = {
            state.pk: state
            for state in GuestState.objects.select_for_update()
            .filter(pk__in=[f.vm.pk for f in findings])
            .order_by("pk")
        }
        # Still in progress under the same claim: a run taken over from this worker is its successor's.
        claims = dict(
            Operation.objects.select_for_update()
            .filter(pk__in=[f.operation_id for f in findings], status=OperationStatus.IN_PROGRESS)
            .order_by("pk")
            .values_list("pk", "attempts")
        )
        live = {
            f.operation_id for f in findings if f.operation_id in claims and f.attempt in (None, claims[f.operation_id])
        }
        operations: dict[tuple, list[int]] = defaultdict(list)
        guests: dict[tuple, list[int]] = defaultdict(list)
        results, installs, rebooted, hung, recorded = [], [], [], [], []
        summaries = FleetSummaries()
        for f in findings:
            if f.operation_id not in live:
                continue
            state = states.get(f.vm.pk)
            if state is None:  # the VM was deleted while the guest worked
                _fail_deleted(f.operation_id, f.vm.name, f.finished)
                continue
            recorded.append(f.operation_id)
            if f.outcome is None:
                critical = sum(1 for p in f.available if p.is_critical_or_security)
                changes = {
                    "status": OperationStatus.SUCCEEDED,
                    "finished_at": f.finished,
                    "critical_security_count": critical,
                    "other_count": len(f.available) - critical,
                    "reboot_pending": f.guest.reboot_pending,
                }
                operations[tuple(changes.items())].append(f.operation_id)
                results += [
                    PatchResult(operation_id=f.operation_id, update_id=p.id, state=PatchState.AVAILABLE)
                    for p in f.available
                ]
                state.assessed_at = f.finished
                verdict = hotpatch_verdict(f.vm, state, f.guest, f.catalog, f.finished)
                changes = {
                    "assessed_at": f.finished,
                    "critical_security_count": critical,
                    "other_count": len(f.available) - critical,
                    "hotpatch_status": verdict.status,
                    "hotpatch_status_reason": verdict.reason,
                }
                guests[(OperationKind.ASSESSMENT, tuple(changes.items()))].append(f.vm.pk)
                continue
            outcome = f.outcome
            changes = {
                "status": outcome.status,
                "finished_at": f.finished,
                "installed_count": outcome.counts["Installed"],
                "failed_count": outcome.counts["Failed"],
                "pending_count": outcome.counts["Pending"],
                "excluded_count": outcome.counts["Excluded"],
                "not_selected_count": outcome.counts["NotSelected"],
                "reboot_status": outcome.reboot_status,
                "reboot_pending": outcome.reboot_pending,
                "maintenance_window_exceeded": outcome.maintenance_window_exceeded,
                "error_code": _install_error(outcome),
                "error_message": " ".join(
                    [*outcome.errors.values(), *([HUNG_IN_REBOOT] if outcome.reboot_status == "Failed" else [])]
                ),
            }
            operations[tuple(changes.items())].append(f.operation_id)
            results += [
                PatchResult(
                    operation_id=f.operation_id,
                    update_id=p.id,
                    state=outcome.states[p.id],
                    error=outcome.errors.get(p.id, ""),
                )
                for p in f.available
            ]
            installs += [
                InstalledUpdate(guest=state, update_id=p.id, installed_at=f.finished) for p in outcome.installed
            ]
            changes = {
                "build": outcome.build,
                "baseline_id": outcome.baseline_id,
                "reboot_pending": outcome.reboot_pending,
            }
            if outcome.reboot_status == "Completed":
                changes["last_boot_at"] = f.finished
                rebooted.append(f.vm.pk)
            elif outcome.reboot_status == "Failed":
                hung.append(f.vm.pk)
            guests[(OperationKind.INSTALLATION, tuple(changes.items()))].append(f.vm.pk)
        done = set(recorded)
        for f in findings:
            if f.operation_id in done:
                summaries.add(f)
        for changes, ids in operations.items():
            Operation.objects.filter(pk__in=ids).update(**dict(changes))
        PatchResult.objects.bulk_create(results, batch_size=2000)
        InstalledUpdate.objects.bulk_create(installs, batch_size=2000, ignore_conflicts=True)
        for (kind, changes), vm_ids in guests.items():
            # Each guest points at its own operation of this batch.
            own = Operation.objects.filter(pk__in=recorded, kind=kind, vm_id=OuterRef("pk")).values("pk")[:1]
            pointer = "last_assessment_id" if kind == OperationKind.ASSESSMENT else "last_installation_id"
            GuestState.objects.filter(pk__in=vm_ids).update(**dict(changes), **{pointer: Subquery(own)})
        summaries.write()
        if rebooted:
            VirtualMachine.objects.filter(pk__in=rebooted, power_state=VirtualMachine.PowerState.STARTING).update(
                power_state=VirtualMachine.PowerState.RUNNING
            )
        if hung:  # an injected hang: the VM stays "starting" until someone starts it again
            VirtualMachine.objects.filter(pk__in=hung).update(power_state=VirtualMachine.PowerState.STARTING)
    return recorded


class FleetSummaries:
    """What the fleet pages count, per recorded VM, written set-based: what it still misses after its
    run (what applied, less what it installed): its MissingUpdate rows replaced, its counts per
    classification and oldest outstanding Critical/Security publish date (one UPDATE per distinct
    summary); and this year's installations without a reboot, and with a hotpatch (reboots avoided)."""

    def __init__(self):
        self.rows: list[MissingUpdate] = []
        self.by_summary: dict[tuple, list[int]] = defaultdict(list)
        self.without_reboot: dict[tuple, list[int]] = defaultdict(list)
        self.assessed: list[int] = []

    def add(self, finding: "Finding") -> None:
        outcome = finding.outcome
        installed = {p.id for p in outcome.installed} if outcome else set()
        missing = [p for p in finding.available if p.id not in installed]
        failed = {p for p, state in outcome.states.items() if state == PatchState.FAILED} if outcome else set()
        self.rows += [MissingUpdate(guest_id=finding.vm.pk, update_id=p.id, failed=p.id in failed) for p in missing]
        if not outcome:
            self.assessed.append(finding.vm.pk)
        counts = Counter(p.classification for p in missing)
        oldest = min((p.published_at for p in missing if p.is_critical_or_security), default=None)
        self.by_summary[(tuple(sorted(counts.items())), oldest)].append(finding.vm.pk)
        if outcome and installed and outcome.status != OperationStatus.FAILED:
            if outcome.reboot_status == RebootStatus.NOT_NEEDED:
                hotpatched = any(p.kind == UpdateKind.HOTPATCH for p in outcome.installed)
                self.without_reboot[(finding.finished.year, hotpatched)].append(finding.vm.pk)

    def write(self) -> None:
        vm_ids = [pk for pks in self.by_summary.values() for pk in pks]
        # An assessment does not know what the last installation failed: it keeps that for what is still missing.
        failed_before = set(
            MissingUpdate.objects.filter(guest_id__in=self.assessed, failed=True).values_list("guest_id", "update_id")
        )
        for row in self.rows:
            row.failed = row.failed or (row.guest_id, row.update_id) in failed_before
        MissingUpdate.objects.filter(guest_id__in=vm_ids).delete()
        MissingUpdate.objects.bulk_create(self.rows, batch_size=2000, ignore_conflicts=True)
        for (counts, oldest), pks in self.by_summary.items():
            GuestState.objects.filter(pk__in=pks).update(
                missing_by_classification=dict(counts), oldest_critical_security_at=oldest
            )
        for (year, hotpatched), pks in self.without_reboot.items():
            this_year = Q(counted_year=year)
            GuestState.objects.filter(pk__in=pks).update(
                installs_without_reboot=Case(When(this_year, then=F("installs_without_reboot") + 1), default=1),
                reboots_avoided=Case(
                    When(this_year, then=F("reboots_avoided") + int(hotpatched)), default=int(hotpatched)
                ),
                counted_year=year,
            )


HUNG_IN_REBOOT = f"The VM hung while restarting; start it again. {sim.INJECTED} (sandbox)."


def _install_error(outcome: sim.InstallOutcome) -> str:
    if outcome.reboot_status == "Failed":
        return "VMRebootTimedOut"
    return "PatchInstallationFailed" if outcome.counts["Failed"] else ""


def _fail_deleted(operation_id: int, vm_name: str, when: datetime) -> None:
    PatchResult.objects.filter(operation_id=operation_id).delete()
    Operation.objects.filter(pk=operation_id).update(
        status=OperationStatus.FAILED,
        error_code="VMDeleted",
        error_message=f"The virtual machine '{vm_name}' was deleted while the operation ran.",
        finished_at=when,
    )


def fail_stale_operations(now: datetime | None = None) -> int:
    """Fail operations that will not finish: a run whose worker died, or a queued one nobody picked up.

    A run whose heartbeat stopped is failed once it may not be taken over again (PORTAL_MAX_ATTEMPTS
    claims; before that the dispatcher re-sends it and a worker resumes it). Whatever happens, a run
    in progress gets PORTAL_STALE_OPERATION_AFTER from when it started; a queued operation gets three
    times that from when it was queued, since a busy fleet can legitimately have a backlog.
    Set-based: one UPDATE for the operations, one for the VMs a dead worker left rebooting.
    """
    now = now or world_clock.now()
    deadline = settings.PORTAL_STALE_OPERATION_AFTER
    # Heartbeats are real time (processes), start and queue times the world's (the sandbox clock).
    silent = timezone.now() - settings.PORTAL_HEARTBEAT_TIMEOUT
    stale = Operation.objects.filter(
        Q(status=OperationStatus.IN_PROGRESS, started_at__lt=now - deadline)
        | Q(
            Q(heartbeat_at__lt=silent) | Q(heartbeat_at__isnull=True, started_at__lt=silent),
            status=OperationStatus.IN_PROGRESS,
            attempts__gte=settings.PORTAL_MAX_ATTEMPTS,
        )
        | Q(status=OperationStatus.NOT_STARTED, created_at__lt=now - 3 * deadline)
    )
    with transaction.atomic():
        # Read once, then in the lock order (lock_vms): the VMs of these runs first, then the runs,
        # still stale (compare-and-swap: one taken over or finished meanwhile is left alone).
        found = dict(stale.values_list("pk", "vm_id"))
        vm_ids = [pk for pk in found.values() if pk]
        lock_vms(vm_ids)
        stale = stale.filter(pk__in=list(found))
        list(stale.select_for_update().order_by("pk").values_list("pk", flat=True))
        failed = stale.update(
            status=OperationStatus.FAILED,
            error_code="OperationTimedOut",
            error_message="The operation did not finish in time (no worker finished it); start it again.",
            finished_at=now,
        )
        # A VM left "starting" by a worker killed mid-reboot comes back up.
        VirtualMachine.objects.filter(pk__in=vm_ids, power_state=VirtualMachine.PowerState.STARTING).update(
            power_state=VirtualMachine.PowerState.RUNNING
        )
    return failed


def prune_history(now: datetime | None = None, *, batch: int = 10_000) -> int:
    """Delete finished operations older than the retention period (their per-patch rows go with them).

    Set-based, in batches of the oldest first (each its own transaction), so millions of old rows
    never sit in memory or in one long lock. Returns how many operations were deleted. The overview's
    compliance trend is kept in ComplianceSnapshot rows and survives this.
    """
    cutoff = (now or world_clock.now()) - timedelta(days=settings.PORTAL_HISTORY_RETENTION_DAYS)
    old = Operation.objects.finished().filter(created_at__lt=cutoff).order_by("created_at", "pk")
    deleted = 0
    while ids := list(old.values_list("pk", flat=True)[:batch]):
        with transaction.atomic():
            PatchResult.objects.filter(operation_id__in=ids).delete()
            deleted += Operation.objects.filter(pk__in=ids).delete()[1].get(Operation._meta.label, 0)
    return deleted


# --- Importing a fleet ----------------------------------------------------------------------------


def import_fleet(plan: "fleet_import.Plan", owner, now: datetime | None = None) -> list[VirtualMachine]:
    """Create the planned VMs (vms.fleet_import) and their guests, in one transaction, set-based.

    Each guest starts as a VM created from its image today would (provision_guests); no assessment is
    queued per VM: periodic assessment reaches them at their slot, as it does every VM.
    """
    from .catalog import ensure_catalog  # the catalog loader reads files: only here, not at import time

    now = now or world_clock.now()
    ensure_catalog(until=now + timedelta(days=31))  # the guests' images; fast when already loaded
    with transaction.atomic():
        vms = fleet_import.create_inventory(plan, owner, now)
        with fixed_catalog():
            provision_guests(vms, now)
    # A large import leaves delta rows per batch statement: fold them now, not at the next beat
    # (which may not run), so the fleet pages read a few rows.
    transaction.on_commit(rollup.fold)
    return vms
