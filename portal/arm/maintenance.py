"""ARM API: Microsoft.Maintenance (api-version 2023-04-01, what azure-mgmt-maintenance 2.1 sends):
maintenanceConfigurations, configurationAssignments at VM and subscription scope (dynamic scopes),
applyUpdates and updates. Shapes from azure-rest-api-specs, specification/maintenance/resource-manager/
Microsoft.Maintenance/stable/2023-04-01/Maintenance.json.

Maintenance answers synchronously (no long-running operations in this API version): PUT 200/201,
DELETE 200 with the deleted resource or 204 when there was none.
"""

import uuid
from datetime import UTC, datetime

from patching import services as patching_services
from patching.maintenance import services
from patching.maintenance.models import ConfigurationAssignment, MaintenanceConfiguration, MaintenanceRun, RunStatus
from patching.models import Operation, OperationKind, OperationStatus, StartedBy
from vms import access, clock

from .core import ArmRequest, arm_time, empty, ok
from .errors import ArmError, invalid_parameters

CONFIG_TYPE = "Microsoft.Maintenance/maintenanceConfigurations"
ASSIGNMENT_TYPE = "Microsoft.Maintenance/configurationAssignments"
APPLY_TYPE = "Microsoft.Maintenance/applyUpdates"
PROVIDER = "/providers/Microsoft.Maintenance"


def _error(e: services.ScheduleError) -> ArmError:
    return ArmError(e.status, e.code, e.message, target=e.target)


def _system_data(created_at, created_by, modified_at=None, modified_by=None) -> dict:
    return {
        "createdBy": created_by or "unknown",
        "createdByType": "User",
        "createdAt": arm_time(created_at),
        "lastModifiedBy": (modified_by if modified_at else created_by) or "unknown",
        "lastModifiedByType": "User",
        "lastModifiedAt": arm_time(modified_at or created_at),
    }


def configuration_to_arm(config: MaintenanceConfiguration) -> dict:
    body = services.configuration_to_body(config)
    properties = body["properties"]
    return {
        "id": config.arm_id,
        "name": config.name,
        "type": CONFIG_TYPE,
        "location": config.location,
        "tags": config.tags,
        "systemData": _system_data(config.created_at, config.created_by, config.modified_at, config.modified_by),
        "properties": properties,
    }


def assignment_to_arm(assignment: ConfigurationAssignment) -> dict:
    config = assignment.configuration
    if assignment.vm_id:
        resource_id = assignment.vm.arm_id
        location = assignment.vm.location
    elif assignment.resource_group_id:
        rg = assignment.resource_group
        resource_id = f"/subscriptions/{rg.subscription_id}/resourceGroups/{rg.name}"
        location = config.location
    else:
        resource_id = f"/subscriptions/{assignment.subscription_id}"
        location = config.location
    properties = {"maintenanceConfigurationId": config.arm_id, "resourceId": resource_id}
    if assignment.filter is not None:
        properties["filter"] = assignment.filter
    return {
        "id": f"{resource_id}{PROVIDER}/configurationAssignments/{assignment.name}",
        "name": assignment.name,
        "type": ASSIGNMENT_TYPE,
        "location": location,
        "systemData": _system_data(assignment.created_at, assignment.created_by),
        "properties": properties,
    }


def _configurations():
    return MaintenanceConfiguration.objects.select_related("resource_group")


def _assignments():
    return ConfigurationAssignment.objects.select_related(
        "configuration__resource_group", "vm__resource_group", "resource_group"
    )


def _configuration(arm: ArmRequest, subscriptionId, resourceGroupName, resourceName, *, act=False):
    subscription = arm.subscription(subscriptionId, act=act)
    rg = arm.resource_group(subscription, resourceGroupName)
    config = _configurations().filter(resource_group=rg, name__iexact=resourceName).first()
    return subscription, rg, config


def _not_found(name: str) -> ArmError:
    return ArmError(404, "ResourceNotFound", f"The maintenance configuration '{name}' was not found.")


# --- maintenanceConfigurations ------------------------------------------------------------------------


def list_configurations(arm: ArmRequest, subscriptionId: str):
    subscription = arm.subscription(subscriptionId)
    configs = (
        _configurations().filter(resource_group__subscription=subscription).order_by("resource_group__name", "name")
    )
    return ok({"value": [configuration_to_arm(c) for c in configs]})


def list_group_configurations(arm: ArmRequest, subscriptionId: str, resourceGroupName: str):
    subscription = arm.subscription(subscriptionId)
    rg = arm.resource_group(subscription, resourceGroupName)
    return ok(
        {"value": [configuration_to_arm(c) for c in _configurations().filter(resource_group=rg).order_by("name")]}
    )


