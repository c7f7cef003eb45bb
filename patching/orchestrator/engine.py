"""Automatic patching against the database: read the fleet set-based, decide, record, start.

`patch_fleet()` and `assess_fleet()` are what the beat tasks run every few minutes (real time), and
what the fleet simulation and the demo seeder run on their simulated clock (`now=...`, `execute=True`:
the operations then run right away through services.execute_operations, on the same clock).

Idempotent: a round runs in one transaction holding an advisory lock on PostgreSQL (SQLite's
IMMEDIATE transactions serialise writers anyway), so two beats started by mistake plan one after the
other, and the second sees the first one's operations in flight. Under that, the database allows one
installation in flight per VM (services.queue_operations skips the VMs that have one), and halts are
opened with ON CONFLICT DO NOTHING against "one open halt per release".

Queries per round do not grow with the fleet: the VMs (one query), what is installed on them (one
aggregate), the installations in flight, the catalog, one failure-rate aggregate per product, then
one UPDATE per distinct decision that changed and one bulk insert of operations per parameter set.
"""

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Q

from patching import faults, services
from patching import guest as sim
from patching.guest import Selection
from patching.models import (
    IN_FLIGHT,
    GuestState,
    InstalledUpdate,
    Operation,
    OperationKind,
    RolloutHalt,
    StartedBy,
    Update,
)
from patching.parameters import InstallParameters
from vms import clock as world_clock
from vms import images
from vms.models import VirtualMachine

from . import planner
from .needs import DOTNET, CatalogPatch, GuestSummary, Need, ProductCatalog, need
from .rules import (
    DEFAULT_PHASES,
    DEFAULT_WINDOW,
    EPOCH,
    Rules,
    assessment_due,
    assessment_period,
    from_settings_values,
    next_assessment_slot,
)

log = logging.getLogger(__name__)

LOCK_KEY = 0x486F747061746368  # "Hotpatch": the advisory lock of a patching round
# An installation finishes within its maximum duration (at most 4 h) plus a reboot.
LONGEST_INSTALLATION = timedelta(hours=5)
ATTEMPTS = timedelta(days=62)
MAX_ASSESSMENTS_PER_ROUND = 5000
FIXED_KEY = "orchestrator"  # where load_catalogs keeps its catalogs inside services.fixed_catalog()
DETAIL_LENGTH = GuestState._meta.get_field("patch_decision_detail").max_length


def current_rules() -> Rules:
    """The rules as configured (validated by the system check in patching/checks.py); ValueError if bad."""
    return from_settings_values(
        window=settings.PORTAL_OFF_PEAK_WINDOW or DEFAULT_WINDOW,
        phases=settings.PORTAL_ROLLOUT_PHASES or DEFAULT_PHASES,
        halt_failure_rate=settings.PORTAL_ROLLOUT_HALT_FAILURE_RATE,
        halt_min_attempts=settings.PORTAL_ROLLOUT_HALT_MIN_ATTEMPTS,
        catch_up_baseline=settings.PORTAL_BASELINE_CATCH_UP,
        assessment_interval_days=settings.PORTAL_ASSESSMENT_INTERVAL_DAYS,
    )


# --- Reading ----------------------------------------------------------------------------------------


def load_catalogs() -> dict[str, ProductCatalog]:
    """Every product's catalog, indexed (one query; none inside services.fixed_catalog())."""
    fixed = services.fixed_catalogs()
    if fixed is not None and FIXED_KEY in fixed:
        return fixed[FIXED_KEY]
    rows = Update.objects.values_list(
        "id",
        "kb",
        "kind",
        "classification",
        "reboot_behavior",
        "published_at",
        "build",
        "baseline_id",
        "product",
        "release_month",
    )
    by_product: dict[str, list[CatalogPatch]] = defaultdict(list)
    for *patch, product, month in rows:
        by_product[product].append(CatalogPatch(sim.Patch(*patch), product, month))
    catalogs = {product: ProductCatalog(product, patches) for product, patches in by_product.items()}
    if fixed is not None:
        fixed[FIXED_KEY] = catalogs
    return catalogs


