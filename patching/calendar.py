"""The hotpatch release calendar (SPEC §3.2): Patch Tuesdays and what each month brings per product.

The dates are pure arithmetic. A month's kind comes from the catalog (the Update rows: the real
hotpatch calendar, imports, generated months); the Jan/Apr/Jul/Oct rule is only the forecast for
months the catalog has no rows for yet.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time

from django.db import models
from django.utils import timezone

from vms.images import PRODUCTS

from .models import Update, UpdateKind

# Microsoft publishes at 10:00 Pacific; 17:00 UTC is that time in winter and close enough in summer.
RELEASE_TIME = time(17, 0, tzinfo=UTC)
PLANNED_BASELINE_MONTHS = (1, 4, 7, 10)
TUESDAY = 1  # date.weekday()


def _nth_tuesday(year: int, month: int, n: int) -> date:
    first = date(year, month, 1)
    first_tuesday = 1 + (TUESDAY - first.weekday()) % 7
    return date(year, month, first_tuesday + 7 * (n - 1))


def patch_tuesday(year: int, month: int) -> date:
    """The second Tuesday of the month, when the security updates ship."""
    return _nth_tuesday(year, month, 2)


def fourth_tuesday(year: int, month: int) -> date:
    """The fourth Tuesday of the month, when the optional non-security preview ships."""
    return _nth_tuesday(year, month, 4)


def release_moment(day: date) -> datetime:
    """The aware datetime an update released on `day` is published at."""
    return datetime.combine(day, RELEASE_TIME)


def month_label(year: int, month: int) -> str:
    """The catalog's release_month label, e.g. "2026-02"."""
    return f"{year:04d}-{month:02d}"


class MonthKind(models.TextChoices):
    BASELINE = "baseline", "Baseline"
    HOTPATCH = "hotpatch", "Hotpatch"
    UNPLANNED_BASELINE = "unplanned_baseline", "Unplanned baseline"
    MONTHLY = "monthly", "Monthly cumulative update"


# For a product outside the hotpatch programme every monthly LCU is a full, rebooting update.
REBOOTING_MONTHS = (MonthKind.BASELINE, MonthKind.UNPLANNED_BASELINE, MonthKind.MONTHLY)


def forecast_kind(product_code: str, month: int) -> MonthKind:
    """The planned kind of a month with no catalog rows: baselines in Jan/Apr/Jul/Oct, hotpatches otherwise."""
    if not PRODUCTS[product_code].has_hotpatch:
        return MonthKind.MONTHLY
    return MonthKind.BASELINE if month in PLANNED_BASELINE_MONTHS else MonthKind.HOTPATCH


@dataclass(frozen=True)
class CalendarMonth:
    year: int
    month: int
    patch_tuesday: date
    kind: MonthKind
    source: str  # "catalog" or "forecast"
    # When the month's update was (catalog) or is expected to be (forecast) published.
    published_at: datetime
    kb: str | None = None
    build: str | None = None

    @property
    def label(self) -> str:
        return month_label(self.year, self.month)

    @property
    def is_baseline(self) -> bool:
        return self.kind in (MonthKind.BASELINE, MonthKind.UNPLANNED_BASELINE)

    @property
    def is_hotpatch(self) -> bool:
        return self.kind == MonthKind.HOTPATCH

    @property
    def is_unplanned_baseline(self) -> bool:
        return self.kind == MonthKind.UNPLANNED_BASELINE

    @property
    def is_forecast(self) -> bool:
        return self.source == "forecast"

    @property
    def reboots(self) -> bool:
        return self.kind in REBOOTING_MONTHS


def _months(product_code: str, first_year: int, last_year: int) -> list[CalendarMonth]:
    """Every month of the years [first_year, last_year], from the catalog where it has rows (one query)."""
    product = PRODUCTS[product_code]
    if product.has_hotpatch:
        kinds = [UpdateKind.BASELINE, UpdateKind.UNPLANNED_BASELINE, UpdateKind.HOTPATCH]
    else:
        kinds = [UpdateKind.MONTHLY]
    rows = (
        Update.objects.filter(
            product=product_code,
            kind__in=kinds,
            release_month__gte=month_label(first_year, 1),
            release_month__lte=month_label(last_year, 12),
        )
        .order_by("published_at", "id")
        .values("release_month", "kind", "kb", "build", "published_at")
    )
    # The first row of each kind per month; a baseline wins over a hotpatch in the same month.
    found: dict[str, dict] = {}
    for row in rows:
        current = found.get(row["release_month"])
        if current is None or (current["kind"] == UpdateKind.HOTPATCH and row["kind"] != UpdateKind.HOTPATCH):
            found[row["release_month"]] = row

    months = []
    for year in range(first_year, last_year + 1):
        for month in range(1, 13):
            tuesday = patch_tuesday(year, month)
            row = found.get(month_label(year, month))
            if row is None:
                kind = forecast_kind(product_code, month)
                months.append(CalendarMonth(year, month, tuesday, kind, "forecast", release_moment(tuesday)))
            else:
                kind = MonthKind(row["kind"])
                months.append(
                    CalendarMonth(
                        year, month, tuesday, kind, "catalog", row["published_at"], row["kb"], row["build"] or None
                    )
                )
    return months


def month_kinds(product_code: str, year: int) -> list[CalendarMonth]:
    """The 12 months of `year` for a product: kind, KB and build from the catalog, else the forecast."""
    return _months(product_code, year, year)


def next_baseline_date(product_code: str, after: datetime) -> date:
    """The publication date of the first baseline after `after` (catalog or forecast).

    For a product outside the hotpatch programme every monthly LCU counts (it reboots like a baseline).
    """
    if timezone.is_naive(after):
        after = timezone.make_aware(after, UTC)
    if PRODUCTS[product_code].has_hotpatch:
        wanted = (MonthKind.BASELINE, MonthKind.UNPLANNED_BASELINE)
    else:
        wanted = REBOOTING_MONTHS
    year = after.year
    # The forecast has a baseline every quarter, so this ends within the first two years unless the
    # catalog lists hotpatches only for years on end.
    while True:
        for month in _months(product_code, year, year + 1):
            if month.kind in wanted and month.published_at > after:
                return month.published_at.date()
        year += 2


def latest_baseline(product_code: str, now: datetime) -> Update | None:
    """The newest baseline (planned or unplanned) of the product published by `now`, if any."""
    return (
        Update.objects.filter(product=product_code, kind__in=Update.BASELINE_KINDS, published_at__lte=now)
        .order_by("-published_at", "-id")
        .first()
    )
