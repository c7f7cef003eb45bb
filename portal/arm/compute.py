"""ARM API: virtual machines (azure-api.md §2): their shape with instanceView.patchStatus, reads,
PUT/PATCH/DELETE and the power actions.
"""

import re
from datetime import datetime

from django.db import IntegrityError, transaction

from patching import services
from vms import clock, images, regions
from vms.models import RESOURCE_NAME_RE, Subscription, VirtualMachine
from vms.patch_settings import Problem, defaults_for_image

from .core import (
    MISSING,
    ArmRequest,
    Body,
    arm_time,
    check_tags,
    completed_operation_name,
    empty,
    lro_headers,
    ok,
    page,
    raise_problems,
    vm_not_found,
)
from .errors import ArmError, bad_request
from .patches import latest_operations, patch_status

VM_TYPE = "Microsoft.Compute/virtualMachines"
DEFAULT_SIZE = "Standard_D2s_v5"
ADMIN_USERNAME = "azureuser"  # the simulation has no accounts; ARM clients expect one


# --- Virtual machines: shape ----------------------------------------------------------------------


def vm_queryset():
    return VirtualMachine.objects.select_related("resource_group", "guest")


def vm_to_arm(vm: VirtualMachine, instance_view: dict | None = None) -> dict:
    """The VM as ARM shows it (azure-api.md §1); `instance_view` goes to properties.instanceView."""
    rg = vm.resource_group
    guest = getattr(vm, "guest", None)
    patch_settings = {
        "patchMode": vm.patch_mode,
        "enableHotpatching": vm.enable_hotpatching,
        "assessmentMode": vm.assessment_mode,
        "automaticByPlatformSettings": {
            "rebootSetting": vm.reboot_setting,
            "bypassPlatformSafetyChecksOnUserSchedule": vm.bypass_platform_safety_checks,
        },
    }
    properties = {
        "vmId": str(vm.vm_id),
        "hardwareProfile": {"vmSize": vm.size},
        "storageProfile": {
            "imageReference": image_reference(vm, guest),
            "osDisk": {
                "osType": "Windows",
                "name": f"{vm.name}_OsDisk",
                "createOption": "FromImage",
                "caching": "ReadWrite",
            },
            "dataDisks": [],
        },
        "osProfile": {
            "computerName": vm.name[:15],
            "adminUsername": ADMIN_USERNAME,
            "windowsConfiguration": {
                "provisionVMAgent": vm.provision_vm_agent,
                "enableAutomaticUpdates": vm.enable_automatic_updates,
                "timeZone": vm.time_zone,
                "patchSettings": patch_settings,
            },
            "secrets": [],
            "allowExtensionOperations": True,
        },
        "provisioningState": "Succeeded",
        "timeCreated": arm_time(vm.created_at),
    }
    if vm.availability_set:
        properties["availabilitySet"] = {
            "id": f"/subscriptions/{rg.subscription_id}/resourceGroups/{rg.name}/providers/Microsoft.Compute"
            f"/availabilitySets/{vm.availability_set}"
        }
    if instance_view is not None:
        properties["instanceView"] = instance_view
    body = {
        "id": vm.arm_id,
        "name": vm.name,
        "type": VM_TYPE,
        "location": vm.location,
        "tags": vm.tags,
        "etag": vm.etag,
    }
    if vm.zone:
        body["zones"] = [vm.zone]
    body["properties"] = properties
    return body


def image_reference(vm: VirtualMachine, guest) -> dict:
    """A marketplace image's publisher/offer/sku, or a gallery or custom image's id (imported fleets)."""
    if vm.image_id:
        return {"id": vm.image_id, "exactVersion": vm.image_version}
    return {
        "publisher": vm.image_publisher,
        "offer": vm.image_offer,
        "sku": vm.image_sku,
        "version": vm.image_version,
        "exactVersion": guest.build if guest and guest.build else vm.image_version,
    }