@dataclass
class Snapshot:
    fleet: list[planner.FleetVM]
    decisions: dict[int, tuple[str, str]]  # what each VM's guest state says now
    reread: set[int] | None  # the VMs read again for this snapshot (None: all of them)
    busy: int  # VMs with an installation in flight


@dataclass
class FleetCache:
    """What a snapshot read, kept between rounds, so that only the VMs that changed are read again.

    For a caller that owns the database between rounds (the simulation): what changes is what the
    engine started (it marks those VMs itself) and what the caller changed, which it reports with
    `touch()`. Without a cache every round reads the whole fleet, as the beat task does.
    """

    rows: dict[int, tuple] = field(default_factory=dict)
    summaries: dict[int, tuple] = field(default_factory=dict)
    decisions: dict[int, tuple[str, str]] = field(default_factory=dict)
    attempts: dict[int, datetime] = field(default_factory=dict)  # each VM's last automatic installation
    needs: dict[tuple, Need] = field(default_factory=dict)
    vms: dict[int, tuple] = field(default_factory=dict)
    fleet: dict[int, planner.FleetVM] = field(default_factory=dict)  # the last snapshot's
    planned: planner.FleetIndex = field(default_factory=planner.FleetIndex)  # the planner's memo
    # The FleetVMs made anew (None: gone) since the planner last saw the fleet.
    changes: dict[int, planner.FleetVM | None] = field(default_factory=dict)
    # What the last snapshot saw beyond the rows: each product's epoch and the installations in flight.
    epochs: dict[str, int] | None = None
    installing: dict[int, str] = field(default_factory=dict)
    dirty: set[int] | None = None  # None: read everything
    installed_since_check: bool = True  # whether check_halts has new installations to count
    verify: bool = False  # compare every cached snapshot with a fresh one (tests)

    def touch(self, vm_ids) -> None:
        if self.dirty is not None:
            self.dirty.update(vm_ids)


VM_COLUMNS = (
    "pk",
    "name",
    "product",
    "resource_group__subscription_id",
    "resource_group_id",
    "location",
    "zone",
    "availability_set",
    "update_domain",
    "time_zone",
    "power_state",
    "patch_mode",
    "bypass_platform_safety_checks",
    "reboot_setting",
    "enable_hotpatching",
    "image_publisher",
    "image_offer",
    "image_sku",
    "guest__baseline_id",
    "guest__patch_decision",
    "guest__patch_decision_detail",
    "guest__last_installation__started_by",
    "guest__last_installation__failed_count",
    "guest__last_installation__pending_count",
    "guest__last_installation__finished_at",
)
ORCHESTRATED = Q(guest__vm__patch_mode="AutomaticByPlatform")


def installed_summaries(vm_filter: Q | None = None) -> dict[int, tuple]:
    """Per guest: the newest installed Windows update, .NET update and baseline (one aggregate query)."""
    rows = InstalledUpdate.objects.all()
    if vm_filter is not None:
        rows = rows.filter(vm_filter)
    rows = rows.values("guest_id").annotate(
        windows=Max("update__published_at", filter=Q(update__kind__in=sim.WINDOWS_KINDS)),
        dotnet=Max("update__published_at", filter=Q(update__kind=DOTNET)),
        baseline=Max("update__published_at", filter=Q(update__kind__in=sim.BASELINE_KINDS)),
    )
    return {row["guest_id"]: (row["windows"], row["dotnet"], row["baseline"]) for row in rows}


