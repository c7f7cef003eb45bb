"""The update catalog: the shipped real data, generated months, imports and the management commands."""

import csv
import json
import time
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from patching.calendar import fourth_tuesday, patch_tuesday
from patching.catalog import (
    HOTPATCH_CALENDAR_CSV,
    NAMESPACE,
    RELEASE_HISTORY_CSV,
    CatalogError,
    ensure_catalog,
    generate,
    import_file,
    load_shipped_data,
    normalize_kb,
)
from patching.models import Update, UpdateSource
from tests.factories import CATALOG_UNTIL, load_catalog

WINDOWS = ("baseline", "unplanned_baseline", "hotpatch", "monthly", "oob", "preview")
REAL_SOURCES = (UpdateSource.RELEASE_HISTORY, UpdateSource.HOTPATCH_CALENDAR, UpdateSource.IMPORTED)
TODAY = date(2026, 11, 25)
OS_OF = {"ws2025-azure": "2025", "ws2022-azure": "2022", "ws2022": "2022", "ws2019": "2019"}


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def real_kbs() -> set[str]:
    return {r["kb"] for r in read_csv(RELEASE_HISTORY_CSV) + read_csv(HOTPATCH_CALENDAR_CSV) if r["kb"]}


def one(**filters) -> Update:
    return Update.objects.get(**filters)


def snapshot() -> list[tuple]:
    rows = Update.objects.filter(source=UpdateSource.GENERATED).values_list(
        "patch_id", "product", "kind", "kb", "title", "build", "published_at", "release_month", "baseline__kb"
    )
    return sorted(rows)


# --- KB numbers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kb"),
    [
        ("KB5012345", "5012345"),
        ("kb5012345", "5012345"),
        (" 5012345 ", "5012345"),
        ("Kb890830", "890830"),
        ("12345678", "12345678"),
    ],
)
def test_normalize_kb_accepts(value, kb):
    assert normalize_kb(value) == kb


@pytest.mark.parametrize(
    "value",
    ["KB12", "", "KB", "KB 5012345", "KB-5012345", "5012345a", "123456789", "12345", "５０１２３４５", "KB5012345;"],
)
def test_normalize_kb_rejects(value):
    with pytest.raises(ValueError, match="is not a KB number: use KB5012345 or 5012345"):
        normalize_kb(value)


def test_normalize_kb_message():
    with pytest.raises(ValueError) as e:
        normalize_kb("KB12")
    assert str(e.value) == "'KB12' is not a KB number: use KB5012345 or 5012345"


# --- The shipped real data -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_load_shipped_data_once_and_again():
    history, calendar = read_csv(RELEASE_HISTORY_CSV), read_csv(HOTPATCH_CALENDAR_CSV)
    # Expected from the files themselves: WS2022 rows count twice (ws2022 and ws2022-azure).
    expected = sum(2 if r["product"] == "Windows Server 2022" else 1 for r in history if r["kb"])
    expected += sum(1 for r in calendar if r["kb"] and r["type"] == "Hotpatch")

    first = load_shipped_data()
    assert (first.created, first.updated, first.unchanged) == (expected, 0, 0)
    assert Update.objects.count() == expected
    again = load_shipped_data()
    assert (again.created, again.updated, again.unchanged) == (0, 0, expected)
    assert Update.objects.count() == expected