def instance_view(vm: VirtualMachine, latest: dict) -> dict:
    """VirtualMachineInstanceView: power state in statuses, patchStatus (azure-api.md §2)."""
    guest = getattr(vm, "guest", None)
    product = images.PRODUCTS.get(vm.product)
    created = arm_time(vm.created_at)
    view = {
        "computerName": vm.name[:15],
        "osName": product.name if product else "Windows Server",
        "osVersion": guest.build if guest and guest.build else "",
        "hyperVGeneration": "V2",
        "vmAgent": {
            "vmAgentVersion": "2.7.41491.1102",
            "statuses": [
                {
                    "code": "ProvisioningState/succeeded",
                    "level": "Info",
                    "displayStatus": "Ready" if vm.is_running else "Not Ready",
                    "message": "GuestAgent is running and processing the extensions."
                    if vm.is_running
                    else "VM status blob is found but not yet populated.",
                    "time": arm_time(clock.now()),
                }
            ],
        },
        "patchStatus": patch_status(vm, latest),
        "statuses": [
            {
                "code": "ProvisioningState/succeeded",
                "level": "Info",
                "displayStatus": "Provisioning succeeded",
                "time": created,
            },
            {"code": f"PowerState/{vm.power_state}", "level": "Info", "displayStatus": vm.get_power_state_display()},
        ],
    }
    if vm.zone:
        view["platformFaultDomain"] = 0
    if vm.update_domain is not None:
        view["platformUpdateDomain"] = vm.update_domain
    return view


def vm_by_arm_id(subscription: Subscription, resource_id: str) -> VirtualMachine | None:
    parts = resource_id.strip("/").split("/")
    if len(parts) != 8:
        return None
    return (
        vm_queryset()
        .filter(resource_group__subscription=subscription, resource_group__name__iexact=parts[3], name__iexact=parts[7])
        .first()
    )


EXPANDS = {"instanceview", "userdata"}


def _expand_instance_view(arm: ArmRequest) -> bool:
    """$expand=instanceView (userData is accepted: the simulation has none to add)."""
    expand = arm.param("$expand")
    if expand is None:
        return False
    values = {value.strip().lower() for value in expand.split(",")}
    if not values <= EXPANDS:
        raise bad_request(f"$expand must be instanceView or userData, not '{expand}'.", "$expand")
    return "instanceview" in values


# --- Virtual machines: reads ----------------------------------------------------------------------


# Resource group by resource group (in the order they were created), by name within each: the index
# VirtualMachine.Meta names "vm_arm_list_order" serves every page of either list.
VM_LIST_ORDER = ("resource_group_id", "name", "pk")


def _vm_page(arm: ArmRequest, queryset):
    if not _expand_instance_view(arm):
        return page(arm, queryset, vm_to_arm, keys=VM_LIST_ORDER)

    def with_instance_views(vms: list[VirtualMachine]) -> list[dict]:
        latest = latest_operations(vms)  # the page's operations in one go: constant queries per page
        return [vm_to_arm(vm, instance_view(vm, latest)) for vm in vms]

    return page(arm, queryset, many=with_instance_views, keys=VM_LIST_ORDER)


def list_all_vms(arm: ArmRequest, subscriptionId: str):
    subscription = arm.subscription(subscriptionId)
    return _vm_page(arm, vm_queryset().filter(resource_group__subscription=subscription))


def list_vms(arm: ArmRequest, subscriptionId: str, resourceGroupName: str):
    subscription = arm.subscription(subscriptionId)
    rg = arm.resource_group(subscription, resourceGroupName)
    return _vm_page(arm, vm_queryset().filter(resource_group=rg))


def get_vm(arm: ArmRequest, subscriptionId: str, resourceGroupName: str, vmName: str):
    subscription = arm.subscription(subscriptionId)
    rg = arm.resource_group(subscription, resourceGroupName)
    vm = arm.virtual_machine(rg, vmName, vm_queryset())
    view = instance_view(vm, latest_operations([vm])) if _expand_instance_view(arm) else None
    return ok(vm_to_arm(vm, view), headers={"ETag": vm.etag})


def get_instance_view(arm: ArmRequest, subscriptionId: str, resourceGroupName: str, vmName: str):
    subscription = arm.subscription(subscriptionId)
    rg = arm.resource_group(subscription, resourceGroupName)
    vm = arm.virtual_machine(rg, vmName, vm_queryset())
    return ok(instance_view(vm, latest_operations([vm])))


# --- Virtual machines: reading a request body -----------------------------------------------------

