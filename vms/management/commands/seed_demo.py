"""Build the demo fleet and its history by running the real engine over the past 45 days."""

import random
import uuid
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from patching import calendar, catalog, services
from patching import guest as sim
from patching.guest import Selection
from patching.models import OperationKind, StartedBy
from patching.parameters import InstallParameters
from vms import images
from vms.models import FeatureRegistration, ProviderRegistration, ResourceGroup, Subscription, VirtualMachine
from vms.patch_settings import PatchSettings

# Fixed ids: seeding twice finds the same fleet instead of building a second one.
SUBSCRIPTIONS = [
    ("3f2b9c1e-6a1d-4c8e-9f00-0a1b2c3d4e01", "Contoso Production"),
    ("3f2b9c1e-6a1d-4c8e-9f00-0a1b2c3d4e02", "Contoso Development"),
    ("3f2b9c1e-6a1d-4c8e-9f00-0a1b2c3d4e03", "Fabrikam Retail"),
    # New to hotpatch: its preview features are not registered yet (the seed's onboarding).
    ("3f2b9c1e-6a1d-4c8e-9f00-0a1b2c3d4e04", "Fabrikam Sandbox"),
]
ONBOARDED = 3  # the first three subscriptions registered the preview features before the history starts
# (subscription index, name, region, VMs: (name prefix, count, product, zoned, availability set))
GROUPS = [
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
    "eastus": "America/New_York",
    "westus2": "America/Los_Angeles",
    "usgovvirginia": "America/New_York",
}
SIZES = ["Standard_D2s_v5", "Standard_D4s_v5", "Standard_E4s_v5", "Standard_B2ms", "Standard_D8s_v5"]
HISTORY_DAYS = 45


