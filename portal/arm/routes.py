"""The ARM API's route table: every path and method, the handler that serves it, and what
/arm/openapi.json says about it. This table is the API's only description: views.dispatch routes by
it and openapi.document() describes it.

In path order (case-insensitive), a path's methods in the order GET, HEAD, PUT, PATCH, DELETE, POST.
Paths are OpenAPI-style templates (`{name}` matches one segment) and match case-insensitively; the
component parameter of the same name describes each `{name}` (schemas.PARAMETERS). The error responses
(400, 401, 403, 404, 405, 409, 413) and the api-version parameter are on every operation.
"""

from . import compute, identity, maintenance, operations, patches, providers, resources
from .core import Endpoint, Router
from .schemas import ASYNC_HEADER, LRO_202, LRO_HEADERS, body, ref, request_body

SUB = "/subscriptions/{subscriptionId}"
RG = SUB + "/resourceGroups/{resourceGroupName}"
VM = RG + "/providers/Microsoft.Compute/virtualMachines/{vmName}"
FEATURES = SUB + "/providers/Microsoft.Features/providers/{providerNamespace}/features"
PROVIDER = SUB + "/providers/{providerNamespace}"
MAINTENANCE = "/providers/Microsoft.Maintenance"
CONFIG = RG + MAINTENANCE + "/maintenanceConfigurations/{resourceName}"
SCOPE_ASSIGNMENT = SUB + MAINTENANCE + "/configurationAssignments/{configurationAssignmentName}"
VM_ASSIGNMENT = VM + MAINTENANCE + "/configurationAssignments/{configurationAssignmentName}"

LIST = ("SkipToken", "Top")  # paging: $skiptoken from nextLink, $top

