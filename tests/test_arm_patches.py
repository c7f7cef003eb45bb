"""assessPatches / installPatches as ARM long-running operations, through the Django client.

The worker is replaced by calling services.execute_operation in the test (the live-worker runs are
in test_arm_sdk.py): what matters here is the protocol around the Operation row.
"""

from urllib.parse import urlsplit

import pytest

from patching import services
from patching.models import Operation, OperationKind, OperationStatus
from tests.arm_client import error_of, vm_path
from vms.models import VirtualMachine

pytestmark = pytest.mark.usefixtures("arm_settings")


def follow(api, url):
    return api.client.get(url, headers={"Authorization": f"Bearer {api.token}"})


def test_assess_answers_202_with_absolute_operation_urls(api, fleet, settings):
    settings.PORTAL_ARM_RETRY_AFTER = 7
    response = api.post(vm_path(fleet["web1"], "/assessPatches"), api_version="2022-11-01")
    assert response.status_code == 202 and response.content == b""
    operation = Operation.objects.get(vm=fleet["web1"])
    async_url, location = urlsplit(response["Azure-AsyncOperation"]), urlsplit(response["Location"])
    assert (async_url.scheme, async_url.netloc) == ("http", "testserver")
    expected = (
        f"/arm/subscriptions/{fleet['contoso'].pk}/providers/Microsoft.Compute/locations/westeurope"
        f"/operations/{operation.activity_id}"
    )
    assert async_url.path == location.path == expected
    assert async_url.query == "api-version=2022-11-01"  # the client's own api-version, echoed
    assert location.query == "monitor=true&api-version=2022-11-01"
    assert response["Retry-After"] == "7"
    assert operation.user.username == "alice" and operation.started_by == "User"


def test_the_status_and_the_result_flip_together(api, fleet):
    response = api.post(vm_path(fleet["web2"], "/assessPatches"))
    operation = Operation.objects.get(vm=fleet["web2"])

    status = follow(api, response["Azure-AsyncOperation"])
    assert status.status_code == 200
    assert status.json() == {
        "name": str(operation.activity_id),
        "status": "InProgress",
        "startTime": status.json()["startTime"],
    }
    pending = follow(api, response["Location"])
    assert pending.status_code == 202 and pending.content == b""
    assert pending["Location"] == response["Location"] and pending["Retry-After"] == "0"

    services.execute_operation(operation.pk)
    operation.refresh_from_db()

    status = follow(api, response["Azure-AsyncOperation"]).json()
    assert status["status"] == "Succeeded" and status["endTime"]
    result = follow(api, response["Location"])
    assert result.status_code == 200
    body = result.json()
    assert body == status["properties"]["output"]
    assert body["status"] == "Succeeded" and body["assessmentActivityId"] == str(operation.activity_id)
    assert body["criticalAndSecurityPatchCount"] == operation.critical_security_count
    assert body["otherPatchCount"] == operation.other_count
    assert body["rebootPending"] is False and body["error"] is None and body["startDateTime"]
    patch = next(p for p in body["availablePatches"] if p["kbId"] == "890830")
    assert set(patch) == {
        "patchId", "name", "version", "kbId", "classifications", "rebootBehavior", "activityId",
        "publishedDate", "lastModifiedDateTime", "assessmentState",
    }  # fmt: skip
    assert patch["classifications"] == ["Update Rollups"] and patch["rebootBehavior"] == "CanRequestReboot"
    assert patch["version"] == "" and patch["assessmentState"] == "Available"
    assert patch["activityId"] == str(operation.activity_id)


