"""The scheduler's step (patching.maintenance.services.run_due) on a simulated clock: who is patched in
a window, who is skipped and why, the window's end, cancellation, limits and scope evaluation."""

from datetime import UTC, datetime, timedelta

import pytest

from patching.maintenance import scope, services
from patching.maintenance.models import MachineStatus, MaintenanceRun, RunMachine, RunStatus
from patching.models import Operation, OperationStatus, StartedBy
from tests.factories import make_resource_group, make_subscription, make_vm
from vms.models import VirtualMachine
from vms.patch_settings import defaults_for_image

START = datetime(2030, 6, 4, 22, 0, tzinfo=UTC)  # the first window: 22:00 UTC, daily, 3 hours


def body(**window) -> dict:
    return {
        "location": "westeurope",
        "properties": {
            "maintenanceScope": "InGuestPatch",
            "extensionProperties": {"InGuestPatchMode": "User"},
            "maintenanceWindow": {
                "startDateTime": "2030-06-04 22:00",
                "duration": "03:00",
                "timeZone": "UTC",
                "recurEvery": "Day",
                **window,
            },
            "installPatches": {
                "rebootSetting": "IfRequired",
                "windowsParameters": {"classificationsToInclude": ["Critical", "Security"]},
            },
        },
    }


def scheduled_vm(rg, name, *, bypass=True, **fields):
    settings = defaults_for_image("MicrosoftWindowsServer", "WindowsServer", "2022-datacenter-g2", rg.location)
    settings = settings.with_changes(
        patch_mode="AutomaticByPlatform", enable_hotpatching=False, bypass_platform_safety_checks=bypass
    )
    return make_vm(resource_group=rg, name=name, product="ws2022", settings=settings, behind_by_months=1, **fields)


@pytest.fixture
def world(catalog, no_random_failures, alice):
    contoso = make_subscription("Contoso", user=alice, role="Contributor")
    rg = make_resource_group(contoso, "rg-web")
    config, _, problems = services.save_configuration(rg, "nightly", body(), user=alice)
    assert not problems
    vms = {
        "a": scheduled_vm(rg, "web-a", tags={"env": "prod"}),
        "b": scheduled_vm(rg, "web-b"),
        "out": scheduled_vm(rg, "web-out"),
        "off": scheduled_vm(rg, "web-off", power_state=VirtualMachine.PowerState.DEALLOCATED),
        "inert": scheduled_vm(rg, "web-inert", bypass=False),
    }
    for key in ("a", "b", "off", "inert"):
        services.assign_vm(config, vms[key], f"assign-{key}", user=alice)
    return {"config": config, "rg": rg, "subscription": contoso, "alice": alice, **vms}


def machines(run) -> dict:
    return {m.vm_name: m for m in run.machines.select_related("operation")}


def test_a_window_patches_exactly_the_running_vms_in_scope_and_records_the_others(world):
    step = services.run_due(START + timedelta(seconds=30), execute=True)

    run = MaintenanceRun.objects.get()
    assert step.started == [run.pk] and run.status == RunStatus.IN_PROGRESS and run.scheduled_start == START
    found = machines(run)
    assert set(found) == {"web-a", "web-b", "web-off", "web-inert"}  # web-out is not in scope
    installed = Operation.objects.filter(started_by=StartedBy.SCHEDULE)
    assert set(installed.values_list("vm_name", flat=True)) == {"web-a", "web-b"}
    assert all(op.created_at == START + timedelta(seconds=30) for op in installed)
    assert found["web-off"].status == MachineStatus.SKIPPED and "deallocated" in found["web-off"].reason
    assert found["web-inert"].status == MachineStatus.SKIPPED and "inert" in found["web-inert"].reason
    assert found["web-a"].operation.maintenance_result == found["web-a"]
    # The configuration's parameters, and the window (less the margin) as the maximum duration.
    op = found["web-a"].operation
    assert op.parameters["windowsParameters"]["classificationsToInclude"] == ["Critical", "Security"]
    assert op.parameters["maximumDuration"] == "PT2H44M"

    # The same moment again, or a second scheduler: nothing more.
    again = services.run_due(START + timedelta(seconds=40), execute=True)
    assert again.started == [] and Operation.objects.filter(started_by=StartedBy.SCHEDULE).count() == 2

    closed = services.run_due(START + timedelta(hours=3, seconds=1))
    run.refresh_from_db()
    assert closed.closed == [run.pk] and run.status == RunStatus.COMPLETED
    found = machines(run)
    assert found["web-a"].status == found["web-b"].status == MachineStatus.SUCCEEDED
    assert run.counts == {"Succeeded": 2, "Skipped": 2}


