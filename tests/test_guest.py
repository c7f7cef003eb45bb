"""The simulated guest's rules (SPEC §3.3), as pure functions: applicability, selection, installation."""

from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from patching import guest as sim


def at(y, m, d):
    return datetime(y, m, d, 17, tzinfo=UTC)


# A small hotpatch-product catalog: January baseline, February hotpatch, March hotpatch, April baseline.
JAN_BASELINE = sim.Patch(1, "5000001", "baseline", "Security", "AlwaysRequiresReboot", at(2026, 1, 13), "20348.100")
FEB_HOTPATCH = sim.Patch(2, "5000002", "hotpatch", "Security", "NeverReboots", at(2026, 2, 10), "20348.110", 1)
FEB_LCU = sim.Patch(3, "5000003", "monthly", "Security", "AlwaysRequiresReboot", at(2026, 2, 10), "20348.120")
MAR_HOTPATCH = sim.Patch(4, "5000004", "hotpatch", "Security", "NeverReboots", at(2026, 3, 10), "20348.130", 1)
MAR_LCU = sim.Patch(5, "5000005", "monthly", "Security", "AlwaysRequiresReboot", at(2026, 3, 10), "20348.140")
APR_BASELINE = sim.Patch(6, "5000006", "baseline", "Security", "AlwaysRequiresReboot", at(2026, 4, 14), "20348.200")
MAR_DOTNET = sim.Patch(7, "5000007", "dotnet", "Security", "AlwaysRequiresReboot", at(2026, 3, 10))
FEB_DOTNET = sim.Patch(8, "5000008", "dotnet", "Security", "AlwaysRequiresReboot", at(2026, 2, 10))
MAR_MSRT = sim.Patch(9, "890830", "msrt", "UpdateRollUp", "CanRequestReboot", at(2026, 3, 10))
DEFINITION = sim.Patch(10, "2267602", "definition", "Definition", "NeverReboots", at(2026, 3, 20))
CATALOG = [
    JAN_BASELINE,
    FEB_HOTPATCH,
    FEB_LCU,
    MAR_HOTPATCH,
    MAR_LCU,
    APR_BASELINE,
    MAR_DOTNET,
    FEB_DOTNET,
    MAR_MSRT,
    DEFINITION,
]


def enrolled_on(baseline, *installed):
    return sim.Guest(True, baseline.build, baseline.id, frozenset({baseline.id, *installed}))


def ids(patches):
    return [p.id for p in patches]


def test_enrolled_vm_on_its_baseline_gets_only_the_latest_hotpatch():
    found = sim.applicable(enrolled_on(JAN_BASELINE), CATALOG, at(2026, 3, 25))
    assert MAR_HOTPATCH in found
    assert FEB_HOTPATCH not in found  # superseded by March's hotpatch of the same baseline
    assert FEB_LCU not in found and MAR_LCU not in found  # LCUs are for VMs not enrolled


def test_enrolled_vm_behind_the_baseline_is_offered_the_baseline_then_its_hotpatch():
    may = at(2026, 5, 20)
    may_hotpatch = sim.Patch(11, "5000011", "hotpatch", "Security", "NeverReboots", at(2026, 5, 12), "20348.210", 6)
    catalog = [*CATALOG, may_hotpatch]
    behind = enrolled_on(JAN_BASELINE, MAR_HOTPATCH.id)
    found = sim.applicable(behind, catalog, may)
    assert APR_BASELINE in found and may_hotpatch not in found
    assert sim.is_behind_baseline(behind, catalog, may)

    outcome = sim.install(
        behind,
        found,
        sim.Selection(classifications=frozenset({"Security"})),
        reboot_setting="IfRequired",
        maximum_duration=timedelta(hours=4),
        vm_key="vm",
        today=may.date(),
        failure_rate=0,
    )
    assert outcome.baseline_id == APR_BASELINE.id and outcome.build == APR_BASELINE.build
    assert outcome.reboot_status == "Completed"
    after = sim.Guest(True, outcome.build, outcome.baseline_id, behind.installed | {p.id for p in outcome.installed})
    assert may_hotpatch in sim.applicable(after, catalog, may)