WINDOWS = "properties.osProfile.windowsConfiguration"
PATCH = f"{WINDOWS}.patchSettings"
# patchSettings on the wire -> PatchSettings field, with the JSON type each must have.
SETTINGS_FIELDS = {
    f"{WINDOWS}.provisionVMAgent": ("provision_vm_agent", bool),
    f"{WINDOWS}.enableAutomaticUpdates": ("enable_automatic_updates", bool),
    f"{PATCH}.patchMode": ("patch_mode", str),
    f"{PATCH}.enableHotpatching": ("enable_hotpatching", bool),
    f"{PATCH}.assessmentMode": ("assessment_mode", str),
    f"{PATCH}.automaticByPlatformSettings.rebootSetting": ("reboot_setting", str),
    f"{PATCH}.automaticByPlatformSettings.bypassPlatformSafetyChecksOnUserSchedule": (
        "bypass_platform_safety_checks",
        bool,
    ),
}


def read_patch_settings(body: Body) -> dict:
    """The patch-settings fields the body gives, as PatchSettings field names."""
    changes = {}
    for path, (name, kind) in SETTINGS_FIELDS.items():
        value = body.get(path, kind)
        if value is not MISSING:
            changes[name] = value
    return changes


def _image(body: Body) -> tuple[str, str, str] | None:
    ref = "properties.storageProfile.imageReference"
    publisher, offer, sku = (body.get(f"{ref}.{key}", str, None) for key in ("publisher", "offer", "sku"))
    if body.get(ref, dict, None) is None:
        return None
    return publisher or "", offer or "", sku or ""


def _zone(body: Body) -> str | None:
    zones = body.get("zones", list, None)
    if zones is None:
        return None
    if len(zones) > 1 or not all(isinstance(z, str) for z in zones):
        body.problems.append(Problem("zones", 'Give at most one availability zone, as a string: ["1"].'))
        return None
    return zones[0] if zones else ""


def _availability_set(body: Body) -> str | None:
    set_id = body.get("properties.availabilitySet.id", str, None)
    if set_id is None:
        return None
    name = set_id.rstrip("/").rsplit("/", 1)[-1]
    if not RESOURCE_NAME_RE.match(name) or len(name) > 80:
        body.problems.append(Problem("properties.availabilitySet.id", f"'{set_id}' is not an availability set id."))
        return None
    return name


VM_SIZE_RE = re.compile(r"[A-Za-z0-9_-]{1,40}")


def _size(body: Body) -> str | None:
    size = body.get("properties.hardwareProfile.vmSize", str, None)
    if size is not None and not VM_SIZE_RE.fullmatch(size):
        body.problems.append(Problem("properties.hardwareProfile.vmSize", f"'{size}' is not a VM size."))
        return None
    return size


# --- Virtual machines: writes ---------------------------------------------------------------------


def _if_match(arm: ArmRequest) -> set[int] | None:
    """If-Match as the VM versions it accepts: None when absent or `*` (any existing VM matches)."""
    header = arm.request.headers.get("If-Match")
    if header is None:
        return None
    versions = set()
    for tag in header.split(","):
        tag = tag.strip().removeprefix("W/").strip('"')
        if tag == "*":
            return None
        if re.fullmatch("[0-9]{1,18}", tag):  # not str.isdigit(): it takes "²", which int() refuses
            versions.add(int(tag))
    return versions  # none we could have issued: nothing matches


def precondition_failed(message: str) -> ArmError:
    return ArmError(412, "PreconditionFailed", message)


def _check_if_none_match(arm: ArmRequest, vm: VirtualMachine) -> None:
    """If-None-Match on PUT: `*` (or the VM's own etag) means create only, never overwrite."""
    header = arm.request.headers.get("If-None-Match")
    if header is None:
        return
    tags = {tag.strip().removeprefix("W/").strip('"') for tag in header.split(",")}
    if "*" in tags or str(vm.version) in tags:
        raise precondition_failed(
            f"The VM '{vm.name}' already exists (etag {vm.etag}) and If-None-Match is '{header}': not overwritten."
        )


