"""The batching decision of automatic patching (SPEC §3.5, availability-first). Pure: no database.

Given a snapshot of the fleet, the time and the rules, `plan()` says which VMs start an installation
now and, for every other VM, why not. The same function serves the beat task (real time) and the
fleet simulation (a simulated clock); the engine reads the snapshot and writes the outcome.

The rules, in the order they are applied:
1. Only Azure-orchestrated VMs (patchMode AutomaticByPlatform, no customer-managed schedule) that
   run, need a Critical or Security update, and whose release is not halted are candidates.
2. Phases (per product, whose release rolls out): phase n+1 opens once every candidate in the phases
   before it has had its attempt at the release (the VMs that failed are retried in their next
   window, and the release halts if too many fail: that is the health gate). An opened phase stays
   open for that release, so a VM that comes back late in phase 1 does not hold the fleet back.
3. Off-peak window: only in the VM's local window (its IANA time zone), with time left for the work.
   Then one phase at a time: the one with installations in flight, else the earliest ready one.
4. Zones: one zone per region at a time (the zone in flight, else the lowest with candidates).
5. Availability sets: one update domain at a time, at most 20% of the set at once, one VM when the
   set has fewer than 10. VMs in neither a zone nor a set: at most 20% (rounded up) of a
   subscription's such VMs in a region at once, so a subscription is not patched all at once.
On-demand installations do not follow these rules (SPEC §3.5) and do not count against them; a VM
with any installation in flight is not started again (the database allows one in flight per VM).
"""

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from patching.models import PatchDecision as D

from .needs import Need
from .rules import Rules, resolve_time_zone

PLATFORM, USER = "Platform", "User"


@dataclass(frozen=True)
class FleetVM:
    """One VM as the planner sees it."""

    id: int
    name: str
    product: str
    subscription: str
    region: str
    zone: str = ""
    availability_set: str = ""  # a fleet-wide key for the set ("" when none)
    update_domain: int | None = None
    time_zone: str = "UTC"
    power_state: str = "running"
    patch_mode: str = "AutomaticByPlatform"
    user_schedule: bool = False  # bypassPlatformSafetyChecksOnUserSchedule
    reboot_setting: str = "IfRequired"
    need: Need = field(default_factory=Need)
    installing: str = ""  # who started the installation in flight: "Platform", "User", or ""
    # Whether automatic patching has tried it since its product's newest release came out (phases).
    attempted: bool = False
    retry: str = ""  # what its last platform installation left undone, e.g. "1 update failed at ..."
    retry_after: datetime | None = None  # when that installation finished: retried in a later window

    @property
    def running(self) -> bool:
        return self.power_state == "running"

    @property
    def regional(self) -> bool:
        """In neither a zone nor an availability set."""
        return not self.zone and not self.availability_set


@dataclass(frozen=True)
class Verdict:
    decision: str
    detail: str


@dataclass(frozen=True)
class Start:
    """An installation to start now, with the parameters automatic patching uses."""

    vm_id: int
    reboot_setting: str
    exclude_reboot: bool
    maximum_duration: timedelta


@dataclass
class Plan:
    verdicts: dict[int, Verdict]  # VMs with an installation by the platform in flight keep theirs
    starts: list[Start]
    # The earliest moment a VM now outside its window could start, or one started now be retried
    # (the simulation sleeps till then).
    wake_at: datetime | None = None
    phase: int | None = None  # the phase rolling out, if any
    # Whether more could start as soon as the installations in flight finish (the simulation then
    # comes back within the hour): VMs in their window held back by a zone, a batch or a phase.
    hurry: bool = False
    counts: dict[str, int] = field(default_factory=dict)  # how many VMs got each decision
    # The VMs whose verdict may differ from the previous plan with the same memo (None: any of them).
    changed: set[int] | None = field(default=None, compare=False)


def set_capacity(size: int, rules: Rules) -> int:
    """How many VMs of an availability set may be patched at once."""
    return 1 if size < rules.small_set else max(1, math.floor(size * rules.set_fraction))


def subscription_capacity(size: int, rules: Rules) -> int:
    """How many of a subscription's VMs in a region (outside zones and sets) may be patched at once."""
    return max(1, math.ceil(size * rules.subscription_fraction))


def halt_reason(release_month: str, attempted: int, failed: int, rules: Rules) -> str | None:
    """Why a release's rollout halts, or None: a failure rate above the threshold, over enough attempts."""
    if attempted < rules.halt_min_attempts or failed / attempted <= rules.halt_failure_rate:
        return None
    return (
        f"{failed} of {attempted} automatic installations of the {release_month} release failed "
        f"({failed / attempted:.0%}, above the {rules.halt_failure_rate:.0%} threshold): its rollout stopped "
        "until an operator resumes it."
    )


