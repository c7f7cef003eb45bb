"""ARM API: subscriptions, tenants, locations and resource groups (azure-api.md §1).

Every handler reads through the caller's roles (vms.access via ArmRequest.subscription): another
user's subscription is a 404, a Reader may read but not act.
"""

from django.conf import settings
from django.db import IntegrityError, transaction

from vms import access, regions
from vms.models import RESOURCE_NAME_RE, ResourceGroup, Subscription

from .core import (
    ArmRequest,
    Body,
    check_tags,
    empty,
    ok,
    page,
    raise_problems,
)
from .errors import ArmError, bad_request

VM_TYPE = "Microsoft.Compute/virtualMachines"
DEFAULT_SIZE = "Standard_D2s_v5"
ADMIN_USERNAME = "azureuser"  # the simulation has no accounts; ARM clients expect one


# --- Subscriptions, tenants, locations ------------------------------------------------------------


def subscription_to_arm(subscription: Subscription) -> dict:
    return subscription.to_arm(settings.PORTAL_ARM_TENANT_ID)


def list_subscriptions(arm: ArmRequest):
    return page(arm, access.subscriptions_for(arm.user), subscription_to_arm, keys=("display_name", "pk"))


def get_subscription(arm: ArmRequest, subscriptionId: str):
    return ok(subscription_to_arm(arm.subscription(subscriptionId)))


def list_tenants(arm: ArmRequest):
    tenant = settings.PORTAL_ARM_TENANT_ID
    return ok(
        {
            "value": [
                {
                    "id": f"/tenants/{tenant}",
                    "tenantId": tenant,
                    "tenantCategory": "Home",
                    "displayName": "Hotpatch Portal",
                    "defaultDomain": "hotpatch-portal.local",
                    "domains": ["hotpatch-portal.local"],
                }
            ]
        }
    )


def list_locations(arm: ArmRequest, subscriptionId: str):
    subscription = arm.subscription(subscriptionId)
    return ok(
        {
            "value": [
                {
                    "id": f"/subscriptions/{subscription.pk}/locations/{name}",
                    "subscriptionId": str(subscription.pk),
                    "name": name,
                    "type": "Region",
                    "displayName": display,
                    "regionalDisplayName": display,
                    "metadata": {"regionType": "Physical", "pairedRegion": _paired(subscription, name)},
                }
                for name, display in regions.REGIONS.items()
            ]
        }
    )


def _paired(subscription: Subscription, name: str) -> list[dict]:
    pair = regions.PAIRS.get(name)
    return [{"name": pair, "id": f"/subscriptions/{subscription.pk}/locations/{pair}"}] if pair else []


# --- Resource groups ------------------------------------------------------------------------------


def list_resource_groups(arm: ArmRequest, subscriptionId: str):
    subscription = arm.subscription(subscriptionId)
    return page(arm, subscription.resource_groups.all(), ResourceGroup.to_arm, keys=("name", "pk"))


def get_resource_group(arm: ArmRequest, subscriptionId: str, resourceGroupName: str):
    subscription = arm.subscription(subscriptionId)
    return ok(arm.resource_group(subscription, resourceGroupName).to_arm())


def resource_group_exists(arm: ArmRequest, subscriptionId: str, resourceGroupName: str):
    subscription = arm.subscription(subscriptionId)
    arm.resource_group(subscription, resourceGroupName)
    return empty(204)


def put_resource_group(arm: ArmRequest, subscriptionId: str, resourceGroupName: str):
    subscription = arm.subscription(subscriptionId, act=True)
    body = Body(arm.json_object(required=True))
    check_tags(body)
    raise_problems(body.problems)
    location = body.get("location", object, None)
    region = regions.normalize_region(location) if isinstance(location, str) else None
    if region is None:
        raise bad_request(f"'{location}' is not a known location.", "location", "LocationNotAvailableForResourceGroup")
    existing = ResourceGroup.objects.filter(subscription=subscription, name__iexact=resourceGroupName).first()
    if existing is not None:
        if existing.location != region:
            raise ArmError(
                409,
                "InvalidResourceGroupLocation",
                f"Invalid resource group location '{location}'. The Resource group already exists in location "
                f"'{existing.location}'.",
            )
        return ok(existing.to_arm())
    if not RESOURCE_NAME_RE.match(resourceGroupName) or len(resourceGroupName) > 90:
        raise bad_request(f"'{resourceGroupName}' is not a valid resource group name.", "resourceGroupName")
    try:
        with transaction.atomic():
            rg = ResourceGroup.objects.create(subscription=subscription, name=resourceGroupName, location=region)
    except IntegrityError:  # created by a concurrent request
        rg = arm.resource_group(subscription, resourceGroupName)
        return ok(rg.to_arm())
    return ok(rg.to_arm(), status=201)