@pytest.mark.django_db
def test_hotpatch_month_has_a_hotpatch_for_enrolled_vms_and_an_lcu_for_the_others():
    load_shipped_data()
    february = Update.objects.filter(product="ws2022-azure", release_month="2026-02")
    assert {(u.kind, u.kb) for u in february} == {("hotpatch", "5075943"), ("monthly", "5075906"), ("oob", "5082314")}

    hotpatch = one(product="ws2022-azure", kb="5075943")
    assert (hotpatch.kind, hotpatch.classification, hotpatch.reboot_behavior) == (
        "hotpatch",
        "Security",
        "NeverReboots",
    )
    assert hotpatch.build == "20348.4711"
    assert hotpatch.source == UpdateSource.HOTPATCH_CALENDAR
    assert hotpatch.published_at == datetime(2026, 2, 10, 17, 0, tzinfo=UTC)
    assert hotpatch.baseline.kb == "5073457"  # the January 2026 baseline
    assert hotpatch.title == (
        "2026-02 Security Hotpatch Update for Windows Server 2022 Datacenter: Azure Edition for x64-based Systems (KB5075943)"
    )
    assert hotpatch.patch_id == uuid.uuid5(NAMESPACE, "ws2022-azure|hotpatch|5075943|2026-02-10T17:00:00+00:00")

    lcu = one(product="ws2022-azure", kb="5075906")
    assert (lcu.kind, lcu.classification, lcu.reboot_behavior) == ("monthly", "Security", "AlwaysRequiresReboot")
    assert (lcu.build, lcu.source, lcu.baseline) == ("20348.4773", UpdateSource.RELEASE_HISTORY, None)
    # Windows Server 2022 Datacenter gets the same LCU, and no hotpatch.
    assert {(u.kind, u.kb) for u in Update.objects.filter(product="ws2022", release_month="2026-02")} == {
        ("monthly", "5075906"),
        ("oob", "5082314"),
    }


@pytest.mark.django_db
def test_baselines_titles_and_the_unplanned_baseline():
    load_shipped_data()
    january = one(product="ws2022-azure", kb="5073457")
    assert (january.kind, january.classification, january.reboot_behavior) == (
        "baseline",
        "Security",
        "AlwaysRequiresReboot",
    )
    assert january.title == (
        "2026-01 Cumulative Update for Microsoft server operating system version 21H2 for x64-based Systems (KB5073457)"
    )
    assert one(product="ws2022", kb="5073457").kind == "monthly"
    assert one(product="ws2025-azure", kb="5073379").title == (
        "2026-01 Cumulative Update for Windows Server 2025 for x64-based Systems (KB5073379)"
    )
    assert one(product="ws2019", kb="5073723").title == (
        "2026-01 Cumulative Update for Windows Server 2019 for x64-based Systems (KB5073723)"
    )
    # August 2024: a real unplanned baseline on WS2022 Azure Edition; September's hotpatch builds on it.
    august = one(product="ws2022-azure", kb="5041160")
    assert (august.kind, august.build) == ("unplanned_baseline", "20348.2655")
    assert one(product="ws2022", kb="5041160").kind == "monthly"
    assert one(product="ws2022-azure", kb="5042880").baseline == august
    # Every real hotpatch points at the latest baseline before it, except WS2025's first two:
    # its programme started in 2024-11 on the release build, which has no KB.
    for hotpatch in Update.objects.filter(kind="hotpatch"):
        expected = (
            Update.objects.baselines()
            .filter(product=hotpatch.product, published_at__lt=hotpatch.published_at)
            .order_by("-published_at")
            .first()
        )
        assert hotpatch.baseline == expected
    assert sorted(Update.objects.filter(kind="hotpatch", baseline=None).values_list("release_month", flat=True)) == [
        "2024-11",
        "2024-12",
    ]


@pytest.mark.django_db
def test_out_of_band_update_keeps_its_month_label():
    load_shipped_data()
    oob = one(product="ws2022", kb="5082314")
    assert (oob.kind, oob.classification, oob.release_month) == ("oob", "Updates", "2026-02")
    assert oob.published_at == datetime(2026, 3, 2, 17, 0, tzinfo=UTC)
    assert oob.title.startswith("2026-02 Out-of-band Cumulative Update for Microsoft server operating system")


