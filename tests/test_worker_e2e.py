"""End to end through a real Celery worker over Redis, on PostgreSQL: what a user's click sets off."""

from patching import services
from patching.models import Operation, OperationKind, OperationStatus, StartedBy
from patching.parameters import from_arm
from tests.factories import load_catalog, make_vm
from tests.helpers import wait_for


def finished(operation: Operation) -> Operation:
    wait_for(lambda: Operation.objects.get(pk=operation.pk).is_finished, timeout=60, message=f"{operation} to finish")
    return Operation.objects.get(pk=operation.pk)


def test_assessment_then_installation_run_on_the_real_worker(live_worker):
    load_catalog()
    vm = make_vm(product="ws2022")  # not in the hotpatch programme: a monthly LCU, .NET, MSRT, ...

    assessment, _ = services.start_operation(vm, OperationKind.ASSESSMENT)
    assessment = finished(assessment)
    assert assessment.status == OperationStatus.SUCCEEDED, assessment.error_message
    available = {r.update.kb for r in assessment.results.select_related("update")}
    assert "890830" in available and assessment.critical_security_count >= 1
    vm.guest.refresh_from_db()
    assert vm.guest.last_assessment_id == assessment.pk

    parameters = from_arm(
        {
            "rebootSetting": "IfRequired",
            "maximumDuration": "PT4H",
            "windowsParameters": {
                "classificationsToInclude": ["Critical", "Security"],
                "kbNumbersToExclude": ["KB890830"],
            },
        }
    )
    installation, _ = services.start_operation(vm, OperationKind.INSTALLATION, parameters=parameters)
    installation = finished(installation)
    # A patch may fail (the simulation's deterministic failure rate), but the run itself completed.
    assert installation.error_code in ("", "PatchInstallationFailed"), installation.error_message
    assert installation.arm_status == "Succeeded"
    assert installation.excluded_count == 1
    assert installation.installed_count + installation.failed_count >= 1
    assert installation.results.count() == len(available)
    assert installation.reboot_status in ("Completed", "NotNeeded")

    # The worker follows an installation with a platform assessment, as the real agent does.
    wait_for(
        lambda: vm.operations.filter(
            kind=OperationKind.ASSESSMENT, started_by=StartedBy.PLATFORM, status=OperationStatus.SUCCEEDED
        ).exists(),
        timeout=60,
        message="the follow-up assessment",
    )
    vm.guest.refresh_from_db()
    assert vm.guest.critical_security_count < assessment.critical_security_count or installation.failed_count


def test_a_stopped_vm_fails_on_the_worker_with_a_clear_error(live_worker):
    load_catalog()
    vm = make_vm(power_state="stopped")
    operation, _ = services.start_operation(vm, OperationKind.ASSESSMENT)
    operation = finished(operation)
    assert operation.status == OperationStatus.FAILED and operation.error_code == "VMNotRunning"
