"""Fleets to run automatic patching over: the demo's, and generated ones of any size.

A fleet is plain data (`VMSpec`s and `PowerChange`s) until `create()` writes it, so the demo seeder
and the simulation build the same fleet the same way.
"""

import random
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from vms import images
from vms.patch_settings import PatchSettings

DEFAULTS = PatchSettings(
    patch_mode="AutomaticByPlatform", enable_hotpatching=True, assessment_mode="AutomaticByPlatform"
)
AZURE_ORCHESTRATED = PatchSettings(patch_mode="AutomaticByPlatform", assessment_mode="AutomaticByPlatform")
MANUAL = PatchSettings(patch_mode="Manual", enable_automatic_updates=False)
BY_OS = PatchSettings()  # AutomaticByOS, Windows' default


@dataclass(frozen=True)
class VMSpec:
    subscription: int  # index into the fleet's subscriptions
    resource_group: str
    region: str
    name: str
    product: str
    sku: str
    time_zone: str
    settings: PatchSettings
    zone: str = ""
    availability_set: str = ""
    update_domain: int | None = None
    size: str = "Standard_D2s_v5"
    behind_by_months: int = 0  # built from an older image


@dataclass(frozen=True)
class PowerChange:
    """A VM stopped, deallocated or started at a moment (people do that)."""

    at: datetime
    vm: str
    power_state: str  # running, stopped, deallocated


@dataclass
class Fleet:
    subscriptions: list[tuple[str, str]]  # (id, display name)
    vms: list[VMSpec]
    changes: list[PowerChange] = field(default_factory=list)
    onboarded: int | None = None  # subscriptions with the preview features registered (None: all)
    initially_off: dict[str, str] = field(default_factory=dict)  # VM name -> power state at the start


# --- The demo fleet -----------------------------------------------------------------------------------

DEMO_SUBSCRIPTIONS = [
    ("3f2b9c1e-6a1d-4c8e-9f00-0a1b2c3d4e01", "Contoso Production"),
    ("3f2b9c1e-6a1d-4c8e-9f00-0a1b2c3d4e02", "Contoso Development"),
    ("3f2b9c1e-6a1d-4c8e-9f00-0a1b2c3d4e03", "Fabrikam Retail"),
    # New to hotpatch: its preview features are not registered yet (the seed's onboarding).
    ("3f2b9c1e-6a1d-4c8e-9f00-0a1b2c3d4e04", "Fabrikam Sandbox"),
]
# (subscription index, resource group, region, VMs: (name prefix, count, product, zoned, availability set))
DEMO_GROUPS = [
    (0, "rg-web-prod", "westeurope", [("web", 8, "ws2022-azure", True, ""), ("api", 4, "ws2025-azure", True, "")]),
    (0, "rg-sql-prod", "northeurope", [("sql", 6, "ws2022-azure", False, "avset-sql"), ("dc", 2, "ws2019", False, "")]),
    (0, "rg-app-prod", "swedencentral", [("app", 6, "ws2025-azure", True, ""), ("file", 2, "ws2022", False, "")]),
    (1, "rg-app-dev", "swedencentral", [("dev", 6, "ws2025-azure", False, ""), ("build", 3, "ws2022", False, "")]),
    (1, "rg-batch-dev", "eastus", [("batch", 5, "ws2022-azure", True, "")]),
    (
        2,
        "rg-retail-pos",
        "westus2",
        [("pos", 8, "ws2022-azure", False, "avset-pos"), ("legacy", 3, "ws2019", False, "")],
    ),
    (2, "rg-retail-gov", "usgovvirginia", [("gov", 3, "ws2022-azure", False, "")]),
    (3, "rg-sandbox", "westeurope", []),
]
TIME_ZONES = {
    "westeurope": "Europe/Amsterdam",
    "northeurope": "Europe/Dublin",
    "swedencentral": "Europe/Stockholm",
    "uksouth": "Europe/London",
    "eastus": "America/New_York",
    "centralus": "America/Chicago",
    "westcentralus": "America/Denver",
    "westus2": "America/Los_Angeles",
    "usgovvirginia": "America/New_York",
    "japaneast": "Asia/Tokyo",
    "southeastasia": "Asia/Singapore",
    "australiaeast": "Australia/Sydney",
}
SIZES = ["Standard_D2s_v5", "Standard_D4s_v5", "Standard_E4s_v5", "Standard_B2ms", "Standard_D8s_v5"]
GENERAL_AVAILABILITY = {"ws2025-azure": date(2024, 11, 1)}


def available(product: str, start: datetime) -> str:
    """The product, or Windows Server 2022 Azure Edition before Windows Server 2025 existed."""
    ga = GENERAL_AVAILABILITY.get(product)
    return "ws2022-azure" if ga and start.date() < ga else product