def _read(cache: FleetCache, now: datetime) -> set[int] | None:
    """(Re)read the VMs the cache lacks or that changed: everything the first time (returns None),
    else the ids it read again."""
    vms = VirtualMachine.objects.filter(guest__isnull=False)
    installed = ORCHESTRATED
    # Only recent attempts matter: they are compared with releases of the last month or two.
    attempt = Q(kind=OperationKind.INSTALLATION, started_by=StartedBy.PLATFORM)
    attempts = Operation.objects.filter(attempt, vm__isnull=False, created_at__gte=now - ATTEMPTS)
    reread = cache.dirty
    if reread is not None:
        if not reread:
            return reread
        changed = list(reread)
        vms, installed = vms.filter(pk__in=changed), installed & Q(guest_id__in=changed)
        # Per VM through its (vm, created_at) index; the kind and who started it are checked in the
        # aggregate, which SQLite otherwise reads through their index: every attempt in the period.
        attempts = Operation.objects.filter(vm_id__in=changed, created_at__gte=now - ATTEMPTS)
        for pk in changed:  # a deleted VM stays away
            for kept in (cache.rows, cache.summaries, cache.decisions, cache.attempts):
                kept.pop(pk, None)
    for row in vms.values_list(*VM_COLUMNS):
        cache.rows[row[0]] = row
        cache.decisions[row[0]] = (row[19], row[20])
    cache.summaries.update(installed_summaries(installed))
    cache.attempts.update(
        (vm_id, last)
        for vm_id, last in attempts.values("vm_id")
        .annotate(last=Max("created_at", filter=attempt))
        .values_list("vm_id", "last")
        if last is not None
    )
    cache.dirty = set()
    return reread


def in_flight_installations(now: datetime) -> dict[int, str]:
    """Who started each VM's installation in flight at `now`: running, or recorded with an end after
    `now` (on a simulated clock a run is recorded at once, its end in the future).

    Two indexed reads rather than one with OR, which databases answer by scanning every installation
    ever run (the simulation's rounds slowed as its history grew); an in-flight row wins.
    """
    installations = Operation.objects.filter(kind=OperationKind.INSTALLATION, vm__isnull=False).order_by()
    installing = dict(
        installations.filter(created_at__gt=now - LONGEST_INSTALLATION, finished_at__gt=now).values_list(
            "vm_id", "started_by"
        )
    )
    # The kind is checked here, not in the query: SQLite would otherwise walk the kind index (every
    # installation) rather than the status one (the few in flight).
    in_flight = Operation.objects.filter(status__in=IN_FLIGHT, vm__isnull=False).order_by()
    installing.update(
        (vm_id, by)
        for vm_id, by, kind in in_flight.values_list("vm_id", "started_by", "kind")
        if kind == OperationKind.INSTALLATION
    )
    return installing


def snapshot(
    now: datetime, rules: Rules, catalogs: dict[str, ProductCatalog], cache: FleetCache | None = None
) -> Snapshot:
    """The fleet as the planner sees it at `now` (read afresh, or updated in `cache`)."""
    cache = cache or FleetCache()
    reread = _read(cache, now)
    installing = in_flight_installations(now)
    epochs = {product: catalog.epoch(now) for product, catalog in catalogs.items()}
    released = {product: catalog.current_release(now) for product, catalog in catalogs.items()}
    # A FleetVM changes only with its row, installed state and attempt (read again: `reread`), its
    # installation in flight, or its product's releases (the epoch): only those VMs are looked at again.
    if reread is None or epochs != cache.epochs:
        again = cache.rows.keys()
    else:
        again = (reread | installing.keys() | cache.installing.keys()) & cache.rows.keys()
    cache.epochs, cache.installing = epochs, installing
    for pk in again:
        row = cache.rows[pk]
        doing = installing.get(pk, "")
        summary, last = cache.summaries.get(pk), cache.attempts.get(pk)
        epoch = epochs.get(row[2])
        kept = cache.vms.get(pk)
        # Same row, installed state, releases, attempt and installation in flight: the same FleetVM.
        if kept is not None and kept[:5] == (row, summary, epoch, doing, last):
            continue
        release = released.get(row[2])
        attempted = bool(last and release and last >= release.patch.published_at)
        vm = _fleet_vm(row, _need(row, cache, now, rules, catalogs), doing, attempted)
        cache.vms[pk] = (row, summary, epoch, doing, last, vm)
        cache.fleet[pk] = cache.changes[pk] = vm
    for pk in (reread or set()) - cache.rows.keys():  # read again and not found: deleted
        if cache.fleet.pop(pk, None) is not None:
            del cache.vms[pk]
            cache.changes[pk] = None
    fleet = list(cache.fleet.values())
    if cache.verify:
        fresh = snapshot(now, rules, catalogs)
        assert sorted(fleet, key=lambda v: v.id) == sorted(fresh.fleet, key=lambda v: v.id), "stale fleet cache"
        assert {k: cache.decisions[k] for k in fresh.decisions} == fresh.decisions, "stale decision cache"
    return Snapshot(fleet, cache.decisions, reread, len(installing.keys() & cache.rows.keys()))