SUBSCRIPTIONS = ("Subscriptions",)
RESOURCE_GROUPS = ("ResourceGroups",)
VIRTUAL_MACHINES = ("VirtualMachines",)
PATCHES = ("Patches",)
FEATURE_TAGS = ("Features",)
PROVIDERS = ("Providers",)
MAINTENANCE_CONFIGURATIONS = ("MaintenanceConfigurations",)
ASSIGNMENTS = ("ConfigurationAssignments",)
APPLY_UPDATES = ("ApplyUpdates",)


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
        SUB + MAINTENANCE + "/applyUpdates",
        maintenance.list_apply_updates,
        "ApplyUpdates_List",
        "Installations started by the subscription's maintenance configurations (the latest 1,000).",
        APPLY_UPDATES,
        {"200": body("ApplyUpdateListResult")},
    ),
    Endpoint(
        "GET",
        SUB + MAINTENANCE + "/configurationAssignments",
        maintenance.list_subscription_assignments,
        "ConfigurationAssignmentsWithinSubscription_List",
        "Every configuration assignment in the subscription: its VMs' and its dynamic scopes.",
        ASSIGNMENTS,
        {"200": body("ConfigurationAssignmentListResult")},
    ),
    Endpoint(
        "GET",
        SCOPE_ASSIGNMENT,
        maintenance.get_subscription_assignment,
        "ConfigurationAssignmentsForSubscriptions_Get",
        "A dynamic scope.",
        ASSIGNMENTS,
        {"200": body("ConfigurationAssignment")},
    ),
    Endpoint(
        "PUT",
        SCOPE_ASSIGNMENT,
        maintenance.put_subscription_assignment,
        "ConfigurationAssignmentsForSubscriptions_CreateOrUpdate",
        "A dynamic scope: the subscription's VMs matching properties.filter, evaluated at each run (Contributor).",
        ASSIGNMENTS,
        {"200": body("ConfigurationAssignment"), "201": body("ConfigurationAssignment")},
        request=request_body("ConfigurationAssignment"),
    ),
    Endpoint(
        "PATCH",
        SCOPE_ASSIGNMENT,
        maintenance.patch_subscription_assignment,
        "ConfigurationAssignmentsForSubscriptions_Update",
        "Replace an existing dynamic scope's configuration and filter (Contributor).",
        ASSIGNMENTS,
        {"200": body("ConfigurationAssignment")},
        request=request_body("ConfigurationAssignment"),
    ),
    Endpoint(
        "DELETE",
        SCOPE_ASSIGNMENT,
        maintenance.delete_subscription_assignment,
        "ConfigurationAssignmentsForSubscriptions_Delete",
        "Remove a dynamic scope: 200 with it, 204 if there was none (Contributor).",
        ASSIGNMENTS,
        {"200": body("ConfigurationAssignment"), "204": {"description": "No such assignment."}},
    ),
    Endpoint(
        "GET",
        SUB + MAINTENANCE + "/maintenanceConfigurations",
        maintenance.list_configurations,
        "MaintenanceConfigurations_List",
        "The subscription's maintenance configurations.",
        MAINTENANCE_CONFIGURATIONS,
        {"200": body("MaintenanceConfigurationListResult")},
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
    Endpoint(
        "GET",
        VM + MAINTENANCE + "/applyUpdates/{applyUpdateName}",
        maintenance.get_vm_apply_updates,
        "ApplyUpdates_Get",
        "An installation of the VM by id (default: the latest).",
        APPLY_UPDATES,
        {"200": body("ApplyUpdate")},
    ),
    Endpoint(
        "PUT",
        VM + MAINTENANCE + "/applyUpdates/{applyUpdateName}",
        maintenance.put_vm_apply_updates,
        "ApplyUpdates_CreateOrUpdate",
        "applyUpdates/default: install now with the parameters of the VM's maintenance configuration (Contributor).",
        APPLY_UPDATES,
        {"200": body("ApplyUpdate"), "201": body("ApplyUpdate")},
    ),
    Endpoint(
        "GET",
        VM + MAINTENANCE + "/configurationAssignments",
        maintenance.list_vm_assignments,
        "ConfigurationAssignments_List",
        "The VM's configuration assignments.",
        ASSIGNMENTS,
        {"200": body("ConfigurationAssignmentListResult")},
    ),
    Endpoint(
        "GET",
        VM_ASSIGNMENT,
        maintenance.get_vm_assignment,
        "ConfigurationAssignments_Get",
        "A configuration assignment of the VM.",
        ASSIGNMENTS,
        {"200": body("ConfigurationAssignment")},
    ),
    Endpoint(
        "PUT",
        VM_ASSIGNMENT,
        maintenance.put_vm_assignment,
        "ConfigurationAssignments_CreateOrUpdate",
        "Assign a maintenance configuration of the VM's subscription to the VM (Contributor; one per VM).",
        ASSIGNMENTS,
        {"200": body("ConfigurationAssignment"), "201": body("ConfigurationAssignment")},
        request=request_body("ConfigurationAssignment"),
    ),
    Endpoint(
        "DELETE",
        VM_ASSIGNMENT,
        maintenance.delete_vm_assignment,
        "ConfigurationAssignments_Delete",
        "Remove the assignment: 200 with it, 204 if there was none (Contributor).",
        ASSIGNMENTS,
        {"200": body("ConfigurationAssignment"), "204": {"description": "No such assignment."}},
    ),
    Endpoint(
        "GET",
        VM + MAINTENANCE + "/updates",
        maintenance.list_vm_updates,
        "Updates_List",
        "The VM's pending scheduled maintenance (its next window), if a configuration patches it.",
        APPLY_UPDATES,
        {"200": body("MaintenanceUpdateListResult")},
    ),
    power_action("restart", "VirtualMachines_Restart", "Restart a running VM (409 if it is not running)"),
    power_action("start", "VirtualMachines_Start", "Start the VM"),
    # --- Maintenance configurations ---
    Endpoint(
        "GET",
        RG + MAINTENANCE + "/maintenanceConfigurations",
        maintenance.list_group_configurations,
        "MaintenanceConfigurationsForResourceGroup_List",
        "The resource group's maintenance configurations.",
        MAINTENANCE_CONFIGURATIONS,
        {"200": body("MaintenanceConfigurationListResult")},
    ),
    Endpoint(
        "GET",
        CONFIG,
        maintenance.get_configuration,
        "MaintenanceConfigurations_Get",
        "A maintenance configuration.",
        MAINTENANCE_CONFIGURATIONS,
        {"200": body("MaintenanceConfiguration")},
    ),
    Endpoint(
        "PUT",
        CONFIG,
        maintenance.put_configuration,
        "MaintenanceConfigurations_CreateOrUpdate",
        "Create (201) or replace (200) a maintenance configuration, scope InGuestPatch (Contributor).",
        MAINTENANCE_CONFIGURATIONS,
        {"200": body("MaintenanceConfiguration"), "201": body("MaintenanceConfiguration")},
        request=request_body("MaintenanceConfiguration"),
    ),
    Endpoint(
        "PATCH",
        CONFIG,
        maintenance.patch_configuration,
        "MaintenanceConfigurations_Update",
        "Change some of a configuration's properties; the result is validated whole (Contributor).",
        MAINTENANCE_CONFIGURATIONS,
        {"200": body("MaintenanceConfiguration")},
        request=request_body("MaintenanceConfiguration"),
    ),
    Endpoint(
        "DELETE",
        CONFIG,
        maintenance.delete_configuration,
        "MaintenanceConfigurations_Delete",
        "Delete a configuration with its assignments and runs: 200 with it, 204 if there was none (Contributor).",
        MAINTENANCE_CONFIGURATIONS,
        {"200": body("MaintenanceConfiguration"), "204": {"description": "No such configuration."}},
    ),
    Endpoint(
        "GET",
        CONFIG + "/applyUpdates/{applyUpdateName}",
        maintenance.get_configuration_run,
        "MaintenanceConfigurationRuns_Get",
        "A run of the configuration, by its UTC start (yyyyMMddHHmmss) or correlationId.",
        APPLY_UPDATES,
        {"200": body("ApplyUpdate")},
    ),
    Endpoint(
        "PUT",
        CONFIG + "/applyUpdates/{applyUpdateName}",
        maintenance.put_configuration_run,
        "MaintenanceConfigurationRuns_Cancel",
        'Cancel a scheduled run with {"properties": {"status": "Cancel"}}, until 10 minutes before it starts.',
        APPLY_UPDATES,
        {"200": body("ApplyUpdate")},
        request=request_body("ApplyUpdate"),
    ),
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
