"""`manage.py rollups rebuild|fold`: the fleet figures' rollups (patching/rollup.py)."""

from django.core.management.base import BaseCommand

from patching import rollup


class Command(BaseCommand):
    help = "Rebuild the fleet figures' rollups from scratch, or fold their deltas now (PostgreSQL only)."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["rebuild", "fold"])

    def handle(self, *args, action, **options):
        if not rollup.enabled():
            self.stdout.write("No rollups on this database (SQLite): the figures are aggregated directly.")
            return
        if action == "rebuild":
            rollup.rebuild()
            self.stdout.write("Rollups rebuilt.")
        else:
            self.stdout.write("Folded." if rollup.fold() else "Another fold or rebuild is running.")