def test_what_did_not_finish_in_the_window_is_maintenance_window_exceeded(world):
    services.run_due(START + timedelta(minutes=1))  # queued; no worker gets to them
    services.run_due(START + timedelta(hours=3))
    run = MaintenanceRun.objects.get()
    assert {m.status for m in run.machines.exclude(status=MachineStatus.SKIPPED)} == {MachineStatus.WINDOW_EXCEEDED}
    assert run.counts["MaintenanceWindowExceeded"] == 2


def test_no_installation_starts_in_the_windows_last_minutes(world):
    services.run_due(START + timedelta(hours=2, minutes=50), execute=True)
    run = MaintenanceRun.objects.get()
    assert not Operation.objects.exists()
    assert {m.reason for m in run.machines.filter(vm__in=[world["a"], world["b"]])} == {
        "Less than 15 minutes of the window were left: no installation was started."
    }


def test_a_window_the_clock_jumped_over_is_not_started_late(world):
    step = services.run_due(START + timedelta(hours=5))
    assert step.started == [] and not MaintenanceRun.objects.exists()
    assert services.next_due(START + timedelta(hours=5)) == START + timedelta(days=1)


def test_a_dynamic_scope_includes_a_vm_created_after_it_at_the_next_occurrence(world):
    config = world["config"]
    services.assign_scope(
        config, world["subscription"], "prod", {"tagSettings": {"tags": {"env": ["prod"]}, "filterOperator": "Any"}}
    )
    assert set(scope.in_scope(config).values_list("name", flat=True)) == {"web-a", "web-b", "web-off", "web-inert"}
    later = scheduled_vm(world["rg"], "web-new", tags={"env": "prod"})
    services.run_due(START + timedelta(seconds=5), execute=True)
    assert Operation.objects.filter(vm=later, started_by=StartedBy.SCHEDULE).exists()


@pytest.mark.parametrize(
    "tag_settings, expected",
    [
        ({"tags": {"env": ["prod"], "team": ["web"]}, "filterOperator": "Any"}, {"p", "w", "pw"}),
        ({"tags": {"env": ["prod"], "team": ["web"]}, "filterOperator": "All"}, {"pw"}),
        ({"tags": {"team": []}, "filterOperator": "Any"}, {"w", "pw", "wx"}),
    ],
)
def test_tag_filters_any_and_all(catalog, tag_settings, expected):
    sub = make_subscription("S")
    rg = make_resource_group(sub, "rg")
    for name, tags in {
        "p": {"env": "prod"},
        "w": {"team": "web"},
        "pw": {"env": "prod", "team": "web"},
        "wx": {"team": "db"},
        "none": {},
    }.items():
        make_vm(resource_group=rg, name=name, tags=tags)
    found = scope.dynamic_matches(sub.pk, {"tagSettings": tag_settings})
    assert set(found.values_list("name", flat=True)) == expected


def test_a_filter_by_group_location_and_os(catalog):
    sub = make_subscription("S")
    web, db = make_resource_group(sub, "rg-web"), make_resource_group(sub, "rg-db")
    make_vm(resource_group=web, name="w1")
    make_vm(resource_group=db, name="d1")
    assert set(scope.dynamic_matches(sub.pk, {"resourceGroups": ["RG-WEB"]}).values_list("name", flat=True)) == {"w1"}
    assert scope.dynamic_matches(sub.pk, {"osTypes": ["Linux"]}).count() == 0
    assert scope.dynamic_matches(sub.pk, {"locations": ["West Europe"], "osTypes": ["Windows"]}).count() == 2


