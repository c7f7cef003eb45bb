"""The ARM API's route table: every path and method, the handler that serves it, and what
/arm/openapi.json says about it. This table is the API's only description: views.dispatch routes by
it and openapi.document() describes it.

In path order (case-insensitive), a path's methods in the order GET, HEAD, PUT, PATCH, DELETE, POST.
Paths are OpenAPI-style templates (`{name}` matches one segment) and match case-insensitively; the
component parameter of the same name describes each `{name}` (schemas.PARAMETERS). The error responses
(400, 401, 403, 404, 405, 409, 413) and the api-version parameter are on every operation.
"""

from . import compute, identity, operations, patches, providers, resources, sandbox
from .core import Endpoint, Router
from .schemas import ASYNC_HEADER, LRO_202, LRO_HEADERS, body, ref, request_body

SUB = "/subscriptions/{subscriptionId}"
RG = SUB + "/resourceGroups/{resourceGroupName}"
VM = RG + "/providers/Microsoft.Compute/virtualMachines/{vmName}"
FEATURES = SUB + "/providers/Microsoft.Features/providers/{providerNamespace}/features"
PROVIDER = SUB + "/providers/{providerNamespace}"

LIST = ("SkipToken", "Top")  # paging: $skiptoken from nextLink, $top

SUBSCRIPTIONS = ("Subscriptions",)
RESOURCE_GROUPS = ("ResourceGroups",)
VIRTUAL_MACHINES = ("VirtualMachines",)
PATCHES = ("Patches",)
FEATURE_TAGS = ("Features",)
PROVIDERS = ("Providers",)
SANDBOX = ("Sandbox",)
SANDBOX_PATH = "/providers/Hotpatch.Sandbox"


def power_action(action: str, operation_id: str, summary: str) -> Endpoint:
    return Endpoint(
        "POST",
        f"{VM}/{action}",
        compute.power_action(action),
        operation_id,
        f"{summary}; a long-running operation (Contributor).",
        VIRTUAL_MACHINES,
        LRO_202,
    )


