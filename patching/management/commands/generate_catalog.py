"""Load the shipped release data, then generate the catalog months it does not cover."""

import calendar
import re
from datetime import date

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from patching.catalog import CATALOG_START, generate, load_shipped_data

MONTH = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")


def parse_month(value: str) -> tuple[int, int]:
    match = MONTH.fullmatch(value)
    if not match:
        raise CommandError(f"{value!r} is not a month: use YYYY-MM")
    return int(match[1]), int(match[2])


class Command(BaseCommand):
    help = "Load the shipped release data and generate catalog entries for the months it does not cover."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--start", default=f"{CATALOG_START:%Y-%m}", help="first month, YYYY-MM (default %(default)s)"
        )
        parser.add_argument("--end", help="last month, YYYY-MM (default: the month after today)")

    def handle(self, *args, start: str, end: str | None, **options) -> None:
        first = date(*parse_month(start), 1)
        if end:
            year, month = parse_month(end)
        else:
            today = timezone.localdate()
            year, month = (today.year + 1, 1) if today.month == 12 else (today.year, today.month + 1)
        last = date(year, month, calendar.monthrange(year, month)[1])
        if first > last:
            raise CommandError(f"--start {start} is after the end month {last:%Y-%m}")
        self.stdout.write(f"Shipped release data: {load_shipped_data()}.")
        self.stdout.write(f"Generated {first:%Y-%m} to {last:%Y-%m}: {generate(first, last)}.")
