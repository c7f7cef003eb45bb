"""Operations against the database: one record per run, guarded state changes, the simulated guest."""

from datetime import UTC, datetime, timedelta

import isodate
import pytest
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError

from patching import services
from patching.models import (
    GuestState,
    MissingUpdate,
    Operation,
    OperationKind,
    OperationStatus,
    PatchResult,
    StartedBy,
    Update,
)
from patching.parameters import InstallParameters, InvalidParameters, from_arm
from patching.tasks import fail_stale_operations, run_operation, run_operations
from tests.factories import make_vm
from vms.models import VirtualMachine
from vms.patch_settings import PatchSettings

# These tests assert what an install does; the simulated failure rate would make them flaky.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("catalog", "no_random_failures")]

# 2026-03-20: the real catalog has the 2026-01 baseline and the 2026-02 and 2026-03 hotpatches.
MARCH = datetime(2026, 3, 20, 12, tzinfo=UTC)


def assess(vm, now=MARCH):
    operation, _ = services.start_operation(vm, OperationKind.ASSESSMENT, now=now, enqueue=False)
    return services.execute_operation(operation.pk, now=now)


def install(vm, body=None, now=MARCH):
    parameters = from_arm(
        body
        or {"rebootSetting": "IfRequired", "windowsParameters": {"classificationsToInclude": ["Critical", "Security"]}}
    )
    operation, _ = services.start_operation(
        vm, OperationKind.INSTALLATION, parameters=parameters, now=now, enqueue=False
    )
    return services.execute_operation(operation.pk, now=now)


def kbs(operation, state=None):
    results = operation.results.select_related("update")
    if state:
        results = results.filter(state=state)
    return {r.update.kb for r in results}


def test_a_second_start_joins_the_operation_in_flight():
    vm = make_vm(now=MARCH)
    first, created = services.start_operation(vm, OperationKind.ASSESSMENT, enqueue=False)
    again, created_again = services.start_operation(vm, OperationKind.ASSESSMENT, enqueue=False)
    assert created and not created_again and again.pk == first.pk
    # An installation is a different kind and may run beside it.
    _, install_created = services.start_operation(vm, OperationKind.INSTALLATION, enqueue=False)
    assert install_created


def test_the_database_refuses_two_in_flight_operations_of_a_kind():
    vm = make_vm(now=MARCH)
    services.start_operation(vm, OperationKind.ASSESSMENT, enqueue=False)
    with pytest.raises(IntegrityError), transaction.atomic():
        Operation.objects.create(
            vm=vm,
            subscription_id=vm.resource_group.subscription_id,
            vm_name=vm.name,
            location=vm.location,
            kind=OperationKind.ASSESSMENT,
        )


def test_starting_enqueues_once_on_commit(django_capture_on_commit_callbacks):
    vm = make_vm(now=MARCH)
    with django_capture_on_commit_callbacks() as callbacks:
        services.start_operation(vm, OperationKind.ASSESSMENT)
        services.start_operation(vm, OperationKind.ASSESSMENT)
    assert len(callbacks) == 1


def test_assessment_of_an_enrolled_vm_on_its_baseline_finds_the_hotpatch():
    vm = make_vm(now=MARCH)
    operation = assess(vm)
    assert operation.status == OperationStatus.SUCCEEDED
    hotpatch = Update.objects.get(product="ws2022-azure", kind="hotpatch", release_month="2026-03")
    assert hotpatch.kb in kbs(operation, "Available")
    assert not Update.objects.filter(product="ws2022-azure", kind="monthly", kb__in=kbs(operation)).exists()
    guest = GuestState.objects.get(pk=vm.pk)
    assert guest.hotpatch_status == "Enabled"
    assert guest.critical_security_count == operation.critical_security_count >= 1
    assert guest.last_assessment_id == operation.pk


def test_installing_a_hotpatch_needs_no_reboot_and_moves_the_build():
    vm = make_vm(now=MARCH)
    before = vm.guest.build
    operation = install(
        vm,
        {
            "rebootSetting": "IfRequired",
            "windowsParameters": {"classificationsToInclude": ["Security"], "excludeKbsRequiringReboot": True},
        },
    )
    hotpatch = Update.objects.get(product="ws2022-azure", kind="hotpatch", release_month="2026-03")
    assert hotpatch.kb in kbs(operation, "Installed")
    assert operation.reboot_status == "NotNeeded"
    vm.guest.refresh_from_db()
    assert vm.guest.build == hotpatch.build != before
    assert not vm.guest.reboot_pending