def _need(row: tuple, cache: FleetCache, now: datetime, rules: Rules, catalogs: dict[str, ProductCatalog]) -> Need:
    """What automatic patching would install on this VM now (memoised per guest state and release)."""
    pk, product, patch_mode, hotpatch, image, baseline_id = row[0], row[2], row[11], row[14], row[15:18], row[18]
    catalog = catalogs.get(product)
    if patch_mode != "AutomaticByPlatform" or catalog is None:
        return NOTHING
    windows, dotnet, baseline = cache.summaries.get(pk, (None, None, None))
    summary = GuestSummary(product, hotpatch and _capable(*image), baseline_id, windows, dotnet, baseline)
    key = (summary, catalog.epoch(now), rules.catch_up_baseline)
    if key not in cache.needs:
        cache.needs[key] = need(summary, catalog, now, catch_up=rules.catch_up_baseline)
    return cache.needs[key]


NOTHING = Need()


@lru_cache(maxsize=64)
def _capable(publisher: str, offer: str, sku: str) -> bool:
    return images.is_hotpatch_capable(publisher, offer, sku)


def _fleet_vm(row: tuple, wanted: Need, installing: str, attempted: bool) -> planner.FleetVM:
    (
        pk,
        name,
        product,
        subscription,
        resource_group,
        region,
        zone,
        availability_set,
        update_domain,
        time_zone,
        power_state,
        patch_mode,
        bypass,
        reboot_setting,
        *_,
        last_by,
        last_failed,
        last_pending,
        last_finished,
    ) = row
    retry, retry_after = "", None
    if last_by == StartedBy.PLATFORM and last_finished is not None and (last_failed or last_pending):
        what = []
        if last_failed:
            what.append(f"{last_failed} update{'s' if last_failed > 1 else ''} failed")
        if last_pending:
            what.append(f"{last_pending} did not fit in the window")
        retry = f"{' and '.join(what)} at {last_finished:%Y-%m-%d %H:%M} UTC"
        retry_after = last_finished
    return planner.FleetVM(
        id=pk,
        name=name,
        product=product,
        subscription=str(subscription),
        region=region,
        zone=zone,
        availability_set=f"{resource_group}/{availability_set.lower()}" if availability_set else "",
        update_domain=update_domain,
        time_zone=time_zone,
        power_state=power_state,
        patch_mode=patch_mode,
        user_schedule=bypass,
        reboot_setting=reboot_setting,
        need=wanted,
        installing=installing,
        attempted=attempted,
        retry=retry,
        retry_after=retry_after,
    )


# --- Halts ------------------------------------------------------------------------------------------


def open_halts(halts: list[RolloutHalt] | None = None) -> dict[tuple[str, str], str]:
    """The halted releases, each with the sentence a halted VM shows."""
    names = {code: product.name for code, product in images.PRODUCTS.items()}
    halts = RolloutHalt.objects.filter(resumed_at=None) if halts is None else halts
    return {
        (halt.product, halt.release_month): (
            f"The {halt.release_month} rollout for {names.get(halt.product, halt.product)} is halted since "
            f"{halt.halted_at:%Y-%m-%d %H:%M} UTC: {halt.failed} of {halt.attempted} installations failed. "
            "An operator resumes it (admin: Rollout halts)."
        )
        for halt in halts
        if halt.resumed_at is None
    }