def test_vm_not_enrolled_gets_only_the_newest_cumulative_update():
    not_enrolled = sim.Guest(False, JAN_BASELINE.build, JAN_BASELINE.id, frozenset({JAN_BASELINE.id}))
    found = sim.applicable(not_enrolled, CATALOG, at(2026, 3, 25))
    assert MAR_LCU in found
    assert not {FEB_LCU, FEB_HOTPATCH, MAR_HOTPATCH} & set(found)


def test_newest_of_each_family_supersedes_older_ones_and_unreleased_updates_are_not_offered():
    found = sim.applicable(enrolled_on(JAN_BASELINE), CATALOG, at(2026, 3, 15))
    assert MAR_DOTNET in found and FEB_DOTNET not in found
    assert DEFINITION not in found  # published on the 20th
    assert APR_BASELINE not in found


def test_installed_updates_are_not_offered_again():
    vm = enrolled_on(JAN_BASELINE, MAR_HOTPATCH.id, MAR_DOTNET.id)
    assert sim.applicable(vm, CATALOG, at(2026, 3, 15)) == [MAR_MSRT]


def test_hotpatch_status_tells_why():
    assessed = enrolled_on(JAN_BASELINE)
    args = dict(capable=True, enabled=True, patch_mode="AutomaticByPlatform", guest=assessed)
    assert sim.hotpatch_status(**args, assessed=False, baseline=JAN_BASELINE).status == "PendingEvaluation"
    assert sim.hotpatch_status(**args, assessed=True, baseline=JAN_BASELINE).status == "Enabled"
    behind = sim.hotpatch_status(**args, assessed=True, baseline=APR_BASELINE)
    assert behind.status == "ActionRequired" and "Behind the baseline" in behind.reason
    assert sim.hotpatch_status(**{**args, "enabled": False}, assessed=True, baseline=JAN_BASELINE).status == "Disabled"


# --- Properties of installPatches -----------------------------------------------------------------

kinds = st.sampled_from(["baseline", "hotpatch", "monthly", "oob", "dotnet", "msrt", "definition", "preview"])
classes = st.sampled_from(["Critical", "Security", "UpdateRollUp", "Definition", "Updates", "Tools"])
reboots = st.sampled_from(["NeverReboots", "AlwaysRequiresReboot", "CanRequestReboot"])


@st.composite
def patch_lists(draw):
    n = draw(st.integers(0, 12))
    kbs = draw(st.lists(st.integers(5000000, 5000030), min_size=n, max_size=n, unique=True))
    return [
        sim.Patch(
            i + 1,
            str(kb),
            draw(kinds),
            draw(classes),
            draw(reboots),
            at(2026, 1, 1) + timedelta(days=draw(st.integers(0, 60))),
            f"20348.{i}",
        )
        for i, kb in enumerate(kbs)
    ]


@st.composite
def selections(draw, patches):
    kbs = [p.kb for p in patches] + ["5999999"]
    include = draw(st.sets(st.sampled_from(kbs), max_size=3))
    exclude = draw(st.sets(st.sampled_from(kbs), max_size=3)) - include
    return sim.Selection(
        classifications=frozenset(draw(st.sets(classes, max_size=4))),
        kbs_to_include=frozenset(include),
        kbs_to_exclude=frozenset(exclude),
        exclude_kbs_requiring_reboot=draw(st.booleans()),
        max_patch_publish_date=draw(st.none() | st.just(at(2026, 1, 30))),
    )


@st.composite
def install_cases(draw):
    patches = draw(patch_lists())
    return (
        patches,
        draw(selections(patches)),
        draw(st.sampled_from(["IfRequired", "Never", "Always"])),
        timedelta(minutes=draw(st.integers(10, 240))),
        draw(st.floats(0, 0.5)),
    )