def test_a_vm_behind_the_baseline_gets_the_baseline_with_a_reboot_then_the_hotpatch():
    vm = make_vm(now=MARCH, behind_by_months=1)  # on the 2025-10 baseline
    assert assess(vm).results.count()
    vm.guest.refresh_from_db()
    assert vm.guest.hotpatch_status == "ActionRequired"
    assert "Behind the baseline" in vm.guest.hotpatch_status_reason

    operation = install(vm)
    baseline = Update.objects.get(product="ws2022-azure", kind="baseline", release_month="2026-01")
    assert baseline.kb in kbs(operation, "Installed") and operation.reboot_status == "Completed"
    later = MARCH + timedelta(hours=2)
    after = assess(vm, now=later)
    hotpatch = Update.objects.get(product="ws2022-azure", kind="hotpatch", release_month="2026-03")
    assert hotpatch.kb in kbs(after, "Available")
    vm.guest.refresh_from_db()
    assert vm.guest.baseline_id == baseline.pk and vm.guest.hotpatch_status == "Enabled"


def test_excluded_kbs_are_counted_and_not_installed(settings):
    settings.PORTAL_PATCH_FAILURE_RATE = 0
    vm = make_vm(product="ws2022", now=MARCH)
    available = kbs(assess(vm), "Available")
    held = "890830"  # the Malicious Software Removal Tool
    assert held in available
    operation = install(
        vm,
        {
            "rebootSetting": "Never",
            "windowsParameters": {
                "classificationsToInclude": ["Security", "Critical", "UpdateRollUp", "Definition", "Updates"],
                "kbNumbersToExclude": [f"KB{held}"],
            },
        },
    )
    assert operation.excluded_count == 1 and kbs(operation, "Excluded") == {held}
    assert held not in kbs(operation, "Installed")
    total = sum(
        getattr(operation, f"{c}_count") for c in ("installed", "failed", "pending", "excluded", "not_selected")
    )
    assert total == len(available) == operation.results.count()
    assert operation.reboot_status == "Required" and operation.reboot_pending


def test_running_an_operation_twice_changes_nothing_the_second_time():
    vm = make_vm(now=MARCH)
    operation, _ = services.start_operation(vm, OperationKind.INSTALLATION, enqueue=False)
    first = services.execute_operation(operation.pk, now=MARCH)
    rows = PatchResult.objects.filter(operation=operation).count()
    installed = vm.guest.installed_updates.count()
    assert services.execute_operation(operation.pk, now=MARCH) is None
    assert PatchResult.objects.filter(operation=operation).count() == rows
    assert vm.guest.installed_updates.count() == installed
    assert Operation.objects.get(pk=operation.pk).finished_at == first.finished_at


def test_a_double_delivered_task_runs_once(settings):
    settings.PORTAL_SIM_SPEED = 0
    vm = make_vm()
    operation, _ = services.start_operation(vm, OperationKind.ASSESSMENT, enqueue=False)
    run_operation(operation.pk)
    finished = Operation.objects.get(pk=operation.pk)
    run_operation(operation.pk)
    again = Operation.objects.get(pk=operation.pk)
    assert again.status == OperationStatus.SUCCEEDED and again.attempts == 1
    assert again.finished_at == finished.finished_at
    assert again.results.count() == finished.results.count()


def test_assessing_a_stopped_vm_fails_with_a_clear_error():
    vm = make_vm(now=MARCH, power_state=VirtualMachine.PowerState.STOPPED)
    operation, _ = services.start_operation(vm, OperationKind.ASSESSMENT, enqueue=False)
    services.execute_operation(operation.pk, now=MARCH)
    operation.refresh_from_db()
    assert operation.status == OperationStatus.FAILED and operation.error_code == "VMNotRunning"
    assert "stopped" in operation.error_message and vm.name in operation.error_message
    assert operation.arm_status == "Failed"


def test_a_vm_deleted_while_its_operation_waits_fails_it_cleanly():
    vm = make_vm(now=MARCH)
    operation, _ = services.start_operation(vm, OperationKind.ASSESSMENT, enqueue=False)
    vm.delete()
    assert services.execute_operation(operation.pk, now=MARCH) is None
    operation.refresh_from_db()
    assert operation.status == OperationStatus.FAILED and operation.error_code == "VMDeleted"
    assert operation.vm_name in operation.error_message


