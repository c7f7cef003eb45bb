"""Hotpatch enrollment under automatic patching: turning it off and on around baselines, the preview
gate, and what happens to a VM that fell behind the baseline."""

from datetime import UTC, datetime, timedelta

import pytest

from patching import services
from patching.models import GuestState, Operation, OperationKind, StartedBy
from patching.orchestrator import engine
from tests.factories import make_resource_group, make_subscription, make_vm
from vms import features
from vms.models import FeatureRegistration, VirtualMachine

# Installations succeed unless a test says otherwise (the simulated failure rate is per VM id).
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("catalog", "no_random_failures")]
AUGUST = datetime(2024, 8, 20, tzinfo=UTC)  # on the August 2024 unplanned baseline


def night(year: int, month: int, day: int) -> datetime:
    """00:30 UTC: 02:30 in Amsterdam (summer) or 01:30 (winter), inside the 23:00-05:00 window."""
    return datetime(year, month, day, 0, 30, tzinfo=UTC)


def patch(now: datetime, hours: int = 3) -> None:
    """Rounds of automatic patching, an hour apart, running what they start."""
    for hour in range(hours):
        engine.patch_fleet(now + timedelta(hours=hour), execute=True)


def assess(vm, now):
    operation, _ = services.start_operation(vm, OperationKind.ASSESSMENT, now=now, enqueue=False)
    return services.execute_operation(operation.pk, now=now)


def installs(vm):
    return list(
        Operation.objects.filter(vm=vm, kind=OperationKind.INSTALLATION, started_by=StartedBy.PLATFORM).order_by(
            "created_at"
        )
    )


def installed_kinds(operation) -> set[str]:
    return {r.update.kind for r in operation.results.select_related("update") if r.state == "Installed"}


def state(vm) -> GuestState:
    return GuestState.objects.get(pk=vm.pk)


def test_off_then_on_again_before_and_after_the_next_baseline():
    vm = make_vm(name="web-01", time_zone="Europe/Amsterdam", now=AUGUST)
    patch(night(2024, 9, 11))
    assert installed_kinds(installs(vm)[-1]) == {"hotpatch"} and installs(vm)[-1].reboot_status == "NotNeeded"

    off = vm.patch_settings.with_changes(enable_hotpatching=False)
    assert services.change_patch_settings(vm, off, now=datetime(2024, 9, 20, tzinfo=UTC)) == []
    vm.refresh_from_db()
    assert state(vm).hotpatch_status == "Disabled"
    on = vm.patch_settings.with_changes(enable_hotpatching=True)
    refused = services.change_patch_settings(vm, on, now=datetime(2024, 9, 25, tzinfo=UTC))
    assert refused and "turned on again once the next baseline has been released, on 2024-10-08" in refused[0].message

    # Unenrolled, it takes October's cumulative update like any VM: with its .NET update and a reboot.
    patch(night(2024, 10, 9))
    october = installs(vm)[-1]
    assert {"baseline", "dotnet"} <= installed_kinds(october) and october.reboot_status == "Completed"

    vm.refresh_from_db()
    assert services.change_patch_settings(vm, on, now=datetime(2024, 10, 15, tzinfo=UTC)) == []
    assert state(vm).hotpatch_status == "PendingEvaluation"
    assess(vm, datetime(2024, 10, 15, 1, tzinfo=UTC))
    assert state(vm).hotpatch_status == "Enabled"  # it is on October's baseline
    patch(night(2024, 11, 13))
    november = installs(vm)[-1]
    assert installed_kinds(november) == {"hotpatch"} and november.reboot_status == "NotNeeded"