IN_PROGRESS_BY_USER = Verdict(D.IN_PROGRESS, "An installation started by a user is running.")


@dataclass
class FleetIndex:
    """What plan() needs of the whole fleet, VM by VM: the reasons that depend on nothing but the VM
    and the halts, the candidates, the installations in flight and the tallies the rules count.

    Kept by a caller between plans (`memo`), it is updated only for the VMs whose FleetVM object is
    not the one it saw last time, so a round costs what changed and its candidates, not the fleet.
    """

    halts: tuple | None = None  # the halts its reasons were worked out with
    vms: dict[int, FleetVM] = field(default_factory=dict)  # each VM as last seen
    verdicts: dict[int, Verdict] = field(default_factory=dict)  # of the VMs that are not candidates
    candidates: dict[int, FleetVM] = field(default_factory=dict)
    busy: dict[int, FleetVM] = field(default_factory=dict)  # with an installation by the platform in flight
    attempted: Counter = field(default_factory=Counter)  # (product, region) of the VMs attempted
    set_size: Counter = field(default_factory=Counter)  # per availability set
    subscription_size: Counter = field(default_factory=Counter)  # (subscription, region) outside zones and sets
    decisions: Counter = field(default_factory=Counter)  # of `verdicts`

    def update(
        self,
        fleet: Sequence[FleetVM],
        halts: dict[tuple[str, str], str],
        changes: dict[int, FleetVM | None] | None = None,
    ) -> set[int] | None:
        """Take in `fleet`, whose `changes` since the last update are known or else found; returns the
        ids of the VMs that changed (None: all)."""
        key = tuple(sorted(halts.items()))
        if key != self.halts:  # every reason is worked out again
            self.halts = key
            for kept in (self.vms, self.verdicts, self.candidates, self.busy):
                kept.clear()
            for tally in (self.attempted, self.set_size, self.subscription_size, self.decisions):
                tally.clear()
            for vm in fleet:
                self._add(vm, halts)
            return None
        seen = self.vms
        if changes is None:  # the VMs that are not the objects seen last time, and the ones gone
            changes = {vm.id: vm for vm in fleet if seen.get(vm.id) is not vm}
            if len(seen) + sum(pk not in seen for pk in changes) > len(fleet):
                changes.update(dict.fromkeys(seen.keys() - {vm.id for vm in fleet}))
        for pk, vm in changes.items():
            if pk in seen:
                self._remove(seen[pk])
            if vm is not None:
                self._add(vm, halts)
        return set(changes)

    def _add(self, vm: FleetVM, halts: dict[tuple[str, str], str]) -> None:
        self.vms[vm.id] = vm
        verdict = None
        if vm.installing == PLATFORM:
            self.busy[vm.id] = vm
        elif vm.installing == USER:
            verdict = IN_PROGRESS_BY_USER
        elif not vm.installing:  # (a maintenance configuration's installation in flight: no verdict)
            verdict = _not_a_candidate(vm, halts)
            if verdict is None:
                self.candidates[vm.id] = vm
        if verdict is not None:
            self.verdicts[vm.id] = verdict
        self._tally(vm, verdict, 1)

    def _remove(self, vm: FleetVM) -> None:
        del self.vms[vm.id]
        self.busy.pop(vm.id, None)
        self.candidates.pop(vm.id, None)
        self._tally(vm, self.verdicts.pop(vm.id, None), -1)

    def _tally(self, vm: FleetVM, verdict: Verdict | None, step: int) -> None:
        """Count `vm` in (step 1) or out (step -1); a tally keeps no zeros (its keys are read too)."""
        for tally, key in (
            (self.attempted, (vm.product, vm.region) if vm.attempted else None),
            (self.set_size, vm.availability_set or None),
            (self.subscription_size, (vm.subscription, vm.region) if vm.regional else None),
            (self.decisions, verdict.decision if verdict else None),
        ):
            if key is not None:
                tally[key] += step
                if not tally[key]:
                    del tally[key]