def test_a_stale_operation_is_failed_by_the_periodic_task(settings):
    vm = make_vm()
    deadline = settings.PORTAL_STALE_OPERATION_AFTER
    long_ago = datetime.now(UTC) - deadline - timedelta(minutes=1)
    stale, _ = services.start_operation(vm, OperationKind.INSTALLATION, enqueue=False, now=long_ago)
    # Its worker died mid-reboot: the operation stays in progress and the VM "starting".
    Operation.objects.filter(pk=stale.pk).update(status=OperationStatus.IN_PROGRESS, started_at=long_ago)
    VirtualMachine.objects.filter(pk=vm.pk).update(power_state=VirtualMachine.PowerState.STARTING)
    # Queued as long ago, but a queue may have a backlog: it gets longer before it is given up on.
    waiting, _ = services.start_operation(vm, OperationKind.ASSESSMENT, enqueue=False, now=long_ago)
    assert fail_stale_operations() == 1
    stale.refresh_from_db()
    waiting.refresh_from_db()
    vm.refresh_from_db()
    assert stale.status == OperationStatus.FAILED and stale.error_code == "OperationTimedOut"
    assert waiting.status == OperationStatus.NOT_STARTED
    assert vm.power_state == VirtualMachine.PowerState.RUNNING
    # A finished operation is never overwritten by a late worker.
    guest = services.guests_of([vm])[vm.pk]
    assert services.record_findings([services.Finding(stale.pk, vm, [], MARCH, guest, [])]) == []

    Operation.objects.filter(pk=waiting.pk).update(created_at=datetime.now(UTC) - 3 * deadline - timedelta(minutes=1))
    assert fail_stale_operations() == 1
    waiting.refresh_from_db()
    assert waiting.status == OperationStatus.FAILED


def test_saving_patch_settings_leaves_power_state_alone():
    vm = make_vm(now=MARCH)
    stale_copy = VirtualMachine.objects.get(pk=vm.pk)
    VirtualMachine.objects.filter(pk=vm.pk).update(power_state=VirtualMachine.PowerState.DEALLOCATED)
    assert (
        services.change_patch_settings(stale_copy, stale_copy.patch_settings.with_changes(reboot_setting="Never")) == []
    )
    vm.refresh_from_db()
    assert vm.power_state == VirtualMachine.PowerState.DEALLOCATED and vm.reboot_setting == "Never"


def test_history_is_kept_for_the_retention_period_then_pruned(settings):
    settings.PORTAL_HISTORY_RETENTION_DAYS = 30
    vm = make_vm(now=MARCH - timedelta(days=60))
    old = assess(vm, now=MARCH - timedelta(days=40))
    recent = assess(vm, now=MARCH - timedelta(days=20))
    assert services.prune_history(now=MARCH) >= 1
    assert not Operation.objects.filter(pk=old.pk).exists()
    assert Operation.objects.filter(pk=recent.pk).exists() and recent.results.exists()


def test_per_patch_rows_go_with_their_run_guest_and_update(settings):
    """Per-patch results, missing updates and a guest's last runs have no foreign keys in the database
    (WRITTEN_BY_RECORDING): pruning a run and deleting a VM leave none of them behind or dangling, and
    an update a result names cannot be removed."""
    settings.PORTAL_HISTORY_RETENTION_DAYS = 30
    gone, kept, idle = (make_vm(now=MARCH - timedelta(days=60)) for _ in range(3))
    old = assess(kept, now=MARCH - timedelta(days=40))
    assess(idle, now=MARCH - timedelta(days=40))  # its last run is pruned
    assess(kept, now=MARCH - timedelta(days=20))
    assess(gone, now=MARCH - timedelta(days=20))
    assert PatchResult.objects.filter(operation=old).exists()
    assert MissingUpdate.objects.filter(guest_id=gone.pk).exists()

    services.prune_history(now=MARCH)
    services.delete_virtual_machine(gone)
    assert not PatchResult.objects.filter(operation_id=old.pk).exists()
    assert not MissingUpdate.objects.filter(guest_id=gone.pk).exists()
    runs = set(Operation.objects.values_list("pk", flat=True))
    assert set(PatchResult.objects.values_list("operation_id", flat=True)) <= runs
    assert old.pk not in runs and GuestState.objects.get(pk=kept.pk).last_assessment_id in runs
    assert GuestState.objects.get(pk=idle.pk).last_assessment_id is None

    named = Update.objects.get(pk=PatchResult.objects.values_list("update_id", flat=True)[0])
    with pytest.raises(ProtectedError), transaction.atomic():
        named.delete()


