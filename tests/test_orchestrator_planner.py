"""The batching rules of automatic patching, property-tested over random fleets and several rounds.

Each example is a random fleet and a few rounds of planning on an advancing clock: what a round
starts stays in flight for a round or two, then is done. Whatever the fleet, at every round the
installations in flight respect availability-first: one phase, one zone per region, one update
domain and at most 20% of an availability set (one VM below 10), a share of a subscription's
other VMs; and nothing starts outside its VM's off-peak window, nor on a VM that is off, not
Azure-orchestrated, up to date or halted. Pure: no database.
"""

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from patching.models import PatchDecision
from patching.orchestrator import planner
from patching.orchestrator.needs import Need
from patching.orchestrator.planner import FleetVM, plan, set_capacity, subscription_capacity
from patching.orchestrator.rules import DEFAULT_PHASES, OffPeakWindow, PhasePlan, Rules, resolve_time_zone

REGIONS = ["westeurope", "northeurope", "eastus", "westus", "swedencentral", "westcentralus", "japaneast"]
TIME_ZONES = [
    "UTC",
    "Europe/Stockholm",
    "America/New_York",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Pacific/Chatham",
    "Mars/Base",
]
PRODUCTS = ["ws2022-azure", "ws2019"]
MONTHS = ["2024-07", "2024-08"]
RULES = Rules(window=OffPeakWindow.parse("22:00-06:00"), phases=PhasePlan.parse(DEFAULT_PHASES))


def pick(byte: int, options: list):
    """One of `options` from one random byte (the bias of the modulo is under 4%, not a blind spot)."""
    return options[byte % len(options)]


@st.composite
def fleets(draw):
    count = draw(st.integers(1, 60) | st.integers(20, 60))
    # A few regions and night-time zones per example, so that sets and groups fill up in their windows.
    regions = draw(st.lists(st.sampled_from(REGIONS), min_size=1, max_size=3, unique=True))
    zones = draw(st.lists(st.sampled_from(TIME_ZONES), min_size=1, max_size=3, unique=True))
    vms = []
    for pk in range(1, count + 1):
        # Each VM is one draw of 16 random bytes, one per property below, instead of one draw per
        # property: the same fleets, a tenth of the cost of generating them (the engine's bookkeeping
        # per draw dominated this test). Each byte shrinks towards 0, the first option, as
        # sampled_from does.
        b = draw(st.binary(min_size=16, max_size=16))
        region = pick(b[0], regions)
        placement = pick(b[1], ["set", "zone", "regional"])
        product = pick(b[2], PRODUCTS)
        installs = pick(b[3], [False, True])
        month = pick(b[4], MONTHS)
        need = (
            Need(kbs=(f"50{pk:05d}",), description="an update", releases=frozenset({(product, month)}))
            if installs
            else pick(b[5], [Need(), Need(held=("5042350",), held_until="2024-10"), Need(behind="behind")])
        )
        vms.append(
            FleetVM(
                id=pk,
                name=f"vm-{pk:03d}",
                product=product,
                subscription=pick(b[6], ["sub-a", "sub-b"]),
                region=region,
                zone=pick(b[7], ["1", "2", "3"]) if placement == "zone" else "",
                availability_set=f"{region}/set-{pick(b[8], [0, 1])}" if placement == "set" else "",
                update_domain=pick(b[9], [0, 1, 2]) if placement == "set" else None,
                time_zone=pick(b[10], zones),
                power_state=pick(b[11], ["running"] * 6 + ["stopped", "deallocated"]),
                patch_mode=pick(b[12], ["AutomaticByPlatform"] * 6 + ["Manual", "AutomaticByOS"]),
                user_schedule=pick(b[13], [False] * 9 + [True]),
                reboot_setting=pick(b[14], ["IfRequired", "Never", "Always"]),
                need=need,
                attempted=pick(b[15], [False, True]),
            )
        )
    halts = draw(st.sets(st.tuples(st.sampled_from(PRODUCTS), st.sampled_from(MONTHS)), max_size=1))
    start = datetime(2024, 8, 13, 22, tzinfo=UTC) + timedelta(minutes=draw(st.integers(0, 24 * 60)))
    steps = draw(st.lists(st.integers(15, 120), min_size=1, max_size=8))
    durations = draw(st.lists(st.integers(1, 3), min_size=8, max_size=8))
    return vms, {h: f"halted {h}" for h in halts}, start, steps, durations