@pytest.mark.django_db
def test_calendar_alone_creates_its_baselines():
    result = import_file(HOTPATCH_CALENDAR_CSV)
    rows = [r for r in read_csv(HOTPATCH_CALENDAR_CSV) if r["kb"]]
    assert result.created == len(rows) == Update.objects.count()
    assert Update.objects.baselines().count() == sum(r["type"] == "Baseline" for r in rows)
    assert set(Update.objects.values_list("source", flat=True)) == {UpdateSource.HOTPATCH_CALENDAR}
    assert one(product="ws2022-azure", kb="5075943").baseline.kb == "5073457"
    # The release history then brings the same baselines: found by patch_id, not duplicated.
    again = import_file(RELEASE_HISTORY_CSV)
    assert again.unchanged == Update.objects.baselines().count()
    assert Update.objects.filter(product="ws2022-azure", kb="5073457").count() == 1


# --- Generated months ----------------------------------------------------------------------------------


@pytest.fixture
def catalog(db):
    ensure_catalog(TODAY)


@pytest.mark.django_db
def test_generated_windows_months_follow_the_calendar(catalog):
    def month(product, label):
        return {(u.kind, u.kb) for u in Update.objects.filter(product=product, release_month=label, kind__in=WINDOWS)}

    # Nothing generated where the real data has the month.
    assert not Update.objects.filter(source=UpdateSource.GENERATED, kind__in=WINDOWS, release_month__lte="2026-05")
    assert Update.objects.filter(source=UpdateSource.GENERATED, kind__in=WINDOWS, release_month="2026-06").exists()
    june, july = month("ws2022-azure", "2026-06"), month("ws2022-azure", "2026-07")
    assert sorted(kind for kind, _ in june) == ["hotpatch", "monthly"]
    assert [kind for kind, _ in july] == ["baseline"]
    assert sorted(kind for kind, _ in month("ws2025-azure", "2026-11")) == ["hotpatch", "monthly"]
    assert [kind for kind, _ in month("ws2025-azure", "2026-10")] == ["baseline"]
    # One LCU per OS and month, shared by the products of that OS.
    assert {kb for kind, kb in july} == {kb for kind, kb in month("ws2022", "2026-07") if kind == "monthly"}
    assert {kb for kind, kb in june if kind == "monthly"} == {
        kb for kind, kb in month("ws2022", "2026-06") if kind == "monthly"
    }
    # Previews only outside the hotpatch programme, on the fourth Tuesday.
    previews = Update.objects.filter(kind="preview")
    assert set(previews.values_list("product", flat=True)) == {"ws2022", "ws2019"}
    for preview in previews:
        assert preview.published_at.date() == fourth_tuesday(*map(int, preview.release_month.split("-")))
        assert (preview.classification, preview.reboot_behavior) == ("Updates", "AlwaysRequiresReboot")
    # The month after today is not generated by ensure_catalog(today).
    assert not Update.objects.filter(release_month="2026-12")


@pytest.mark.django_db
def test_generated_kbs_and_builds_are_plausible(catalog):
    generated = Update.objects.filter(source=UpdateSource.GENERATED)
    real = real_kbs()
    windows = generated.filter(kind__in=WINDOWS).order_by("published_at")
    families = defaultdict(dict)  # (kind family, OS or product) -> {month: kb}
    for u in generated.filter(kind__in=(*WINDOWS, "dotnet")):
        assert len(u.kb) == 7 and u.kb.startswith("5"), u
        assert u.kb not in real, u
        family = "lcu" if u.kind in ("baseline", "monthly") else u.kind
        # WS2022 and its Azure Edition share LCUs, previews and .NET updates, not hotpatches.
        os = u.product if u.kind == "hotpatch" else OS_OF[u.product]
        assert families[(family, os)].setdefault(u.release_month, u.kb) == u.kb  # one KB per (month, family)
    for months in families.values():
        kbs = [int(kb) for _, kb in sorted(months.items())]
        assert kbs == sorted(kbs)  # rising with time
    all_kbs = [kb for months in families.values() for kb in months.values()]
    assert len(all_kbs) == len(set(all_kbs))  # families never share a KB

    # Builds continue upward from the last real ones (WS2022 2026-05: 20348.5139).
    lcus = [int(u.build.split(".")[1]) for u in windows.filter(product="ws2022", kind="monthly")]
    assert lcus[0] > 5139 and lcus == sorted(set(lcus))
    for hotpatch in windows.filter(kind="hotpatch"):
        lcu = windows.get(product=hotpatch.product, release_month=hotpatch.release_month, kind="monthly")
        revision = int(hotpatch.build.split(".")[1])
        assert int(hotpatch.baseline.build.split(".")[1]) < revision < int(lcu.build.split(".")[1])
        assert hotpatch.title == (
            f"{hotpatch.release_month} Security Hotpatch Update for {hotpatch.get_product_display()} "
            f"for x64-based Systems (KB{hotpatch.kb})"
        )
    # The first generated hotpatch builds on the real April baseline, later ones on generated baselines.
    assert one(product="ws2022-azure", release_month="2026-06", kind="hotpatch").baseline.kb == "5082142"
    august = one(product="ws2022-azure", release_month="2026-08", kind="hotpatch")
    assert august.baseline == one(product="ws2022-azure", release_month="2026-07", kind="baseline")