def get_configuration(arm: ArmRequest, subscriptionId: str, resourceGroupName: str, resourceName: str):
    _, _, config = _configuration(arm, subscriptionId, resourceGroupName, resourceName)
    if config is None:
        raise _not_found(resourceName)
    return ok(configuration_to_arm(config))


def put_configuration(arm: ArmRequest, subscriptionId: str, resourceGroupName: str, resourceName: str):
    _, rg, _ = _configuration(arm, subscriptionId, resourceGroupName, resourceName, act=True)
    body = arm.json_object(required=True)
    try:
        config, created, problems = services.save_configuration(rg, resourceName, body, user=arm.user)
    except services.ScheduleError as e:
        raise _error(e) from None
    if problems:
        raise invalid_parameters(problems)
    return ok(configuration_to_arm(config), status=201 if created else 200)


def patch_configuration(arm: ArmRequest, subscriptionId: str, resourceGroupName: str, resourceName: str):
    _, _, config = _configuration(arm, subscriptionId, resourceGroupName, resourceName, act=True)
    if config is None:
        raise _not_found(resourceName)
    body = arm.json_object(required=True)
    try:
        config, _, problems = services.patch_configuration(config, body, user=arm.user)
    except services.ScheduleError as e:
        raise _error(e) from None
    if problems:
        raise invalid_parameters(problems)
    return ok(configuration_to_arm(config))


def delete_configuration(arm: ArmRequest, subscriptionId: str, resourceGroupName: str, resourceName: str):
    _, _, config = _configuration(arm, subscriptionId, resourceGroupName, resourceName, act=True)
    if config is None:
        return empty(204)
    body = configuration_to_arm(config)
    services.delete_configuration(config)
    return ok(body)


# --- Cancelling a scheduled run: PUT {configuration}/applyUpdates/{yyyyMMddHHmm} {"properties": {"status": "Cancel"}}
# (Learn, "Manage pre and post events": cancel a schedule run until 10 minutes before it starts).