def plan(
    fleet: Sequence[FleetVM],
    now: datetime,
    rules: Rules,
    halts: dict[tuple[str, str], str] | None = None,
    *,
    memo: FleetIndex | None = None,
    changes: dict[int, FleetVM | None] | None = None,
) -> Plan:
    """Which VMs start an installation now, and a reason for every VM that does not.

    `memo` (optional, kept by the caller between calls) is the fleet as last planned, for callers that
    pass the same FleetVM objects again for the VMs that did not change: only the others are looked at.
    `changes` (with a memo): the VMs whose FleetVM is new since the last call (None: gone), if the
    caller knows; else they are found by comparing the fleet with the memo's.
    """
    halts = halts or {}
    index = memo if memo is not None else FleetIndex()
    changed = index.update(fleet, halts, changes)
    verdicts = dict(index.verdicts)
    busy = list(index.busy.values())
    candidates = list(index.candidates.values())

    # Phases, per product (each has its own release): phase n+1 opens once every candidate of the
    # phases before it has had its attempt at the release; an opened phase stays open for that release,
    # so a VM that comes back late or failed in phase 1 is patched without holding the others back.
    phase_of = _remembered(rules.phases.phase_of)
    waiting: dict[str, int] = {}
    opened: dict[str, int] = {}
    for vm in candidates:
        if not vm.attempted:
            phase = phase_of(vm.region)
            waiting[vm.product] = min(waiting.get(vm.product, phase), phase)
    for product, region in index.attempted:
        opened[product] = max(opened.get(product, -1), phase_of(region))
    frontier = {product: max(phase, opened.get(product, -1)) for product, phase in waiting.items()}
    # The same words for every VM of a region waiting for the same phase: one verdict each.
    behind_frontier = _remembered(lambda region_limit: _behind_frontier(rules, *region_limit))
    allowed: list[FleetVM] = []
    for vm in candidates:
        limit = frontier.get(vm.product)
        if limit is not None and phase_of(vm.region) > limit:
            verdicts[vm.id] = behind_frontier((vm.region, limit))
        else:
            allowed.append(vm)

    # Off-peak window, in the VM's own time zone (the same for every VM of a zone: worked out once each).
    wake_at: datetime | None = None
    ready: list[tuple[FleetVM, timedelta]] = []
    window_of = _remembered(lambda time_zone: _window(rules, now, time_zone))
    label = rules.window.label
    for vm in allowed:
        remaining, opened_at, opens, when = window_of(vm.time_zone)
        # Failed or left pending in this window: retried in the next one.
        retried_here = bool(vm.retry_after and remaining and vm.retry_after >= opened_at)
        if remaining >= rules.min_duration and not retried_here:
            ready.append((vm, remaining))
            continue
        wake_at = opens if wake_at is None else min(wake_at, opens)
        if vm.retry:
            verdicts[vm.id] = Verdict(
                D.RETRY,
                f"Last attempt: {vm.retry}. Retried in its next off-peak window ({label}), {when}.",
            )
        else:
            verdicts[vm.id] = Verdict(
                D.OUTSIDE_WINDOW,
                f"Needs {vm.need.description or _kbs(vm.need.kbs)}; waits for its off-peak window "
                f"{label} ({vm.time_zone}), {when}." + (f" {vm.need.catch_up}" if vm.need.catch_up else ""),
            )

    # One phase in flight at a time: the one with installations running, else the earliest ready.
    busy_phases = {phase_of(vm.region) for vm in busy}
    current = min(busy_phases or {phase_of(vm.region) for vm, _ in ready}, default=None)
    in_window: list[tuple[FleetVM, timedelta]] = []
    for vm, remaining in ready:
        if phase_of(vm.region) == current:
            in_window.append((vm, remaining))
        else:
            verdicts[vm.id] = Verdict(
                D.WAITING_PHASE,
                f"Phase {current + 1} is being patched; phases never overlap, so phase {phase_of(vm.region) + 1} "
                f"({vm.region}) goes after it.",
            )

    starts = _batches(in_window, busy, index, now, rules, verdicts)
    hurry = len(starts) < len(in_window) or len(in_window) < len(ready)
    started = {start.vm_id for start in starts}
    # The release moves to its next phase once its last unattempted VM has started.
    blocked = {v.product for v in candidates if verdicts[v.id].decision == D.WAITING_PHASE}
    unstarted = {v.product for v in allowed if not v.attempted and v.id not in started}
    if any(product in blocked and product not in unstarted for product in frontier):
        hurry = True
    for vm, _ in in_window:
        if vm.id in started:  # if it fails, it is retried in its next window
            opens = window_of(vm.time_zone)[2]
            wake_at = opens if wake_at is None else min(wake_at, opens)
    counts = index.decisions + Counter(verdicts[pk].decision for pk in index.candidates)
    return Plan(
        verdicts=verdicts,
        starts=starts,
        wake_at=wake_at,
        phase=current,
        hurry=hurry,
        counts=dict(counts),
        changed=None if changed is None else changed | index.candidates.keys(),
    )