@pytest.mark.django_db
def test_dotnet_msrt_and_definitions(catalog):
    dotnet = Update.objects.filter(kind="dotnet")
    # Every Patch Tuesday from 2023-01 (WS2025 from its release, 2024-11) to today's month.
    assert dotnet.filter(product="ws2019").count() == 47
    assert dotnet.filter(product="ws2025-azure").count() == 25
    for u in dotnet.filter(product="ws2022-azure"):
        assert u.published_at.date() == patch_tuesday(*map(int, u.release_month.split("-")))
        assert (u.classification, u.reboot_behavior) == ("Security", "AlwaysRequiresReboot")
    assert one(product="ws2022", kind="dotnet", release_month="2026-11").title.startswith(
        "2026-11 Cumulative Update for .NET Framework 3.5, 4.8 and 4.8.1 for Microsoft server operating system version 21H2 for x64 (KB"
    )

    msrt = list(Update.objects.filter(kind="msrt", product="ws2022").order_by("published_at"))
    assert len(msrt) == 47 and {u.kb for u in msrt} == {"890830"}
    assert {(u.classification, u.reboot_behavior) for u in msrt} == {("UpdateRollUp", "CanRequestReboot")}
    versions = [int(u.title.split(" - v5.")[1].split(" ")[0]) for u in msrt]
    assert versions == list(range(versions[0], versions[0] + 47))
    assert msrt[-1].title == "Windows Malicious Software Removal Tool x64 - v5.154 (KB890830)"

    definitions = Update.objects.filter(kind="definition", product="ws2025-azure").order_by("published_at")
    days = [u.published_at.date() for u in definitions]
    assert days and days[0] > TODAY - timedelta(days=60) and days[-1] <= TODAY
    assert {d.weekday() for d in days} == {0, 2, 4}
    assert len(days) == 26
    assert {(u.kb, u.classification, u.reboot_behavior) for u in definitions} == {
        ("2267602", "Definition", "NeverReboots")
    }
    versions = [tuple(map(int, u.title.split("(Version ")[1].rstrip(")").split("."))) for u in definitions]
    assert versions == sorted(set(versions))


@pytest.mark.django_db
def test_generate_is_idempotent_and_deterministic(catalog):
    before = snapshot()
    again = generate(date(2023, 1, 1), TODAY)
    assert (again.created, again.updated, again.removed) == (0, 0, 0)
    assert again.unchanged == len(before)
    # From scratch: the very same rows (ids, KBs, titles, builds, dates, baselines).
    Update.objects.filter(source=UpdateSource.GENERATED, kind="hotpatch").delete()
    Update.objects.filter(source=UpdateSource.GENERATED).delete()
    assert generate(date(2023, 1, 1), TODAY).created == len(before)
    assert snapshot() == before


@pytest.mark.django_db
def test_ensure_catalog_is_fast_when_done(catalog, django_assert_max_num_queries):
    count = Update.objects.count()
    started = time.monotonic()
    with django_assert_max_num_queries(8):
        ensure_catalog(TODAY)
    assert time.monotonic() - started < 2
    assert Update.objects.count() == count