def check_round(fleet: list[FleetVM], now: datetime, halts, result) -> None:
    by_id = {vm.id: vm for vm in fleet}
    started = [by_id[s.vm_id] for s in result.starts]
    busy = [vm for vm in fleet if vm.installing == planner.PLATFORM]
    in_flight = busy + started
    phase_of = RULES.phases.phase_of

    # Every VM not being patched has a reason, and only the started ones read "patched".
    assert set(result.verdicts) == {vm.id for vm in fleet if vm.installing != planner.PLATFORM}
    assert {v.decision for v in result.verdicts.values()} <= set(PatchDecision.values)
    assert {vm.id for vm in started} == {pk for pk, v in result.verdicts.items() if v.decision == PatchDecision.PATCHED}
    assert all(v.detail for v in result.verdicts.values())

    # Availability-first, over everything in flight after this round.
    assert len({phase_of(vm.region) for vm in in_flight}) <= 1, "two phases in flight"
    zones = defaultdict(set)
    for vm in in_flight:
        if vm.zone:
            zones[vm.region].add(vm.zone)
    assert all(len(z) <= 1 for z in zones.values()), "two zones of a region in flight"
    set_size, subscription_size = defaultdict(int), defaultdict(int)
    for vm in fleet:
        if vm.availability_set:
            set_size[vm.availability_set] += 1
        if vm.regional:
            subscription_size[(vm.subscription, vm.region)] += 1
    sets, groups = defaultdict(list), defaultdict(int)
    for vm in in_flight:
        if vm.availability_set:
            sets[vm.availability_set].append(vm)
        if vm.regional:
            groups[(vm.subscription, vm.region)] += 1
    for key, members in sets.items():
        assert len({vm.update_domain for vm in members}) == 1, "two update domains of a set in flight"
        assert len(members) <= set_capacity(set_size[key], RULES), "more than 20% of a set in flight"
        if set_size[key] < 10:
            assert len(members) == 1
    for key, n in groups.items():
        assert n <= subscription_capacity(subscription_size[key], RULES)

    # Who may start at all, and only inside its own off-peak window with the time it has left.
    for start, vm in zip(result.starts, started, strict=True):
        assert vm.running and vm.patch_mode == "AutomaticByPlatform" and not vm.user_schedule
        assert vm.need.installs and not (vm.need.releases & set(halts)) and not vm.installing
        zone = resolve_time_zone(vm.time_zone)
        assert zone is not None
        remaining = RULES.window.remaining(now, zone)
        assert remaining >= RULES.min_duration, "started outside its off-peak window"
        assert start.maximum_duration <= min(remaining, RULES.max_duration)
        assert start.reboot_setting == vm.reboot_setting and start.exclude_reboot == vm.need.exclude_reboot

    # Phases open in order: nothing starts beyond a phase that still has VMs waiting for their first attempt.
    for vm in started:
        earlier = [
            v
            for v in fleet
            if v.product == vm.product
            and result.verdicts.get(v.id) is not None
            and result.verdicts[v.id].decision
            in (PatchDecision.OUTSIDE_WINDOW, PatchDecision.RETRY, PatchDecision.WAITING_PHASE)
            and not v.attempted
            and resolve_time_zone(v.time_zone) is not None  # else never patched, so never waited for
            and phase_of(v.region) < phase_of(vm.region)
        ]
        opened = max((phase_of(v.region) for v in fleet if v.product == vm.product and v.attempted), default=-1)
        assert not earlier or opened >= phase_of(vm.region), "a phase opened before the one before it had its turn"


@settings(max_examples=300, deadline=None)
@given(fleets())
def test_batches_respect_availability_first_whatever_the_fleet(example):
    vms, halts, now, steps, durations = example
    state = {vm.id: vm for vm in vms}
    busy_until: dict[int, int] = {}
    for round_, step in enumerate(steps):
        for pk, until in list(busy_until.items()):
            if until <= round_:  # finished: nothing left to install, and it had its attempt
                del busy_until[pk]
                state[pk] = FleetVM(**{**state[pk].__dict__, "installing": "", "need": Need(), "attempted": True})
        fleet = list(state.values())
        result = plan(fleet, now, RULES, halts)
        check_round(fleet, now, halts, result)
        for start in result.starts:
            busy_until[start.vm_id] = round_ + durations[round_ % len(durations)]
            # Started after the release came out: that is its attempt (as the engine reads it).
            state[start.vm_id] = FleetVM(
                **{**state[start.vm_id].__dict__, "installing": planner.PLATFORM, "attempted": True}
            )
        now += timedelta(minutes=step)


