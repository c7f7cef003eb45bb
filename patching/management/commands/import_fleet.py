"""`manage.py import_fleet FILE`: create the VMs of an `az vm list -d -o json` file or a Resource Graph CSV."""

import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from patching import services
from vms import clock, fleet_import

DEFAULT_OWNER = "demo"  # the superuser `make demo` creates
LISTED = 40  # refusals and notes printed before "... and N more"


class Command(BaseCommand):
    help = (
        "Import a real fleet from the output of `az vm list -d -o json` (or an Azure Resource Graph CSV export): "
        "subscriptions, resource groups and VMs with their images, sizes, zones, availability sets, tags, power "
        "state and patch settings, their guests provisioned. A file that is not that output creates nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="The JSON or CSV file ('-' reads standard input).")
        parser.add_argument(
            "--owner",
            help=f"The user who becomes Owner of the new subscriptions (default: '{DEFAULT_OWNER}' if it exists, "
            "else nobody: superusers see them).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Say what would be created and refused; change nothing."
        )

    def handle(self, *args, file, owner, dry_run, **options):
        owner_user = self._owner(owner)
        data = self._read(file)
        began = time.perf_counter()
        try:
            entries = fleet_import.parse(data)
        except fleet_import.FleetFileError as error:
            raise CommandError(
                "Not `az vm list -d -o json` output or a Resource Graph CSV export; nothing was imported:\n  "
                + "\n  ".join(str(problem) for problem in error.problems)
            ) from None
        plan = fleet_import.plan(entries, owner_user)
        counts = plan.counts()
        lines = [f"refused  {row.entry.arm_id}: {row.refused}" for row in plan.refused]
        lines += [
            f"create   {row.entry.arm_id}: {row.product_name}, {row.region}, "
            f"{'hotpatch on' if row.enrolled else 'hotpatch off'}, {row.settings.patch_mode}"
            for row in plan.created
        ]
        lines += [f"note     {row.entry.arm_id}: {note}" for row in plan.created for note in row.notes]
        lines.sort(key=lambda line: not line.startswith("refused"))  # refusals first, then what is created
        shown = lines if options["verbosity"] > 1 else lines[:LISTED]
        for line in shown:
            self.stdout.write(line)
        if len(lines) > len(shown):
            self.stdout.write(f"... and {len(lines) - len(shown)} more (--verbosity 2 lists them all)")
        verb = "Would create" if dry_run else "Creating"
        self.stdout.write(
            f"{verb} {counts['created']} of {counts['entries']} VMs ({counts['enrolled']} enrolled in hotpatch, "
            f"{counts['unknown_images']} on images the simulation does not know) in "
            f"{len({r.entry.subscription_id for r in plan.created})} subscriptions "
            f"({counts['new_subscriptions']} new, Owner: {owner_user.get_username() if owner_user else 'nobody'}); "
            f"{counts['refused']} refused."
        )
        if dry_run or not plan.created:
            return
        vms = services.import_fleet(plan, owner_user, clock.now())
        self.stdout.write(f"Imported {len(vms)} VMs in {time.perf_counter() - began:.1f} s.")

    def _owner(self, username):
        """The --owner user, else 'demo' if it exists, else nobody (superusers see the VMs)."""
        User = get_user_model()
        try:
            return User.objects.get(username=username or DEFAULT_OWNER)
        except User.DoesNotExist:
            if username:
                raise CommandError(f"No user '{username}'.") from None
            self.stderr.write(
                f"No --owner and no '{DEFAULT_OWNER}' user: new subscriptions get no owner (superusers see them)."
            )
            return None

    def _read(self, file: str) -> bytes:
        if file == "-":
            import sys

            return sys.stdin.buffer.read()
        try:
            with open(file, "rb") as handle:
                return handle.read()
        except OSError as error:
            raise CommandError(f"Cannot read {file}: {error.strerror}.") from None