def _window(rules: Rules, now: datetime, time_zone: str) -> tuple[timedelta, datetime | None, datetime, str]:
    """For a VM in `time_zone` at `now`: the time left in its window, when that window opened, when
    its next window opens (UTC) and how a verdict says so."""
    zone = resolve_time_zone(time_zone)
    remaining = rules.window.remaining(now, zone)
    opened_at = rules.window.opened_at(now, zone) if remaining else None
    opens = rules.window.next_opening(now + remaining + timedelta(seconds=1), zone)
    return remaining, opened_at, opens, f"next from {opens.astimezone(zone):%Y-%m-%d %H:%M} local"


def _behind_frontier(rules: Rules, region: str, limit: int) -> Verdict:
    return Verdict(
        D.WAITING_PHASE,
        f"{region} is in rollout phase {rules.phases.phase_of(region) + 1}; the release is rolling out to phase "
        f"{limit + 1} ({_regions(rules.phases.regions(limit))}) first, and moves on once those VMs have been patched.",
    )


def _remembered(compute):
    """`compute` remembered per argument, for one plan."""
    known: dict = {}

    def get(key):
        if key not in known:
            known[key] = compute(key)
        return known[key]

    return get


def _not_a_candidate(vm: FleetVM, halts: dict[tuple[str, str], str]) -> Verdict | None:
    """The reason a VM is not patched whatever the others do, or None for a candidate."""
    need = vm.need
    if vm.patch_mode == "Manual":
        return Verdict(
            D.MODE_MANUAL, "Patch orchestration is Manual: the platform installs nothing; use Install updates now."
        )
    if vm.patch_mode == "AutomaticByOS":
        return Verdict(D.MODE_BY_OS, "Patch orchestration is AutomaticByOS: Windows Update inside the VM decides.")
    if vm.user_schedule:
        return Verdict(
            D.USER_SCHEDULE,
            "Customer Managed Schedules (bypassPlatformSafetyChecksOnUserSchedule): the platform's rounds leave "
            "this VM to its maintenance configuration; with no schedule attached, nothing patches it.",
        )
    if not vm.running:
        state = vm.power_state
        if need.installs:
            return Verdict(
                D.OFF,
                f"The VM is {state}; it needs {need.description or ', '.join(need.kbs)} and is patched in its first "
                "off-peak window after it starts.",
            )
        return Verdict(D.OFF, f"The VM is {state}; it is assessed and patched again once it runs.")
    if not need.installs:
        if need.behind:
            return Verdict(D.BEHIND_BASELINE, need.behind)
        if need.held:
            return Verdict(
                D.HELD_FOR_BASELINE,
                f"{_kbs(need.held)} need{'s' if len(need.held) == 1 else ''} a reboot: held for the next baseline "
                f"month, {need.held_until}, so the VM reboots only with its baseline.",
            )
        return Verdict(D.UP_TO_DATE, "All Critical and Security updates are installed.")
    halted = sorted(release for release in need.releases if release in halts)
    if halted:
        return Verdict(D.HALTED, halts[halted[0]])
    if resolve_time_zone(vm.time_zone) is None:
        return Verdict(
            D.OUTSIDE_WINDOW,
            f"Its time zone '{vm.time_zone}' is not an IANA time zone, so its off-peak hours are unknown and "
            "the platform does not patch it; set a valid time zone.",
        )
    return None


