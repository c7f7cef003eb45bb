"""ARM-style API of the sandbox (patching/sandbox.py): the clock and faults, under the
Hotpatch.Sandbox provider. Not an Azure API: scripts call it to move time and order failures.

The clock and region- or fleet-wide faults are installation-wide (a superuser, or the Owner of
every subscription: 403 otherwise); a fault on one VM or subscription needs Contributor there, and a
VM or subscription the caller cannot see is 404, as everywhere in this API.
"""

import re

from patching import sandbox
from patching.models import Fault

from .core import ArmRequest, Body, arm_time, empty, ok, raise_problems
from .errors import ArmError, bad_request

PROVIDER = "/providers/Hotpatch.Sandbox"
VM_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Compute/virtualMachines/(?P<vm>[^/]+)$",
    re.IGNORECASE,
)


def _refusal(exc: sandbox.SandboxError) -> ArmError:
    if isinstance(exc, sandbox.SandboxForbidden):
        return ArmError(403, "AuthorizationFailed", str(exc))
    if isinstance(exc, sandbox.SandboxNotFound):
        return ArmError(404, "ResourceNotFound", str(exc))
    if isinstance(exc, sandbox.SandboxBusy):
        return ArmError(409, "Conflict", str(exc))
    return bad_request(str(exc))


def _number(body: Body, path: str) -> float | None:
    value = body.get(path, object, None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"'{path}' must be a number.", path)
    return value


def clock_to_arm() -> dict:
    state = sandbox.status()
    return {
        "id": f"{PROVIDER}/clock",
        "name": "clock",
        "type": "Hotpatch.Sandbox/clock",
        "properties": {
            "mode": state["mode"],
            "now": arm_time(state["now"]),
            "advancing": state["advancing"],
            "maxAdvanceDays": state["maxAdvanceDays"],
            "activeFaults": state["faults"],
        },
    }


def get_clock(arm: ArmRequest):
    return ok(clock_to_arm())


def advance_clock(arm: ArmRequest):
    body = Body(arm.json_object(required=True))
    to = body.get("to", str, None)
    raise_problems(body.problems)
    days = _number(body, "days")
    try:
        sandbox.require_manager(arm.user)
        result = sandbox.advance(to=sandbox.parse_moment(to) if to is not None else None, days=days)
    except sandbox.SandboxError as exc:
        raise _refusal(exc) from None
    answer = clock_to_arm()
    answer["properties"]["lastAdvance"] = {
        "from": arm_time(result.start),
        "to": arm_time(result.end),
        "switchedToSandbox": result.switched,
        "rounds": result.rounds,
        "operations": result.operations,
        "seconds": round(result.seconds, 3),
        "message": result.message(),
    }
    return ok(answer)


def realtime(arm: ArmRequest):
    try:
        sandbox.require_manager(arm.user)
        sandbox.realtime()
    except sandbox.SandboxError as exc:
        raise _refusal(exc) from None
    return ok(clock_to_arm())


# --- Faults ---------------------------------------------------------------------------------------


def fault_to_arm(fault: Fault) -> dict:
    return {
        "id": f"{PROVIDER}/faults/{fault.pk}",
        "name": str(fault.pk),
        "type": "Hotpatch.Sandbox/faults",
        "properties": {
            "kind": fault.kind,
            "vmId": fault.vm.arm_id if fault.vm_id else None,
            "subscriptionId": str(fault.subscription_id) if fault.subscription_id else None,
            "location": fault.location or None,
            "kb": fault.kb or None,
            "probability": fault.probability,
            "nextOperations": fault.remaining,
            "fired": fault.fired,
            "active": fault.is_active,
            "description": str(fault),
            "createdAt": arm_time(fault.created_at),
        },
    }


def list_faults(arm: ArmRequest):
    return ok({"value": [fault_to_arm(f) for f in sandbox.faults_for(arm.user).select_related("vm__resource_group")]})


def add_fault(arm: ArmRequest):
    body = Body(arm.json_object(required=True))
    kind = body.get("kind", str, None)
    vm_id = body.get("vmId", str, None)
    subscription_id = body.get("subscriptionId", str, None)
    location = body.get("location", str, "")
    kb = body.get("kb", str, "")
    raise_problems(body.problems)
    probability = _number(body, "probability")
    next_n = _number(body, "nextOperations")
    if next_n is not None and next_n != int(next_n):
        raise bad_request("'nextOperations' must be a whole number.", "nextOperations")
    if kind is None:
        raise bad_request("'kind' is required.", "kind")
    vm = subscription = None
    if vm_id is not None:
        found = VM_ID.match(vm_id)
        if not found:
            raise bad_request("'vmId' must be a virtual machine's resource id.", "vmId")
        subscription_of_vm = arm.subscription(found["sub"])
        vm = arm.virtual_machine(arm.resource_group(subscription_of_vm, found["rg"]), found["vm"])
    elif subscription_id is not None:
        subscription = arm.subscription(subscription_id)
    try:
        fault = sandbox.add_fault(
            arm.user,
            kind,
            vm=vm,
            subscription=subscription,
            location=location,
            kb=kb,
            probability=float(probability) if probability is not None else None,
            next_n=int(next_n) if next_n is not None else None,
        )
    except sandbox.SandboxError as exc:
        raise _refusal(exc) from None
    return ok(fault_to_arm(fault), 201)


def remove_fault(arm: ArmRequest, faultId: str):
    if not faultId.isdigit() or len(faultId) > 9:
        raise ArmError(404, "ResourceNotFound", f"No fault '{faultId}'.")
    try:
        removed = sandbox.remove_fault(arm.user, int(faultId))
    except sandbox.SandboxError as exc:
        raise _refusal(exc) from None
    return empty(200 if removed else 204)
