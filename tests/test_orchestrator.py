"""Automatic patching against the database: decisions, installations, halts, idempotent rounds."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from patching import services
from patching.models import GuestState, Operation, OperationKind, OperationStatus, RolloutHalt, StartedBy
from patching.orchestrator import engine
from patching.orchestrator.rules import assessment_due, assessment_period
from patching.tasks import assess_fleet, patch_fleet
from tests.factories import load_catalog, make_resource_group, make_subscription, make_vm
from tests.helpers import run_in_threads
from vms.models import VirtualMachine
from vms.patch_settings import PatchSettings

# 2024-09-11 00:30 UTC: 02:30 in Amsterdam, inside the default 23:00-05:00 window. September 2024 is
# a hotpatch month for Windows Server 2022 Azure Edition (the August unplanned baseline before it).
NIGHT = datetime(2024, 9, 11, 0, 30, tzinfo=UTC)
PLATFORM_INSTALLS = {"kind": OperationKind.INSTALLATION, "started_by": StartedBy.PLATFORM}
# Installations succeed unless a test says otherwise (the simulated failure rate is per VM id).
pytestmark = pytest.mark.usefixtures("catalog", "no_random_failures")


AZURE_ORCHESTRATED = PatchSettings(patch_mode="AutomaticByPlatform", assessment_mode="AutomaticByPlatform")


def fleet_vm(name: str, *, product="ws2022-azure", time_zone="Europe/Amsterdam", **fields) -> VirtualMachine:
    """A VM in its own subscription (no subscription batching between them), built on the August baseline.

    Products outside the hotpatch programme are Azure-orchestrated unless `settings` says otherwise.
    """
    if product in ("ws2022", "ws2019"):
        fields.setdefault("settings", AZURE_ORCHESTRATED)
    return make_vm(
        name=name, product=product, time_zone=time_zone, now=NIGHT - timedelta(days=10), location="westeurope", **fields
    )


def decision(vm) -> tuple[str, str]:
    state = GuestState.objects.get(pk=vm.pk)
    return state.patch_decision, state.patch_decision_detail


def test_a_round_patches_the_vms_in_their_window_and_says_why_not_for_every_other(django_capture_on_commit_callbacks):
    enrolled = fleet_vm("enrolled")
    unenrolled = fleet_vm("monthly", product="ws2022")
    manual = fleet_vm("manual", settings=PatchSettings(patch_mode="Manual", enable_automatic_updates=False))
    by_os = fleet_vm("by-os", settings=PatchSettings())
    stopped = fleet_vm("stopped", power_state="stopped")
    daytime = fleet_vm("seattle", time_zone="America/Los_Angeles")  # 17:30 there

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        result = engine.patch_fleet(NIGHT)
    assert len(result.started) == 2 and len(callbacks) == 2  # queued for the workers once committed
    operations = {op.vm_id: op for op in Operation.objects.filter(**PLATFORM_INSTALLS)}
    assert set(operations) == {enrolled.pk, unenrolled.pk}
    for op in operations.values():
        windows = op.parameters["windowsParameters"]
        assert windows["classificationsToInclude"] == ["Critical", "Security"]  # nothing else automatically
        assert op.parameters["rebootSetting"] == "IfRequired"
        assert op.parameters["maximumDuration"] in ("PT2H30M", "PT2H15M")  # what is left of the window
    # Hotpatch month on an enrolled VM: the .NET update (it reboots) waits for the next baseline month.
    assert operations[enrolled.pk].parameters["windowsParameters"]["excludeKbsRequiringReboot"] is True
    assert operations[unenrolled.pk].parameters["windowsParameters"]["excludeKbsRequiringReboot"] is False

    patched, detail = decision(enrolled)
    assert (
        patched == "patched"
        and "KB5042880 (2024-09 hotpatch)" in detail
        and "Held for the next baseline month" in detail
    )
    assert decision(manual)[0] == "mode_manual" and decision(by_os)[0] == "mode_by_os"
    assert decision(stopped) == (
        "off",
        "The VM is stopped; it needs KB5042880 (2024-09 hotpatch) and is patched in its first off-peak window after "
        "it starts.",
    )
    waiting, detail = decision(daytime)
    assert waiting == "outside_window" and "23:00–05:00 (America/Los_Angeles), next from 2024-09-10 23:00" in detail
    assert GuestState.objects.get(pk=enrolled.pk).patch_decision_at == NIGHT


def test_hotpatch_goes_in_without_a_reboot_and_dotnet_waits_for_the_baseline_month():
    enrolled, unenrolled = fleet_vm("enrolled"), fleet_vm("monthly", product="ws2022")
    engine.patch_fleet(NIGHT, execute=True)
    ops = {op.vm_id: op for op in Operation.objects.filter(**PLATFORM_INSTALLS)}
    assert ops[enrolled.pk].reboot_status == "NotNeeded" and ops[unenrolled.pk].reboot_status == "Completed"

    engine.patch_fleet(NIGHT + timedelta(hours=1), execute=True)
    assert Operation.objects.filter(**PLATFORM_INSTALLS).count() == 2  # nothing left to do
    held, detail = decision(enrolled)
    assert held == "held_for_baseline" and "2024-10 (expected 2024-10-08)" in detail
    assert decision(unenrolled)[0] == "up_to_date"

    # October is a baseline month: the baseline and the held .NET updates go in with one reboot.
    october = datetime(2024, 10, 9, 0, 30, tzinfo=UTC)
    engine.patch_fleet(october, execute=True)
    baseline = Operation.objects.filter(vm=enrolled, **PLATFORM_INSTALLS).latest("created_at")
    installed = {r.update.kind for r in baseline.results.select_related("update") if r.state == "Installed"}
    assert {"baseline", "dotnet"} <= installed and baseline.reboot_status == "Completed"


def test_two_rounds_at_once_start_nothing_twice(transactional_db, monkeypatch):
    # Committed for real: keep the queued installations from reaching a live worker of another test.
    monkeypatch.setattr("patching.services.send_to_workers", lambda *args: None)
    load_catalog()
    rg = make_resource_group(make_subscription())
    for n in range(12):
        make_vm(resource_group=rg, name=f"vm-{n}", zone=str(1 + n % 3), time_zone="Europe/Amsterdam", now=NIGHT)
    barrier = threading.Barrier(2)
    results = []

    def beat():
        try:
            barrier.wait()
            results.append(engine.patch_fleet(NIGHT + timedelta(minutes=1)))
        finally:
            connection.close()

    run_in_threads(beat)
    engine.patch_fleet(NIGHT + timedelta(minutes=2))  # and a third, later
    installs = list(Operation.objects.filter(**PLATFORM_INSTALLS).values_list("vm_id", flat=True))
    assert len(installs) == len(set(installs)) == 4  # zone 1's four VMs, each once
    assert sum(len(r.started) for r in results) == 4


def test_a_release_that_fails_too_often_halts_visibly_until_an_operator_resumes_it(settings):
    settings.PORTAL_PATCH_FAILURE_RATE = 1.0
    settings.PORTAL_ROLLOUT_HALT_MIN_ATTEMPTS = 3
    vms = [fleet_vm(f"legacy-{n}", product="ws2019") for n in range(4)]
    engine.patch_fleet(NIGHT, execute=True)  # every installation fails
    result = engine.patch_fleet(NIGHT + timedelta(hours=1), execute=True)
    assert result.halted == [("ws2019", "2024-09")] and not result.started
    halt = RolloutHalt.objects.get()
    assert (halt.failed, halt.attempted, halt.is_active) == (4, 4, True)
    assert "4 of 4 automatic installations of the 2024-09 release failed (100%" in halt.reason
    state, detail = decision(vms[0])
    assert state == "halted" and "The 2024-09 rollout for Windows Server 2019 Datacenter is halted" in detail

    # Halted: the next window passes without an attempt.
    engine.patch_fleet(NIGHT + timedelta(days=1), execute=True)
    assert Operation.objects.filter(**PLATFORM_INSTALLS).count() == 4

    operator = get_user_model().objects.create_user("operator")
    assert engine.resume_rollout(halt, user=operator, now=NIGHT + timedelta(days=1, minutes=30))
    assert not engine.resume_rollout(halt, user=operator)  # once
    settings.PORTAL_PATCH_FAILURE_RATE = 0.0
    result = engine.patch_fleet(NIGHT + timedelta(days=1, hours=1), execute=True)
    assert len(result.started) == 4 and not result.halted  # counted afresh since the resume
    assert {decision(vm)[0] for vm in vms} == {"patched"}


def test_the_admin_lists_halts_and_resumes_them(admin_client):
    halt = RolloutHalt.objects.create(
        release_month="2024-09", product="ws2019", failed=5, attempted=8, reason="5 of 8 failed"
    )
    changelist = reverse("admin:patching_rollouthalt_changelist")
    assert "2024-09" in admin_client.get(changelist).text
    before = datetime.now(UTC)
    response = admin_client.post(changelist, {"action": "resume_rollout", "_selected_action": [halt.pk]}, follow=True)
    assert "Resumed 1 rollout(s): 2024-09 ws2019" in response.text
    halt.refresh_from_db()
    assert before <= halt.resumed_at <= datetime.now(UTC) and halt.resumed_by.username == "admin"


def test_the_admin_shows_why_a_vm_was_not_patched(admin_client):
    vm = fleet_vm("seattle", time_zone="America/Los_Angeles")
    engine.patch_fleet(NIGHT)
    page = admin_client.get(reverse("admin:patching_gueststate_change", args=[vm.pk])).text
    assert "Automatic patching" in page and "waits for its off-peak window" in page


def test_a_time_zone_python_cannot_resolve_is_a_reason_not_a_crash():
    vm = fleet_vm("nowhere")
    VirtualMachine.objects.filter(pk=vm.pk).update(time_zone="Mars/Olympus_Mons")  # past the form's validation
    engine.patch_fleet(NIGHT)
    state, detail = decision(vm)
    assert state == "outside_window" and "'Mars/Olympus_Mons' is not an IANA time zone" in detail


def test_the_beat_tasks_log_a_bad_runtime_setting_instead_of_crashing(settings, caplog):
    settings.PORTAL_OFF_PEAK_WINDOW = "soon"
    assert patch_fleet().startswith("skipped: PORTAL_OFF_PEAK_WINDOW")
    assert assess_fleet() == 0
    assert "Automatic patching skipped" in caplog.text


def test_a_round_costs_the_same_queries_for_a_small_and_a_bigger_fleet():
    counts = []
    for size in (4, 40):
        rg = make_resource_group(make_subscription())
        for n in range(size):
            make_vm(
                resource_group=rg, name=f"s{size}-{n}", time_zone="Europe/Amsterdam", now=NIGHT, zone=str(1 + n % 3)
            )
        with CaptureQueriesContext(connection) as queries:
            engine.patch_fleet(NIGHT + timedelta(minutes=size))
        counts.append(len(queries))
    assert counts[1] <= counts[0] + 2, counts  # a decision or parameter group more at most


def test_periodic_assessment_is_staggered_and_skips_vms_that_are_off():
    platform = fleet_vm("daily")  # assessmentMode AutomaticByPlatform: every 24 h
    default = fleet_vm("every-3-days", settings=PatchSettings())  # ImageDefault: every 3 days
    off = fleet_vm("off", power_state="deallocated")
    first = engine.assess_fleet(NIGHT, execute=True)
    assert len(first.started) == 2  # never assessed: due at once, except the one that is off
    assert not Operation.objects.filter(vm=off).exists()
    rules = engine.current_rules()
    for hours in range(1, 80):
        now = NIGHT + timedelta(hours=hours)
        expected = {
            vm.pk
            for vm in (platform, default, off)
            if vm.pk != off.pk
            and assessment_due(
                vm.pk, assessment_period(vm.assessment_mode, rules), GuestState.objects.get(pk=vm.pk).assessed_at, now
            )
        }
        done = engine.assess_fleet(now, execute=True).started
        assert {Operation.objects.get(pk=pk).vm_id for pk in done} == expected
    assessments = {vm.name: vm.operations.filter(kind=OperationKind.ASSESSMENT).count() for vm in (platform, default)}
    assert assessments["daily"] in (4, 5) and assessments["every-3-days"] in (2, 3)
    # Switched on again: assessed at the next beat, its missed slots are not waited out.
    VirtualMachine.objects.filter(pk=off.pk).update(power_state="running")
    assert len(engine.assess_fleet(NIGHT + timedelta(hours=80), execute=True).started) >= 1
    assert off.operations.filter(kind=OperationKind.ASSESSMENT, status=OperationStatus.SUCCEEDED).exists()


def test_a_vm_deleted_before_its_batch_runs_fails_its_operation_cleanly():
    vm, other = fleet_vm("doomed"), fleet_vm("kept")
    ids = services.queue_operations(
        VirtualMachine.objects.select_related("resource_group").filter(pk__in=[vm.pk, other.pk]),
        OperationKind.ASSESSMENT,
        now=NIGHT,
        enqueue=False,
    )
    services.delete_virtual_machine(VirtualMachine.objects.get(pk=vm.pk))
    assert len(services.execute_operations(ids, now=NIGHT).recorded) == 1
    failed = Operation.objects.get(vm_name="doomed")
    assert failed.status == OperationStatus.FAILED and failed.error_code == "VMDeleted"
    assert Operation.objects.get(vm_name="kept").status == OperationStatus.SUCCEEDED


def test_a_vm_running_any_installation_is_left_alone_and_a_running_assessment_does_not_count():
    """Each VM's installation in flight, however old, or recorded with an end still ahead (a simulated
    clock records a run at once), keeps the rounds off it; an assessment in flight does not."""
    stuck, finishing, assessing = fleet_vm("stuck"), fleet_vm("finishing"), fleet_vm("assessing")

    def run(vm, kind, started_by, status, created_at, finished_at=None):
        operation = services.new_operation(vm, kind, started_by, None, {}, created_at)
        operation.status, operation.finished_at = status, finished_at
        operation.save()

    run(stuck, OperationKind.INSTALLATION, StartedBy.USER, OperationStatus.IN_PROGRESS, NIGHT - timedelta(days=3))
    run(
        finishing,
        OperationKind.INSTALLATION,
        StartedBy.PLATFORM,
        OperationStatus.SUCCEEDED,
        NIGHT - timedelta(minutes=20),
        NIGHT + timedelta(minutes=10),
    )
    run(
        assessing,
        OperationKind.ASSESSMENT,
        StartedBy.PLATFORM,
        OperationStatus.IN_PROGRESS,
        NIGHT - timedelta(minutes=5),
    )

    assert engine.in_flight_installations(NIGHT) == {stuck.pk: StartedBy.USER, finishing.pk: StartedBy.PLATFORM}
    result = engine.patch_fleet(NIGHT)
    assert set(Operation.objects.filter(pk__in=result.started).values_list("vm_id", flat=True)) == {assessing.pk}
    assert decision(stuck)[0] == "in_progress"