def check_halts(
    now: datetime, rules: Rules, catalogs: dict[str, ProductCatalog], halts: list[RolloutHalt] | None = None
) -> list[RolloutHalt]:
    """Halt each release whose automatic installations fail above the threshold (one aggregate query)."""
    halts = list(RolloutHalt.objects.all()) if halts is None else halts
    resumed: dict[tuple[str, str], datetime] = {}
    for halt in halts:
        if halt.resumed_at is not None:
            key = (halt.product, halt.release_month)
            resumed[key] = max(resumed.get(key, halt.resumed_at), halt.resumed_at)
    already = {(halt.product, halt.release_month) for halt in halts if halt.resumed_at is None}
    # Count from the release, or from the operator's last resume of it; all products in one query.
    releases = {}
    for product, catalog in catalogs.items():
        release = catalog.current_release(now)
        if release is not None and (product, release.release_month) not in already:
            since = release.patch.published_at
            releases[product] = (release, max(since, resumed.get((product, release.release_month), since)))
    if not releases:
        return []
    finished = (
        Operation.objects.filter(kind=OperationKind.INSTALLATION, started_by=StartedBy.PLATFORM)
        .filter(created_at__gte=min(since for _, since in releases.values()))
        .exclude(status__in=IN_FLIGHT)
        .exclude(finished_at__gt=now)
        .exclude(error_code__in=Operation.PLATFORM_ERRORS)
    )
    counts = {}
    for product, (_, since) in releases.items():
        mine = Q(vm__product=product, created_at__gte=since)
        counts[f"{product}_attempted"] = Count("pk", filter=mine)
        counts[f"{product}_failed"] = Count("pk", filter=mine & Q(failed_count__gt=0))
    stats = finished.aggregate(**counts)
    opened = []
    for product, (release, _) in releases.items():
        attempted, failed = stats[f"{product}_attempted"], stats[f"{product}_failed"]
        reason = planner.halt_reason(release.release_month, attempted, failed, rules)
        if reason:
            opened.append(
                RolloutHalt(
                    release_month=release.release_month,
                    product=product,
                    halted_at=now,
                    failed=failed,
                    attempted=attempted,
                    reason=reason,
                )
            )
    if opened:
        RolloutHalt.objects.bulk_create(opened, ignore_conflicts=True)
        for halt in opened:
            log.warning("Rollout halted: %s %s: %s", halt.product, halt.release_month, halt.reason)
    return opened


def resume_rollout(halt: RolloutHalt, *, user=None, now: datetime | None = None) -> bool:
    """An operator resumes a halted rollout; False if it was resumed already (compare-and-swap).

    Failures are counted afresh from now on, so the rollout does not halt again on the old ones.
    """
    now = now or world_clock.now()
    done = RolloutHalt.objects.filter(pk=halt.pk, resumed_at=None).update(resumed_at=now, resumed_by=user)
    if done:
        halt.refresh_from_db()
        log.info("Rollout resumed: %s %s by %s", halt.product, halt.release_month, user or "the platform")
    return bool(done)


# --- Writing ----------------------------------------------------------------------------------------


def record_decisions(
    verdicts: dict[int, planner.Verdict],
    current: dict[int, tuple[str, str]],
    now: datetime,
    changed: set[int] | None = None,
) -> int:
    """Store each VM's decision where it changed: one UPDATE per distinct (decision, detail).

    patch_decision_at is when the VM's decision (or its wording) last changed, not the last round.
    `changed`: the only VMs whose verdict or stored decision may differ from the last call's (None: any).
    """
    groups = _unrecorded(verdicts, current, verdicts.keys() if changed is None else changed)
    for (decision, detail), ids in groups.items():
        for pk in ids:
            current[pk] = (decision, detail)
        for i in range(0, len(ids), 5000):
            GuestState.objects.filter(pk__in=ids[i : i + 5000]).update(
                patch_decision=decision, patch_decision_detail=detail, patch_decision_at=now
            )
    return sum(len(ids) for ids in groups.values())