@pytest.mark.django_db
def test_generating_never_overwrites_a_real_row(catalog):
    generated = one(product="ws2019", kind="dotnet", release_month="2026-08")
    Update.objects.filter(pk=generated.pk).update(source=UpdateSource.IMPORTED, title="Edited by an admin")
    result = generate(date(2023, 1, 1), TODAY)
    assert (result.created, result.updated) == (0, 0)
    row = Update.objects.get(pk=generated.pk)
    assert (row.source, row.title) == (UpdateSource.IMPORTED, "Edited by an admin")


@pytest.mark.django_db
def test_real_data_for_a_generated_month_replaces_it(catalog, tmp_path):
    june_hotpatch = one(product="ws2022-azure", release_month="2026-06", kind="hotpatch")
    file = tmp_path / "june.csv"
    file.write_text(
        "product,kb,title,kind,classification,reboot_behavior,published,release_month,build\n"
        "ws2022,KB5099990,2026-06 Cumulative Update (KB5099990),monthly,Security,AlwaysRequiresReboot,2026-06-09,2026-06,20348.5300\n"
        "ws2022-azure,5099990,2026-06 Cumulative Update (KB5099990),monthly,Security,AlwaysRequiresReboot,2026-06-09,2026-06,20348.5300\n"
        "ws2022-azure,5099991,2026-06 Security Hotpatch (KB5099991),hotpatch,Security,NeverReboots,2026-06-09,2026-06,20348.5250\n"
    )
    import_file(file)
    result = generate(date(2023, 1, 1), TODAY)
    assert result.removed == 4  # ws2022: LCU and preview; ws2022-azure: LCU and hotpatch
    june = Update.objects.filter(product__in=["ws2022", "ws2022-azure"], release_month="2026-06", kind__in=WINDOWS)
    assert set(june.values_list("kb", "source")) == {("5099990", "imported"), ("5099991", "imported")}
    assert not Update.objects.filter(pk=june_hotpatch.pk).exists()
    # Later generated builds continue above the imported one.
    july = one(product="ws2022", release_month="2026-07", kind="monthly")
    assert int(july.build.split(".")[1]) > 5300


def full_snapshot() -> list[tuple]:
    """Every catalog row, every field but the database ids (baselines by patch_id)."""
    names = [f.attname for f in Update._meta.concrete_fields if f.attname not in ("id", "baseline_id")]
    return sorted(Update.objects.values_list(*names, "baseline__patch_id"))


def empty_the_catalog() -> None:
    Update.objects.exclude(kind__in=("baseline", "unplanned_baseline")).delete()  # hotpatches first (PROTECT)
    Update.objects.all().delete()


@pytest.mark.django_db
def test_the_test_suites_catalog_copy_is_what_ensure_catalog_builds():
    """tests.factories.load_catalog() builds the catalog once per run and copies those rows in afterwards."""
    load_catalog()
    empty_the_catalog()
    load_catalog()  # now surely the copy
    copied = full_snapshot()
    assert len(copied) > 700
    # The copy leaves the id sequence above its rows: a new row gets a fresh id.
    extra = Update.objects.create(
        product="ws2019",
        kb="5099999",
        title="t",
        kind="monthly",
        classification="Security",
        reboot_behavior="AlwaysRequiresReboot",
        published_at=datetime(2027, 3, 9, 17, tzinfo=UTC),
        release_month="2027-03",
    )
    assert extra.pk > max(Update.objects.exclude(pk=extra.pk).values_list("pk", flat=True))
    extra.delete()
    empty_the_catalog()
    ensure_catalog(CATALOG_UNTIL)
    assert full_snapshot() == copied


# --- Importing files ----------------------------------------------------------------------------------

