"""The release calendar: Patch Tuesdays, and each month's kind per product against the real hotpatch calendar."""

import csv
from datetime import UTC, date, datetime

import pytest

from patching.calendar import (
    MonthKind,
    fourth_tuesday,
    latest_baseline,
    month_kinds,
    next_baseline_date,
    patch_tuesday,
    release_moment,
)
from patching.catalog import HOTPATCH_CALENDAR_CSV, generate, load_shipped_data

# Second Tuesdays, checked by hand against a printed calendar (GNU `date +%a` for days 8-14) and,
# where they exist, the availability dates of Microsoft's B releases in patching/data.
PATCH_TUESDAYS = {
    2024: [9, 13, 12, 9, 14, 11, 9, 13, 10, 8, 12, 10],
    2025: [14, 11, 11, 8, 13, 10, 8, 12, 9, 14, 11, 9],
    2026: [13, 10, 10, 14, 12, 9, 14, 11, 8, 13, 10, 8],
}
JANUARY_PATCH_TUESDAYS = {
    2020: 14,
    2021: 12,
    2022: 11,
    2023: 10,
    2024: 9,
    2025: 14,
    2026: 13,
    2027: 12,
    2028: 11,
    2029: 9,
    2030: 8,  # 2030-01-01 is a Tuesday: the second one is the 8th
}

CALENDAR_PRODUCTS = {
    "Windows Server 2025 Datacenter: Azure Edition": "ws2025-azure",
    "Windows Server 2022 Datacenter: Azure Edition": "ws2022-azure",
}


def calendar_csv() -> list[dict]:
    with HOTPATCH_CALENDAR_CSV.open(newline="") as f:
        return list(csv.DictReader(f))


def csv_kind(row: dict) -> MonthKind:
    if row["type"] == "Hotpatch":
        return MonthKind.HOTPATCH
    return MonthKind.UNPLANNED_BASELINE if row["unplanned_baseline"] == "true" else MonthKind.BASELINE


def test_patch_tuesday_every_month_2024_to_2026():
    for year, days in PATCH_TUESDAYS.items():
        for month, day in enumerate(days, start=1):
            assert patch_tuesday(year, month) == date(year, month, day)


def test_patch_tuesday_january_2020_to_2030():
    for year, day in JANUARY_PATCH_TUESDAYS.items():
        assert patch_tuesday(year, 1) == date(year, 1, day)


def test_fourth_tuesday():
    assert fourth_tuesday(2026, 1) == date(2026, 1, 27)
    assert fourth_tuesday(2026, 2) == date(2026, 2, 24)
    assert fourth_tuesday(2026, 6) == date(2026, 6, 23)
    assert fourth_tuesday(2026, 11) == date(2026, 11, 24)
    assert fourth_tuesday(2026, 12) == date(2026, 12, 22)
    assert fourth_tuesday(2030, 1) == date(2030, 1, 22)


def test_release_moment_is_1700_utc():
    assert release_moment(date(2026, 2, 10)) == datetime(2026, 2, 10, 17, 0, tzinfo=UTC)


@pytest.mark.django_db
def test_every_month_of_the_real_hotpatch_calendar():
    load_shipped_data()
    rows = calendar_csv()
    assert len(rows) == 62
    by_product_year = {}
    for row in rows:
        code = CALENDAR_PRODUCTS[row["product"]]
        key = (code, int(row["calendar_year"]))
        if key not in by_product_year:
            by_product_year[key] = {m.month: m for m in month_kinds(*key)}
        month = by_product_year[key][int(row["month"])]
        assert month.kind == csv_kind(row), row
        assert month.patch_tuesday == patch_tuesday(month.year, month.month)
        if row["kb"]:
            assert month.source == "catalog", row
            assert (month.kb, month.build) == (row["kb"], row["build"]), row
            assert month.published_at == release_moment(date.fromisoformat(row["availability_date"]))
        else:
            # 2026-06 onward: not published yet, so a forecast (which agrees with the planned calendar).
            assert month.source == "forecast", row
            assert month.kb is None

    # Once generated, the planned months come from the catalog, still with the calendar's kinds.
    generate(date(2026, 6, 1), date(2026, 12, 31))
    for code in CALENDAR_PRODUCTS.values():
        generated = month_kinds(code, 2026)[5:]
        planned = [csv_kind(r) for r in rows if CALENDAR_PRODUCTS[r["product"]] == code and not r["kb"]]
        assert [m.kind for m in generated] == planned
        assert all(m.source == "catalog" and m.kb and m.build for m in generated)