def demo(start: datetime, now: datetime, *, back_at: datetime | None = None) -> Fleet:
    """The demo's ~60 VMs: mostly the seed's defaults, a few with hotpatch or orchestration turned off.

    What makes the history worth looking at: the "-06" machines were built from an old image and were
    off through the last baseline's rollout (they come back behind it at `back_at`, by default shortly
    before now); legacy-03 is stopped throughout; build-03 was deallocated a week before now.
    """
    rng = random.Random(2021)
    vms = []
    for sub_index, rg_name, region, families in DEMO_GROUPS:
        for prefix, count, product_code, zoned, avset in families:
            product = images.PRODUCTS[available(product_code, start)]
            for n in range(1, count + 1):
                sku = product.hotpatch_skus[n % len(product.hotpatch_skus)] if product.has_hotpatch else product.skus[0]
                if product.has_hotpatch and not region.startswith("usgov") and n % 5 != 0:
                    settings = DEFAULTS.with_changes(
                        enable_hotpatching=n % 7 != 3, reboot_setting="Never" if n % 11 == 4 else "IfRequired"
                    )
                elif n % 4 == 0:
                    settings = MANUAL
                elif n % 3 == 0:
                    settings = BY_OS
                else:
                    settings = AZURE_ORCHESTRATED
                vms.append(
                    VMSpec(
                        subscription=sub_index,
                        resource_group=rg_name,
                        region=region,
                        name=f"{prefix}-{n:02d}",
                        product=product.code,
                        sku=sku,
                        time_zone=TIME_ZONES[region],
                        settings=settings,
                        zone=str(1 + (n - 1) % 3) if zoned else "",
                        availability_set=avset,
                        update_domain=(n - 1) % 5 if avset else None,
                        size=rng.choice(SIZES),
                        behind_by_months=1 if n == 6 else 0,
                    )
                )
    back = back_at or now - timedelta(hours=3)
    changes = [PowerChange(start, vm.name, "stopped") for vm in vms if vm.name.endswith("-06")]
    changes += [PowerChange(back, vm.name, "running") for vm in vms if vm.name.endswith("-06")]
    changes.append(PowerChange(now - timedelta(days=7), "build-03", "deallocated"))
    off = {vm.name: "stopped" for vm in vms if vm.name == "legacy-03"}
    return Fleet(list(DEMO_SUBSCRIPTIONS), vms, changes, onboarded=3, initially_off=off)


# --- Generated fleets ---------------------------------------------------------------------------------

PRODUCT_MIX = [("ws2022-azure", 40), ("ws2025-azure", 25), ("ws2022", 20), ("ws2019", 15)]
REGION_MIX = list(TIME_ZONES)