def test_cancel_until_ten_minutes_before_the_start(world):
    config = world["config"]
    with pytest.raises(services.ScheduleError) as late:
        services.cancel_occurrence(config, START, by="alice", now=START - timedelta(minutes=9))
    assert late.value.status == 409

    run = services.cancel_occurrence(config, START, by="alice", now=START - timedelta(minutes=11))
    assert run.status == RunStatus.CANCELLED and run.cancelled_by == "alice"
    step = services.run_due(START + timedelta(seconds=5), execute=True)
    assert step.started == [] and not Operation.objects.exists()

    with pytest.raises(services.ScheduleError) as nothing:
        services.cancel_occurrence(config, START + timedelta(minutes=5), by="alice", now=START - timedelta(hours=1))
    assert nothing.value.status == 404


def test_a_second_configuration_on_a_vm_and_the_machine_limit(world, settings):
    other, _, _ = services.save_configuration(world["rg"], "weekly", body(recurEvery="Week Sunday"))
    _, created = services.assign_vm(other, world["a"], "again")  # a VM may be on several schedules
    assert created
    settings.PORTAL_MAINTENANCE_MAX_MACHINES = 4
    with pytest.raises(services.ScheduleError) as full:
        services.assign_vm(world["config"], world["out"], "assign-out")
    assert full.value.code == "QuotaExceeded"


def test_the_configuration_limit_per_subscription_and_region(world, settings):
    settings.PORTAL_MAINTENANCE_MAX_CONFIGURATIONS = 1
    with pytest.raises(services.ScheduleError) as full:
        services.save_configuration(world["rg"], "second", body())
    assert full.value.status == 409 and full.value.code == "QuotaExceeded"
    config, created, problems = services.save_configuration(world["rg"], "nightly", body(duration="02:00"))
    assert not created and not problems and config.duration == timedelta(hours=2)


def test_hotpatch_with_platform_safety_checks_bypassed_is_refused(catalog):
    from vms.patch_settings import validate

    settings = defaults_for_image(
        "MicrosoftWindowsServer", "WindowsServer", "2022-datacenter-azure-edition-hotpatch", "westeurope"
    )
    assert settings.enable_hotpatching
    problems = validate(
        settings.with_changes(bypass_platform_safety_checks=True),
        publisher="MicrosoftWindowsServer",
        offer="WindowsServer",
        sku="2022-datacenter-azure-edition-hotpatch",
        region="westeurope",
    )
    assert [p.target for p in problems] == [
        "properties.osProfile.windowsConfiguration.patchSettings.automaticByPlatformSettings.bypassPlatformSafetyChecksOnUserSchedule"
    ]
    assert "Hotpatch updates require platform safety checks" in problems[0].message


def test_an_enrolled_hotpatch_vm_in_scope_stays_with_the_platform(world):
    enrolled = make_vm(resource_group=world["rg"], name="web-hot")  # Azure Edition, hotpatch on, no bypass
    services.assign_vm(world["config"], enrolled, "assign-hot")
    services.run_due(START + timedelta(seconds=30), execute=True)
    result = MaintenanceRun.objects.get().machines.get(vm=enrolled)
    assert result.status == MachineStatus.SKIPPED and "inert" in result.reason
    assert (
        not Operation.objects.filter(vm=enrolled)
        .exclude(status=OperationStatus.SUCCEEDED)
        .filter(started_by=StartedBy.SCHEDULE)
        .exists()
    )


def test_two_configurations_whose_scopes_overlap_install_once(world):
    other, _, _ = services.save_configuration(world["rg"], "also-nightly", body())
    services.assign_scope(other, world["subscription"], "everyone", {"osTypes": ["Windows"]})
    step = services.run_due(START + timedelta(seconds=5))
    assert len(step.started) == 2
    assert Operation.objects.filter(vm=world["a"]).count() == 1
    statuses = sorted(RunMachine.objects.filter(vm=world["a"]).values_list("status", flat=True))
    assert statuses == [MachineStatus.QUEUED, MachineStatus.SKIPPED]


