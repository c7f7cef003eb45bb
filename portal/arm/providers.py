"""ARM API: Microsoft.Features preview features and resource providers (azure-api.md §6)."""

from vms import features, regions
from vms.models import FeatureRegistration, Subscription

from .core import (
    ArmRequest,
    ok,
)
from .errors import ArmError

VM_TYPE = "Microsoft.Compute/virtualMachines"
DEFAULT_SIZE = "Standard_D2s_v5"
ADMIN_USERNAME = "azureuser"  # the simulation has no accounts; ARM clients expect one


# --- Microsoft.Features ---------------------------------------------------------------------------


def _known_feature(subscription: Subscription, namespace: str, name: str) -> FeatureRegistration:
    """The feature, if the preview offers it (or this subscription has a row for it); else 404."""
    row = features.feature(subscription, name, namespace)
    known = row.pk is not None or (
        namespace.lower() == FeatureRegistration.NAMESPACE.lower()
        and name.lower() in {n.lower() for n in FeatureRegistration.HOTPATCH_FEATURES}
    )
    if not known:
        raise ArmError(
            404,
            "FeatureNotFound",
            f"The feature '{name}' could not be found in namespace '{namespace}'. The preview offers "
            f"{', '.join(FeatureRegistration.HOTPATCH_FEATURES)} in {FeatureRegistration.NAMESPACE}.",
        )
    return row


def get_feature(arm: ArmRequest, subscriptionId: str, providerNamespace: str, featureName: str):
    subscription = arm.subscription(subscriptionId)
    return ok(_known_feature(subscription, providerNamespace, featureName).to_arm())


def register_feature(arm: ArmRequest, subscriptionId: str, providerNamespace: str, featureName: str):
    subscription = arm.subscription(subscriptionId, act=True)
    _known_feature(subscription, providerNamespace, featureName)
    return ok(features.register_feature(subscription, featureName, providerNamespace).to_arm())


def unregister_feature(arm: ArmRequest, subscriptionId: str, providerNamespace: str, featureName: str):
    subscription = arm.subscription(subscriptionId, act=True)
    _known_feature(subscription, providerNamespace, featureName)
    return ok(features.unregister_feature(subscription, featureName, providerNamespace).to_arm())


def list_features(arm: ArmRequest, subscriptionId: str, providerNamespace: str):
    subscription = arm.subscription(subscriptionId)
    return ok({"value": [f.to_arm() for f in features.features(subscription, providerNamespace)]})


def list_all_features(arm: ArmRequest, subscriptionId: str):
    subscription = arm.subscription(subscriptionId)
    return ok({"value": [f.to_arm() for f in features.features(subscription)]})


def feature_operations(arm: ArmRequest):
    """The operations Microsoft.Features offers (FeatureClient.list_operations)."""

    def op(name: str, description: str) -> dict:
        return {
            "name": f"Microsoft.Features/{name}",
            "display": {"provider": "Microsoft.Features", "resource": "Features", "operation": description},
        }

    return ok(
        {
            "value": [
                op("features/read", "Gets the features of a subscription."),
                op("providers/features/read", "Gets a feature of a subscription in a resource provider."),
                op("providers/features/register/action", "Registers a feature in a resource provider."),
                op("providers/features/unregister/action", "Unregisters a feature in a resource provider."),
            ]
        }
    )


# --- Resource providers ---------------------------------------------------------------------------

PROVIDERS = {
    "Microsoft.Compute": [
        ("virtualMachines", "SupportsTags, SupportsLocation"),
        ("locations/operations", "None"),
    ],
    "Microsoft.Features": [("features", "None"), ("providers", "None")],
}


def _known_provider(namespace: str) -> str:
    canonical = next((n for n in PROVIDERS if n.lower() == namespace.lower()), None)
    if canonical is None:
        raise ArmError(
            404,
            "InvalidResourceNamespace",
            f"The resource namespace '{namespace}' is invalid; this portal serves {', '.join(PROVIDERS)}.",
        )
    return canonical


def provider_to_arm(subscription: Subscription, namespace: str, state: str) -> dict:
    locations = [regions.REGIONS[r] for r in regions.REGIONS]
    return {
        "id": f"/subscriptions/{subscription.pk}/providers/{namespace}",
        "namespace": namespace,
        "registrationState": state,
        "registrationPolicy": "RegistrationRequired",
        "resourceTypes": [
            {
                "resourceType": resource_type,
                "locations": locations if resource_type == "virtualMachines" else [],
                "apiVersions": ["2026-04-01", "2025-04-01", "2024-11-01"],
                "capabilities": capabilities,
            }
            for resource_type, capabilities in PROVIDERS[namespace]
        ],
    }


def get_provider(arm: ArmRequest, subscriptionId: str, providerNamespace: str):
    subscription = arm.subscription(subscriptionId)
    namespace = _known_provider(providerNamespace)
    return ok(provider_to_arm(subscription, namespace, features.provider(subscription, namespace).state))


def list_providers(arm: ArmRequest, subscriptionId: str):
    subscription = arm.subscription(subscriptionId)
    return ok(
        {
            "value": [
                provider_to_arm(subscription, namespace, features.provider(subscription, namespace).state)
                for namespace in PROVIDERS
            ]
        }
    )


def register_provider(arm: ArmRequest, subscriptionId: str, providerNamespace: str):
    # The optional body ({"thirdPartyProviderConsent": ...}) changes nothing here, and the Azure CLI
    # sends Content-Type: application/json with no body at all: the body is not read.
    subscription = arm.subscription(subscriptionId, act=True)
    namespace = _known_provider(providerNamespace)
    row = features.register_provider(subscription, namespace)
    return ok(provider_to_arm(subscription, namespace, row.state))


def unregister_provider(arm: ArmRequest, subscriptionId: str, providerNamespace: str):
    subscription = arm.subscription(subscriptionId, act=True)
    namespace = _known_provider(providerNamespace)
    row = features.unregister_provider(subscription, namespace)
    return ok(provider_to_arm(subscription, namespace, row.state))