def test_install_result_shape_and_counts(api, fleet):
    vm = fleet["web2"]
    body = {
        "maximumDuration": "PT04H00M00S",
        "rebootSetting": "Never",
        "windowsParameters": {
            "classificationsToInclude": ["Critical", "Security"],
            "kbNumbersToInclude": ["KB890830"],
            "kbNumbersToExclude": [],
            "excludeKbsRequiringReboot": False,
            "maxPatchPublishDate": "2030-01-01T00:00:00Z",
        },
    }
    response = api.post(vm_path(vm, "/installPatches"), body)
    assert response.status_code == 202, response.content
    operation = Operation.objects.get(vm=vm, kind=OperationKind.INSTALLATION)
    assert operation.parameters["windowsParameters"]["kbNumbersToInclude"] == ["890830"]
    services.execute_operation(operation.pk)
    operation.refresh_from_db()

    result = follow(api, response["Location"]).json()
    assert set(result) == {
        "status", "installationActivityId", "rebootStatus", "maintenanceWindowExceeded", "excludedPatchCount",
        "notSelectedPatchCount", "pendingPatchCount", "installedPatchCount", "failedPatchCount", "patches",
        "startDateTime", "error",
    }  # fmt: skip
    assert result["installationActivityId"] == str(operation.activity_id)
    assert result["installedPatchCount"] == operation.installed_count
    assert result["failedPatchCount"] == operation.failed_count
    assert result["notSelectedPatchCount"] == operation.not_selected_count
    states = {p["kbId"]: p["installationState"] for p in result["patches"]}
    assert states["890830"] in ("Installed", "Failed")
    assert len(result["patches"]) == operation.results.count()
    assert result["rebootStatus"] in ("Required", "NotNeeded")  # Never: no reboot happens
    assert all(
        set(p) == {"patchId", "name", "version", "kbId", "classifications", "installationState"}
        for p in result["patches"]
    )

    summary = follow(api, f"/arm/{vm_path(vm, '/instanceView')}?api-version=1").json()["patchStatus"]
    last = summary["lastPatchInstallationSummary"]
    assert last["installationActivityId"] == str(operation.activity_id)
    assert last["installedPatchCount"] == operation.installed_count


def test_a_failed_patch_run_is_a_succeeded_operation_with_the_error_in_the_result(api, fleet, settings):
    settings.PORTAL_PATCH_FAILURE_RATE = 1.0
    vm = fleet["web2"]
    body = {"rebootSetting": "IfRequired", "windowsParameters": {"classificationsToInclude": ["Security"]}}
    response = api.post(vm_path(vm, "/installPatches"), body)
    operation = Operation.objects.get(vm=vm, kind=OperationKind.INSTALLATION)
    services.execute_operation(operation.pk)

    status = follow(api, response["Azure-AsyncOperation"]).json()
    assert status["status"] == "Succeeded"
    result = follow(api, response["Location"]).json()
    assert result["status"] == "Failed" and result["failedPatchCount"] >= 1
    assert result["error"]["code"] == "PatchInstallationFailed"
    assert result["error"]["details"][0]["target"].startswith("KB")


def test_a_platform_failure_fails_the_operation(api, fleet):
    vm = fleet["web2"]
    VirtualMachine.objects.filter(pk=vm.pk).update(power_state="deallocated")
    response = api.post(vm_path(vm, "/assessPatches"))
    operation = Operation.objects.get(vm=vm)
    services.execute_operation(operation.pk)

    status = follow(api, response["Azure-AsyncOperation"]).json()
    assert status["status"] == "Failed"
    assert status["error"]["code"] == "VMNotRunning" and "deallocated" in status["error"]["message"]
    result = follow(api, response["Location"])
    assert result.status_code == 409 and error_of(result)["code"] == "VMNotRunning"
    summary = follow(api, f"/arm/{vm_path(vm, '/instanceView')}?api-version=1").json()["patchStatus"]
    assert summary["availablePatchSummary"]["status"] == "Failed"
    assert summary["availablePatchSummary"]["error"]["code"] == "VMNotRunning"


def test_a_second_operation_of_the_same_kind_is_409_naming_the_running_one(api, fleet):
    vm = fleet["web1"]
    platform, _ = services.start_operation(vm, OperationKind.ASSESSMENT, started_by="Platform", enqueue=False)
    response = api.post(vm_path(vm, "/assessPatches"))
    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "OperationNotAllowed"
    assert str(platform.activity_id) in error["message"] and "Platform" in error["message"]
    # An installation is another kind: it may run beside the assessment.
    body = {"rebootSetting": "Never", "windowsParameters": {"classificationsToInclude": ["Security"]}}
    assert api.post(vm_path(vm, "/installPatches"), body).status_code == 202
    assert api.post(vm_path(vm, "/installPatches"), body).status_code == 409
    assert vm.operations.filter(status=OperationStatus.NOT_STARTED).count() == 2


def test_an_operation_of_another_subscription_or_location_is_not_found(api, fleet):
    response = api.post(vm_path(fleet["web1"], "/assessPatches"))
    url = response["Azure-AsyncOperation"]
    assert follow(api, url.replace("/westeurope/", "/WestEurope/")).status_code == 200
    for wrong in (
        url.replace("/westeurope/", "/eastus/"),
        url.replace(str(fleet["contoso"].pk), str(fleet["fabrikam"].pk)),
        url.replace(str(fleet["contoso"].pk), str(fleet["bobs"].pk)),
        url.rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000?api-version=1",
    ):
        assert follow(api, wrong).status_code == 404, wrong