def _run_time(name: str) -> datetime | None:
    for fmt in ("%Y%m%d%H%M%S", "%Y%m%d%H%M"):
        try:
            return datetime.strptime(name, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def _run_to_arm(config: MaintenanceConfiguration, run: MaintenanceRun) -> dict:
    name = run.scheduled_start.strftime("%Y%m%d%H%M%S")
    status = {RunStatus.CANCELLED: "Cancelled"}.get(run.status, run.status)
    return {
        "id": f"{config.arm_id}/applyUpdates/{name}",
        "name": name,
        "type": APPLY_TYPE,
        "properties": {
            "status": status,
            "resourceId": config.arm_id,
            "lastUpdateTime": arm_time(run.ended_at or run.started_at or run.scheduled_start),
            "correlationId": str(run.correlation_id),
        },
    }


def _find_run(config: MaintenanceConfiguration, name: str) -> MaintenanceRun | None:
    moment = _run_time(name)
    if moment is not None:
        return config.runs.filter(scheduled_start=moment).first()
    return config.runs.filter(correlation_id__iexact=name).first() if len(name) == 36 else None


def get_configuration_run(arm, subscriptionId, resourceGroupName, resourceName, applyUpdateName):
    _, _, config = _configuration(arm, subscriptionId, resourceGroupName, resourceName)
    if config is None:
        raise _not_found(resourceName)
    run = _find_run(config, applyUpdateName)
    if run is None:
        raise ArmError(404, "ResourceNotFound", f"No run '{applyUpdateName}' of '{config.name}'.")
    return ok(_run_to_arm(config, run))


def put_configuration_run(arm, subscriptionId, resourceGroupName, resourceName, applyUpdateName):
    _, _, config = _configuration(arm, subscriptionId, resourceGroupName, resourceName, act=True)
    if config is None:
        raise _not_found(resourceName)
    body = arm.json_object(required=True)
    status = (body.get("properties") or {}).get("status") if isinstance(body.get("properties"), dict) else None
    if status != "Cancel":
        raise ArmError(
            400,
            "InvalidParameter",
            'Only {"properties": {"status": "Cancel"}} is accepted.',
            target="properties.status",
        )
    run = _find_run(config, applyUpdateName)
    start = run.scheduled_start if run else _run_time(applyUpdateName)
    if start is None:
        raise ArmError(
            400,
            "InvalidParameter",
            "The run's name is its start in UTC, yyyyMMddHHmmss, or its correlationId.",
            target="applyUpdateName",
        )
    try:
        run = services.cancel_occurrence(config, start, by=arm.user.get_username())
    except services.ScheduleError as e:
        raise _error(e) from None
    return ok(_run_to_arm(config, run))


# --- configurationAssignments on a VM ----------------------------------------------------------------------


def _vm(arm: ArmRequest, subscriptionId, resourceGroupName, vmName, *, act=False):
    subscription = arm.subscription(subscriptionId, act=act)
    rg = arm.resource_group(subscription, resourceGroupName)
    return arm.virtual_machine(rg, vmName)


def list_vm_assignments(arm: ArmRequest, subscriptionId: str, resourceGroupName: str, vmName: str):
    vm = _vm(arm, subscriptionId, resourceGroupName, vmName)
    return ok({"value": [assignment_to_arm(a) for a in _assignments().filter(vm=vm).order_by("name")]})


def get_vm_assignment(arm, subscriptionId, resourceGroupName, vmName, configurationAssignmentName):
    vm = _vm(arm, subscriptionId, resourceGroupName, vmName)
    assignment = _assignments().filter(vm=vm, name__iexact=configurationAssignmentName).first()
    if assignment is None:
        raise ArmError(
            404, "ResourceNotFound", f"The configuration assignment '{configurationAssignmentName}' was not found."
        )
    return ok(assignment_to_arm(assignment))


def _configuration_id(arm: ArmRequest, body: dict) -> MaintenanceConfiguration:
    props = body.get("properties") if isinstance(body.get("properties"), dict) else {}
    config_id = props.get("maintenanceConfigurationId")
    if not isinstance(config_id, str) or not config_id:
        raise ArmError(
            400,
            "InvalidParameter",
            "properties.maintenanceConfigurationId is required.",
            target="properties.maintenanceConfigurationId",
        )
    try:
        return services.find_configuration(access.subscriptions_for(arm.user), config_id)
    except services.ScheduleError as e:
        raise _error(e) from None


def put_vm_assignment(arm, subscriptionId, resourceGroupName, vmName, configurationAssignmentName):
    vm = _vm(arm, subscriptionId, resourceGroupName, vmName, act=True)
    body = arm.json_object(required=True)
    config = _configuration_id(arm, body)
    try:
        assignment, created = services.assign_vm(config, vm, configurationAssignmentName, user=arm.user)
    except services.ScheduleError as e:
        raise _error(e) from None
    return ok(assignment_to_arm(_assignments().get(pk=assignment.pk)), status=201 if created else 200)


def delete_vm_assignment(arm, subscriptionId, resourceGroupName, vmName, configurationAssignmentName):
    vm = _vm(arm, subscriptionId, resourceGroupName, vmName, act=True)
    assignment = _assignments().filter(vm=vm, name__iexact=configurationAssignmentName).first()
    if assignment is None:
        return empty(204)
    body = assignment_to_arm(assignment)
    assignment.delete()
    return ok(body)


# --- configurationAssignments at subscription scope (dynamic scopes) ------------------------------------


def list_subscription_assignments(arm: ArmRequest, subscriptionId: str):
    """Every assignment in the subscription: its VMs' and its dynamic scopes (ConfigurationAssignmentsWithinSubscription)."""
    subscription = arm.subscription(subscriptionId)
    assignments = _assignments().filter(subscription=subscription).order_by("vm_id", "resource_group_id", "name")
    return ok({"value": [assignment_to_arm(a) for a in assignments]})


def _scope_assignment(subscription, name, rg=None):
    return (
        _assignments().filter(subscription=subscription, resource_group=rg, vm__isnull=True, name__iexact=name).first()
    )


def get_subscription_assignment(arm, subscriptionId, configurationAssignmentName):
    subscription = arm.subscription(subscriptionId)
    assignment = _scope_assignment(subscription, configurationAssignmentName)
    if assignment is None:
        raise ArmError(
            404, "ResourceNotFound", f"The configuration assignment '{configurationAssignmentName}' was not found."
        )
    return ok(assignment_to_arm(assignment))


def put_subscription_assignment(arm, subscriptionId, configurationAssignmentName, rg=None):
    subscription = arm.subscription(subscriptionId, act=True)
    body = arm.json_object(required=True)
    config = _configuration_id(arm, body)
    if not access.can_act(arm.user, config.resource_group.subscription_id):
        raise ArmError(
            403, "AuthorizationFailed", f"The client may not assign the maintenance configuration '{config.name}'."
        )
    props = body.get("properties") if isinstance(body.get("properties"), dict) else {}
    raw_filter = next((v for k, v in props.items() if k.lower() == "filter"), None)
    try:
        assignment, created = services.assign_scope(
            config, subscription, configurationAssignmentName, raw_filter, user=arm.user, resource_group=rg
        )
    except services.ScheduleError as e:
        raise _error(e) from None
    return ok(assignment_to_arm(_assignments().get(pk=assignment.pk)), status=201 if created else 200)


def patch_subscription_assignment(arm, subscriptionId, configurationAssignmentName):
    subscription = arm.subscription(subscriptionId, act=True)
    assignment = _scope_assignment(subscription, configurationAssignmentName)
    if assignment is None:
        raise ArmError(
            404, "ResourceNotFound", f"The configuration assignment '{configurationAssignmentName}' was not found."
        )
    return put_subscription_assignment(arm, subscriptionId, configurationAssignmentName)


def delete_subscription_assignment(arm, subscriptionId, configurationAssignmentName):
    subscription = arm.subscription(subscriptionId, act=True)
    assignment = _scope_assignment(subscription, configurationAssignmentName)
    if assignment is None:
        return empty(204)
    body = assignment_to_arm(assignment)
    assignment.delete()
    return ok(body)


# --- applyUpdates and updates on a VM -----------------------------------------------------------------------


def _apply_to_arm(vm, operation: Operation) -> dict:
    status = {
        OperationStatus.NOT_STARTED: "Pending",
        OperationStatus.IN_PROGRESS: "InProgress",
    }.get(operation.status, "Completed")
    return {
        "id": f"{vm.arm_id}{PROVIDER}/applyUpdates/{operation.activity_id}",
        "name": str(operation.activity_id),
        "type": APPLY_TYPE,
        "properties": {
            "status": status,
            "resourceId": vm.arm_id,
            "lastUpdateTime": arm_time(operation.finished_at or operation.started_at or operation.created_at),
        },
    }


def put_vm_apply_updates(arm, subscriptionId, resourceGroupName, vmName, applyUpdateName):
    """applyUpdates/default: install now with the VM's configuration's parameters (Critical and Security without one)."""
    if applyUpdateName.lower() != "default":
        raise ArmError(
            405, "MethodNotAllowed", "PUT applies updates at applyUpdates/default only.", headers={"Allow": "GET"}
        )
    vm = _vm(arm, subscriptionId, resourceGroupName, vmName, act=True)
    assignment = services.assignment_of(vm)
    parameters = None
    if assignment is not None:
        parameters = services.install_parameters(assignment.configuration, assignment.configuration.duration)
    try:
        operation, created = patching_services.start_operation(
            vm, OperationKind.INSTALLATION, user=arm.user, started_by=StartedBy.USER, parameters=parameters
        )
    except vm.DoesNotExist:
        raise ArmError(404, "ResourceNotFound", f"The VM '{vmName}' was deleted.") from None
    return ok(_apply_to_arm(vm, operation), status=201 if created else 200)


def get_vm_apply_updates(arm, subscriptionId, resourceGroupName, vmName, applyUpdateName):
    vm = _vm(arm, subscriptionId, resourceGroupName, vmName)
    operations = Operation.objects.filter(vm=vm, kind=OperationKind.INSTALLATION)
    if applyUpdateName.lower() == "default":
        operation = operations.order_by("-created_at").first()
    else:
        try:
            operation = operations.filter(activity_id=uuid.UUID(applyUpdateName)).first()
        except ValueError:  # not a UUID: no such run
            operation = None
    if operation is None:
        raise ArmError(404, "ResourceNotFound", f"No applyUpdates '{applyUpdateName}' on '{vm.name}'.")
    return ok(_apply_to_arm(vm, operation))


def list_apply_updates(arm: ArmRequest, subscriptionId: str):
    """The subscription's installations started by maintenance configurations (their latest 1,000)."""
    subscription = arm.subscription(subscriptionId)
    operations = (
        Operation.objects.filter(
            subscription=subscription, kind=OperationKind.INSTALLATION, started_by=StartedBy.SCHEDULE, vm__isnull=False
        )
        .select_related("vm__resource_group")
        .order_by("-created_at")[:1000]
    )
    return ok({"value": [_apply_to_arm(op.vm, op) for op in operations]})


def list_vm_updates(arm, subscriptionId, resourceGroupName, vmName):
    """Pending maintenance for the VM: its next scheduled window, if a configuration patches it."""
    vm = _vm(arm, subscriptionId, resourceGroupName, vmName)
    assignment = services.assignment_of(vm)
    value = []
    if assignment is not None and services.is_schedule_patched(vm):
        upcoming = services.upcoming(assignment.configuration, clock.now(), 1)
        if upcoming:
            value.append(
                {
                    "maintenanceScope": "InGuestPatch",
                    "impactType": "Restart" if assignment.configuration.reboot_setting != "Never" else "None",
                    "status": "Pending",
                    "impactDurationInSec": int(assignment.configuration.duration.total_seconds()),
                    "notBefore": arm_time(upcoming[0]),
                    "properties": {"resourceId": vm.arm_id},
                }
            )
    return ok({"value": value})


# --- configurationAssignments at resource-group scope (ConfigurationAssignmentsForResourceGroup) ----------


def _group_scope(arm, subscriptionId, resourceGroupName, *, act=False):
    subscription = arm.subscription(subscriptionId, act=act)
    return subscription, arm.resource_group(subscription, resourceGroupName)


def get_group_assignment(arm, subscriptionId, resourceGroupName, configurationAssignmentName):
    subscription, rg = _group_scope(arm, subscriptionId, resourceGroupName)
    assignment = _scope_assignment(subscription, configurationAssignmentName, rg)
    if assignment is None:
        raise ArmError(
            404, "ResourceNotFound", f"The configuration assignment '{configurationAssignmentName}' was not found."
        )
    return ok(assignment_to_arm(assignment))


def put_group_assignment(arm, subscriptionId, resourceGroupName, configurationAssignmentName):
    _, rg = _group_scope(arm, subscriptionId, resourceGroupName, act=True)
    return put_subscription_assignment(arm, subscriptionId, configurationAssignmentName, rg=rg)


def patch_group_assignment(arm, subscriptionId, resourceGroupName, configurationAssignmentName):
    subscription, rg = _group_scope(arm, subscriptionId, resourceGroupName, act=True)
    if _scope_assignment(subscription, configurationAssignmentName, rg) is None:
        raise ArmError(
            404, "ResourceNotFound", f"The configuration assignment '{configurationAssignmentName}' was not found."
        )
    return put_subscription_assignment(arm, subscriptionId, configurationAssignmentName, rg=rg)


def delete_group_assignment(arm, subscriptionId, resourceGroupName, configurationAssignmentName):
    subscription, rg = _group_scope(arm, subscriptionId, resourceGroupName, act=True)
    assignment = _scope_assignment(subscription, configurationAssignmentName, rg)
    if assignment is None:
        return empty(204)
    body = assignment_to_arm(assignment)
    assignment.delete()
    return ok(body)


def list_group_apply_updates(arm: ArmRequest, subscriptionId: str, resourceGroupName: str):
    """The resource group's installations started by maintenance configurations (the latest 1,000)."""
    subscription = arm.subscription(subscriptionId)
    rg = arm.resource_group(subscription, resourceGroupName)
    operations = (
        Operation.objects.filter(vm__resource_group=rg, kind=OperationKind.INSTALLATION, started_by=StartedBy.SCHEDULE)
        .select_related("vm__resource_group")
        .order_by("-created_at")[:1000]
    )
    return ok({"value": [_apply_to_arm(op.vm, op) for op in operations]})


# --- Public maintenance configurations and the provider's operations -----------------------------------------


def list_public_configurations(arm: ArmRequest, subscriptionId: str):
    """Azure's public (platform) configurations are for host and OS-image maintenance: none here."""
    arm.subscription(subscriptionId)
    return ok({"value": []})


def get_public_configuration(arm: ArmRequest, subscriptionId: str, resourceName: str):
    arm.subscription(subscriptionId)
    raise ArmError(404, "ResourceNotFound", f"The public maintenance configuration '{resourceName}' was not found.")


OPERATIONS = [
    ("maintenanceConfigurations/read", "Maintenance configuration", "Read a maintenance configuration"),
    ("maintenanceConfigurations/write", "Maintenance configuration", "Create or update a maintenance configuration"),
    ("maintenanceConfigurations/delete", "Maintenance configuration", "Delete a maintenance configuration"),
    ("configurationAssignments/read", "Configuration assignment", "Read a configuration assignment"),
    ("configurationAssignments/write", "Configuration assignment", "Create or update a configuration assignment"),
    ("configurationAssignments/delete", "Configuration assignment", "Delete a configuration assignment"),
    ("applyUpdates/read", "Apply updates", "Read an update run"),
    ("applyUpdates/write", "Apply updates", "Apply updates now, or cancel a scheduled run"),
    ("updates/read", "Updates", "Read pending maintenance"),
]


def list_operations(arm: ArmRequest):
    return ok(
        {
            "value": [
                {
                    "name": f"Microsoft.Maintenance/{name}",
                    "display": {"provider": "Microsoft Maintenance", "resource": resource, "operation": what},
                }
                for name, resource, what in OPERATIONS
            ]
        }
    )
