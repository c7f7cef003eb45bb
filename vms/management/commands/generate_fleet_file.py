"""`manage.py generate_fleet_file`: a realistic `az vm list -d -o json` file (or Resource Graph CSV) to import."""

import json
import sys

from django.core.management.base import BaseCommand, CommandError

from vms import fleetfile


class Command(BaseCommand):
    help = (
        "Write a generated fleet as `az vm list -d -o json` prints it (or, with --csv, as a Resource Graph CSV "
        "export), for `manage.py import_fleet` and the /sandbox/import/ page."
    )

    def add_arguments(self, parser):
        parser.add_argument("--vms", type=int, default=100, help="How many VMs (default 100).")
        parser.add_argument("--seed", type=int, default=7, help="Seed of the random mix (default 7).")
        parser.add_argument("--out", default="-", help="File to write (default: standard output).")
        parser.add_argument("--csv", action="store_true", help="A Resource Graph CSV export instead of JSON.")

    def handle(self, *args, vms, seed, out, csv, **options):
        if not 1 <= vms <= 1_000_000:
            raise CommandError("--vms must be between 1 and 1000000.")
        documents = fleetfile.generate(vms, seed=seed)
        text = fleetfile.to_resource_graph_csv(documents) if csv else json.dumps(documents, indent=2)
        if out == "-":
            sys.stdout.write(text)
        else:
            with open(out, "w", encoding="utf-8", newline="") as file:
                file.write(text)
            self.stderr.write(f"Wrote {vms} VMs to {out}.")
