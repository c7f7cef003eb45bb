"""Build the demo fleet and its history by running the platform itself over the past 45 days."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from patching import catalog, services
from patching.guest import Selection
from patching.models import OperationKind, StartedBy
from patching.orchestrator import fleets
from patching.orchestrator.simulation import Simulation
from patching.parameters import InstallParameters
from vms import clock
from vms.models import Subscription, VirtualMachine

HISTORY_DAYS = 45


class Command(BaseCommand):
    help = (
        "Create the demo fleet (4 subscriptions, ~60 VMs) and its history: periodic assessment and "
        "automatic patching (the orchestrator itself) over the past 45 days, and a few things people did."
    )

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=HISTORY_DAYS, help="Days of history to simulate.")

    def handle(self, *args, days: int, **options):
        now = clock.now()
        catalog.ensure_catalog(until=(now + timedelta(days=31)).date())
        if Subscription.objects.filter(pk=fleets.DEMO_SUBSCRIPTIONS[0][0]).exists():
            self.stdout.write("Demo fleet already there; nothing to do.")
            return
        start = (now - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
        # The demo's character: the "-06" VMs come back behind the baseline, legacy-03 is stopped,
        # build-03 deallocated; the enrolled VMs rebooted for October's baseline and not since.
        history = Simulation(start, now, fleets.demo(start, now), assessments=True, daily_compliance=True)
        vms = history.create_fleet()
        self.stdout.write(f"Created {len(vms)} VMs; running the platform over {days} days of history…")
        history.run()
        operations = by_hand(now)
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo fleet ready: {len(vms)} VMs, {history.rounds} rounds of automatic patching, "
                f"{operations} operations by hand."
            )
        )


def by_hand(now) -> int:
    """What operators did: an install with a KB held back, and a check of a stopped VM."""
    user = get_user_model().objects.filter(is_superuser=True).order_by("pk").first()
    count = 0

    def operate(vm, kind, when, parameters=None):
        nonlocal count
        operation, _ = services.start_operation(
            vm, kind, started_by=StartedBy.USER, user=user, parameters=parameters, now=when, enqueue=False
        )
        count += 1
        return services.execute_operation(operation.pk, now=when)

    vm = VirtualMachine.objects.select_related("resource_group").get(name="web-02")
    when = now - timedelta(days=2, hours=5)
    assessment = operate(vm, OperationKind.ASSESSMENT, when)
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
        operate(vm, OperationKind.INSTALLATION, when + timedelta(minutes=10), parameters)
    stopped = VirtualMachine.objects.select_related("resource_group").filter(name="legacy-03").first()
    if stopped:
        operate(stopped, OperationKind.ASSESSMENT, now - timedelta(hours=6))  # fails: the VM is stopped
    return count