def _batches(
    in_window: list[tuple[FleetVM, timedelta]],
    busy: list[FleetVM],
    index: FleetIndex,
    now: datetime,
    rules: Rules,
    verdicts: dict[int, Verdict],
) -> list[Start]:
    """Zones, availability sets and subscriptions: who of the VMs in their window goes now."""
    zones_busy: dict[str, set[str]] = defaultdict(set)
    set_busy: dict[str, list[FleetVM]] = defaultdict(list)
    subscription_busy: dict[tuple[str, str], int] = defaultdict(int)
    for vm in busy:
        if vm.zone:
            zones_busy[vm.region].add(vm.zone)
        if vm.availability_set:
            set_busy[vm.availability_set].append(vm)
        if vm.regional:
            subscription_busy[(vm.subscription, vm.region)] += 1
    set_size, subscription_size = index.set_size, index.subscription_size

    # The zone each region patches now: the one in flight, else the lowest with a VM ready.
    zone_now: dict[str, str] = {}
    for vm, _ in in_window:
        if vm.zone and not zones_busy[vm.region]:
            zone_now[vm.region] = min(zone_now.get(vm.region, vm.zone), vm.zone)
    # The update domain each set patches now: the one in flight, else the lowest with a VM ready.
    domain_now: dict[str, int] = {}
    for vm, _ in in_window:
        if vm.availability_set and not set_busy[vm.availability_set]:
            domain = _domain(vm)
            domain_now[vm.availability_set] = min(domain_now.get(vm.availability_set, domain), domain)
    for key, members in set_busy.items():
        if members:
            domain_now[key] = min(_domain(vm) for vm in members)

    # A different order every month, so the same VMs are not always first (Azure's install dates vary).
    month = now.year * 12 + now.month
    order = sorted(in_window, key=lambda item: ((item[0].id * 2654435761 + month * 40503) % 2**32, item[0].id))
    starts: list[Start] = []
    for vm, remaining in order:
        if vm.zone:
            allowed = zones_busy[vm.region] or {zone_now[vm.region]}
            if vm.zone not in allowed:
                verdicts[vm.id] = Verdict(
                    D.WAITING_ZONE,
                    f"Zone {min(allowed)} of {vm.region} is being patched; zone {vm.zone} waits (the zones of a "
                    "region are never patched at the same time).",
                )
                continue
        if vm.availability_set:
            key = vm.availability_set
            size, capacity = set_size[key], set_capacity(set_size[key], rules)
            name = key.rsplit("/", 1)[-1]
            if _domain(vm) != domain_now[key]:
                verdicts[vm.id] = Verdict(
                    D.WAITING_BATCH,
                    f"Availability set {name}: update domain {domain_now[key]} is being patched; update domain "
                    f"{_domain(vm)} waits (one update domain at a time).",
                )
                continue
            if len(set_busy[key]) >= capacity:
                verdicts[vm.id] = Verdict(
                    D.WAITING_BATCH,
                    f"Availability set {name}: {capacity} of its {size} VMs "
                    f"{'is' if capacity == 1 else 'are'} being patched, the most at once "
                    f"({'one at a time below 10 VMs' if size < rules.small_set else '20% of the set'}).",
                )
                continue
        if vm.regional:
            group = (vm.subscription, vm.region)
            capacity = subscription_capacity(subscription_size[group], rules)
            if subscription_busy[group] >= capacity:
                verdicts[vm.id] = Verdict(
                    D.WAITING_BATCH,
                    f"{capacity} of this subscription's {subscription_size[group]} VMs in {vm.region} outside zones "
                    "and sets are being patched; the rest follow in batches, never all at once.",
                )
                continue
        # Go.
        # Whole quarter hours: a round's installations then share a few parameter sets (one insert each).
        duration = min(remaining, rules.max_duration)
        duration = timedelta(minutes=15 * int(duration.total_seconds() // 900))
        starts.append(Start(vm.id, vm.reboot_setting, vm.need.exclude_reboot, duration))
        if vm.zone:
            zones_busy[vm.region].add(vm.zone)
        if vm.availability_set:
            set_busy[vm.availability_set].append(vm)
        if vm.regional:
            subscription_busy[(vm.subscription, vm.region)] += 1
        verdicts[vm.id] = Verdict(D.PATCHED, _patching(vm, rules))
    return starts


def _patching(vm: FleetVM, rules: Rules) -> str:
    need = vm.need
    parts = []
    if vm.retry:
        parts.append(f"Retrying ({vm.retry}):")
    if need.catch_up:
        parts.append(need.catch_up)
    parts.append(
        f"Installing {need.description or _kbs(need.kbs)} in its off-peak window {rules.window.label} ({vm.time_zone})."
    )
    if need.reboots and vm.reboot_setting == "Never":
        parts.append("rebootSetting Never: it will wait for a reboot.")
    if need.held:
        parts.append(f"Held for the next baseline month: {_kbs(need.held)}.")
    return " ".join(parts)


def _domain(vm: FleetVM) -> int:
    return vm.update_domain if vm.update_domain is not None else -1


def _kbs(kbs: Iterable[str]) -> str:
    return ", ".join(f"KB{kb}" for kb in kbs)


def _regions(regions: Sequence[str]) -> str:
    listed = ", ".join(regions[:4])
    return listed + (f" and {len(regions) - 4} more" if len(regions) > 4 else "")