# What happens to a VM between rounds, besides the installations the rounds start.
CHANGES = [
    {"installing": planner.PLATFORM},
    {"installing": planner.USER},
    {"installing": ""},
    {"installing": "Schedule"},
    {"power_state": "deallocated"},
    {"power_state": "running"},
    {"attempted": True},
    {"need": Need()},
    {},  # read again: an equal FleetVM, another object
]


@settings(max_examples=150, deadline=None)
@given(fleets(), st.data())
def test_the_memo_plans_as_from_scratch_while_the_fleet_changes(example, data):
    """Kept between rounds, the memo looks again only at the VMs whose FleetVM object changed (told, as
    the engine does, or found): every round its plan equals one worked out from scratch, and `changed`
    names every VM whose verdict did (the engine records only those), while VMs change, leave and come
    back and halts open and close."""
    vms, halts, now, steps, _ = example
    state = {vm.id: vm for vm in vms}
    memo = planner.FleetIndex()
    previous: dict = {}
    planned: dict = {}  # the fleet of the previous round, by id
    for step in steps:
        for pk in data.draw(st.lists(st.sampled_from(sorted(state)), max_size=5)):
            state[pk] = FleetVM(**{**state[pk].__dict__, **data.draw(st.sampled_from(CHANGES))})
        away = data.draw(st.sets(st.sampled_from(sorted(state)), max_size=3))
        fleet = {pk: vm for pk, vm in state.items() if pk not in away}
        changes = {pk: vm for pk, vm in fleet.items() if planned.get(pk) is not vm}
        changes.update((pk, None) for pk in planned.keys() - fleet.keys())
        now_halts = halts if data.draw(st.booleans()) else {}
        told = changes if data.draw(st.booleans()) else None
        result = plan(list(fleet.values()), now, RULES, now_halts, memo=memo, changes=told)
        assert result == plan(list(fleet.values()), now, RULES, now_halts)
        if result.changed is not None:
            assert {pk for pk, v in result.verdicts.items() if previous.get(pk) != v} <= result.changed
        previous, planned = result.verdicts, fleet
        for start in result.starts:
            state[start.vm_id] = FleetVM(
                **{**state[start.vm_id].__dict__, "installing": planner.PLATFORM, "attempted": True}
            )
        now += timedelta(minutes=step)


def vm(pk, **fields):
    defaults = dict(
        name=f"vm-{pk}",
        product="ws2022-azure",
        subscription="sub",
        region="westeurope",
        time_zone="Europe/Amsterdam",
        need=Need(kbs=("5041160",), description="KB5041160", releases=frozenset({("ws2022-azure", "2024-08")})),
    )
    return FleetVM(id=pk, **{**defaults, **fields})


NIGHT = datetime(2024, 8, 14, 0, 30, tzinfo=UTC)  # 02:30 in Amsterdam
DAY = datetime(2024, 8, 14, 10, 0, tzinfo=UTC)


def test_every_reason_not_to_patch_is_said():
    fleet = [
        vm(1, patch_mode="Manual"),
        vm(2, patch_mode="AutomaticByOS"),
        vm(3, user_schedule=True),
        vm(4, power_state="deallocated"),
        vm(5, need=Need()),
        vm(6, need=Need(held=("5042350",), held_until="2024-10 (expected 2024-10-08)")),
        vm(7, need=Need(behind="Not on a baseline build")),
        vm(8, time_zone="Mars/Base"),
        vm(9, installing="User"),
        vm(10, product="ws2019", need=Need(kbs=("1",), releases=frozenset({("ws2019", "2024-08")}))),
    ]
    result = plan(fleet, NIGHT, RULES, {("ws2019", "2024-08"): "The 2024-08 rollout is halted."})
    decisions = {pk: (v.decision, v.detail) for pk, v in result.verdicts.items()}
    assert decisions[1][0] == "mode_manual" and decisions[2][0] == "mode_by_os"
    assert decisions[3][0] == "user_schedule" and "no schedule" in decisions[3][1]
    assert decisions[4][0] == "off" and "deallocated" in decisions[4][1] and "KB5041160" in decisions[4][1]
    assert decisions[5][0] == "up_to_date"
    assert decisions[6][0] == "held_for_baseline" and "KB5042350" in decisions[6][1] and "2024-10" in decisions[6][1]
    assert decisions[7] == ("behind_baseline", "Not on a baseline build")
    assert decisions[8][0] == "outside_window" and "Mars/Base" in decisions[8][1]
    assert decisions[9][0] == "in_progress"
    assert decisions[10] == ("halted", "The 2024-08 rollout is halted.")
    assert not result.starts