def test_an_unreachable_agent_is_retried_then_failed(settings, monkeypatch):
    settings.PORTAL_AGENT_UNREACHABLE_RATE = 1.0
    vm = make_vm()
    operation, _ = services.start_operation(vm, OperationKind.ASSESSMENT, enqueue=False)
    retries = []  # the retry messages: the batch of the unreachable ones, with a growing countdown
    monkeypatch.setattr(
        services.current_app, "send_task", lambda name, args, **options: retries.append((args, options["countdown"]))
    )
    run_operations.apply(args=[[operation.pk]])
    for _ in range(services.MAX_AGENT_RETRIES):
        (ids, attempt), _ = retries[-1]
        run_operations.apply(args=[ids, attempt])
    assert [countdown for _, countdown in retries] == [2, 4, 8]
    operation.refresh_from_db()
    assert operation.status == OperationStatus.FAILED
    assert operation.error_code == "VMAgentStatusCommunicationError"
    assert operation.attempts == 4


def test_platform_and_user_operations_say_who_started_them():
    vm = make_vm(now=MARCH)
    op, _ = services.start_operation(vm, OperationKind.ASSESSMENT, started_by=StartedBy.PLATFORM, enqueue=False)
    assert op.started_by == "Platform" and op.user is None


# --- installPatches parameters --------------------------------------------------------------------


@pytest.mark.parametrize(
    "duration, minutes",
    [("PT4H", 240), ("PT04H00M00S", 240), ("PT90M", 90), ("PT01H30M00S", 90), ("PT1H30M", 90), ("PT2H30M", 150)],
)
def test_both_sdk_duration_spellings_parse(duration, minutes):
    """The track-2 SDKs send PT90M, the AutoRest ones PT01H30M00S: the same duration on the stored operation."""
    parsed = from_arm(
        {
            "maximumDuration": duration,
            "rebootSetting": "Never",
            "windowsParameters": {"classificationsToInclude": ["Security"]},
        }
    )
    assert isinstance(parsed, InstallParameters) and parsed.maximum_duration == timedelta(minutes=minutes)
    operation, _ = services.start_operation(
        make_vm(now=MARCH), OperationKind.INSTALLATION, parameters=parsed, now=MARCH, enqueue=False
    )
    stored = Operation.objects.get(pk=operation.pk).parameters["maximumDuration"]
    assert isodate.parse_duration(stored) == timedelta(minutes=minutes)
    assert stored == isodate.duration_isoformat(timedelta(minutes=minutes))  # one spelling stored, whatever came in


@pytest.mark.parametrize(
    "body, target, words",
    [
        (
            {"rebootSetting": "Sometimes", "windowsParameters": {"classificationsToInclude": ["Security"]}},
            "rebootSetting",
            "rebootSetting must be",
        ),
        (
            {"rebootSetting": "Never", "windowsParameters": {"classificationsToInclude": ["Securty"]}},
            "windowsParameters.classificationsToInclude",
            "'Securty' is not a classification",
        ),
        (
            {"rebootSetting": "Never", "windowsParameters": {"kbNumbersToInclude": ["KB12"]}},
            "windowsParameters.kbNumbersToInclude",
            "KB12",
        ),
        (
            {
                "rebootSetting": "Never",
                "maximumDuration": "PT5H",
                "windowsParameters": {"classificationsToInclude": ["Security"]},
            },
            "maximumDuration",
            "between 10 minutes and 4 hours",
        ),
        (
            {
                "rebootSetting": "Never",
                "maximumDuration": "two hours",
                "windowsParameters": {"classificationsToInclude": ["Security"]},
            },
            "maximumDuration",
            "not an ISO 8601 duration",
        ),
        (
            {
                "rebootSetting": "Never",
                "windowsParameters": {"kbNumbersToInclude": ["5012345"], "kbNumbersToExclude": ["KB5012345"]},
            },
            "windowsParameters.kbNumbersToExclude",
            "both included and excluded",
        ),
        (
            {"rebootSetting": "Never", "windowsParameters": {}},
            "windowsParameters.classificationsToInclude",
            "at least one",
        ),
        (
            {
                "rebootSetting": "Never",
                "windowsParameters": {"classificationsToInclude": ["Security"], "maxPatchPublishDate": "yesterday"},
            },
            "windowsParameters.maxPatchPublishDate",
            "not a date",
        ),
    ],
)
def test_bad_install_parameters_are_refused_saying_what_and_where(body, target, words):
    with pytest.raises(InvalidParameters) as refused:
        from_arm(body)
    assert any(p.target == target and words in p.message for p in refused.value.problems), refused.value.problems