ENDPOINTS = (
    Endpoint(
        "GET",
        "/metadata/endpoints",
        identity.metadata_endpoints,
        "Metadata_Endpoints",
        "The cloud's endpoints for `az cloud register --endpoint-resource-manager` (no token needed).",
        ("Metadata",),
        {"200": body("CloudMetadata")},
        authenticated=False,
    ),
    # --- The sandbox (not an Azure API): the clock and faults ---
    Endpoint(
        "GET",
        SANDBOX_PATH + "/clock",
        sandbox.get_clock,
        "Sandbox_GetClock",
        "The installation's clock: real time, or sandbox mode and the simulated now.",
        SANDBOX,
        {"200": body("SandboxClock")},
    ),
    Endpoint(
        "POST",
        SANDBOX_PATH + "/clock/advance",
        sandbox.advance_clock,
        "Sandbox_AdvanceClock",
        "Advance the simulated clock by `days` or to `to`; everything due meanwhile happens before the "
        "answer (the first advance switches to sandbox mode). A superuser or the Owner of every "
        "subscription; 409 while another advance runs.",
        SANDBOX,
        {"200": body("SandboxClock")},
        request=request_body("SandboxAdvance"),
    ),
    Endpoint(
        "POST",
        SANDBOX_PATH + "/clock/realtime",
        sandbox.realtime,
        "Sandbox_Realtime",
        "Back to real time (a superuser or the Owner of every subscription).",
        SANDBOX,
        {"200": body("SandboxClock")},
    ),
    Endpoint(
        "GET",
        SANDBOX_PATH + "/faults",
        sandbox.list_faults,
        "Sandbox_ListFaults",
        "The injected faults the caller may see.",
        SANDBOX,
        {"200": body("SandboxFaultListResult")},
    ),
    Endpoint(
        "POST",
        SANDBOX_PATH + "/faults",
        sandbox.add_fault,
        "Sandbox_AddFault",
        "Inject a fault: on a VM or subscription (Contributor there), a region or the whole fleet "
        "(a superuser or the Owner of every subscription).",
        SANDBOX,
        {"201": body("SandboxFault")},
        request=request_body("SandboxFaultRequest"),
    ),
    Endpoint(
        "DELETE",
        SANDBOX_PATH + "/faults/{faultId}",
        sandbox.remove_fault,
        "Sandbox_RemoveFault",
        "Remove a fault (200), or nothing to remove (204).",
        SANDBOX,
        {"200": {"description": "Removed."}, "204": {"description": "No such fault."}},
    ),
    Endpoint(
        "GET",
        "/providers/Microsoft.Features/operations",
        providers.feature_operations,
        "Features_ListOperations",
        "Microsoft.Features operations.",
        FEATURE_TAGS,
        {"200": body("OperationListResult")},
    ),
    # --- Subscriptions, locations ---
    Endpoint(
        "GET",
        "/subscriptions",
        resources.list_subscriptions,
        "Subscriptions_List",
        "The subscriptions the caller holds a role on.",
        SUBSCRIPTIONS,
        {"200": body("SubscriptionListResult")},
        query=LIST,
    ),
    Endpoint(
        "GET",
        SUB,
        resources.get_subscription,
        "Subscriptions_Get",
        "One subscription.",
        SUBSCRIPTIONS,
        {"200": body("Subscription")},
    ),
    Endpoint(
        "GET",
        SUB + "/locations",
        resources.list_locations,
        "Subscriptions_ListLocations",
        "The regions.",
        SUBSCRIPTIONS,
        {"200": body("LocationListResult")},
    ),
    # --- Resource providers, operations, all VMs, preview features ---
    Endpoint(
        "GET",
        SUB + "/providers",
        providers.list_providers,
        "Providers_List",
        "The resource providers.",
        PROVIDERS,
        {"200": body("ProviderListResult")},
    ),
    Endpoint(
        "GET",
        SUB + "/providers/Microsoft.Compute/locations/{location}/operations/{operationId}",
        operations.operation,
        "Operations_Get",
        "Status of an operation (Azure-AsyncOperation); with monitor=true its result (Location): 202 until "
        "done, then 200 with VirtualMachineAssessPatchesResult / VirtualMachineInstallPatchesResult, or the "
        "VM for a create/update, or 204 for a delete.",
        PATCHES,
        {
            "200": {
                "description": "The status, or the result.",
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                ref("OperationStatusResponse"),
                                ref("VirtualMachineAssessPatchesResult"),
                                ref("VirtualMachineInstallPatchesResult"),
                                ref("VirtualMachine"),
                            ]
                        }
                    }
                },
            },
            "202": {"description": "monitor=true: still running.", "headers": LRO_HEADERS},
            "204": {"description": "monitor=true: a finished delete."},
        },
        query=("Monitor",),
    ),
    Endpoint(
        "GET",
        SUB + "/providers/Microsoft.Compute/virtualMachines",
        compute.list_all_vms,
        "VirtualMachines_ListAll",
        "The subscription's VMs, paged.",
        VIRTUAL_MACHINES,
        {"200": body("VirtualMachineListResult")},
        query=("Expand", *LIST),
    ),
    Endpoint(
        "GET",
        SUB + "/providers/Microsoft.Features/features",
        providers.list_all_features,
        "Features_ListAll",
        "All preview features of the subscription.",
        FEATURE_TAGS,
        {"200": body("FeatureOperationsListResult")},
    ),
    Endpoint(
        "GET",
        FEATURES,
        providers.list_features,
        "Features_List",
        "The preview features of a namespace.",
        FEATURE_TAGS,
        {"200": body("FeatureOperationsListResult")},
    ),
    Endpoint(
        "GET",
        FEATURES + "/{featureName}",
        providers.get_feature,
        "Features_Get",
        "One preview feature's state.",
        FEATURE_TAGS,
        {"200": body("FeatureResult")},
    ),
    Endpoint(
        "POST",
        FEATURES + "/{featureName}/register",
        providers.register_feature,
        "Features_Register",
        "Register: Registering, then Registered.",
        FEATURE_TAGS,
        {"200": body("FeatureResult")},
    ),
    Endpoint(
        "POST",
        FEATURES + "/{featureName}/unregister",
        providers.unregister_feature,
        "Features_Unregister",
        "Unregister: Unregistering, then Unregistered.",
        FEATURE_TAGS,
        {"200": body("FeatureResult")},
    ),
    Endpoint(
        "GET",
        PROVIDER,
        providers.get_provider,
        "Providers_Get",
        "A resource provider's registration.",
        PROVIDERS,
        {"200": body("Provider")},
    ),
    Endpoint(
        "POST",
        PROVIDER + "/register",
        providers.register_provider,
        "Providers_Register",
        "Register: Registering, then Registered.",
        PROVIDERS,
        {"200": body("Provider")},
    ),
    Endpoint(
        "POST",
        PROVIDER + "/unregister",
        providers.unregister_provider,
        "Providers_Unregister",
        "Unregister.",
        PROVIDERS,
        {"200": body("Provider")},
    ),
    # --- Resource groups ---
    Endpoint(
        "GET",
        SUB + "/resourceGroups",
        resources.list_resource_groups,
        "ResourceGroups_List",
        "Resource groups of a subscription.",
        RESOURCE_GROUPS,
        {"200": body("ResourceGroupListResult")},
        query=LIST,
    ),
    Endpoint(
        "GET",
        RG,
        resources.get_resource_group,
        "ResourceGroups_Get",
        "A resource group.",
        RESOURCE_GROUPS,
        {"200": body("ResourceGroup")},
    ),
    Endpoint(
        "HEAD",
        RG,
        resources.resource_group_exists,
        "ResourceGroups_CheckExistence",
        "204 if it exists, else 404.",
        RESOURCE_GROUPS,
        {"204": {"description": "It exists."}},
    ),
    Endpoint(
        "PUT",
        RG,
        resources.put_resource_group,
        "ResourceGroups_CreateOrUpdate",
        "Create a resource group (Contributor).",
        RESOURCE_GROUPS,
        {"200": body("ResourceGroup"), "201": body("ResourceGroup")},
        request=request_body("ResourceGroupCreate"),
    ),
    # --- Virtual machines, their power actions and patches ---
    Endpoint(
        "GET",
        RG + "/providers/Microsoft.Compute/virtualMachines",
        compute.list_vms,
        "VirtualMachines_List",
        "The resource group's VMs, paged.",
        VIRTUAL_MACHINES,
        {"200": body("VirtualMachineListResult")},
        query=("Expand", *LIST),
    ),
    Endpoint(
        "GET",
        VM,
        compute.get_vm,
        "VirtualMachines_Get",
        "A VM; $expand=instanceView adds properties.instanceView.",
        VIRTUAL_MACHINES,
        {"200": body("VirtualMachine")},
        query=("Expand",),
    ),
    Endpoint(
        "PUT",
        VM,
        compute.put_vm,
        "VirtualMachines_CreateOrUpdate",
        "Create a VM (201) or change an existing VM's patchSettings (200); a long-running operation.",
        VIRTUAL_MACHINES,
        {
            "200": {**body("VirtualMachine"), "headers": ASYNC_HEADER},
            "201": {**body("VirtualMachine"), "headers": ASYNC_HEADER},
        },
        request=body("VirtualMachine"),
    ),
    Endpoint(
        "PATCH",
        VM,
        compute.patch_vm,
        "VirtualMachines_Update",
        "Change patchSettings (or the size); a long-running operation.",
        VIRTUAL_MACHINES,
        {"200": {**body("VirtualMachine"), "headers": ASYNC_HEADER}},
        request=request_body("VirtualMachineUpdate"),
    ),
    Endpoint(
        "DELETE",
        VM,
        compute.delete_vm,
        "VirtualMachines_Delete",
        "Delete a VM; a long-running operation (204 if there is none).",
        VIRTUAL_MACHINES,
        {**LRO_202, "204": {"description": "No such VM."}},
    ),
    Endpoint(
        "POST",
        VM + "/assessPatches",
        patches.assess_patches,
        "VirtualMachines_AssessPatches",
        "Assess available patches; a long-running operation.",
        PATCHES,
        LRO_202,
    ),
    power_action("deallocate", "VirtualMachines_Deallocate", "Stop and deallocate the VM"),
    Endpoint(
        "POST",
        VM + "/installPatches",
        patches.install_patches,
        "VirtualMachines_InstallPatches",
        "Install patches; a long-running operation.",
        PATCHES,
        LRO_202,
        request=request_body("VirtualMachineInstallPatchesParameters"),
    ),
    Endpoint(
        "GET",
        VM + "/instanceView",
        compute.get_instance_view,
        "VirtualMachines_InstanceView",
        "Power state and patchStatus.",
        VIRTUAL_MACHINES,
        {"200": body("VirtualMachineInstanceView")},
    ),
    power_action("powerOff", "VirtualMachines_PowerOff", "Stop the VM (it stays allocated)"),
    power_action("restart", "VirtualMachines_Restart", "Restart a running VM (409 if it is not running)"),
    power_action("start", "VirtualMachines_Start", "Start the VM"),
    # --- The tenant ---
    Endpoint(
        "GET",
        "/tenants",
        resources.list_tenants,
        "Tenants_List",
        "The portal's one tenant.",
        SUBSCRIPTIONS,
        {"200": body("TenantListResult")},
    ),
)

router = Router(ENDPOINTS)