def _unrecorded(
    verdicts: dict[int, planner.Verdict], current: dict[int, tuple[str, str]], vm_ids
) -> dict[tuple[str, str], list[int]]:
    """Of `vm_ids`, the VMs whose verdict differs from their stored decision, by (decision, detail) to store."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for vm_id in vm_ids:
        verdict = verdicts.get(vm_id)
        if verdict is None:  # no verdict: an installation by the platform in flight, or gone
            continue
        stored, detail = current.get(vm_id), verdict.detail
        # Stored from this very wording (the planner's memo hands the same verdict back each round).
        if stored is not None and stored[1] is detail and stored[0] == verdict.decision:
            continue
        if len(detail) > DETAIL_LENGTH:
            detail = detail[: DETAIL_LENGTH - 1] + "…"
        if stored != (verdict.decision, detail):
            groups[(verdict.decision, detail)].append(vm_id)
    return groups


def start_installations(starts: list[planner.Start], now: datetime, *, enqueue: bool) -> list[int]:
    """Queue the planned installations, one bulk insert per parameter set; returns their ids."""
    if not starts:
        return []
    # Only what an operation copies from its VM (services.new_operation): a round starts thousands.
    vms = (
        VirtualMachine.objects.select_related("resource_group")
        .only("name", "location", "resource_group__subscription_id")
        .in_bulk([s.vm_id for s in starts])
    )
    groups: dict[tuple, list[VirtualMachine]] = defaultdict(list)
    for start in starts:
        if start.vm_id in vms:
            groups[(start.reboot_setting, start.exclude_reboot, start.maximum_duration)].append(vms[start.vm_id])
    ids: list[int] = []
    with transaction.atomic():
        # The lock order: all of the round's VMs at once, in pk order, before any group locks its own.
        services.lock_vm_ids(vms)
        for (reboot_setting, exclude_reboot, duration), members in groups.items():
            parameters = InstallParameters(
                selection=Selection(
                    classifications=frozenset(sim.CRITICAL_AND_SECURITY), exclude_kbs_requiring_reboot=exclude_reboot
                ),
                reboot_setting=reboot_setting,
                maximum_duration=duration,
            )
            ids += services.queue_operations(
                members,
                OperationKind.INSTALLATION,
                started_by=StartedBy.PLATFORM,
                parameters=parameters,
                now=now,
                enqueue=enqueue,
            )
    return ids


def run_now(operation_ids: list[int], now: datetime) -> None:
    """Run queued operations at once on a simulated clock (the simulation, the demo's history)."""
    for i in range(0, len(operation_ids), 500):
        executed = services.execute_operations(operation_ids[i : i + 500], now=now)
        # No task to retry on a simulated clock: an agent that does not answer fails its run at once.
        for operation_id, message in executed.unreachable.items():
            services.fail_operation(operation_id, "VMAgentStatusCommunicationError", message, now)


def _exclusive(wait: bool = False) -> bool:
    """Take this round's lock (PostgreSQL); False when another round holds it (or, with `wait`, when it
    is free again)."""
    if connection.vendor != "postgresql":
        return True  # SQLite: the transaction itself is exclusive (IMMEDIATE), or there is one process
    with connection.cursor() as cursor:
        if wait:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
            return True
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [LOCK_KEY])
        return bool(cursor.fetchone()[0])


# --- The rounds -------------------------------------------------------------------------------------


@dataclass
class Round:
    """What one round of automatic patching did."""

    now: datetime
    skipped: bool = False
    started: list[int] = field(default_factory=list)
    decisions: dict[str, int] = field(default_factory=dict)
    halted: list[tuple[str, str]] = field(default_factory=list)
    wake_at: datetime | None = None
    phase: int | None = None
    busy: int = 0
    hurry: bool = False  # more could start once the installations in flight finish

    def __str__(self) -> str:
        if self.skipped:
            return "skipped: another round is running"
        counts = ", ".join(f"{decision} {n}" for decision, n in sorted(self.decisions.items()))
        return f"started {len(self.started)} installation(s); {counts or 'no VMs'}"


