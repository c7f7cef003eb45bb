"""The writes that span several models: provisioning a guest, starting and running operations.

Everything that assesses or installs goes through `start_operation` / `queue_operations` (one row per
run) and `execute_operations` (the one way to run them): the views, the API, the admin, the
platform's beat tasks, the fleet simulation and the demo seeder's simulated past.
"""

import dataclasses
import hashlib
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Collection, Iterable
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Min, Q
from django.utils import timezone

from vms import clock as world_clock
from vms import fleet_import, images, regions
from vms.features import preview_gate_problems
from vms.models import RESOURCE_NAME_RE, ResourceGroup, VirtualMachine
from vms.patch_settings import PatchSettings, Problem, defaults_for_image

from . import bulk, calendar, faults, rollup
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

# The Celery tasks (patching/tasks.py), sent by name: tasks import this module.
RUN_OPERATIONS_TASK = "patching.tasks.run_operations"  # a batch of operation ids
ADVANCE_OPERATIONS_TASK = "patching.tasks.advance_operations"  # their due steps (simulated time)
# A round's operations are split so that every worker gets some (a small round in small batches),
# up to PORTAL_EXECUTION_BATCH per message.
MIN_BATCH, SPREAD = 50, 8
ROUND_CHUNK = SPREAD  # the most batches per commit of a round (round_chunks): full ones for every worker
MAX_AGENT_RETRIES = 3


def queue_for(started_by: str) -> str:
    """People first: what a person started has its own queue (settings.CELERY_TASK_QUEUES)."""
    return settings.USER_QUEUE if started_by == StartedBy.USER else settings.PLATFORM_QUEUE