def run(patches, selection, reboot, duration, rate, reboot_pending=False):
    vm = sim.Guest(False, "20348.1", None, frozenset(), reboot_pending)
    return sim.install(
        vm,
        patches,
        selection,
        reboot_setting=reboot,
        maximum_duration=duration,
        vm_key="vm-1",
        today=date(2026, 3, 1),
        failure_rate=rate,
    )


@settings(max_examples=300, deadline=None)
@given(install_cases(), st.booleans())
def test_every_available_update_ends_in_exactly_one_state_and_counts_add_up(case, reboot_pending):
    patches, selection, reboot, duration, rate = case
    outcome = run(patches, selection, reboot, duration, rate, reboot_pending)
    assert set(outcome.states) == {p.id for p in patches}
    assert sum(outcome.counts.values()) == len(patches)
    for state, count in outcome.counts.items():
        assert count == sum(1 for s in outcome.states.values() if s == state)
    assert {p.id for p in outcome.installed} == {i for i, s in outcome.states.items() if s == "Installed"}
    assert outcome.maintenance_window_exceeded == (outcome.counts["Pending"] > 0)
    assert outcome.simulated_seconds <= duration.total_seconds()


@settings(max_examples=300, deadline=None)
@given(install_cases())
def test_selection_filters_are_obeyed(case):
    patches, selection, reboot, duration, rate = case
    outcome = run(patches, selection, reboot, duration, rate)
    for p in patches:
        state = outcome.states[p.id]
        if p.kb in selection.kbs_to_exclude:
            assert state == "Excluded"
        if state in ("Installed", "Failed", "Pending"):
            assert p.classification in selection.classifications or p.kb in selection.kbs_to_include
            assert not (selection.exclude_kbs_requiring_reboot and p.requires_reboot)
            assert selection.max_patch_publish_date is None or p.published_at <= selection.max_patch_publish_date


@settings(max_examples=200, deadline=None)
@given(install_cases())
def test_no_reboot_when_only_hotpatches_install(case):
    patches, selection, _, duration, rate = case
    hotpatches = [
        sim.Patch(p.id, p.kb, "hotpatch", p.classification, "NeverReboots", p.published_at, p.build) for p in patches
    ]
    for reboot in ("IfRequired", "Never"):
        outcome = run(hotpatches, selection, reboot, duration, rate)
        assert outcome.reboot_status == "NotNeeded"
        assert not outcome.reboot_pending


def test_reboot_setting_never_leaves_the_reboot_pending():
    outcome = run([FEB_LCU], sim.Selection(classifications=frozenset({"Security"})), "Never", timedelta(hours=2), 0)
    assert outcome.states[FEB_LCU.id] == "Installed"
    assert outcome.reboot_status == "Required" and outcome.reboot_pending


def test_what_does_not_fit_in_the_maximum_duration_stays_pending():
    everything = sim.Selection(classifications=frozenset({"Security", "UpdateRollUp"}))
    outcome = run([FEB_LCU, MAR_DOTNET, MAR_MSRT], everything, "IfRequired", timedelta(minutes=30), 0)
    assert outcome.states[FEB_LCU.id] == "Installed"  # 20 min + its 4 min reboot fit
    assert outcome.states[MAR_DOTNET.id] == "Pending"
    assert outcome.maintenance_window_exceeded and outcome.status == "CompletedWithWarnings"


def test_failures_are_deterministic_per_vm_kb_and_day():
    patches = [
        sim.Patch(i, str(5000000 + i), "dotnet", "Security", "NeverReboots", at(2026, 1, 1)) for i in range(1, 40)
    ]
    everything = sim.Selection(classifications=frozenset({"Security"}))
    first = run(patches, everything, "Never", timedelta(hours=4), 0.3)
    again = run(patches, everything, "Never", timedelta(hours=4), 0.3)
    assert first.states == again.states
    assert 0 < first.counts["Failed"] < first.counts["Installed"] + first.counts["Failed"]
