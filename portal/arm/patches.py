"""ARM API of patching: assessPatches / installPatches as long-running operations (azure-api.md §3, §4).

One Operation row per run, the same one the portal's history shows. The LRO has three views of it:
the POST answers 202 with the two URLs; the Azure-AsyncOperation URL reports the status; the
Location URL (`?monitor=true`) answers 202 until the row is finished and then 200 with the result,
both decided from a single read of the row, so the status and the result flip together (§8.4).
"""

from django.db.models import OuterRef, Subquery

from patching import services
from patching.models import (
    Classification,
    Operation,
    OperationKind,
    OperationStatus,
    PatchResult,
)
from patching.parameters import InvalidParameters, from_arm
from vms.models import VirtualMachine

from .core import (
    ArmRequest,
    arm_time,
    empty,
    lro_headers,
    vm_not_found,
)
from .errors import ArmError, invalid_parameters

# PatchOperationStatus on the wire: a queued run is already "in progress" to an ARM client.
WIRE_STATUS = {OperationStatus.NOT_STARTED: "InProgress"}
# A platform failure's Location answer: what the synchronous call would have answered.
FAILURE_STATUS = {"VMDeleted": 404}


def wire_status(operation: Operation) -> str:
    return WIRE_STATUS.get(operation.status, operation.status)


def api_error(operation: Operation, results=()) -> dict | None:
    """ApiError: the run's error, with one detail per failed patch, and one saying what a sandbox fault did."""
    injected = [{"code": "InjectedFault", "message": operation.injected}] if operation.injected else []
    if not operation.error_code and not injected:
        return None
    if not operation.error_code:  # a fault that left no error of its own (a slow install) still says so
        return {"code": "InjectedFault", "message": operation.injected, "details": injected}
    error = {"code": operation.error_code, "message": operation.error_message or operation.error_code}
    details = [
        {"code": "PatchInstallationFailed", "target": f"KB{r.update.kb}", "message": r.error or "Installation failed."}
        for r in results
        if r.state == "Failed"
    ] + injected
    if details:
        error["details"] = details
    return error


def _classifications(update) -> list[str]:
    return [Classification(update.classification).label]


def assessment_result(operation: Operation, results: list[PatchResult]) -> dict:
    """VirtualMachineAssessPatchesResult."""
    activity = str(operation.activity_id)
    modified = arm_time(operation.finished_at)
    return {
        "status": wire_status(operation),
        "assessmentActivityId": activity,
        "rebootPending": operation.reboot_pending,
        "criticalAndSecurityPatchCount": operation.critical_security_count,
        "otherPatchCount": operation.other_count,
        "startDateTime": arm_time(operation.started_at or operation.created_at),
        "availablePatches": [
            {
                "patchId": str(r.update.patch_id),
                "name": r.update.title,
                "version": "",
                "kbId": r.update.kb,
                "classifications": _classifications(r.update),
                "rebootBehavior": r.update.reboot_behavior,
                "activityId": activity,
                "publishedDate": arm_time(r.update.published_at),
                "lastModifiedDateTime": modified,
                "assessmentState": "Available",
            }
            for r in results
        ],
        "error": api_error(operation),
    }


def installation_result(operation: Operation, results: list[PatchResult]) -> dict:
    """VirtualMachineInstallPatchesResult."""
    return {
        "status": wire_status(operation),
        "installationActivityId": str(operation.activity_id),
        "rebootStatus": operation.reboot_status,
        "maintenanceWindowExceeded": operation.maintenance_window_exceeded,
        "excludedPatchCount": operation.excluded_count,
        "notSelectedPatchCount": operation.not_selected_count,
        "pendingPatchCount": operation.pending_count,
        "installedPatchCount": operation.installed_count,
        "failedPatchCount": operation.failed_count,
        "patches": [
            {
                "patchId": str(r.update.patch_id),
                "name": r.update.title,
                "version": "",
                "kbId": r.update.kb,
                "classifications": _classifications(r.update),
                "installationState": r.state,
            }
            for r in results
        ],
        "startDateTime": arm_time(operation.started_at or operation.created_at),
        "error": api_error(operation, results),
    }


def operation_result(operation: Operation) -> dict:
    """The result of a finished run, in the shape of its kind."""
    results = list(operation.results.select_related("update").order_by("update__published_at", "update__kb"))
    if operation.is_assessment:
        return assessment_result(operation, results)
    return installation_result(operation, results)


# --- instanceView.patchStatus ---------------------------------------------------------------------


def latest_operations(vms: list[VirtualMachine]) -> dict[tuple[int, str], Operation]:
    """Each VM's latest assessment and installation (finished or not), in two queries whatever the count."""
    if not vms:
        return {}

    def latest(kind: str):
        return Subquery(
            Operation.objects.filter(vm=OuterRef("pk"), kind=kind).order_by("-created_at", "-pk").values("pk")[:1]
        )

    ids = VirtualMachine.objects.filter(pk__in=[vm.pk for vm in vms]).annotate(
        a=latest(OperationKind.ASSESSMENT), i=latest(OperationKind.INSTALLATION)
    )
    wanted = [pk for row in ids.values_list("a", "i") for pk in row if pk]
    return {(op.vm_id, op.kind): op for op in Operation.objects.filter(pk__in=wanted)}


