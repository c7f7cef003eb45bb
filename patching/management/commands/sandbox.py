"""`manage.py sandbox …`: the sandbox clock, faults, snapshots and reset (patching/sandbox.py).

Run by the machine's operator, who may do everything (like the admin's superuser).
"""

import sys

from django.core.management.base import BaseCommand, CommandError

from patching import sandbox
from patching.models import FaultKind
from vms.models import Subscription, VirtualMachine


class Command(BaseCommand):
    help = (
        "The sandbox: advance the simulated clock, go back to real time, inject faults, export/import/reset the world."
    )

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        advance = sub.add_parser("advance", help="Move the clock forward; everything due meanwhile happens.")
        step = advance.add_mutually_exclusive_group(required=True)
        step.add_argument("--days", type=float, help="How many days to advance, e.g. 35.")
        step.add_argument("--to", help="The moment to advance to, UTC: 2027-01-13T02:00.")
        sub.add_parser("realtime", help="Switch back to real time.")
        sub.add_parser("status", help="Real time or sandbox, and where the clock stands.")
        export = sub.add_parser("export", help="Write the whole world to a JSON snapshot ('-': standard output).")
        export.add_argument("file")
        load = sub.add_parser("import", help="Replace the world with a snapshot's (all or nothing).")
        load.add_argument("file")
        reset = sub.add_parser("reset", help="Reset to the demo fleet, or to an empty one (--empty).")
        reset.add_argument("--empty", action="store_true", help="No subscriptions, VMs or history at all.")
        fault = sub.add_parser("fault", help="Inject a fault: add, list or remove.")
        faults = fault.add_subparsers(dest="fault_action", required=True)
        add = faults.add_parser("add", help="Add a fault.")
        add.add_argument("kind", choices=FaultKind.values)
        add.add_argument("--vm", help="Only this VM (its name; --resource-group if the name is not unique).")
        add.add_argument("--resource-group", help="The VM's resource group.")
        add.add_argument("--subscription", help="Only this subscription (its id).")
        add.add_argument("--region", default="", help="Only this region (required for rollout_halt).")
        add.add_argument("--kb", default="", help="For kb_fails: the KB (empty: every KB fails).")
        rate = add.add_mutually_exclusive_group(required=True)
        rate.add_argument("--probability", type=float, help="Fires on this share of matching operations.")
        rate.add_argument("--next", type=int, dest="next_n", help="Fires on the next N matching operations.")
        faults.add_parser("list", help="The faults set, and how often each fired.")
        remove = faults.add_parser("remove", help="Remove a fault.")
        remove.add_argument("id", type=int)

    def handle(self, *args, action: str, **options):
        try:
            getattr(self, f"do_{action}")(**options)
        except sandbox.SandboxError as exc:
            raise CommandError(str(exc)) from None

    def do_advance(self, *, days=None, to=None, **_):
        moment = sandbox.parse_moment(to) if to else None
        result = sandbox.advance(to=moment, days=days)
        self.stdout.write(self.style.SUCCESS(result.message()))

    def do_realtime(self, **_):
        self.stdout.write(sandbox.realtime())

    def do_status(self, **_):
        state = sandbox.status()
        if state["mode"] == "sandbox":
            self.stdout.write(f"Sandbox mode: the simulated clock stands at {state['now']:%Y-%m-%d %H:%M} UTC.")
        else:
            self.stdout.write(f"Real time: {state['now']:%Y-%m-%d %H:%M} UTC.")
        if state["advancing"]:
            self.stdout.write("An advance is running.")
        self.stdout.write(
            f"Active faults: {state['faults']}. One advance covers at most {state['maxAdvanceDays']} days."
        )

    def do_export(self, *, file, **_):
        text = sandbox.dumps(sandbox.export_snapshot())
        if file == "-":
            sys.stdout.write(text)
            return
        with open(file, "w", encoding="utf-8") as out:
            out.write(text)
        self.stdout.write(self.style.SUCCESS(f"Snapshot written to {file}."))

    def do_import(self, *, file, **_):
        try:
            with open(file, "rb") as source:
                text = source.read()
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc.strerror}.") from None
        counts = sandbox.import_snapshot(sandbox.loads(text))
        tables = counts["tables"]
        self.stdout.write(
            self.style.SUCCESS(
                f"Snapshot loaded: {tables['vms.virtualmachine']} VMs, {tables['patching.operation']} operations, "
                f"{tables['patching.fault']} faults."
            )
        )
        if counts["skippedRoleAssignments"]:
            names = ", ".join(sorted({str(u) for u in counts["skippedRoleAssignments"]}))
            self.stdout.write(f"Role assignments skipped (no such user here): {names}.")

    def do_reset(self, *, empty=False, **_):
        self.stdout.write(self.style.SUCCESS(sandbox.reset(demo=not empty)))

    def do_fault(self, *, fault_action, **options):
        if fault_action == "list":
            for fault in sandbox.faults_for(None):
                state = "active" if fault.is_active else "spent"
                self.stdout.write(f"#{fault.pk} {fault} — fired {fault.fired} time(s), {state}")
            return
        if fault_action == "remove":
            if not sandbox.remove_fault(None, options["id"]):
                raise CommandError(f"No fault #{options['id']}.")
            self.stdout.write(f"Fault #{options['id']} removed.")
            return
        vm = subscription = None
        if options["vm"]:
            vms = VirtualMachine.objects.select_related("resource_group").filter(name__iexact=options["vm"])
            if options["resource_group"]:
                vms = vms.filter(resource_group__name__iexact=options["resource_group"])
            found = list(vms[:2])
            if len(found) != 1:
                raise CommandError(
                    f"No VM named '{options['vm']}'."
                    if not found
                    else "Several VMs have that name: add --resource-group."
                )
            vm = found[0]
        if options["subscription"]:
            try:
                subscription = Subscription.objects.get(pk=options["subscription"])
            except (Subscription.DoesNotExist, ValueError, Exception):
                raise CommandError(f"No subscription '{options['subscription']}'.") from None
        fault = sandbox.add_fault(
            None,
            options["kind"],
            vm=vm,
            subscription=subscription,
            location=options["region"],
            kb=options["kb"],
            probability=options["probability"],
            next_n=options["next_n"],
        )
        self.stdout.write(self.style.SUCCESS(f"Fault #{fault.pk} set: {fault}."))