def test_a_schedule_fires_on_the_simulations_clock_and_patches_only_its_scope_inside_the_window(world):
    """The simulation's stepping loop (what the sandbox clock advances) runs the scheduler's step: the
    clock stops at the window's opening and end, installations run inside the window, only in scope."""
    from patching.orchestrator import fleets
    from patching.orchestrator.simulation import Simulation

    simulation = Simulation(START - timedelta(hours=6), START + timedelta(hours=8), fleets.Fleet([], []))
    simulation.vms = list(VirtualMachine.objects.all())
    simulation.run()

    run = MaintenanceRun.objects.get(scheduled_start=START)
    assert run.status == RunStatus.COMPLETED and run.started_at == START
    assert run.ended_at == START + timedelta(hours=3)  # the clock stopped at the window's end
    installs = Operation.objects.filter(started_by=StartedBy.SCHEDULE)
    assert set(installs.values_list("vm_name", flat=True)) == {"web-a", "web-b"}
    assert all(START <= op.started_at and op.finished_at <= START + timedelta(hours=3) for op in installs)
    assert run.counts == {"Succeeded": 2, "Skipped": 2}
    # The platform's rounds left the scheduled VMs alone.
    assert not Operation.objects.filter(
        started_by=StartedBy.PLATFORM, vm__in=[world["a"], world["b"], world["out"]]
    ).exists()


def test_simulate_puts_a_share_of_the_fleet_on_a_schedule(catalog):
    """manage.py simulate --scheduled (in its throwaway SQLite database: the embedded default's path too)."""
    import io
    import json

    from django.core.management import call_command

    out = io.StringIO()
    call_command(
        "simulate",
        "--start",
        "2024-01-01",
        "--end",
        "2024-03-01",
        "--vms",
        "60",
        "--scheduled",
        "0.3",
        "--recur",
        "Month Second Tuesday Offset3",
        "--json",
        stdout=out,
    )
    report = json.loads(out.getvalue())
    scheduled = [vm for vm in report["vms"] if vm["customer_schedule"]]
    assert report["summary"]["customer_schedule"]["vms"] > 0 and len(scheduled) >= 10
    assert all(vm["installations"] >= 1 for vm in scheduled if not vm["days_off"])
    assert all(not vm["hotpatch_enrolled"] for vm in scheduled)


def test_an_assignment_to_a_vm_of_another_subscription_is_refused(world):
    fabrikam = make_subscription("Fabrikam", user=world["alice"], role="Contributor")
    elsewhere = scheduled_vm(make_resource_group(fabrikam, "rg-f"), "f-01")
    with pytest.raises(services.ScheduleError) as refused:
        services.assign_vm(world["config"], elsewhere, "x")
    assert (refused.value.status, refused.value.code) == (400, "InvalidParameter")
    assert refused.value.target == "properties.maintenanceConfigurationId"


def test_runs_older_than_the_history_retention_are_pruned(world, settings):
    services.run_due(START + timedelta(seconds=5), execute=True)
    services.run_due(START + timedelta(hours=3))
    settings.PORTAL_HISTORY_RETENTION_DAYS = 30
    assert services.prune_runs(START + timedelta(days=29)) == 0
    assert services.prune_runs(START + timedelta(days=31)) > 0 and not MaintenanceRun.objects.exists()
    assert Operation.objects.filter(started_by=StartedBy.SCHEDULE).count() == 2  # the VMs' history stays


def test_cancelling_a_later_run_does_not_skip_the_earlier_ones(world):
    services.cancel_occurrence(world["config"], START + timedelta(days=2), by="alice", now=START - timedelta(hours=1))
    assert services.run_due(START + timedelta(seconds=5), execute=True).started
    services.run_due(START + timedelta(hours=3))
    assert services.run_due(START + timedelta(days=1, seconds=5), execute=True).started
    services.run_due(START + timedelta(days=1, hours=3))
    assert services.next_due(START + timedelta(days=1, hours=3)) == START + timedelta(days=2)
    assert not services.run_due(START + timedelta(days=2, seconds=5), execute=True).started  # cancelled
    assert services.next_due(START + timedelta(days=2, seconds=5)) == START + timedelta(days=3)