def patch_status(vm: VirtualMachine, latest: dict[tuple[int, str], Operation]) -> dict:
    """VirtualMachinePatchStatus: the latest assessment and installation, and the configuration states."""
    guest = getattr(vm, "guest", None)
    assessment = latest.get((vm.pk, OperationKind.ASSESSMENT))
    installation = latest.get((vm.pk, OperationKind.INSTALLATION))
    status: dict = {}
    if assessment is not None:
        # While a run is in flight its counts are not known yet: show what the last one found.
        known = assessment if assessment.is_finished or guest is None else None
        status["availablePatchSummary"] = {
            "status": wire_status(assessment),
            "assessmentActivityId": str(assessment.activity_id),
            "rebootPending": known.reboot_pending if known else guest.reboot_pending,
            "criticalAndSecurityPatchCount": known.critical_security_count if known else guest.critical_security_count,
            "otherPatchCount": known.other_count if known else guest.other_count,
            "startTime": arm_time(assessment.started_at or assessment.created_at),
            "lastModifiedTime": arm_time(assessment.finished_at or assessment.started_at or assessment.created_at),
            "error": api_error(assessment),
        }
    if installation is not None:
        status["lastPatchInstallationSummary"] = {
            "status": wire_status(installation),
            "installationActivityId": str(installation.activity_id),
            "maintenanceWindowExceeded": installation.maintenance_window_exceeded,
            "notSelectedPatchCount": installation.not_selected_count,
            "excludedPatchCount": installation.excluded_count,
            "pendingPatchCount": installation.pending_count,
            "installedPatchCount": installation.installed_count,
            "failedPatchCount": installation.failed_count,
            "startTime": arm_time(installation.started_at or installation.created_at),
            "lastModifiedTime": arm_time(
                installation.finished_at or installation.started_at or installation.created_at
            ),
            "error": api_error(installation),
        }
    since = arm_time(vm.created_at)
    statuses = [
        {
            "code": "PatchModeConfigurationState/Ready",
            "level": "Info",
            "displayStatus": "Status_PatchModeConfigurationState_Ready",
            "time": since,
        },
        {
            "code": "AssessmentModeConfigurationState/Ready",
            "level": "Info",
            "displayStatus": "Status_AssessmentModeConfigurationState_Ready",
            "time": since,
        },
    ]
    if guest is not None:
        # Not in Azure's model (it has no hotpatch status object): the portal's hotpatch verdict, as
        # one more InstanceViewStatus, which every client can read without knowing about it.
        hotpatch = {
            "code": f"HotpatchEnablementStatus/{guest.hotpatch_status}",
            "level": "Warning" if guest.hotpatch_status == "ActionRequired" else "Info",
            "displayStatus": f"Hotpatch {guest.get_hotpatch_status_display()}",
        }
        if guest.hotpatch_status_reason:
            hotpatch["message"] = guest.hotpatch_status_reason
        statuses.append(hotpatch)
    status["configurationStatuses"] = statuses
    return status


# --- assessPatches / installPatches ---------------------------------------------------------------

VERB = {OperationKind.ASSESSMENT: "assessPatches", OperationKind.INSTALLATION: "installPatches"}


def conflict(vm: VirtualMachine, running: Operation) -> ArmError:
    """409 naming the run in flight (the SDK raises ResourceExistsError)."""
    who = running.user.get_username() if running.user_id and running.user else running.started_by
    return ArmError(
        409,
        "OperationNotAllowed",
        f"Operation '{VERB[running.kind]}' is not allowed on VM '{vm.name}' since the VM is already running "
        f"{running.get_kind_display().lower()} operation '{running.activity_id}' (started by {who} at "
        f"{arm_time(running.created_at)}, status {wire_status(running)}). Wait for it to finish and try again.",
    )


def _start(arm: ArmRequest, subscriptionId: str, resourceGroupName: str, vmName: str, kind: str, parameters=None):
    subscription = arm.subscription(subscriptionId, act=True)
    rg = arm.resource_group(subscription, resourceGroupName)
    vm = arm.virtual_machine(rg, vmName)
    try:
        operation, created = services.start_operation(vm, kind, user=arm.user, parameters=parameters)
    except VirtualMachine.DoesNotExist:  # deleted since we read it
        raise vm_not_found(rg, vmName) from None
    if not created:
        raise conflict(vm, operation)
    return empty(202, lro_headers(arm, subscription.pk, operation.location, str(operation.activity_id)))


def assess_patches(arm: ArmRequest, subscriptionId: str, resourceGroupName: str, vmName: str):
    return _start(arm, subscriptionId, resourceGroupName, vmName, OperationKind.ASSESSMENT)


def install_patches(arm: ArmRequest, subscriptionId: str, resourceGroupName: str, vmName: str):
    # Validate the body before anything else about the VM: a bad request is a 400 whatever the VM.
    body = arm.json_object(required=True)
    if not isinstance(body.get("linuxParameters") or {}, dict):  # the Azure CLI sends {} even for Windows
        raise ArmError(400, "InvalidParameter", "linuxParameters must be an object.", target="linuxParameters")
    try:
        parameters = from_arm(body)
    except InvalidParameters as e:
        raise invalid_parameters(e.problems) from None
    return _start(arm, subscriptionId, resourceGroupName, vmName, OperationKind.INSTALLATION, parameters)
