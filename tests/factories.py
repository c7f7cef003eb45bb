"""Plain functions that build test data (no factory library needed)."""

import itertools
import uuid
from datetime import UTC, date, datetime

from django.db import connection

from patching import catalog, services
from patching.models import Update
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


# The rows ensure_catalog(CATALOG_UNTIL) writes into an empty table, as built by the run's first
# load_catalog() (one tuple per row, in Update's concrete field order).
_catalog_rows: list[tuple] | None = None


def load_catalog() -> None:
    """The real catalog up to CATALOG_UNTIL, as `ensure_catalog(until=CATALOG_UNTIL)` makes it.

    Built once per test run: the first call runs ensure_catalog and keeps the rows; every later call
    on an empty table copies the same rows back in one COPY (ensure_catalog is deterministic, and
    tests/test_catalog.py checks that the copy equals a fresh build). Each test still starts without
    a catalog unless it asks for one, and a transactional test's flush does not matter: the next call
    copies the rows in again. A table that already has rows gets the real ensure_catalog.
    """
    global _catalog_rows
    if _catalog_rows is not None and not Update.objects.exists():
        _copy_catalog(_catalog_rows)
        return
    empty = not Update.objects.exists()
    catalog.ensure_catalog(until=CATALOG_UNTIL)
    if empty:
        _catalog_rows = list(Update.objects.order_by("pk").values_list(*_catalog_columns()))


def _catalog_columns() -> list[str]:
    return [field.attname for field in Update._meta.concrete_fields]


def _copy_catalog(rows: list[tuple]) -> None:
    fields = Update._meta.concrete_fields
    table = connection.ops.quote_name(Update._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    with connection.cursor() as cursor:
        with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(
                    [field.get_db_prep_value(value, connection) for field, value in zip(fields, row, strict=True)]
                )
        # The ids were taken from the sequence by the first build; keep it above them all the same.
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence(%s, 'id'), "
            "GREATEST(MAX(id), nextval(pg_get_serial_sequence(%s, 'id')))) FROM " + table,
            [Update._meta.db_table, Update._meta.db_table],
        )


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