def generated(count: int, start: datetime, end: datetime, *, seed: int = 4) -> Fleet:
    """`count` VMs with the demo's character at scale: mostly hotpatch defaults, every placement kind,
    a few Manual / AutomaticByOS / rebootSetting Never, and about one VM in twenty off for a while."""
    rng = random.Random(seed)
    subscriptions = [
        (str(uuid.UUID(int=rng.getrandbits(128), version=4)), f"Simulated {i + 1}") for i in range(max(1, count // 250))
    ]
    products = [p for p, weight in PRODUCT_MIX for _ in range(weight)]
    vms: list[VMSpec] = []
    group = 0
    while len(vms) < count:
        group += 1
        region = REGION_MIX[group % len(REGION_MIX)]
        subscription = rng.randrange(len(subscriptions))
        rg = f"rg-{group:04d}"
        placement = rng.choice(["zonal", "zonal", "set", "regional"])
        size = min(count - len(vms), rng.randint(4, 24))
        product_code = available(rng.choice(products), start)
        product = images.PRODUCTS[product_code]
        for n in range(size):
            capable = product.has_hotpatch and not region.startswith("usgov")
            roll = rng.random()
            if capable:
                if roll < 0.80:
                    settings = DEFAULTS
                elif roll < 0.88:
                    settings = AZURE_ORCHESTRATED
                elif roll < 0.92:
                    settings = MANUAL
                elif roll < 0.96:
                    settings = BY_OS
                else:
                    settings = DEFAULTS.with_changes(reboot_setting="Never")
            else:
                settings = AZURE_ORCHESTRATED if roll < 0.8 else MANUAL if roll < 0.9 else BY_OS
            vms.append(
                VMSpec(
                    subscription=subscription,
                    resource_group=rg,
                    region=region,
                    name=f"vm-{len(vms) + 1:05d}",
                    product=product_code,
                    sku=product.hotpatch_skus[0] if capable else product.skus[0],
                    time_zone=TIME_ZONES[region],
                    settings=settings,
                    zone=str(1 + n % 3) if placement == "zonal" else "",
                    availability_set="avset-app" if placement == "set" else "",
                    update_domain=n % 5 if placement == "set" else None,
                    size=rng.choice(SIZES),
                )
            )
    changes: list[PowerChange] = []
    days = max(1, (end - start).days)
    for vm in vms:
        if rng.random() < 0.05:
            off_at = start + timedelta(days=rng.uniform(0, days), hours=rng.randint(0, 23))
            back_at = off_at + timedelta(days=rng.uniform(3, 45))
            changes.append(PowerChange(off_at, vm.name, rng.choice(["stopped", "deallocated"])))
            changes.append(PowerChange(back_at, vm.name, "running"))
    return Fleet(subscriptions, vms, changes)


def create(fleet: Fleet, start: datetime):
    """Write the fleet: subscriptions (onboarded for hotpatch), resource groups, VMs and their guests."""
    from patching import services
    from vms.models import FeatureRegistration, ProviderRegistration, ResourceGroup, Subscription, VirtualMachine

    subscriptions = Subscription.objects.bulk_create(
        Subscription(id=uuid.UUID(sid), display_name=name) for sid, name in fleet.subscriptions
    )
    onboarded = subscriptions if fleet.onboarded is None else subscriptions[: fleet.onboarded]
    FeatureRegistration.objects.bulk_create(
        FeatureRegistration(subscription=subscription, name=name, state="Registered", changed_at=start)
        for subscription in onboarded
        for name in FeatureRegistration.HOTPATCH_FEATURES
    )
    ProviderRegistration.objects.bulk_create(
        ProviderRegistration(subscription=s, namespace="Microsoft.Compute", state="Registered", changed_at=start)
        for s in onboarded
    )
    groups: dict[tuple[int, str], ResourceGroup] = {}
    for spec in fleet.vms:
        key = (spec.subscription, spec.resource_group)
        if key not in groups:
            groups[key] = ResourceGroup(
                subscription=subscriptions[spec.subscription], name=spec.resource_group, location=spec.region
            )
    ResourceGroup.objects.bulk_create(groups.values())
    vms = []
    for spec in fleet.vms:
        group = groups[(spec.subscription, spec.resource_group)]
        vm = VirtualMachine(
            resource_group=group,
            # Named after the VM, not drawn: its id seeds the simulated failures, so the same fleet
            # (the same --seed) fails the same way on every run.
            vm_id=uuid.uuid5(group.subscription_id, f"{group.name}/{spec.name}"),
            name=spec.name,
            location=spec.region,
            zone=spec.zone,
            availability_set=spec.availability_set,
            update_domain=spec.update_domain,
            size=spec.size,
            image_sku=spec.sku,
            product=spec.product,
            time_zone=spec.time_zone,
            created_at=start,
            power_state=fleet.initially_off.get(spec.name, "running"),
        )
        problems = vm.validate_patch_settings(spec.settings, creating=True)
        assert not problems, (spec, problems)
        vm.apply_patch_settings(spec.settings)
        vms.append(vm)
    VirtualMachine.objects.bulk_create(vms, batch_size=2000)  # PostgreSQL and SQLite return the ids
    by_name = {vm.name: vm for vm in vms}
    behind: dict[int, list] = {}
    for spec in fleet.vms:
        behind.setdefault(spec.behind_by_months, []).append(by_name[spec.name])
    for months, members in behind.items():
        services.provision_guests(members, start, behind_by_months=months)
    bring_up_to_date(behind.get(0, []), start)
    return vms


def bring_up_to_date(vms, start: datetime) -> None:
    """Install the Critical and Security updates released before `start` on freshly provisioned VMs,
    without operations: a fleet starts patched, so its first month's reboots are that month's own."""
    from patching import guest as sim
    from patching import services
    from patching.models import GuestState, InstalledUpdate

    groups: dict[tuple[str, bool, bool], list] = {}
    for vm in vms:
        # Provisioning picks the image by product and hotpatch capability.
        groups.setdefault((vm.product, vm.hotpatch_capable, vm.enable_hotpatching), []).append(vm)
    for (product, _, enrolled), members in groups.items():
        # Provisioned from the same image at the same moment: one guest stands for all of them.
        state = GuestState.objects.get(pk=members[0].pk)
        guest = sim.Guest(
            enrolled, state.build, state.baseline_id, frozenset(state.installed.values_list("pk", flat=True))
        )
        catalog = services.catalog_for(product)
        installed = []
        for _ in range(2):  # a baseline first, then what applies on it
            available = sim.applicable(guest, catalog, start)
            outcome = sim.install(
                guest,
                available,
                sim.Selection(classifications=sim.CRITICAL_AND_SECURITY),
                reboot_setting="IfRequired",
                maximum_duration=timedelta(days=1),
                vm_key="",
                today=start.date(),
                failure_rate=0,
            )
            if not outcome.installed:
                break
            installed += outcome.installed
            guest = sim.Guest(
                enrolled, outcome.build, outcome.baseline_id, guest.installed | {p.id for p in outcome.installed}
            )
        if not installed:
            continue
        InstalledUpdate.objects.bulk_create(
            [InstalledUpdate(guest_id=vm.pk, update_id=p.id, installed_at=start) for vm in members for p in installed],
            batch_size=5000,
        )
        GuestState.objects.filter(pk__in=[vm.pk for vm in members]).update(
            build=guest.build, baseline_id=guest.baseline_id
        )
