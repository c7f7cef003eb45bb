"""ARM API: the status and result of a long-running operation (azure-api.md §4, §8.4).

One URL for every kind: a patch run's is its Operation row (one read decides both the status and
whether the result is ready); a create/update/delete or power action that finished within its
request has a signed record for a name (see core.completed_operation_name).
"""

import uuid

from django.conf import settings

from patching.models import (
    Operation,
)
from vms import regions

from .compute import vm_by_arm_id, vm_to_arm
from .core import (
    ArmRequest,
    arm_time,
    empty,
    lro_headers,
    ok,
    read_completed_operation,
)
from .errors import ArmError
from .patches import FAILURE_STATUS, operation_result

# --- The operation status and result -------------------------------------------------------------


def _operation_not_found(name: str, location: str) -> ArmError:
    return ArmError(404, "ResourceNotFound", f"The operation '{name}' was not found in location '{location}'.")


def operation(arm: ArmRequest, subscriptionId: str, location: str, operationId: str):
    """Azure-AsyncOperation (status) and, with ?monitor=true, Location (result) of an operation."""
    subscription = arm.subscription(subscriptionId)
    monitor = (arm.param("monitor") or "").lower() == "true"
    region = regions.normalize_region(location)
    try:
        activity_id = uuid.UUID(operationId)
    except ValueError:
        return _completed_operation(arm, subscription, region, location, operationId, monitor)
    # The single read of the row that decides both the status and whether the result is ready.
    found = Operation.objects.filter(subscription=subscription, activity_id=activity_id).select_related("user").first()
    if found is None or regions.normalize_region(found.location) != region:
        raise _operation_not_found(operationId, location)
    lro = found.arm_status
    if monitor:
        if lro == "InProgress":
            return empty(202, lro_headers(arm, subscription.pk, found.location, operationId))
        if lro == "Failed":
            status = FAILURE_STATUS.get(found.error_code, 409)
            return ArmError(status, found.error_code, found.error_message).response()
        return ok(operation_result(found))
    body = {"name": str(found.activity_id), "status": lro, "startTime": arm_time(found.started_at or found.created_at)}
    if found.is_finished:
        body["endTime"] = arm_time(found.finished_at)
    if lro == "Succeeded":
        body["properties"] = {"output": operation_result(found)}
    elif lro == "Failed":
        body["error"] = {"code": found.error_code, "message": found.error_message}
    # While it runs, say when to ask again: without it azure-core (the Azure CLI's VM commands) waits 30 s.
    return ok(body, headers={"Retry-After": str(settings.PORTAL_ARM_RETRY_AFTER)} if lro == "InProgress" else None)


def _completed_operation(arm, subscription, region, location, name, monitor):
    """A create/update/delete that finished within its request (see core.completed_operation_name)."""
    record = read_completed_operation(name)
    if record is None or record.get("s") != str(subscription.pk) or region is None:
        raise _operation_not_found(name, location)
    if monitor:
        if record["k"] == "delete":
            return empty(204)

        vm = vm_by_arm_id(subscription, record["r"])
        if vm is None:
            return empty(204)
        return ok(vm_to_arm(vm))
    return ok({"name": name, "status": "Succeeded", "startTime": record["t"], "endTime": record["e"]})