def batches(ids: list[int]) -> list[list[int]]:
    size = min(settings.PORTAL_EXECUTION_BATCH, max(MIN_BATCH, -(-len(ids) // SPREAD)))
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def send_to_workers(operation_ids: list[int], started_by: str = StartedBy.PLATFORM) -> list[int]:
    """Hand committed operations to Celery in batches, one message each (from transaction.on_commit,
    or the dispatcher); never raises.

    The committed row is the outbox: a publish that fails (the broker is down) is logged and left to
    `dispatch_queued`, because the operation was already accepted and the request must say so. The
    rows come marked dispatched (written so when they were created, or claimed by the dispatcher: not
    an UPDATE per publish, which would write every index of the row once more, and which a worker
    that already got the batch would find locked); the ones not published are unmarked. Returns the
    ids published. One broker connection for all batches.
    """
    sent: list[int] = []
    try:
        with current_app.producer_or_acquire() as producer:
            for batch in batches(list(operation_ids)):
                current_app.send_task(RUN_OPERATIONS_TASK, (batch,), queue=queue_for(started_by), producer=producer)
                sent += batch
    except Exception as exc:  # kombu's OperationalError, a socket error, a timeout: whatever the broker did
        published = set(sent)
        unsent = [pk for pk in operation_ids if pk not in published]
        Operation.objects.filter(pk__any=unsent).update(dispatched_at=None)  # the dispatcher's again
        # One line, no traceback: during an outage every request says it.
        log.warning(
            "Could not hand %d operation(s) to the broker (%s: %s); the dispatcher will send them",
            len(operation_ids) - len(sent),
            type(exc).__name__,
            exc,
        )
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
            rows = list(due.select_for_update(skip_locked=True).values_list("pk", "started_by")[:batch])
            ids = [pk for pk, _ in rows]
            Operation.objects.filter(pk__in=ids).update(dispatched_at=now)
        sent = []
        for started_by in sorted({who for _, who in rows}, key=lambda who: who != StartedBy.USER):
            group = [pk for pk, who in rows if who == started_by]
            sent += send_to_workers(group, started_by)
            if len(sent) < len(ids) and set(group) - set(sent):
                break
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


CATALOG_FIELDS = tuple(field.name for field in dataclasses.fields(sim.Patch))  # Update's columns of the same names


def catalog_for(product: str) -> list[sim.Patch]:
    """The product's whole catalog as the guest sees it (a few hundred rows, one query)."""
    fixed = _fixed_catalogs.get()
    if fixed is not None and product in fixed:
        return fixed[product]
    patches = [sim.Patch(*row) for row in Update.objects.filter(product=product).values_list(*CATALOG_FIELDS)]
    if fixed is not None:
        fixed[product] = patches
    return patches


def guest_state(vm: "VirtualMachine | RunVm") -> "GuestState | RunGuest | None":
    """The VM's guest state, or None for a VM created without one (the admin allows it)."""
    try:
        return vm.guest
    except VirtualMachine.guest.RelatedObjectDoesNotExist:
        return None


def guests_of(vms: list[VirtualMachine]) -> dict[int, sim.Guest]:
    """The guest as the pure simulation sees it, for each VM (with its guest state loaded): one query."""
    installed: dict[int, set[int]] = {vm.pk: set() for vm in vms}
    for guest_id, update_id in InstalledUpdate.objects.filter(guest_id__any=list(installed)).values_list(
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


def lock_vm_ids(pks: Iterable[int]) -> list[int]:
    """lock_vms when only the locks matter: the ids of the VMs that still exist, in pk order."""
    return list(
        VirtualMachine.objects.select_for_update().filter(pk__any=list(pks)).order_by("pk").values_list("pk", flat=True)
    )


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
                operation.dispatched_at = timezone.now() if enqueue else None  # see send_to_workers
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
            transaction.on_commit(lambda pk=operation.pk: send_to_workers([pk], started_by))
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
    operations a person started on many VMs at once (the admin's actions).

    A round commits in chunks (round_chunks: the first one batch, up to ROUND_CHUNK batches), each handed
    to the workers as it commits, so they start while the rest is queued (a 100,000-VM round would
    otherwise hold them all until its one commit). Inside a caller's transaction the chunks are
    savepoints and go at its commit.
    """
    now = now or world_clock.now()
    if kind == OperationKind.INSTALLATION:
        parameters = parameters or CRITICAL_AND_SECURITY
    template = Operation(
        kind=kind,
        started_by=started_by,
        user=user if started_by == StartedBy.USER else None,
        parameters=parameters.to_json() if parameters else {},
        created_at=now,
        # Marked handed over from the start (see send_to_workers): sent when the chunk commits, and if
        # this process dies first, sent by the dispatcher after PORTAL_DISPATCH_AGAIN_AFTER.
        dispatched_at=timezone.now() if enqueue else None,
    )
    vms = list(vms)
    queued: list[int] = []
    for start, end in itertools.pairwise(round_chunks(len(vms))):
        chunk = _queue_chunk(vms[start:end], template)
        if enqueue:
            transaction.on_commit(partial(send_to_workers, chunk, started_by))
        queued += chunk
    return queued


def round_chunks(count: int) -> list[int]:
    """Where a round of `count` VMs is cut into chunks (their edges): the first is one batch, spread
    over the workers, so that they start on it at once; each next one twice the last, up to ROUND_CHUNK
    batches. Queueing a chunk takes less time than the workers take to run the one before it, so they
    do not wait for the next to commit (a second chunk of 16,000 VMs at once left a core idle for a
    few tenths of a second at the start of every large round)."""
    edges, size = [0], settings.PORTAL_EXECUTION_BATCH
    while edges[-1] < count:
        edges.append(min(count, edges[-1] + size))
        size = min(2 * size, ROUND_CHUNK * settings.PORTAL_EXECUTION_BATCH)
    return edges


def _queue_chunk(vms: list[VirtualMachine], template: Operation) -> list[int]:
    with transaction.atomic():
        # The VMs' locks first (lock_vms; on PostgreSQL taken by the INSERT itself): a VM deleted
        # meanwhile gets no operation (and no FK violation).
        if connection.vendor == "postgresql":
            return _insert_operations([vm.pk for vm in vms], template)
        alive = set(lock_vm_ids(vm.pk for vm in vms))
        rows = [
            new_operation(
                vm, template.kind, template.started_by, template.user, template.parameters, template.created_at
            )
            for vm in vms
            if vm.pk in alive
        ]
        for row in rows:
            row.dispatched_at = template.dispatched_at
        # What bulk_create(ignore_conflicts=True) writes, without compiling SQL per row.
        columns = [f.attname for f in Operation._meta.concrete_fields if not f.primary_key]
        bulk.insert_new_rows(Operation, columns, [[getattr(row, c) for c in columns] for row in rows])
        return list(
            Operation.objects.filter(
                vm_id__in=alive, kind=template.kind, created_at=template.created_at, status=OperationStatus.NOT_STARTED
            ).values_list("pk", flat=True)
        )


def _insert_operations(vm_ids: list[int], template: Operation) -> list[int]:
    """One INSERT … SELECT of an operation like `template` per VM (its name, location and subscription
    read in the same statement), the VMs locked by it in pk order first (lock_vms: each VM row is locked
    before its operation is inserted, and a VM deleted meanwhile is left out); the VMs with one of this
    kind in flight are skipped (ON CONFLICT). Returns the new rows' ids. PostgreSQL: what
    queue_operations does with bulk_create elsewhere, in one statement instead of two."""
    if not vm_ids:
        return []
    vm_table, rg_table = VirtualMachine._meta.db_table, ResourceGroup._meta.db_table
    per_vm = {
        "activity_id": "gen_random_uuid()",
        "vm_id": "vm.id",
        "subscription_id": "rg.subscription_id",
        "vm_name": "vm.name",
        "location": "vm.location",
    }
    columns, values, params = [], [], []
    for field in Operation._meta.concrete_fields:
        if field.primary_key:
            continue
        columns.append(f'"{field.column}"')
        if field.attname in per_vm:
            values.append(per_vm[field.attname])
        else:
            values.append("%s")
            params.append(field.get_db_prep_save(getattr(template, field.attname), connection))
    with connection.cursor() as cursor:
        cursor.execute(
            f'INSERT INTO "{Operation._meta.db_table}" ({", ".join(columns)}) SELECT {", ".join(values)} '
            f'FROM "{vm_table}" vm JOIN "{rg_table}" rg ON rg.id = vm.resource_group_id '
            "WHERE vm.id = ANY(%s) ORDER BY vm.id FOR UPDATE OF vm ON CONFLICT DO NOTHING RETURNING id",
            [*params, list(vm_ids)],
        )
        return [row[0] for row in cursor.fetchall()]


# --- Running operations ---------------------------------------------------------------------------
# One way to run operations, for one or for thousands: claim them (compare-and-swap), read their VMs
# and guests set-based, simulate each guest (pure), and record every outcome set-based (compare-and-
# swap again). When the clock is real, the simulated duration becomes due times on the row instead of
# a sleep, and a due step (advance_operations) records the outcome then. The Celery task runs a batch
# (hundreds of a round's operations, or a person's one); the platform's rounds on a simulated clock,
# the fleet simulation and the demo's history run them at once.


@dataclass(frozen=True)
class Executed:
    recorded: list[int]  # operations whose outcome was written
    # Operations whose VM agent did not answer, still in progress: the caller retries or fails them.
    unreachable: dict[int, str]


@dataclass(slots=True)
class Run:
    """What running an operation reads of its row: a batch reads thousands, and a plain object costs
    a fraction of a model instance (whose every deferred column Django fills in, one by one)."""

    pk: int
    vm_id: int | None
    vm_name: str
    kind: str
    parameters: dict
    attempts: int
    activity_id: uuid.UUID
    started_at: datetime | None
    plan: dict
    status: str
    reboot_status: str


RUN_FIELDS = tuple(field.name for field in dataclasses.fields(Run))


def _claimable(alive: datetime) -> Q:
    return Q(status=OperationStatus.NOT_STARTED) | _dead_runs(alive)


def _claim(operation_ids: list[int], now: datetime) -> list[Run]:
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
            .among(operation_ids, _claimable(alive))
            .values_list("pk", "status", "reboot_status", "vm_id")
        )
        fresh = [pk for pk, status, _, _ in rows if status == OperationStatus.NOT_STARTED]
        _mark_claimed(fresh, now, alive)
        rebooting = _take_over(rows, alive)
    if rebooting:
        # After the operations' transaction, not inside it: the lock order puts VMs before operations.
        _restarted(rebooting)
    return _runs([pk for pk, _, _, _ in rows])


def _claim_held(operation_ids: list[int], now: datetime) -> tuple[list[Run], set[int]]:
    """_claim for runs recorded in the caller's transaction (when no simulated time passes in real
    time): the runs' VMs, guest states and operations locked in the lock order, and nothing written.
    Each run goes from NotStarted to its outcome in one write of its row (record_findings' writes
    carry the claim: its start and attempt), instead of three (the claim, then the outcome).

    A second worker with the same batch waits for the VMs' locks, then finds the runs finished.
    Returns the runs (started_at and attempts as claimed) and the VMs whose guest states are locked.
    """
    alive = timezone.now()
    claimable = Operation.objects.among(operation_ids, _claimable(alive))
    lock_vm_ids(pk for pk in claimable.values_list("vm_id", flat=True) if pk)
    operations = _as_runs(claimable.select_for_update(skip_locked=True))
    guests = _lock_guests(op.vm_id for op in operations if op.vm_id)
    rows = [(op.pk, op.status, op.reboot_status, op.vm_id) for op in operations]
    _restarted(_take_over(rows, alive))  # the VMs are locked already
    for op in operations:
        op.attempts += 1
        if op.status == OperationStatus.NOT_STARTED:
            op.started_at = now
    return operations, guests


def _mark_claimed(operation_ids: list[int], now: datetime, alive: datetime) -> None:
    if not operation_ids:  # even an empty UPDATE fires the table's rollup trigger
        return
    # Compare-and-swap on the status as well, for SQLite, where SELECT FOR UPDATE locks nothing.
    Operation.objects.among(operation_ids, Q(status=OperationStatus.NOT_STARTED)).update(
        status=OperationStatus.IN_PROGRESS, started_at=now, heartbeat_at=alive, attempts=F("attempts") + 1
    )


def _take_over(rows: list[tuple], alive: datetime) -> list[int]:
    """The claim of runs whose worker died, among (pk, status, reboot_status, vm_id) rows locked;
    returns the VMs they left restarting."""
    taken_over = [pk for pk, status, _, _ in rows if status == OperationStatus.IN_PROGRESS]
    if not taken_over:
        return []
    log.warning("Taking over %d run(s) whose worker stopped: %s", len(taken_over), taken_over)
    Operation.objects.among(taken_over, _dead_runs(alive)).update(
        heartbeat_at=alive,
        reboot_status=RebootStatus.UNKNOWN,
        attempts=F("attempts") + 1,
        due_at=None,
        reboot_at=None,
    )
    return [
        vm_id
        for _, status, reboot, vm_id in rows
        if status == OperationStatus.IN_PROGRESS and reboot == RebootStatus.STARTED and vm_id
    ]


def _restarted(vm_ids: list[int]) -> None:
    if vm_ids:
        VirtualMachine.objects.filter(pk__any=vm_ids, power_state=VirtualMachine.PowerState.STARTING).update(
            power_state=VirtualMachine.PowerState.RUNNING
        )


def _lock_guests(vm_ids: Iterable[int]) -> set[int]:
    """Lock these VMs' guest states (after the VMs: the lock order); the ones that exist."""
    return set(
        GuestState.objects.select_for_update().filter(pk__any=list(vm_ids)).order_by("pk").values_list("pk", flat=True)
    )


@dataclass(slots=True)
class RunGuest:
    """What a run reads of its VM's guest state (GuestState's fields of the same names)."""

    pk: int
    build: str
    baseline_id: int | None
    reboot_pending: bool
    assessed_at: datetime | None


@dataclass(slots=True)
class RunVm:
    """What a run reads of its VM, as Run is of its operation: a batch reads thousands, and a model
    instance for each VM, its resource group and its guest state was a fifth of a batch's Python.
    The fields are VirtualMachine's; its properties below are the model's own."""

    pk: int
    name: str
    location: str
    power_state: str
    product: str
    patch_mode: str
    enable_hotpatching: bool
    image_publisher: str
    image_offer: str
    image_sku: str
    vm_id: uuid.UUID
    subscription_id: uuid.UUID
    guest: RunGuest | None  # None: a VM created without one (the admin allows it)

    PowerState = VirtualMachine.PowerState
    is_running = VirtualMachine.is_running
    hotpatch_capable = VirtualMachine.hotpatch_capable


RUN_VM_FIELDS = tuple(f.name for f in dataclasses.fields(RunVm) if f.name not in ("subscription_id", "guest"))
RUN_VM_READ = (
    *RUN_VM_FIELDS,
    "resource_group__subscription_id",
    *(f"guest__{f.name}" for f in dataclasses.fields(RunGuest)),
)


def _runs(operation_ids: list[int]) -> list[Run]:
    return _as_runs(Operation.objects.filter(pk__any=operation_ids).order_by("pk"))


def _as_runs(operations) -> list[Run]:
    return [Run(*row) for row in operations.values_list(*RUN_FIELDS)]


def _vms_of(operations: list[Run]) -> dict[int, RunVm]:
    """The runs' VMs, with their guest states: one query."""
    vms = VirtualMachine.objects.filter(pk__any=[op.vm_id for op in operations if op.vm_id])
    split = len(RUN_VM_FIELDS) + 1  # the VM's columns and its subscription, then its guest state's
    return {
        row[0]: RunVm(*row[:split], RunGuest(*row[split:]) if row[split] is not None else None)
        for row in vms.values_list(*RUN_VM_READ)
    }


def release_for_retry(operation_ids: Collection[int]) -> None:
    """InProgress -> NotStarted, so the retried task can claim them again.

    Marked dispatched now: the retry's own message is the hand-off. If the worker holding it dies
    during the countdown, the dispatcher sends the operations again after PORTAL_DISPATCH_AGAIN_AFTER,
    instead of the VMs waiting for Redis' visibility timeout.
    """
    Operation.objects.filter(pk__in=list(operation_ids), status=OperationStatus.IN_PROGRESS).update(
        status=OperationStatus.NOT_STARTED, dispatched_at=timezone.now(), due_at=None, reboot_at=None
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


def _agent_answers(operation: Run) -> bool:
    """A deterministic per-attempt draw against PORTAL_AGENT_UNREACHABLE_RATE."""
    rate = settings.PORTAL_AGENT_UNREACHABLE_RATE
    if rate <= 0:
        return True
    digest = hashlib.sha256(f"{operation.activity_id}|{operation.attempts}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 >= rate


def execute_operation(
    operation_id: int,
    *,
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Operation | None:
    """Run one queued operation to its end: execute_operations for a batch of one, waiting for it.

    Returns the recorded operation, or None if there was nothing to run (already claimed, finished or
    gone) or it failed before the guest worked (VM deleted or stopped). AgentUnreachable if the VM
    agent did not answer: the operation stays in progress for the caller to retry or fail.
    """
    executed = execute_operations([operation_id], now=now, sleep=sleep)
    if operation_id in executed.unreachable:
        raise AgentUnreachable(executed.unreachable[operation_id])
    return Operation.objects.get(pk=operation_id) if executed.recorded else None


def run_batch(operation_ids: list[int], retries: int = 0) -> Executed:
    """What a worker does with a batch (the Celery task): start the runs, leave their simulated time
    to the due steps (advance_operations, scheduled on the user queue), and retry the ones whose
    agent did not answer as one batch, with a growing countdown, up to MAX_AGENT_RETRIES times."""
    executed = execute_operations(operation_ids, wait=False)
    if not executed.unreachable:
        return executed
    ids = sorted(executed.unreachable)
    if retries < MAX_AGENT_RETRIES:
        release_for_retry(ids)
        by = dict(Operation.objects.filter(pk__in=ids).values_list("pk", "started_by"))
        try:
            for started_by in set(by.values()):
                group = [pk for pk in ids if by.get(pk) == started_by]
                current_app.send_task(
                    RUN_OPERATIONS_TASK, (group, retries + 1), countdown=2 * 2**retries, queue=queue_for(started_by)
                )
        except Exception as exc:  # the dispatcher sends them again (release_for_retry marked them dispatched)
            log.warning("Could not send the retry of %d operation(s): %s", len(ids), exc)
        return executed
    for pk, reason in executed.unreachable.items():
        fail_operation(
            pk,
            "VMAgentStatusCommunicationError",
            f"{reason} Tried {MAX_AGENT_RETRIES + 1} times; check that the VM agent is running.",
        )
    return executed


def execute_operations(
    operation_ids: list[int],
    *,
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
    wait: bool = True,
) -> Executed:
    """Run queued operations against their simulated guests and record the outcomes; safe to call twice.

    `now` fixes a simulated clock (the platform's rounds in a simulation, the demo's past): each run
    ends its simulated duration after `now`, recorded at once. Without it the clock is real: each run
    is claimed and simulated now, and its PORTAL_SIM_SPEED-scaled duration becomes due times on its
    row (`_park`): the due steps (advance_operations) show an installation's VM restarting, then
    record the result and queue the assessment that follows an installation, as the real agent does.
    `wait` False (the workers) leaves those steps to an `advance_operations` task scheduled for when
    they fall due, so no worker waits while a guest works; `wait` True runs them here (`sleep` until
    each is due). In sandbox mode (vms.clock simulated) `now` None is the frozen simulated moment: the
    run happens then, at once, and is still followed by its assessment. A run recorded at once is
    claimed and recorded in one transaction (_claim_held). A handful of queries for the whole batch,
    whatever its size; the catalog is read once per batch.
    """
    follow_up = now is None
    if now is None and world_clock.is_simulated():
        now = world_clock.now()
    clock = now or world_clock.now()
    if not operation_ids:
        return Executed([], {})
    if now is None and settings.PORTAL_SIM_SPEED:
        return _run_in_real_time(operation_ids, clock, sleep=sleep, wait=wait)
    with transaction.atomic():
        _without_waiting_for_the_wal()
        operations, guests_locked = _claim_held(operation_ids, clock)
        run = _simulate_batch(operations, clock)
        # Recorded as claimed: the runs that end here without an outcome are written as started first.
        _mark_claimed([pk for pk, _, _ in run.failed] + list(run.unreachable), clock, timezone.now())
        run.fail()
        findings = run.findings
        if now is None:  # a real (or sandbox) clock: they finish now, after the work
            finished = world_clock.now()
            for finding in findings:
                finding.finished = finished
        recorded = _write_findings(findings, guests_locked)
    if follow_up:
        _follow_up([f for f in findings if f.outcome is not None and f.operation_id in recorded])
    return Executed(recorded, run.unreachable)


def _run_in_real_time(operation_ids: list[int], clock: datetime, *, sleep, wait: bool) -> Executed:
    """Claimed now; the simulated duration becomes due times (_park), stepped by advance_operations."""
    run = _simulate_batch(_claim(operation_ids, clock), clock)
    run.fail()
    if not run.findings:
        return Executed([], run.unreachable)
    parked = _park(run.findings, run.plans)
    if not wait:
        schedule_advance(parked)
        return Executed([], run.unreachable)
    recorded = []
    while parked:
        due = _next_due(parked)
        if due is None:
            break
        delay = (due - timezone.now()).total_seconds()
        if delay > 0:
            sleep(delay)
        recorded += advance_operations(parked)
    return Executed(recorded, run.unreachable)


@dataclass
class BatchRun:
    """What simulating a batch of claimed runs gave: findings to record (with the faults injected into
    each), runs that failed before the guest worked, runs whose agent did not answer."""

    findings: list["Finding"]
    failed: list[tuple[int, str, str]]  # (operation id, error code, message)
    unreachable: dict[int, str]
    plans: dict[int, sim.Injected]
    clock: datetime

    def fail(self) -> None:
        for pk, code, message in self.failed:
            fail_operation(pk, code, message, self.clock)


def _simulate_batch(operations: list[Run], clock: datetime) -> BatchRun:
    run = BatchRun([], [], {}, {}, clock)
    if not operations:
        return run
    with _catalog_once():
        vms = _vms_of(operations)
        guests = guests_of([vm for vm in vms.values() if guest_state(vm) is not None])

        def would_install(operation: Run) -> set[str]:
            vm = vms[operation.vm_id]
            if operation.kind != OperationKind.INSTALLATION or vm.pk not in guests:
                return set()
            available = sim.applicable(guests[vm.pk], catalog_for(vm.product), clock)
            fate = sim.select(available, InstallParameters.from_stored(operation.parameters).selection)
            return {patch.kb for patch in available if fate[patch.id] == "Selected"}

        running = [op for op in operations if vms.get(op.vm_id) and vms[op.vm_id].is_running]
        injected = faults.hits(running, vms, would_install)
        for operation in operations:
            vm = vms.get(operation.vm_id)
            hit = injected.get(operation.pk, faults.NONE)
            if vm is None or guest_state(vm) is None:
                run.failed.append(
                    (operation.pk, "VMDeleted", f"The virtual machine '{operation.vm_name}' was deleted.")
                )
            elif not vm.is_running:
                run.failed.append((operation.pk, "VMNotRunning", _not_running(vm)))
            elif hit.unreachable or not _agent_answers(operation):
                run.unreachable[operation.pk] = f"The VM agent on '{vm.name}' did not answer." + (
                    f" {hit.text}." if hit.unreachable else ""
                )
            elif hit.assessment_fails:
                run.failed.append(
                    (operation.pk, "AssessmentFailed", f"The assessment failed (0x80244022). {hit.text}.")
                )
            else:
                run.findings.append(_simulate(operation, vm, guests[vm.pk], clock, hit.guest))
                run.plans[operation.pk] = hit.guest
    return run


def _follow_up(installed: list["Finding"]) -> None:
    """What is left to install changed: refresh the compliance view, as the real agent does."""
    if installed:
        vms = VirtualMachine.objects.select_related("resource_group").filter(pk__any=[f.vm.pk for f in installed])
        queue_operations(vms, OperationKind.ASSESSMENT, started_by=StartedBy.PLATFORM)


@contextmanager
def _catalog_once():
    """fixed_catalog() for one batch, unless the caller already holds one (the simulation); on
    PostgreSQL, seeded with the catalogs this process read before that have not changed since."""
    if fixed_catalogs() is not None:
        yield
        return
    digests = _catalog_digests()
    with fixed_catalog():
        memo = fixed_catalogs()
        memo.update(
            {product: kept for product, (digest, kept) in _kept_catalogs.items() if digests.get(product) == digest}
        )
        yield
        _kept_catalogs.update({product: (digests[product], memo[product]) for product in memo if product in digests})


# Each product's catalog as this process last read it, by the digest of its rows then. Building a
# catalog (~180 patches a product) was a quarter of a small batch's time; its digest is one query.
# Read before the catalog, a digest is never newer than the rows kept under it: a change after it
# costs a second read, never a stale catalog.
_kept_catalogs: dict[str, tuple[str, list[sim.Patch]]] = {}


def _catalog_digests() -> dict[str, str]:
    """Per product, an md5 of its catalog's rows (every column a run reads); {} on SQLite."""
    if connection.vendor != "postgresql":
        return {}
    columns = ", ".join(f'"{Update._meta.get_field(name).column}"' for name in CATALOG_FIELDS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT product, md5(string_agg(ROW({columns})::text, ',' ORDER BY id)) "
            f'FROM "{Update._meta.db_table}" GROUP BY product'
        )
        return dict(cursor.fetchall())


# --- Simulated time, scheduled ----------------------------------------------------------------------


def _park(findings: list["Finding"], plans: dict[int, sim.Injected]) -> list[int]:
    """Give each claimed run its due times (real time, PORTAL_SIM_SPEED-scaled from its simulated
    duration) in one UPDATE; the run's heartbeat is its due time. Returns the ids parked."""
    speed = settings.PORTAL_SIM_SPEED
    start = timezone.now()  # one instant for the batch: runs of the same length fall due together
    rows = []
    for f in findings:
        work = sim.ASSESSMENT_SECONDS if f.outcome is None else f.outcome.simulated_seconds
        due = start + timedelta(seconds=work / speed)
        reboot_at = None
        if f.outcome is not None and f.outcome.reboot_status == RebootStatus.COMPLETED:
            reboot_at = start + timedelta(seconds=max(0, work - sim.REBOOT_SECONDS) / speed)
        plan = plans.get(f.operation_id, sim.NO_FAULTS)
        rows.append((f.operation_id, due, reboot_at, due, _plan_json(plan), f.attempt))
    bulk.update_rows(
        Operation,
        "id",
        ("due_at", "reboot_at", "heartbeat_at", "plan", "attempts"),
        rows,
        assign={"attempts": "t.attempts"},
        where=f"t.status = '{OperationStatus.IN_PROGRESS}' AND t.attempts = v.attempts",
    )
    return [f.operation_id for f in findings]


def _plan_json(injected: sim.Injected) -> dict:
    if injected == sim.NO_FAULTS:
        return {}
    return {
        "failing_kbs": sorted(injected.failing_kbs),
        "every_kb_fails": injected.every_kb_fails,
        "slowdown": injected.slowdown,
        "reboot_hangs": injected.reboot_hangs,
    }


def _plan_of(plan: dict) -> sim.Injected:
    if not plan:
        return sim.NO_FAULTS
    return sim.Injected(
        failing_kbs=frozenset(plan["failing_kbs"]),
        every_kb_fails=plan["every_kb_fails"],
        slowdown=plan["slowdown"],
        reboot_hangs=plan["reboot_hangs"],
    )


def _next_due(operation_ids: list[int]) -> datetime | None:
    """When the next due step of these runs is (None: none of them is parked any more)."""
    times = Operation.objects.among(operation_ids, Q(status=OperationStatus.IN_PROGRESS)).aggregate(
        due=Min("due_at"), reboot=Min("reboot_at")
    )
    found = [t for t in times.values() if t is not None]
    return min(found) if found else None


def schedule_advance(operation_ids: list[int], at: datetime | None = None) -> None:
    """Send the due step of these runs for when it falls due (a Celery eta on the user queue: due steps
    are short and late if they wait behind a round). Never raises: a lost step is recovered like a
    dead worker (the run's heartbeat is its due time, then the dispatcher re-sends and it is taken over)."""
    if not operation_ids:
        return
    at = at or _next_due(operation_ids)
    if at is None:
        return
    try:
        current_app.send_task(ADVANCE_OPERATIONS_TASK, (list(operation_ids),), eta=at, queue=settings.USER_QUEUE)
    except Exception as exc:
        log.warning(
            "Could not schedule the due step of %d run(s) (%s); they will be taken over", len(operation_ids), exc
        )


def advance_operations(operation_ids: list[int], now: datetime | None = None) -> list[int]:
    """The due steps of parked runs, set-based: start the reboots that fell due (the VM "starting", the
    run's reboot Started), then finish the runs that fell due: each is taken exactly once (its due time
    cleared under a row lock: compare-and-swap), its guest simulated again from the claim's moment and
    its faults (deterministic: the same outcome as when it was parked) and recorded by record_findings
    (which checks the claim); an installation is followed by its assessment. Returns the ids recorded.
    """
    now = now or timezone.now()
    with transaction.atomic():
        rebooting = list(
            Operation.objects.among(
                operation_ids, Q(status=OperationStatus.IN_PROGRESS, reboot_at__lte=now)
            ).values_list("vm_id", flat=True)
        )
        if rebooting:
            lock_vm_ids(pk for pk in rebooting if pk)  # the lock order: VMs before their operations
            started = list(
                Operation.objects.select_for_update()
                .among(operation_ids, Q(status=OperationStatus.IN_PROGRESS, reboot_at__lte=now))
                .values_list("pk", "vm_id")
            )
            Operation.objects.filter(pk__any=[pk for pk, _ in started]).update(
                reboot_status=RebootStatus.STARTED, reboot_at=None
            )
            VirtualMachine.objects.filter(
                pk__any=[vm for _, vm in started if vm], power_state=VirtualMachine.PowerState.RUNNING
            ).update(power_state=VirtualMachine.PowerState.STARTING)
    due = _take_due(operation_ids, now)
    if not due:
        return []
    operations = _runs(due)
    with _catalog_once():
        vms = _vms_of(operations)
        guests = guests_of([vm for vm in vms.values() if guest_state(vm) is not None])
        finished = world_clock.now()
        findings = []
        for operation in operations:
            vm = vms.get(operation.vm_id)
            if vm is None or vm.pk not in guests:
                fail_operation(operation.pk, "VMDeleted", f"The virtual machine '{operation.vm_name}' was deleted.")
                continue
            found = _simulate(operation, vm, guests[vm.pk], operation.started_at, _plan_of(operation.plan))
            findings.append(dataclasses.replace(found, finished=finished))
        recorded = record_findings(findings)
    _follow_up([f for f in findings if f.outcome is not None and f.operation_id in recorded])
    return recorded


def _take_due(operation_ids: list[int], now: datetime) -> list[int]:
    """The parked runs that fell due, each taken by one caller only (its due time cleared; its
    heartbeat now, so a caller that dies before recording leaves a run the dispatcher takes over)."""
    due = Operation.objects.among(operation_ids, Q(status=OperationStatus.IN_PROGRESS, due_at__lte=now))
    alive = timezone.now()
    if connection.vendor != "postgresql":  # SQLite locks no rows: one compare-and-swap per run
        return [
            pk
            for pk in due.values_list("pk", flat=True)
            if Operation.objects.filter(pk=pk, due_at__isnull=False).update(due_at=None, heartbeat_at=alive)
        ]
    with transaction.atomic():
        taken = list(due.select_for_update(skip_locked=True).values_list("pk", flat=True))
        Operation.objects.filter(pk__any=taken).update(due_at=None, heartbeat_at=alive)
    return taken


def advance_and_reschedule(operation_ids: list[int]) -> list[int]:
    """The due-step task: the steps due now, then the next one scheduled for the runs still parked."""
    recorded = advance_operations(operation_ids)
    waiting = list(
        Operation.objects.among(
            operation_ids,
            Q(status=OperationStatus.IN_PROGRESS) & (Q(due_at__isnull=False) | Q(reboot_at__isnull=False)),
        ).values_list("pk", flat=True)
    )
    schedule_advance(waiting)
    return recorded


def _not_running(vm: RunVm) -> str:
    return (
        f"The virtual machine '{vm.name}' is {VirtualMachine.PowerState(vm.power_state).label.removeprefix('VM ')}: "
        "start it before assessing or installing updates."
    )


@dataclass(slots=True)
class Finding:
    """What one run found (assessment) or did (installation), ready to record."""

    operation_id: int
    vm: RunVm
    available: list[sim.Patch]
    finished: datetime
    guest: sim.Guest
    catalog: list[sim.Patch]
    outcome: sim.InstallOutcome | None = None  # None for an assessment
    attempt: int | None = None  # the claim this run holds (Operation.attempts); None: any
    started: datetime | None = None  # when it was claimed (None: as recorded)


def _simulate(
    operation: Run, vm: RunVm, guest: sim.Guest, now: datetime, injected: sim.Injected = sim.NO_FAULTS
) -> Finding:
    """The pure part of a run on a simulated clock: what the guest offers, and what installing does."""
    catalog = catalog_for(vm.product)
    available = sim.applicable(guest, catalog, now)
    if operation.kind == OperationKind.ASSESSMENT:
        finished = now + timedelta(seconds=sim.ASSESSMENT_SECONDS)
        return Finding(
            operation.pk, vm, available, finished, guest, catalog, None, operation.attempts, operation.started_at
        )
    outcome = _install(operation, vm, guest, available, now, injected)
    finished = now + timedelta(seconds=outcome.simulated_seconds)
    return Finding(
        operation.pk, vm, available, finished, guest, catalog, outcome, operation.attempts, operation.started_at
    )


def _install(operation: Run, vm: RunVm, guest: sim.Guest, available, clock: datetime, injected):
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


# Each carries the claim (started_at, attempts): a run claimed in the recording transaction
# (_claim_held) is written once, from NotStarted to its outcome.
OPERATION_CLAIM = ("started_at", "attempts")
OPERATION_CLAIM_ASSIGN = {column: f"COALESCE(v.{column}, t.{column})" for column in OPERATION_CLAIM}
OPERATION_ASSESSED = (
    *OPERATION_CLAIM,
    "status",
    "finished_at",
    "critical_security_count",
    "other_count",
    "reboot_pending",
)
OPERATION_INSTALLED = (
    *OPERATION_CLAIM,
    "status",
    "finished_at",
    "installed_count",
    "failed_count",
    "pending_count",
    "excluded_count",
    "not_selected_count",
    "reboot_status",
    "reboot_pending",
    "maintenance_window_exceeded",
    "error_code",
    "error_message",
)
GUEST_ASSESSED = (
    "assessed_at",
    "critical_security_count",
    "other_count",
    "hotpatch_status",
    "hotpatch_status_reason",
    "last_assessment_id",
    "missing_by_classification",
    "oldest_critical_security_at",
)
GUEST_INSTALLED = (
    "build",
    "baseline_id",
    "reboot_pending",
    "last_boot_at",
    "last_installation_id",
    "missing_by_classification",
    "oldest_critical_security_at",
    "counted_year",
    "installs_without_reboot",
    "reboots_avoided",
)
# An installation without a reboot counts towards this year's figures (FleetSummaries): v.counted_year
# is that year (NULL: not counted), v.installs_without_reboot 1, v.reboots_avoided 1 for a hotpatch.
_COUNTED = "v.counted_year IS NOT NULL AND t.counted_year = v.counted_year"
GUEST_INSTALLED_ASSIGN = {
    "last_boot_at": "COALESCE(v.last_boot_at, t.last_boot_at)",
    "counted_year": "COALESCE(v.counted_year, t.counted_year)",
    "installs_without_reboot": (
        "CASE WHEN v.counted_year IS NULL THEN t.installs_without_reboot "
        f"WHEN {_COUNTED} THEN t.installs_without_reboot + 1 ELSE 1 END"
    ),
    "reboots_avoided": (
        "CASE WHEN v.counted_year IS NULL THEN t.reboots_avoided "
        f"WHEN {_COUNTED} THEN t.reboots_avoided + v.reboots_avoided ELSE v.reboots_avoided END"
    ),
}


def record_findings(findings: list[Finding]) -> list[int]:
    """Write finished runs, set-based: the operations, per-patch rows, installed updates, guest states.

    Compare-and-swap: only operations still in progress under the same claim are written (one failed
    as stale meanwhile stays failed; one taken over from this worker is its successor's); a VM
    deleted while its guest worked fails its operation instead. Each table is written by one
    statement per kind of run for the whole batch (patching.bulk: UPDATE … FROM unnest, COPY), so a
    batch of thousands costs a handful of round trips. Returns the ids of the operations recorded.
    """
    if not findings:
        return []
    with transaction.atomic():
        _without_waiting_for_the_wal()
        # The lock order (lock_vms): VMs, then guest states, then operations, each set by pk.
        lock_vm_ids(f.vm.pk for f in findings)
        locked = _lock_guests(f.vm.pk for f in findings)
        # Still in progress under the same claim: a run taken over from this worker is its successor's.
        claims = dict(
            Operation.objects.select_for_update()
            .among([f.operation_id for f in findings], Q(status=OperationStatus.IN_PROGRESS))
            .values_list("pk", "attempts")
        )
        live = [f for f in findings if f.operation_id in claims and f.attempt in (None, claims[f.operation_id])]
        return _write_findings(live, locked)


def _without_waiting_for_the_wal() -> None:
    """This transaction's commit does not wait for the WAL flush: a result lost in a database crash
    leaves its run in flight, which is then taken over and run again (nothing is half-written)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


def _write_findings(findings: list[Finding], locked: set[int]) -> list[int]:
    """record_findings' writes, for runs whose VMs, guest states (`locked`: the ones that exist) and
    operations this transaction holds locked under their claim."""
    assessed_ops, installed_ops, assessed_guests, installed_guests = [], [], [], []
    results, installs, rebooted, hung, recorded = [], [], [], [], []
    summaries = FleetSummaries()
    for f in findings:
        state = guest_state(f.vm) if f.vm.pk in locked else None
        if state is None:  # the VM was deleted while the guest worked
            _fail_deleted(f.operation_id, f.vm.name, f.finished)
            continue
        recorded.append(f.operation_id)
        summary = summaries.add(f)
        if f.outcome is None:
            critical = sum(1 for p in f.available if p.is_critical_or_security)
            other = len(f.available) - critical
            assessed_ops.append(
                (
                    f.operation_id,
                    f.started,
                    f.attempt,
                    OperationStatus.SUCCEEDED,
                    f.finished,
                    critical,
                    other,
                    f.guest.reboot_pending,
                )
            )
            results += [(f.operation_id, p.id, PatchState.AVAILABLE, "") for p in f.available]
            state.assessed_at = f.finished
            verdict = hotpatch_verdict(f.vm, state, f.guest, f.catalog, f.finished)
            assessed_guests.append(
                (f.vm.pk, f.finished, critical, other, verdict.status, verdict.reason, f.operation_id, *summary)
            )
            continue
        outcome = f.outcome
        error = " ".join([*outcome.errors.values(), *([HUNG_IN_REBOOT] if outcome.reboot_status == "Failed" else [])])
        installed_ops.append(
            (
                f.operation_id,
                f.started,
                f.attempt,
                outcome.status,
                f.finished,
                outcome.counts["Installed"],
                outcome.counts["Failed"],
                outcome.counts["Pending"],
                outcome.counts["Excluded"],
                outcome.counts["NotSelected"],
                outcome.reboot_status,
                outcome.reboot_pending,
                outcome.maintenance_window_exceeded,
                _install_error(outcome),
                error,
            )
        )
        results += [(f.operation_id, p.id, outcome.states[p.id], outcome.errors.get(p.id, "")) for p in f.available]
        installs += [(state.pk, p.id, f.finished) for p in outcome.installed]
        booted = None
        if outcome.reboot_status == "Completed":
            booted = f.finished
            rebooted.append(f.vm.pk)
        elif outcome.reboot_status == "Failed":
            hung.append(f.vm.pk)
        year, hotpatched = summaries.counted(f)
        installed_guests.append(
            (
                f.vm.pk,
                outcome.build,
                outcome.baseline_id,
                outcome.reboot_pending,
                booted,
                f.operation_id,
                *summary,
                year,
                1,
                int(hotpatched),
            )
        )
    bulk.update_rows(Operation, "id", OPERATION_ASSESSED, assessed_ops, assign=OPERATION_CLAIM_ASSIGN)
    bulk.update_rows(Operation, "id", OPERATION_INSTALLED, installed_ops, assign=OPERATION_CLAIM_ASSIGN)
    bulk.copy_rows(PatchResult, ("operation_id", "update_id", "state", "error"), results)
    bulk.insert_new_rows(InstalledUpdate, ("guest_id", "update_id", "installed_at"), installs)
    bulk.update_rows(GuestState, "vm_id", GUEST_INSTALLED, installed_guests, assign=GUEST_INSTALLED_ASSIGN)
    bulk.update_rows(GuestState, "vm_id", GUEST_ASSESSED, assessed_guests)
    summaries.write()
    if rebooted:
        VirtualMachine.objects.filter(pk__any=rebooted, power_state=VirtualMachine.PowerState.STARTING).update(
            power_state=VirtualMachine.PowerState.RUNNING
        )
    if hung:  # an injected hang: the VM stays "starting" until someone starts it again
        VirtualMachine.objects.filter(pk__any=hung).update(power_state=VirtualMachine.PowerState.STARTING)
    return recorded


class FleetSummaries:
    """What the fleet pages count, per recorded VM: what it still misses after its run (what applied,
    less what it installed): its MissingUpdate rows replaced (one DELETE, one COPY), its counts per
    classification and oldest outstanding Critical/Security publish date (`add`, written with the
    guest state by record_findings); and this year's installations without a reboot, and with a
    hotpatch (reboots avoided: `counted`)."""

    def __init__(self):
        self.missing: dict[tuple[int, int], bool] = {}
        self.vm_ids: list[int] = []
        self.assessed: list[int] = []

    def add(self, finding: "Finding") -> tuple[dict, datetime | None]:
        """Note the VM's missing updates; returns its (missing_by_classification, oldest_critical_security_at)."""
        outcome = finding.outcome
        installed = {p.id for p in outcome.installed} if outcome else set()
        missing = [p for p in finding.available if p.id not in installed]
        failed = {p for p, state in outcome.states.items() if state == PatchState.FAILED} if outcome else set()
        self.vm_ids.append(finding.vm.pk)
        for p in missing:
            key = (finding.vm.pk, p.id)
            self.missing[key] = self.missing.get(key, False) or p.id in failed
        if not outcome:
            self.assessed.append(finding.vm.pk)
        counts: dict[str, int] = {}  # not a Counter: its isinstance(…, Mapping) check costs more than counting
        for p in missing:
            counts[p.classification] = counts.get(p.classification, 0) + 1
        oldest = min((p.published_at for p in missing if p.is_critical_or_security), default=None)
        return dict(sorted(counts.items())), oldest

    @staticmethod
    def counted(finding: "Finding") -> tuple[int | None, bool]:
        """(the year it counts in, hotpatched) for an installation without a reboot; (None, False) otherwise."""
        outcome = finding.outcome
        if outcome and outcome.installed and outcome.status != OperationStatus.FAILED:
            if outcome.reboot_status == RebootStatus.NOT_NEEDED:
                return finding.finished.year, any(p.kind == UpdateKind.HOTPATCH for p in outcome.installed)
        return None, False

    def write(self) -> None:
        """Only what changed: a VM re-assessed to the same findings (most of a daily round) writes
        none of its rows, where replacing them wrote eight, their indexes and rollups."""
        stored = {
            (vm, update): (pk, failed)
            for pk, vm, update, failed in MissingUpdate.objects.filter(guest_id__any=self.vm_ids).values_list(
                "pk", "guest_id", "update_id", "failed"
            )
        }
        assessed = set(self.assessed)
        added, flipped = [], []
        for key, failed in self.missing.items():
            pk, failed_before = stored.pop(key, (None, False))
            # An assessment does not know what the last installation failed: it keeps that for what is still missing.
            failed = failed or (key[0] in assessed and failed_before)
            if pk is None:
                added.append((*key, failed))
            elif failed != failed_before:
                flipped.append((pk, failed))
        if stored:  # no longer missing
            MissingUpdate.objects.filter(pk__any=[pk for pk, _ in stored.values()]).delete()
        bulk.update_rows(MissingUpdate, "id", ("failed",), flipped)
        bulk.copy_rows(MissingUpdate, ("guest_id", "update_id", "failed"), added)


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
