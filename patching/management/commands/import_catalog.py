"""Import catalog files: the release history, the hotpatch calendar or the generic CSV/JSON format."""

from django.core.management.base import BaseCommand, CommandError

from patching.catalog import CatalogError, import_files


class Command(BaseCommand):
    help = (
        "Import update catalog files (Microsoft release history CSV, hotpatch calendar CSV, or the generic "
        "CSV/JSON format of patching/data/FORMAT.md). All files are checked first; one bad row imports nothing."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("files", nargs="+", help="CSV or JSON files")

    def handle(self, *args, files: list[str], **options) -> None:
        try:
            result = import_files(files)
        except CatalogError as e:
            for message in e.messages:
                self.stderr.write(message)
            raise CommandError(f"{len(e.messages)} problem(s) found; nothing was imported.") from None
        self.stdout.write(f"Imported {', '.join(files)}: {result}.")