@pytest.mark.django_db
def test_august_2024_unplanned_baseline_on_ws2022_only():
    load_shipped_data()
    august = month_kinds("ws2022-azure", 2024)[7]
    assert (august.kind, august.source, august.kb, august.build) == (
        MonthKind.UNPLANNED_BASELINE,
        "catalog",
        "5041160",
        "20348.2655",
    )
    assert august.is_baseline and august.reboots
    # WS2025 Azure Edition did not exist yet in August 2024: a forecast hotpatch month; its real calendar starts 2024-11.
    ws2025 = month_kinds("ws2025-azure", 2024)
    assert (ws2025[7].kind, ws2025[7].source) == (MonthKind.HOTPATCH, "forecast")
    assert (ws2025[10].kind, ws2025[10].source, ws2025[10].kb) == (MonthKind.HOTPATCH, "catalog", "5046696")


@pytest.mark.django_db
def test_month_kinds_is_one_query(django_assert_num_queries):
    load_shipped_data()
    with django_assert_num_queries(1):
        months = month_kinds("ws2022-azure", 2025)
    assert [m.month for m in months] == list(range(1, 13))


@pytest.mark.django_db
def test_2027_forecast_follows_january_april_july_october():
    load_shipped_data()
    months = month_kinds("ws2022-azure", 2027)
    assert all(m.source == "forecast" for m in months)
    baselines = [m.month for m in months if m.kind == MonthKind.BASELINE]
    hotpatches = [m.month for m in months if m.kind == MonthKind.HOTPATCH]
    assert baselines == [1, 4, 7, 10]
    assert hotpatches == [2, 3, 5, 6, 8, 9, 11, 12]
    assert [m.patch_tuesday.day for m in months][:1] == [12]
    # Outside the hotpatch programme every month is a rebooting LCU.
    assert {m.kind for m in month_kinds("ws2019", 2027)} == {MonthKind.MONTHLY}


@pytest.mark.django_db
def test_generated_2027_months_follow_the_rule_from_the_catalog():
    load_shipped_data()
    generate(date(2027, 1, 1), date(2027, 12, 31))
    for code in ("ws2022-azure", "ws2025-azure"):
        months = month_kinds(code, 2027)
        assert all(m.source == "catalog" and m.kb for m in months)
        assert [m.month for m in months if m.kind == MonthKind.BASELINE] == [1, 4, 7, 10]
    ws2019 = month_kinds("ws2019", 2027)
    assert all(m.kind == MonthKind.MONTHLY and m.source == "catalog" for m in ws2019)


@pytest.mark.django_db
def test_next_baseline_date_uses_the_catalog_then_the_forecast():
    load_shipped_data()
    # The catalog's unplanned baseline comes before the planned October one.
    assert next_baseline_date("ws2022-azure", datetime(2024, 7, 20, tzinfo=UTC)) == date(2024, 8, 13)
    # Nothing in the catalog for WS2025 before 2024-11: the forecast's October baseline.
    assert next_baseline_date("ws2025-azure", datetime(2024, 7, 20, tzinfo=UTC)) == date(2024, 10, 8)
    # On baseline day: before 17:00 UTC it is still to come, after it the next one is July's.
    assert next_baseline_date("ws2022-azure", datetime(2026, 4, 14, 16, 0, tzinfo=UTC)) == date(2026, 4, 14)
    assert next_baseline_date("ws2022-azure", datetime(2026, 4, 14, 18, 0, tzinfo=UTC)) == date(2026, 7, 14)
    # Across the year end.
    assert next_baseline_date("ws2025-azure", datetime(2026, 11, 25, tzinfo=UTC)) == date(2027, 1, 12)
    # A product outside the programme reboots for every monthly LCU.
    assert next_baseline_date("ws2019", datetime(2026, 5, 20, tzinfo=UTC)) == date(2026, 6, 9)


@pytest.mark.django_db
def test_latest_baseline():
    load_shipped_data()
    assert latest_baseline("ws2022-azure", datetime(2024, 9, 1, tzinfo=UTC)).kb == "5041160"
    assert latest_baseline("ws2022-azure", datetime(2024, 8, 13, 16, 0, tzinfo=UTC)).kb == "5040437"
    assert latest_baseline("ws2025-azure", datetime(2026, 11, 25, tzinfo=UTC)).kb == "5082063"
    # The first WS2025 baseline is January 2025; WS2019 has none at all.
    assert latest_baseline("ws2025-azure", datetime(2024, 12, 31, tzinfo=UTC)) is None
    assert latest_baseline("ws2019", datetime(2026, 11, 25, tzinfo=UTC)) is None