def put_vm(arm: ArmRequest, subscriptionId: str, resourceGroupName: str, vmName: str):
    """Create a VM (201) or update an existing one's patch settings (200), as long-running operations."""
    subscription = arm.subscription(subscriptionId, act=True)
    rg = arm.resource_group(subscription, resourceGroupName)
    body = Body(arm.json_object(required=True))
    started = clock.now()
    existing = vm_queryset().filter(resource_group=rg, name__iexact=vmName).first()
    if existing is not None:
        _check_if_none_match(arm, existing)
        return _update_vm(arm, subscription, existing, body, started)
    if arm.request.headers.get("If-Match") is not None:
        raise precondition_failed(f"The VM '{vmName}' does not exist, and If-Match asks for an existing one.")

    if body.get("properties.osProfile.linuxConfiguration", object, None) is not None:
        body.problems.append(
            Problem("properties.osProfile.linuxConfiguration", "Only Windows Server images are simulated.")
        )
    location = body.get("location", str, None)
    image = _image(body)
    size = _size(body)
    zone = _zone(body)
    check_tags(body)
    availability_set = _availability_set(body)
    time_zone = body.get(f"{WINDOWS}.timeZone", str, "UTC")
    given = read_patch_settings(body)
    if location is None:
        body.problems.append(Problem("location", "The location of the VM is required, e.g. 'westeurope'."))
    if image is None:
        body.problems.append(
            Problem(
                "properties.storageProfile.imageReference",
                f"An imageReference (publisher, offer, sku) is required; offered SKUs: {', '.join(images.ALL_SKUS)}.",
            )
        )
    raise_problems(body.problems)

    publisher, offer, sku = image
    region = regions.normalize_region(location) or location
    settings_ = None  # none given: the image's defaults, as in the portal's create form
    if given:
        settings_ = defaults_for_image(publisher, offer, sku, region).with_changes(**given)
        if "patch_mode" in given and settings_.patch_mode != "AutomaticByPlatform":
            # The image's hotpatch default goes with Azure orchestration: another mode drops it.
            for name in ("enable_hotpatching", "bypass_platform_safety_checks"):
                given.setdefault(name, False)
            settings_ = settings_.with_changes(**given)
    try:
        vm, problems = services.create_virtual_machine(
            resource_group=rg,
            name=vmName,
            location=location,
            image_sku=sku,
            image_publisher=publisher,
            image_offer=offer,
            size=size or DEFAULT_SIZE,
            time_zone=time_zone,
            zone=zone or "",
            availability_set=availability_set or "",
            patch_settings=settings_,
        )
    except IntegrityError:
        raise ArmError(409, "Conflict", f"The VM '{vmName}' was created by another request meanwhile.") from None
    if problems:
        raise_problems([_vm_name_target(p) for p in problems])
    _store_tags(vm, body)
    vm = vm_queryset().get(pk=vm.pk)
    name = completed_operation_name(subscription.pk, "create", vm.arm_id, started)
    return ok(vm_to_arm(vm), status=201, headers={**_async_headers(arm, subscription, vm, name), "ETag": vm.etag})


def _store_tags(vm: VirtualMachine, body: Body) -> None:
    """Tags given replace the VM's (ARM's PUT/PATCH semantics); dynamic maintenance scopes filter on them."""
    tags = body.get("tags", dict, None)
    if tags is not None:
        VirtualMachine.objects.filter(pk=vm.pk).update(tags=tags)


def _vm_name_target(problem: Problem) -> Problem:
    return Problem("vmName", problem.message) if problem.target == "name" else problem


def _async_headers(arm: ArmRequest, subscription, vm: VirtualMachine, name: str) -> dict:
    """Azure-AsyncOperation only: a PUT/PATCH result is the resource itself, fetched from its own URL."""
    headers = lro_headers(arm, subscription.pk, vm.location, name)
    del headers["Location"]
    return headers


def patch_vm(arm: ArmRequest, subscriptionId: str, resourceGroupName: str, vmName: str):
    """Update an existing VM's patch settings (the SDK's begin_update)."""
    subscription = arm.subscription(subscriptionId, act=True)
    rg = arm.resource_group(subscription, resourceGroupName)
    vm = arm.virtual_machine(rg, vmName, vm_queryset())
    body = Body(arm.json_object(required=True))
    return _update_vm(arm, subscription, vm, body, clock.now())