GENERIC_CSV = """\
product,kb,title,kind,classification,reboot_behavior,published,release_month,build,baseline_kb
ws2022-azure,KB5099001,2027-01 Cumulative Update for Microsoft server operating system version 21H2 for x64-based Systems (KB5099001),baseline,Security,AlwaysRequiresReboot,2027-01-12,2027-01,20348.6100,
ws2022-azure,5099002,2027-02 Security Hotpatch Update for Windows Server 2022 Datacenter: Azure Edition for x64-based Systems (KB5099002),hotpatch,Security,NeverReboots,2027-02-09,,20348.6150,5099001
"""


@pytest.mark.django_db
def test_import_generic_csv(tmp_path):
    load_shipped_data()
    file = tmp_path / "updates.csv"
    file.write_text(GENERIC_CSV)
    assert import_file(file).created == 2
    hotpatch = one(kb="5099002")
    assert (hotpatch.kind, hotpatch.source, hotpatch.release_month) == ("hotpatch", UpdateSource.IMPORTED, "2027-02")
    assert hotpatch.published_at == datetime(2027, 2, 9, 17, 0, tzinfo=UTC)
    assert hotpatch.baseline == one(kb="5099001")
    again = import_file(file)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 2)


@pytest.mark.django_db
def test_import_generic_json(tmp_path):
    file = tmp_path / "updates.json"
    rows = [
        {
            "product": "ws2019",
            "kb": 5099003,
            "title": "2027-02 Cumulative Update for Windows Server 2019 for x64-based Systems (KB5099003)",
            "kind": "monthly",
            "classification": "Security Updates",
            "reboot_behavior": "alwaysrequiresreboot",
            "published": "2027-02-09T18:30:00+01:00",
            "build": None,
        }
    ]
    file.write_text(json.dumps(rows))
    assert import_file(file).created == 1
    row = one(kb="5099003")
    assert (row.classification, row.reboot_behavior, row.build) == ("Security", "AlwaysRequiresReboot", "")
    assert row.published_at == datetime(2027, 2, 9, 17, 30, tzinfo=UTC)


@pytest.mark.django_db
def test_a_bad_row_refuses_the_whole_file(tmp_path):
    load_shipped_data()
    count = Update.objects.count()
    file = tmp_path / "bad.csv"
    lines = GENERIC_CSV.splitlines()
    lines.insert(2, lines[1].replace("KB5099001", "KB12", 1))  # line 3 of the file
    file.write_text("\n".join(lines) + "\n")
    with pytest.raises(CatalogError) as e:
        import_file(file)
    assert e.value.messages == [f"{file}, line 3, field 'kb': 'KB12' is not a KB number: use KB5012345 or 5012345"]
    assert Update.objects.count() == count  # not even the good lines 2 and 4


@pytest.mark.django_db
def test_every_problem_is_reported_with_line_and_field(tmp_path):
    file = tmp_path / "bad.csv"
    file.write_text(
        "product,kb,title,kind,classification,reboot_behavior,published\n"
        "ws2016,5099001,A title,monthly,Security,AlwaysRequiresReboot,2027-01-12\n"
        "ws2019,5099002,A title,patch,Important,Sometimes,2027-02-30\n"
        "ws2019,5099003,,monthly,Security,NeverReboots,12/01/2027\n"
        "ws2022-azure,5099004,A title,hotpatch,Security,NeverReboots,2027-02-09,extra\n"
        "ws2019,5099005,A title,hotpatch,Security,NeverReboots,2027-02-09\n"
    )
    with pytest.raises(CatalogError) as e:
        import_file(file)
    messages = e.value.messages
    assert len(messages) == 9, messages
    expected = [
        "line 2, field 'product': 'ws2016' is not a product",
        "line 3, field 'kind': 'patch' is not a known kind",
        "line 3, field 'classification': 'Important' is not a classification",
        "line 3, field 'reboot_behavior': 'Sometimes' is not a known reboot_behavior",
        "line 3, field 'published': '2027-02-30' is not a real date",
        "line 4, field 'title': is empty",
        "line 4, field 'published': '12/01/2027' is not a date",
        "line 5: 8 fields, the header has 7",
        "line 6, field 'kind': ws2019 is not in the hotpatch programme",
    ]
    for message, start in zip(messages, expected, strict=True):
        assert message.startswith(f"{file}, {start}"), message
    assert not Update.objects.exists()