def patch_fleet(
    now: datetime | None = None, *, execute: bool = False, cache: FleetCache | None = None, wait: bool = False
) -> Round:
    """One round of automatic patching: halt failing rollouts, decide for every VM, start installations.

    `now` None is real time (the installations are queued for the workers); with `now` and
    `execute=True` they run right away on that simulated clock. `cache` (the simulation's) keeps
    what the previous round read. A beat's round is skipped while another holds the lock; `wait`
    (the simulation's stepping: the sandbox advance, the demo's history) waits for it instead, so that a
    beat round running meanwhile cannot make the simulated clock step past a round.
    """
    clock = now or world_clock.now()
    rules = current_rules()
    with transaction.atomic():
        if not _exclusive(wait):
            return Round(clock, skipped=True)
        catalogs = load_catalogs()
        opened = faults.open_halts(clock)  # the sandbox's injected rollout halts
        halts = list(RolloutHalt.objects.all())
        if cache is None or cache.installed_since_check:
            found = check_halts(clock, rules, catalogs, halts)
            halts += found
            opened += found
        snap = snapshot(clock, rules, catalogs, cache)
        halted = open_halts(halts)
        if cache is None:
            result = planner.plan(snap.fleet, clock, rules, halted)
        else:  # the planner looks again only at the VMs whose FleetVM the snapshot made anew
            result = planner.plan(snap.fleet, clock, rules, halted, memo=cache.planned, changes=cache.changes)
            cache.changes = {}
        # The lock order (services.lock_vms): the VMs that start an installation, then guest states.
        started = start_installations(result.starts, clock, enqueue=not execute)
        # Only the verdicts the planner worked out again, and the decisions read again, can differ.
        changed = None if result.changed is None or snap.reread is None else result.changed | snap.reread
        record_decisions(result.verdicts, snap.decisions, clock, changed)
        if cache is not None and cache.verify:
            assert result == planner.plan(snap.fleet, clock, rules, halted), "stale planner memo"
            assert not _unrecorded(result.verdicts, snap.decisions, result.verdicts), "decision not recorded"
    if execute:
        run_now(started, clock)
    if cache is not None:
        cache.touch(start.vm_id for start in result.starts)
        cache.installed_since_check = bool(result.starts)
    return Round(
        now=clock,
        started=started,
        decisions=result.counts,
        halted=[(h.product, h.release_month) for h in opened],
        wake_at=result.wake_at,
        phase=result.phase,
        busy=snap.busy,
        hurry=result.hurry,
    )


@dataclass
class Assessments:
    started: list[int]
    next_due: datetime | None  # the next slot of a running VM (the simulation sleeps till then)


def assess_fleet(now: datetime | None = None, *, execute: bool = False) -> Assessments:
    """Periodic assessment: every running VM whose slot has come (24 h or every few days), staggered."""
    clock = now or world_clock.now()
    rules = current_rules()
    rows = VirtualMachine.objects.filter(
        power_state=VirtualMachine.PowerState.RUNNING, guest__isnull=False
    ).values_list("pk", "assessment_mode", "guest__assessed_at")
    due, next_due = [], None
    for pk, mode, assessed_at in rows:
        period = assessment_period(mode, rules)
        if assessment_due(pk, period, assessed_at, clock):
            due.append((assessed_at or EPOCH, pk))
        slot = next_assessment_slot(pk, period, clock)
        next_due = slot if next_due is None else min(next_due, slot)
    if len(due) > MAX_ASSESSMENTS_PER_ROUND:
        # The longest-waiting first; the rest at the next round (staggered, a day of 100,000 VMs is
        # about 70 a minute: only a fresh fleet is all due at once).
        next_due = clock
    due = [pk for _, pk in sorted(due)[:MAX_ASSESSMENTS_PER_ROUND]]
    started: list[int] = []
    for i in range(0, len(due), 2000):
        vms = VirtualMachine.objects.select_related("resource_group").filter(pk__in=due[i : i + 2000])
        started += services.queue_operations(
            vms, OperationKind.ASSESSMENT, started_by=StartedBy.PLATFORM, now=clock, enqueue=not execute
        )
    if execute:
        run_now(started, clock)
    return Assessments(started, next_due)