class Command(BaseCommand):
    help = "Create the demo fleet (3 subscriptions, ~60 VMs) and 45 days of history from the real engine."

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=HISTORY_DAYS, help="Days of history to simulate.")

    def handle(self, *args, days: int, **options):
        now = timezone.now()
        catalog.ensure_catalog(until=(now + timedelta(days=31)).date())
        if Subscription.objects.filter(pk=SUBSCRIPTIONS[0][0]).exists():
            self.stdout.write("Demo fleet already there; nothing to do.")
            return
        start = (now - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
        with transaction.atomic():
            vms = self.build_fleet(start)
        self.stdout.write(f"Created {len(vms)} VMs; simulating {days} days of history…")
        operations = DemoHistory(vms, start, now).run()
        self.stdout.write(self.style.SUCCESS(f"Demo fleet ready: {len(vms)} VMs, {operations} operations of history."))

    def build_fleet(self, start: datetime) -> list[VirtualMachine]:
        rng = random.Random(2021)
        subscriptions = [
            Subscription.objects.create(id=uuid.UUID(sid), display_name=name) for sid, name in SUBSCRIPTIONS
        ]
        for subscription in subscriptions[:ONBOARDED]:
            FeatureRegistration.objects.bulk_create(
                FeatureRegistration(subscription=subscription, name=name, state="Registered", changed_at=start)
                for name in FeatureRegistration.HOTPATCH_FEATURES
            )
            ProviderRegistration.objects.create(
                subscription=subscription, namespace="Microsoft.Compute", state="Registered", changed_at=start
            )
        vms = []
        for sub_index, rg_name, region, families in GROUPS:
            rg = ResourceGroup.objects.create(subscription=subscriptions[sub_index], name=rg_name, location=region)
            for prefix, count, product_code, zoned, avset in families:
                product = images.PRODUCTS[product_code]
                for n in range(1, count + 1):
                    sku = (
                        product.hotpatch_skus[n % len(product.hotpatch_skus)]
                        if product.has_hotpatch
                        else product.skus[0]
                    )
                    # Most capable VMs take the seed's defaults; a few have hotpatch or orchestration turned off.
                    if product.has_hotpatch and not region.startswith("usgov") and n % 5 != 0:
                        settings = PatchSettings(
                            patch_mode="AutomaticByPlatform",
                            enable_hotpatching=n % 7 != 3,
                            assessment_mode="AutomaticByPlatform",
                            reboot_setting="Never" if n % 11 == 4 else "IfRequired",
                        )
                    elif n % 4 == 0:
                        settings = PatchSettings(patch_mode="Manual", enable_automatic_updates=False)
                    elif n % 3 == 0:
                        settings = PatchSettings()  # AutomaticByOS, Windows' default
                    else:
                        settings = PatchSettings(
                            patch_mode="AutomaticByPlatform", assessment_mode="AutomaticByPlatform"
                        )
                    vm = VirtualMachine(
                        resource_group=rg,
                        name=f"{prefix}-{n:02d}",
                        location=region,
                        zone=str(1 + (n - 1) % 3) if zoned else "",
                        availability_set=avset,
                        update_domain=(n - 1) % 5 if avset else None,
                        size=rng.choice(SIZES),
                        image_sku=sku,
                        product=product_code,
                        time_zone=TIME_ZONES[region],
                        created_at=start,
                    )
                    vm.apply_patch_settings(settings)
                    assert not vm.validate_patch_settings(settings, creating=True), (vm.name, settings)
                    vm.save()
                    # A few machines were built from an old image and have fallen behind.
                    services.provision_guest(vm, start, behind_by_months=1 if n == 6 else 0)
                    vms.append(vm)
        return vms


class DemoHistory:
    """The platform's days, replayed with a simulated clock through the same services the worker uses.

    Platform assessment every day (AutomaticByPlatform assessment mode) or every third day; platform
    installs of Critical and Security updates at 03:00 local time a few days after Patch Tuesday for
    Azure-orchestrated VMs (hotpatch-enrolled ones hold rebooting updates for baseline months); and a
    few things people did by hand.
    """

    def __init__(self, vms: list[VirtualMachine], start: datetime, now: datetime):
        self.vms, self.start, self.now = vms, start, now
        self.count = 0
        self.kinds: dict[tuple[str, int], list] = {}
        self.stopped = {vm.pk for vm in vms if vm.name.endswith("-03") and vm.product == "ws2019"}
        self.user_excluding = next(vm for vm in vms if vm.name == "web-02")
        # The machines built from an old image were also switched off through October's baseline
        # rollout: they come back behind the baseline and show what that looks like.
        self.off_until = {
            vm.pk: start + timedelta(days=days_off) for vm in vms if vm.name.endswith("-06") for days_off in [25]
        }

    def run(self) -> int:
        day = self.start
        while day < self.now:
            for vm in self.vms:
                self.platform_day(vm, day)
            day += timedelta(days=1)
        self.by_hand()
        VirtualMachine.objects.filter(pk__in=self.stopped).update(power_state=VirtualMachine.PowerState.STOPPED)
        VirtualMachine.objects.filter(name="build-03").update(power_state=VirtualMachine.PowerState.DEALLOCATED)
        return self.count

    def month_kind(self, product: str, year: int, month: int) -> str:
        if (product, year) not in self.kinds:
            self.kinds[product, year] = calendar.month_kinds(product, year)
        return self.kinds[product, year][month - 1].kind

    def operate(self, vm, kind, when, *, parameters=None, started_by=StartedBy.PLATFORM, user=None):
        if when >= self.now:
            return None
        operation, _ = services.start_operation(
            vm, kind, started_by=started_by, user=user, parameters=parameters, now=when, enqueue=False
        )
        self.count += 1
        return services.execute_operation(operation.pk, now=when)

    def platform_day(self, vm: VirtualMachine, day: datetime) -> None:
        if day < self.off_until.get(vm.pk, day):
            return
        local = ZoneInfo(vm.time_zone)
        stagger = timedelta(minutes=(vm.pk * 37) % 180)
        every = 1 if vm.assessment_mode == "AutomaticByPlatform" else 3
        if (day - self.start).days % every == 0 and vm.pk not in self.stopped:
            self.operate(vm, OperationKind.ASSESSMENT, day + timedelta(hours=1) + stagger)
        if vm.patch_mode != "AutomaticByPlatform" or vm.pk in self.stopped:
            return
        tuesday = calendar.patch_tuesday(day.year, day.month)
        wait = vm.pk % 6  # each VM's turn in the rollout
        if (day.date() - tuesday).days != 1 + wait:
            return
        kind = self.month_kind(vm.product, day.year, day.month)
        enrolled = vm.enable_hotpatching and vm.hotpatch_capable
        parameters = InstallParameters(
            selection=Selection(
                classifications=frozenset(sim.CRITICAL_AND_SECURITY),
                exclude_kbs_requiring_reboot=enrolled and kind == "hotpatch",
            ),
            reboot_setting=vm.reboot_setting,
            maximum_duration=timedelta(hours=3, minutes=55),
        )
        when = datetime.combine(day.date(), time(3), local) + stagger
        if self.operate(vm, OperationKind.INSTALLATION, when, parameters=parameters):
            self.operate(vm, OperationKind.ASSESSMENT, when + timedelta(hours=1))

    def by_hand(self) -> None:
        """What operators did: an install with a KB held back, and a check of a stopped VM."""
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.filter(is_superuser=True).order_by("pk").first()
        vm = self.user_excluding
        vm.refresh_from_db()
        when = self.now - timedelta(days=2, hours=5)
        assessment = self.operate(vm, OperationKind.ASSESSMENT, when, started_by=StartedBy.USER, user=user)
        if assessment and assessment.results.exists():
            held_back = assessment.results.select_related("update").first().update.kb
            parameters = InstallParameters(
                selection=Selection(
                    classifications=frozenset({"Critical", "Security", "UpdateRollUp"}),
                    kbs_to_exclude=frozenset({held_back}),
                ),
                reboot_setting="IfRequired",
                maximum_duration=timedelta(hours=2),
            )
            self.operate(
                vm,
                OperationKind.INSTALLATION,
                when + timedelta(minutes=10),
                parameters=parameters,
                started_by=StartedBy.USER,
                user=user,
            )
        stopped = VirtualMachine.objects.filter(pk__in=self.stopped).first()
        if stopped:
            VirtualMachine.objects.filter(pk=stopped.pk).update(power_state=VirtualMachine.PowerState.STOPPED)
            stopped.refresh_from_db()
            self.operate(
                stopped, OperationKind.ASSESSMENT, self.now - timedelta(hours=6), started_by=StartedBy.USER, user=user
            )