def _update_vm(arm: ArmRequest, subscription, vm: VirtualMachine, body: Body, started: datetime):
    """Only patchSettings (and the size) change after creation; other differences are refused."""
    location = body.get("location", str, None)
    image = _image(body)
    zone = _zone(body)
    availability_set = _availability_set(body)
    size = _size(body)
    check_tags(body)
    time_zone = body.get(f"{WINDOWS}.timeZone", str, None)
    changes = read_patch_settings(body)
    raise_problems(body.problems)

    refused = []
    if location is not None and regions.normalize_region(location) != vm.location:
        refused.append(("location", location))
    if image is not None and any(
        given and given.lower() != current.lower()
        for given, current in zip(image, (vm.image_publisher, vm.image_offer, vm.image_sku), strict=True)
    ):
        refused.append(("properties.storageProfile.imageReference", ":".join(image)))
    if zone is not None and zone != vm.zone:
        refused.append(("zones", zone))
    if availability_set is not None and availability_set.lower() != vm.availability_set.lower():
        refused.append(("properties.availabilitySet", availability_set))
    if time_zone is not None and time_zone != vm.time_zone:
        refused.append((f"{WINDOWS}.timeZone", time_zone))
    if refused:
        target, _value = refused[0]
        raise ArmError(
            409,
            "PropertyChangeNotAllowed",
            f"Changing property '{target}' is not allowed: only patchSettings and the size of an existing VM change.",
            target=target,
        )

    # The properties refused above never change after creation: the unlocked read was enough for them.
    # The settings are merged onto the VM as it is under its lock, so a concurrent PATCH is not lost.
    try:
        _, problems = services.update_virtual_machine(vm.pk, changes, size=size, versions=_if_match(arm))
    except VirtualMachine.DoesNotExist:
        raise vm_not_found(vm.resource_group, vm.name) from None
    except services.StaleVersion as e:
        raise precondition_failed(
            f"The VM '{vm.name}' was changed meanwhile: its etag is now {e.vm.etag}, not "
            f"{arm.request.headers.get('If-Match')}. Read it again and retry."
        ) from None
    raise_problems(problems)
    _store_tags(vm, body)
    updated = vm_queryset().filter(pk=vm.pk).first()
    if updated is None:  # deleted right after our update
        raise vm_not_found(vm.resource_group, vm.name)
    vm = updated
    name = completed_operation_name(subscription.pk, "update", vm.arm_id, started)
    return ok(vm_to_arm(vm), headers={**_async_headers(arm, subscription, vm, name), "ETag": vm.etag})


def delete_vm(arm: ArmRequest, subscriptionId: str, resourceGroupName: str, vmName: str):
    """202 with the LRO headers; 204 when there is no such VM (ARM's idempotent delete)."""
    subscription = arm.subscription(subscriptionId, act=True)
    rg = arm.resource_group(subscription, resourceGroupName)
    vm = VirtualMachine.objects.filter(resource_group=rg, name__iexact=vmName).first()
    if vm is None:
        return empty(204)
    started = clock.now()
    arm_id, location = vm.arm_id, vm.location
    if not services.delete_virtual_machine(vm):
        return empty(204)  # another DELETE won
    name = completed_operation_name(subscription.pk, "delete", arm_id, started)
    return empty(202, lro_headers(arm, subscription.pk, location, name))


# Power actions: start, powerOff, deallocate, restart. A VM that is off fails its patch operations
# with VMNotRunning, as on Azure.
POWER_ACTIONS = {
    "start": VirtualMachine.PowerState.RUNNING,
    "powerOff": VirtualMachine.PowerState.STOPPED,
    "deallocate": VirtualMachine.PowerState.DEALLOCATED,
    "restart": VirtualMachine.PowerState.RUNNING,
}


def power_action(action: str):
    def handler(arm: ArmRequest, subscriptionId: str, resourceGroupName: str, vmName: str):
        subscription = arm.subscription(subscriptionId, act=True)
        rg = arm.resource_group(subscription, resourceGroupName)
        vm = arm.virtual_machine(rg, vmName)
        started = clock.now()
        with transaction.atomic():
            locked = services.lock_vm(vm.pk)  # the lock order: a DELETE either came first (404) or waits
            if locked is None:
                raise vm_not_found(rg, vm.name)
            if action == "restart" and not locked.is_running:
                raise ArmError(
                    409,
                    "OperationNotAllowed",
                    f"Operation 'restart' is not allowed on VM '{vm.name}' since the VM is "
                    f"{locked.get_power_state_display().removeprefix('VM ')}: start it instead.",
                )
            VirtualMachine.objects.filter(pk=vm.pk).update(power_state=POWER_ACTIONS[action])
        name = completed_operation_name(subscription.pk, action, vm.arm_id, started)
        return empty(202, lro_headers(arm, subscription.pk, vm.location, name))

    handler.__name__ = f"{action}_vm"
    return handler