def test_re_enrolled_on_a_monthly_build_it_waits_behind_the_baseline_until_the_next_one():
    vm = make_vm(name="web-02", time_zone="Europe/Amsterdam", now=AUGUST)
    off = vm.patch_settings.with_changes(enable_hotpatching=False)
    services.change_patch_settings(vm, off, now=datetime(2024, 8, 25, tzinfo=UTC))
    patch(night(2024, 10, 9))  # unenrolled: October's cumulative update is its baseline
    patch(night(2024, 11, 13))  # and in a hotpatch month, November's monthly cumulative update
    assert "monthly" in installed_kinds(installs(vm)[-1])

    vm.refresh_from_db()
    on = vm.patch_settings.with_changes(enable_hotpatching=True)
    assert services.change_patch_settings(vm, on, now=datetime(2024, 11, 20, tzinfo=UTC)) == []
    assess(vm, datetime(2024, 11, 20, 1, tzinfo=UTC))
    assert (
        state(vm).hotpatch_status == "ActionRequired" and "Not on a baseline build" in state(vm).hotpatch_status_reason
    )
    patch(night(2024, 12, 11))
    assert state(vm).patch_decision == "behind_baseline"
    assert "hotpatches resume after the next baseline, 2025-01 (expected 2025-01-14)" in state(vm).patch_decision_detail
    assert "hotpatch" not in installed_kinds(installs(vm)[-1])  # nothing in December: no hotpatch applies

    patch(night(2025, 1, 15))
    assert "baseline" in installed_kinds(installs(vm)[-1])
    assess(vm, datetime(2025, 1, 16, tzinfo=UTC))
    assert state(vm).hotpatch_status == "Enabled"


def test_the_preview_gate_refuses_hotpatch_until_the_features_and_the_provider_are_registered(settings):
    subscription = make_subscription(onboarded=False)
    vm = make_vm(name="new", resource_group=make_resource_group(subscription), hotpatch=False, now=AUGUST)
    on = vm.patch_settings.with_changes(enable_hotpatching=True)
    problems = [p.message for p in services.change_patch_settings(vm, on, now=AUGUST)]
    assert len(problems) == 2 and all(name in problems[0] for name in FeatureRegistration.HOTPATCH_FEATURES)
    assert "Register the resource provider Microsoft.Compute" in problems[1]

    # Meanwhile the platform patches it as the VM it is: a rebooting cumulative update every month.
    patch(night(2024, 9, 11))
    assert installs(vm)[-1].reboot_status == "Completed"

    settings.PORTAL_REGISTRATION_SECONDS = 0
    for name in FeatureRegistration.HOTPATCH_FEATURES:
        features.register_feature(subscription, name)
    features.register_provider(subscription)
    features.settle_due()
    vm.refresh_from_db()
    assert services.change_patch_settings(vm, on, now=datetime(2024, 9, 20, tzinfo=UTC)) == []


@pytest.mark.parametrize("catch_up", [True, False])
def test_an_enrolled_vm_that_was_off_through_its_baseline(settings, catch_up):
    settings.PORTAL_BASELINE_CATCH_UP = catch_up
    vm = make_vm(name="sql-06", time_zone="Europe/Amsterdam", now=AUGUST, power_state="stopped")
    patch(night(2024, 10, 9))  # October's baseline rolls out while it is off
    assert state(vm).patch_decision == "off" and not installs(vm)
    VirtualMachine.objects.filter(pk=vm.pk).update(power_state="running")

    patch(night(2024, 11, 14))  # back on in November, a hotpatch month
    if catch_up:
        baseline, hotpatch = installs(vm)
        assert "baseline" in installed_kinds(baseline) and baseline.reboot_status == "Completed"
        assert installed_kinds(hotpatch) == {"hotpatch"} and hotpatch.reboot_status == "NotNeeded"
        assert {"baseline", "dotnet"} <= installed_kinds(baseline)  # the .NET update went in with it
        assert state(vm).patch_decision == "up_to_date"  # back on track
    else:
        assert not installs(vm)
        assert state(vm).patch_decision == "behind_baseline"
        assert "Missed the 2024-10 baseline KB5044281; it waits for the next baseline month, 2025-01" in (
            state(vm).patch_decision_detail
        )
