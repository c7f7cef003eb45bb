"""Plain functions that build test data (no factory library needed)."""

import itertools
import uuid
from datetime import UTC, date, datetime

from patching import catalog, services
from vms import images
from vms.models import (
    FeatureRegistration,
    ProviderRegistration,
    ResourceGroup,
    RoleAssignment,
    Subscription,
    VirtualMachine,
)
from vms.patch_settings import PatchSettings, defaults_for_image

# The catalog is real (Microsoft's data plus generated months) up to this day.
CATALOG_UNTIL = date(2027, 1, 31)
_names = itertools.count(1)


def load_catalog() -> None:
    catalog.ensure_catalog(until=CATALOG_UNTIL)


def make_subscription(
    name: str = "Contoso", user=None, role: str = "Contributor", onboarded: bool = True
) -> Subscription:
    """A subscription; `onboarded` ones have the hotpatch preview features and provider registered."""
    subscription = Subscription.objects.create(id=uuid.uuid4(), display_name=name)
    if onboarded:
        for feature in FeatureRegistration.HOTPATCH_FEATURES:
            FeatureRegistration.objects.create(subscription=subscription, name=feature, state="Registered")
        ProviderRegistration.objects.create(
            subscription=subscription, namespace="Microsoft.Compute", state="Registered"
        )
    if user is not None:
        RoleAssignment.objects.create(user=user, subscription=subscription, role=role)
    return subscription


def make_resource_group(subscription: Subscription | None = None, name: str = "", location: str = "westeurope"):
    subscription = subscription or make_subscription()
    return ResourceGroup.objects.create(subscription=subscription, name=name or f"rg-{next(_names)}", location=location)


def make_vm(
    *,
    product: str = "ws2022-azure",
    hotpatch: bool | None = None,
    resource_group: ResourceGroup | None = None,
    name: str = "",
    now: datetime | None = None,
    behind_by_months: int = 0,
    settings: PatchSettings | None = None,
    **fields,
) -> VirtualMachine:
    """A VM with a provisioned guest. By default the seed's defaults for its image."""
    rg = resource_group or make_resource_group()
    info = images.PRODUCTS[product]
    sku = fields.pop("image_sku", info.default_sku)
    location = fields.pop("location", rg.location)
    settings = settings or defaults_for_image(images.PUBLISHER, images.OFFER, sku, location)
    if hotpatch is not None:
        settings = settings.with_changes(enable_hotpatching=hotpatch)
    now = now or datetime.now(UTC)
    vm = VirtualMachine(
        resource_group=rg,
        name=name or f"vm-{next(_names):03d}",
        location=location,
        image_sku=sku,
        product=product,
        created_at=now,
        **fields,
    )
    assert not vm.validate_patch_settings(settings, creating=True)
    vm.apply_patch_settings(settings)
    vm.save()
    services.provision_guest(vm, now, behind_by_months=behind_by_months)
    return vm