@pytest.mark.django_db
def test_json_and_header_problems(tmp_path):
    file = tmp_path / "bad.json"
    file.write_text(json.dumps([{"product": "ws2019"}, {"product": "ws2019", "kb": "x", "colour": "red"}]))
    with pytest.raises(CatalogError) as e:
        import_file(file)
    messages = e.value.messages
    assert messages[0] == f"{file}, row 1, field 'kb': is missing"  # in file order
    assert any(m.startswith(f"{file}, row 2, field 'colour': unknown field") for m in messages)
    assert f"{file}, row 2, field 'kb': 'x' is not a KB number: use KB5012345 or 5012345" in e.value.messages

    other = tmp_path / "other.csv"
    other.write_text("name,kb\nfoo,5012345\n")
    with pytest.raises(CatalogError, match=r"other.csv, line 1: unknown header 'name,kb'"):
        import_file(other)


@pytest.mark.django_db
def test_unknown_baseline_kb_is_refused(tmp_path):
    file = tmp_path / "hotpatch.csv"
    file.write_text(GENERIC_CSV.splitlines()[0] + "\n" + GENERIC_CSV.splitlines()[2] + "\n")
    with pytest.raises(CatalogError) as e:
        import_file(file)
    assert e.value.messages == [
        f"{file}, line 2, field 'baseline_kb': no baseline KB5099001 of ws2022-azure published before 2027-02-09, "
        "in the file or in the catalog"
    ]


@pytest.mark.django_db
def test_shipped_formats_are_checked_too(tmp_path):
    file = tmp_path / "history.csv"
    file.write_text(
        "product,os_build,update_type,release_kind,availability_date,build,kb\n"
        "Windows Server 2022,20348,2026-06 B,B,2026-06-09,20348.5200,5099100\n"
        "Windows Server 2016,14393,2026-06 B,B,2026-06-09,14393.9000,5099101\n"
        "Windows Server 2019,17763,2026-06 B,B,2026-06-09,20348.9000,KB5\n"
    )
    with pytest.raises(CatalogError) as e:
        import_file(file)
    assert [m.split(": ")[0] for m in e.value.messages] == [
        f"{file}, line 3, field 'product'",
        f"{file}, line 4, field 'build'",
        f"{file}, line 4, field 'kb'",
    ]
    assert not Update.objects.exists()


# --- Management commands ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_import_catalog_command(tmp_path):
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text(GENERIC_CSV)
    bad.write_text(GENERIC_CSV.replace("KB5099001", "KB12", 1))
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match="nothing was imported"):
        call_command("import_catalog", str(good), str(bad), stdout=out, stderr=err)
    assert f"{bad}, line 2, field 'kb'" in err.getvalue()
    assert not Update.objects.exists()
    call_command("import_catalog", str(RELEASE_HISTORY_CSV), str(HOTPATCH_CALENDAR_CSV), str(good), stdout=out)
    assert "218 created, 0 updated, 0 unchanged" in out.getvalue()


@pytest.mark.django_db
def test_generate_catalog_command():
    out = StringIO()
    call_command("generate_catalog", "--start", "2026-01", "--end", "2026-12", stdout=out)
    call_command("generate_catalog", "--start", "2026-01", "--end", "2026-12", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Shipped release data: 216 created")
    assert lines[2] == "Shipped release data: 0 created, 0 updated, 216 unchanged."
    assert lines[3].startswith("Generated 2026-01 to 2026-12: 0 created, 0 updated,")
    assert Update.objects.filter(release_month="2026-12", kind="hotpatch").count() == 2
    with pytest.raises(CommandError, match="is not a month"):
        call_command("generate_catalog", "--end", "2026-13")