def test_outside_its_window_it_says_when_the_window_opens():
    result = plan([vm(1)], DAY, RULES)
    verdict = result.verdicts[1]
    assert verdict.decision == "outside_window"
    assert "22:00–06:00 (Europe/Amsterdam), next from 2024-08-14 22:00 local" in verdict.detail
    assert result.wake_at == datetime(2024, 8, 14, 20, tzinfo=UTC)


def test_a_failed_vm_is_retried_in_its_next_window_not_the_same_one():
    failed_at = NIGHT - timedelta(minutes=20)
    failed = vm(1, retry="1 update failed at 2024-08-14 00:10 UTC", retry_after=failed_at)
    result = plan([failed], NIGHT, RULES)
    assert result.verdicts[1].decision == "retry" and "next from 2024-08-14 22:00 local" in result.verdicts[1].detail
    tomorrow = plan([failed], NIGHT + timedelta(hours=22), RULES)
    assert [s.vm_id for s in tomorrow.starts] == [1]
    assert tomorrow.verdicts[1].detail.startswith("Retrying (1 update failed")


def test_zones_go_one_after_the_other_and_sets_one_update_domain_at_a_time():
    zoned = [vm(pk, zone=str(1 + pk % 3)) for pk in range(6)]
    result = plan(zoned, NIGHT, RULES)
    assert {zoned[s.vm_id].zone for s in result.starts} == {"1"}
    assert {result.verdicts[v.id].decision for v in zoned if v.zone != "1"} == {"waiting_zone"}

    small_set = [vm(pk, availability_set="rg/avset-sql", update_domain=pk % 5) for pk in range(6)]
    result = plan(small_set, NIGHT, RULES)
    assert len(result.starts) == 1 and result.hurry  # fewer than 10: one at a time
    big_set = [vm(pk, availability_set="rg/avset-web", update_domain=pk % 2) for pk in range(20)]
    result = plan(big_set, NIGHT, RULES)
    assert len(result.starts) == 4  # 20% of 20, all from one update domain
    assert len({big_set[s.vm_id].update_domain for s in result.starts}) == 1


def test_the_next_phase_opens_once_the_earlier_one_had_its_attempt_and_stays_open():
    europe = vm(1, region="northeurope", time_zone="Europe/Dublin")  # phase 1
    later = vm(2, region="westeurope")  # phase 2
    result = plan([europe, later], DAY, RULES)  # phase 1 is outside its window
    assert result.verdicts[2].decision == "waiting_phase" and "phase 1" in result.verdicts[2].detail
    result = plan([europe, later], NIGHT, RULES)
    assert [s.vm_id for s in result.starts] == [1]  # both in their window: phase 1 first
    done = FleetVM(**{**europe.__dict__, "need": Need(), "attempted": True})
    assert [s.vm_id for s in plan([done, later], NIGHT, RULES).starts] == [2]
    # A phase-1 VM that comes back late does not close phase 2 again, nor run beside it.
    late = vm(3, region="northeurope", time_zone="Europe/Dublin")
    running = FleetVM(**{**later.__dict__, "installing": "Platform", "attempted": True})
    result = plan([done, running, late], NIGHT, RULES)
    assert not result.starts and result.verdicts[3].decision == "waiting_phase"
    assert "phases never overlap" in result.verdicts[3].detail
    finished = FleetVM(**{**running.__dict__, "installing": "", "need": Need()})
    assert [s.vm_id for s in plan([done, finished, late], NIGHT, RULES).starts] == [3]