def test_kb_numbers_are_accepted_with_or_without_the_prefix():
    parsed = from_arm(
        {"rebootSetting": "Never", "windowsParameters": {"kbNumbersToInclude": ["KB5012345", "5012346", " kb5012347 "]}}
    )
    assert parsed.selection.kbs_to_include == {"5012345", "5012346", "5012347"}


# --- patchSettings and enrolment ------------------------------------------------------------------


def test_hotpatch_is_refused_on_images_that_do_not_support_it():
    vm = make_vm(product="ws2022", now=MARCH)
    problems = services.change_patch_settings(
        vm, PatchSettings(patch_mode="AutomaticByPlatform", enable_hotpatching=True), now=MARCH
    )
    assert problems and "not supported on image" in problems[0].message
    vm.refresh_from_db()
    assert not vm.enable_hotpatching


def test_turning_hotpatch_off_unenrolls_until_the_next_baseline():
    vm = make_vm(now=MARCH)
    assess(vm)
    off = vm.patch_settings.with_changes(enable_hotpatching=False)
    assert services.change_patch_settings(vm, off, now=MARCH) == []
    vm.refresh_from_db()
    assert vm.guest.hotpatch_status == "Disabled"

    on = vm.patch_settings.with_changes(enable_hotpatching=True)
    refused = services.change_patch_settings(vm, on, now=MARCH + timedelta(days=5))
    assert refused and "2026-04-14" in refused[0].message  # April's Patch Tuesday baseline
    vm.refresh_from_db()
    assert not vm.enable_hotpatching

    after_baseline = datetime(2026, 4, 20, tzinfo=UTC)
    assert services.change_patch_settings(vm, on, now=after_baseline) == []
    vm.refresh_from_db()
    assert vm.enable_hotpatching and vm.guest.hotpatch_status == "PendingEvaluation"


def test_stored_parameters_are_not_validated_again_by_the_worker():
    """Validated when the operation was created: a rule tightened since must not strand the run."""
    vm = make_vm(now=MARCH - timedelta(days=40))
    assess(vm)
    operation, _ = services.start_operation(vm, OperationKind.INSTALLATION, now=MARCH, enqueue=False)
    # As stored by an older version: a duration today's rules refuse (over 4 hours) and no classification.
    Operation.objects.filter(pk=operation.pk).update(
        parameters={"maximumDuration": "PT6H", "rebootSetting": "Never", "windowsParameters": {}}
    )
    with pytest.raises(InvalidParameters):
        from_arm(Operation.objects.get(pk=operation.pk).parameters)
    done = services.execute_operation(operation.pk, now=MARCH)
    assert done is not None and done.status == OperationStatus.SUCCEEDED
    # Nothing was selected (no classification, no KB): every available update is reported NotSelected.
    assert done.installed_count == 0 and done.not_selected_count == done.results.count() > 0


def test_a_batch_runs_each_operation_once_with_the_same_outcome_as_one_at_a_time():
    vms = [make_vm(name=f"vm-{n}", now=MARCH - timedelta(days=40)) for n in range(3)]
    one_at_a_time = assess(vms[0])
    ids = services.queue_operations(vms[1:], OperationKind.ASSESSMENT, now=MARCH, enqueue=False)
    executed = services.execute_operations(ids + ids, now=MARCH)
    assert sorted(executed.recorded) == sorted(ids) and executed.unreachable == {}
    assert services.execute_operations(ids, now=MARCH).recorded == []  # claimed once only
    for batch in Operation.objects.filter(pk__in=ids):
        assert batch.status == OperationStatus.SUCCEEDED and batch.attempts == 1
        assert (batch.critical_security_count, batch.other_count) == (
            one_at_a_time.critical_security_count,
            one_at_a_time.other_count,
        )


def test_a_second_start_joins_even_where_the_database_does_not_name_the_constraint(monkeypatch):
    """SQLite (the embedded default) reports no constraint name: the one in flight is still found."""
    monkeypatch.setattr(services, "_constraint", lambda error: None)
    vm = make_vm(now=MARCH - timedelta(days=40))
    first, created = services.start_operation(vm, OperationKind.ASSESSMENT, now=MARCH, enqueue=False)
    second, created_again = services.start_operation(vm, OperationKind.ASSESSMENT, now=MARCH, enqueue=False)
    assert created and not created_again and second.pk == first.pk
