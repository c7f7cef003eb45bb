"""The ARM API's route table: every path and method, and the handler that serves it.

Paths are OpenAPI-style templates (`{name}` matches one segment) and match case-insensitively.
"""

from . import compute, identity, operations, patches, providers, resources
from .core import Router

router = Router()

SUB = "/subscriptions/{subscriptionId}"
RG = SUB + "/resourceGroups/{resourceGroupName}"
VM = RG + "/providers/Microsoft.Compute/virtualMachines/{vmName}"
FEATURES = SUB + "/providers/Microsoft.Features/providers/{providerNamespace}/features"

router.route("/subscriptions", GET=resources.list_subscriptions)
router.route(SUB, GET=resources.get_subscription)
router.route("/tenants", GET=resources.list_tenants)
router.route(SUB + "/locations", GET=resources.list_locations)
router.route(SUB + "/resourceGroups", GET=resources.list_resource_groups)
router.route(
    RG, GET=resources.get_resource_group, HEAD=resources.resource_group_exists, PUT=resources.put_resource_group
)
router.route(SUB + "/providers/Microsoft.Compute/virtualMachines", GET=compute.list_all_vms)
router.route(RG + "/providers/Microsoft.Compute/virtualMachines", GET=compute.list_vms)
router.route(VM, GET=compute.get_vm, PUT=compute.put_vm, PATCH=compute.patch_vm, DELETE=compute.delete_vm)
router.route(VM + "/instanceView", GET=compute.get_instance_view)
for _action in compute.POWER_ACTIONS:
    router.route(f"{VM}/{_action}", POST=compute.power_action(_action))
router.route("/providers/Microsoft.Features/operations", GET=providers.feature_operations)
router.route(SUB + "/providers/Microsoft.Features/features", GET=providers.list_all_features)
router.route(FEATURES, GET=providers.list_features)
router.route(FEATURES + "/{featureName}", GET=providers.get_feature)
router.route(FEATURES + "/{featureName}/register", POST=providers.register_feature)
router.route(FEATURES + "/{featureName}/unregister", POST=providers.unregister_feature)
router.route(SUB + "/providers", GET=providers.list_providers)
router.route(SUB + "/providers/{providerNamespace}", GET=providers.get_provider)
router.route(SUB + "/providers/{providerNamespace}/register", POST=providers.register_provider)
router.route(SUB + "/providers/{providerNamespace}/unregister", POST=providers.unregister_provider)
router.route(f"{VM}/assessPatches", POST=patches.assess_patches)
router.route(f"{VM}/installPatches", POST=patches.install_patches)
router.route(
    SUB + "/providers/Microsoft.Compute/locations/{location}/operations/{operationId}", GET=operations.operation
)
router.route("/metadata/endpoints", authenticated=False, GET=identity.metadata_endpoints)
