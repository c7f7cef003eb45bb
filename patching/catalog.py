"""The update catalog (SPEC §3.2): real release data, imported files and generated months.

One `Update` row per (product, update). Every row's `patch_id` is derived from
(product, kind, KB, published_at), so loading the same data twice finds the same rows (upsert by
patch_id) and generating the same range twice produces identical rows.

Where the rows come from, real data first:

- `patching/data/windows-server-release-history.csv` (Microsoft's release history): every release
  with a KB becomes a cumulative update of each product with that release-history name. For the
  hotpatch products a B release in a month the hotpatch calendar marks as Baseline is that
  baseline (planned or unplanned); their other B releases are the `monthly` LCU that VMs not
  enrolled in hotpatch get. OOB releases are `oob`. The "A" release build has no KB and is skipped.
- `patching/data/hotpatch-calendar.csv`: hotpatch rows (with KB) become `hotpatch` updates built on
  the product's latest baseline before them; baseline rows are the release history's B release
  of that month (created from the calendar only when the release history lacks it). Rows without
  a KB (months not published yet) only say which months are planned as baselines.
- `generate()` fills what the real data does not cover, deterministically: the Windows security
  updates (and previews of products outside the hotpatch programme) for months after a product's
  last real month, .NET and MSRT every month, and Defender definitions for the last 60 days of
  the range. It never overwrites a real row.

Import formats (`import_file`; also described in patching/data/FORMAT.md). The format is detected
from the CSV header (any column order); a `.json` file (or one starting with "[") is the generic
format as a JSON list of objects with the same keys.

- Release history CSV: product,os_build,update_type,release_kind,availability_date,build,kb
- Hotpatch calendar CSV: product,calendar_year,month,update_type,type,unplanned_baseline,
  availability_date,build,kb
- Generic catalog CSV/JSON: product,kb,title,kind,classification,reboot_behavior,published,
  release_month,build,baseline_kb
    product          product code (ws2022-azure, ...) or its full name
    kb               KB5012345 or 5012345 (6 to 8 digits)
    title            free text, at most 250 characters
    kind             baseline, unplanned_baseline, hotpatch, monthly, oob, preview, dotnet, msrt, definition
    classification   Critical, Security, UpdateRollUp, FeaturePack, ServicePack, Definition, Tools, Updates
    reboot_behavior  NeverReboots, AlwaysRequiresReboot, CanRequestReboot
    published        YYYY-MM-DD (published 17:00 UTC) or an ISO 8601 datetime (no offset means UTC)
    release_month    optional, YYYY-MM; defaults to the month of `published`
    build            optional, e.g. 20348.4711
    baseline_kb      optional, hotpatch rows only: the KB of the baseline it builds on; empty means
                     the product's latest baseline published before the hotpatch

A file is all or nothing: every row is checked first and one bad row refuses the whole import with a
`CatalogError` listing every problem as "<file>, line <n>, field '<name>': <what is wrong>".
"""

import csv
import io
import json
import random
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from django.db import transaction

from vms.images import PRODUCTS, Product

from .calendar import PLANNED_BASELINE_MONTHS, fourth_tuesday, month_label, patch_tuesday, release_moment
from .models import Classification, RebootBehavior, Update, UpdateKind, UpdateSource
from .vocabulary import BASELINE_KINDS, WINDOWS_KINDS

# Fixed forever: every patch_id is derived from it.
NAMESPACE = uuid.UUID("3b0f8a52-5d36-4c8e-9a51-2f6f0e7c9d14")

DATA_DIR = Path(__file__).resolve().parent / "data"
RELEASE_HISTORY_CSV = DATA_DIR / "windows-server-release-history.csv"
HOTPATCH_CALENDAR_CSV = DATA_DIR / "hotpatch-calendar.csv"
CATALOG_START = date(2023, 1, 1)

RELEASE_HISTORY_COLUMNS = ("product", "os_build", "update_type", "release_kind", "availability_date", "build", "kb")
HOTPATCH_CALENDAR_COLUMNS = (
    "product",
    "calendar_year",
    "month",
    "update_type",
    "type",
    "unplanned_baseline",
    "availability_date",
    "build",
    "kb",
)
GENERIC_COLUMNS = (
    "product",
    "kb",
    "title",
    "kind",
    "classification",
    "reboot_behavior",
    "published",
    "release_month",
    "build",
    "baseline_kb",
)
GENERIC_OPTIONAL = ("release_month", "build", "baseline_kb")


# Nothing is generated for a product before it existed (WS2025's release build shipped 2024-11-01).
GENERAL_AVAILABILITY = {
    "ws2025-azure": date(2024, 11, 1),
    "ws2022-azure": date(2021, 9, 1),
    "ws2022": date(2021, 8, 18),
    "ws2019": date(2018, 10, 2),
}
# How Microsoft's titles name an OS when it differs from the release-history name.
OS_TITLE_NAMES = {"Windows Server 2022": "Microsoft server operating system version 21H2"}
DOTNET_FRAMEWORKS = {
    "Windows Server 2025": "3.5 and 4.8.1",
    "Windows Server 2022": "3.5, 4.8 and 4.8.1",
    "Windows Server 2019": "3.5, 4.7.2 and 4.8",
}
MSRT_KB = "890830"
DEFENDER_KB = "2267602"
DEFINITION_DAYS = 60
DEFINITION_WEEKDAYS = (0, 2, 4)  # Monday, Wednesday, Friday

# Generated KBs: a block of numbers per month, one slot per update family inside it. The anchor sits
# just above the highest KB of the shipped data; 1,700 a month is roughly Microsoft's pace
# (50222xx in 2023-01, 5087xxx in 2026-05).
KB_ANCHOR_MONTH = (2026, 6)
KB_ANCHOR = 5_092_000
KB_PER_MONTH = 1_700

_KB_RE = re.compile(r"(?:KB)?([0-9]{6,8})", re.IGNORECASE)
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MONTH_RE = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")
_BUILD_RE = re.compile(r"[0-9]{1,6}\.[0-9]{1,8}")


class CatalogError(Exception):
    """A file or row the catalog refuses; `messages` says where and why, one line each."""

    def __init__(self, messages: list[str]):
        self.messages = messages
        super().__init__("\n".join(messages))


@dataclass
class CatalogResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    # Generated rows removed because real data now covers their month.
    removed: int = 0

    def __add__(self, other: "CatalogResult") -> "CatalogResult":
        return CatalogResult(
            self.created + other.created,
            self.updated + other.updated,
            self.unchanged + other.unchanged,
            self.removed + other.removed,
        )

    def __str__(self) -> str:
        text = f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged"
        return f"{text}, {self.removed} removed" if self.removed else text


def normalize_kb(value: str) -> str:
    """The digits of a KB number written as KB5012345 or 5012345 (6 to 8 digits); ValueError otherwise."""
    match = _KB_RE.fullmatch(str(value).strip())
    if not match:
        raise ValueError(f"{value!r} is not a KB number: use KB5012345 or 5012345")
    return match.group(1)


def make_patch_id(product: str, kind: str, kb: str, published_at: datetime) -> uuid.UUID:
    """The stable id of an update, so imports and generation are idempotent."""
    return uuid.uuid5(NAMESPACE, f"{product}|{kind}|{kb}|{published_at.astimezone(UTC).isoformat()}")


# --- Rows as they should be --------------------------------------------------------------------------

FIELDS = (
    "product",
    "kb",
    "title",
    "kind",
    "classification",
    "reboot_behavior",
    "published_at",
    "release_month",
    "build",
)


@dataclass
class Row:
    """One Update row as the data says it should be, before it is written."""

    product: str
    kb: str
    title: str
    kind: str
    classification: str
    reboot_behavior: str
    published_at: datetime
    release_month: str
    build: str
    source: str
    where: str = "generated"  # "file, line n", for messages
    baseline_kb: str = ""  # an explicit baseline (generic import)
    baseline: uuid.UUID | None = None  # patch_id of the baseline, once resolved

    @property
    def patch_id(self) -> uuid.UUID:
        return make_patch_id(self.product, self.kind, self.kb, self.published_at)

    def fields(self) -> dict:
        return {name: getattr(self, name) for name in FIELDS}


def _os_title(product: Product) -> str:
    return OS_TITLE_NAMES.get(product.release_history_name, product.release_history_name)


def lcu_title(product: Product, month: str, kb: str, kind: str = UpdateKind.MONTHLY) -> str:
    """A Windows cumulative update's title as Microsoft writes it."""
    what = {UpdateKind.OUT_OF_BAND: "Out-of-band Cumulative Update", UpdateKind.PREVIEW: "Cumulative Update Preview"}
    return f"{month} {what.get(kind, 'Cumulative Update')} for {_os_title(product)} for x64-based Systems (KB{kb})"


def hotpatch_title(product: Product, month: str, kb: str) -> str:
    return f"{month} Security Hotpatch Update for {product.name} for x64-based Systems (KB{kb})"


def dotnet_title(product: Product, month: str, kb: str) -> str:
    frameworks = DOTNET_FRAMEWORKS.get(product.release_history_name, "3.5 and 4.8.1")
    return f"{month} Cumulative Update for .NET Framework {frameworks} for {_os_title(product)} for x64 (KB{kb})"


def msrt_title(year: int, month: int) -> str:
    # v5.120 shipped in January 2024; one version a month.
    version = 120 + _month_index(year, month) - _month_index(2024, 1)
    return f"Windows Malicious Software Removal Tool x64 - v5.{version} (KB{MSRT_KB})"


def definition_title(day: date) -> str:
    # Versions grow with time: the second number every two weeks, the third within those two weeks.
    days = (day - date(2025, 11, 3)).days
    third = (days % 14) * 60 + random.Random(f"definition|{day.isoformat()}").randrange(40)
    return f"Security Intelligence Update for Microsoft Defender Antivirus - KB{DEFENDER_KB} (Version 1.{441 + days // 14}.{third}.0)"


def _month_index(year: int, month: int) -> int:
    return year * 12 + month - 1


def _month_of(index: int) -> tuple[int, int]:
    return index // 12, index % 12 + 1


def _label_index(label: str) -> int:
    return _month_index(int(label[:4]), int(label[5:7]))


# --- Reading files -----------------------------------------------------------------------------------


def _problem(where: str, field: str, what: str) -> str:
    return f"{where}, field '{field}': {what}"


def _read_records(path: Path, problems: list[str]) -> tuple[str, list[tuple[str, dict[str, str]]]]:
    """The file's format ("release-history", "hotpatch-calendar" or "generic") and its records with their place."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        problems.append(f"{path}: cannot read the file: {e}")
        return "unreadable", []
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        return "generic", _json_records(path, text, problems)

    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    columns = [name.strip().lower() for name in header or []]
    found = set(columns)
    if found == set(RELEASE_HISTORY_COLUMNS):
        kind = "release-history"
    elif found == set(HOTPATCH_CALENDAR_COLUMNS):
        kind = "hotpatch-calendar"
    elif set(GENERIC_COLUMNS) >= found >= set(GENERIC_COLUMNS) - set(GENERIC_OPTIONAL):
        kind = "generic"
    else:
        problems.append(
            f"{path}, line 1: unknown header {','.join(columns)!r}; expected one of "
            f"{','.join(RELEASE_HISTORY_COLUMNS)!r}, {','.join(HOTPATCH_CALENDAR_COLUMNS)!r} or "
            f"{','.join(GENERIC_COLUMNS)!r}"
        )
        return "unknown", []
    if len(found) != len(columns):
        problems.append(f"{path}, line 1: a column appears twice in the header")
        return kind, []
    records = []
    for values in reader:
        where = f"{path}, line {reader.line_num}"
        if not any(v.strip() for v in values):
            continue  # blank line
        if len(values) != len(columns):
            problems.append(f"{where}: {len(values)} fields, the header has {len(columns)}")
            continue
        records.append((where, {c: v.strip() for c, v in zip(columns, values, strict=True)}))
    return kind, records


def _json_records(path: Path, text: str, problems: list[str]) -> list[tuple[str, dict[str, str]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        problems.append(f"{path}, line {e.lineno}: not valid JSON: {e.msg}")
        return []
    if not isinstance(data, list):
        problems.append(f"{path}: expected a JSON list of objects")
        return []
    records = []
    for number, item in enumerate(data, start=1):
        where = f"{path}, row {number}"
        if not isinstance(item, dict):
            problems.append(f"{where}: expected an object, got {type(item).__name__}")
            continue
        record = {str(k).strip().lower(): "" if v is None else str(v).strip() for k, v in item.items()}
        for key in sorted(set(record) - set(GENERIC_COLUMNS)):
            problems.append(_problem(where, key, f"unknown field (known: {', '.join(GENERIC_COLUMNS)})"))
        records.append((where, record))
    return records


def _parse_date(value: str) -> date:
    if not _DATE_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a date: use YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a real date") from None


def _parse_published(value: str) -> datetime:
    if _DATE_RE.fullmatch(value):
        return release_moment(_parse_date(value))
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a date: use YYYY-MM-DD or an ISO 8601 datetime") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _check_build(value: str) -> str:
    if value and not _BUILD_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a build number like 20348.4711")
    return value


def _choice(value: str, choices: Iterable[str], what: str) -> str:
    """The canonical spelling of `value` among `choices`, compared case-insensitively."""
    for choice in choices:
        if value.lower() == choice.lower():
            return choice
    raise ValueError(f"{value!r} is not a known {what} (use {', '.join(choices)})")


class _Fields:
    """Reads one record's fields, collecting problems instead of stopping at the first."""

    def __init__(self, where: str, record: dict[str, str], problems: list[str]):
        self.where, self.record, self.problems = where, record, problems
        self.ok = True

    def get(self, name: str, convert=None, required: bool = True):
        value = self.record.get(name, "")
        if not value:
            if required:
                self.fail(name, "is empty" if name in self.record else "is missing")
            return None
        if convert is None:
            return value
        try:
            return convert(value)
        except ValueError as e:
            self.fail(name, str(e))
            return None

    def fail(self, name: str, what: str) -> None:
        self.problems.append(_problem(self.where, name, what))
        self.ok = False


def _products_named(name: str, attribute: str) -> list[Product]:
    return [p for p in PRODUCTS.values() if (getattr(p, attribute) or "").lower() == name.lower()]


CalendarKinds = dict[tuple[str, str], str]  # (product code, "YYYY-MM") -> baseline/unplanned_baseline/hotpatch


def _calendar_rows(records, problems: list[str]) -> tuple[list[Row], CalendarKinds]:
    """The hotpatch calendar's rows with a KB, and every row's planned kind."""
    rows, kinds = [], {}
    for where, record in records:
        f = _Fields(where, record, problems)
        name = f.get("product")
        products = _products_named(name, "hotpatch_calendar_name") if name else []
        if name and not products:
            names = ", ".join(p.hotpatch_calendar_name for p in PRODUCTS.values() if p.hotpatch_calendar_name)
            f.fail("product", f"{name!r} is not a product of the hotpatch calendar ({names})")
        year = f.get("calendar_year", lambda v: _int_between(v, 2000, 2100))
        month = f.get("month", lambda v: _int_between(v, 1, 12))
        kind = f.get("type", lambda v: _choice(v, ("Baseline", "Hotpatch"), "type"))
        unplanned = f.get("unplanned_baseline", lambda v: _choice(v, ("true", "false"), "value") == "true")
        day = f.get("availability_date", _parse_date, required=False)
        build = f.get("build", _check_build, required=False)
        kb = f.get("kb", normalize_kb, required=False)
        if unplanned and kind == "Hotpatch":
            f.fail("unplanned_baseline", "only a Baseline can be unplanned")
        if not kb and (day or build):
            f.fail("kb", "is empty, but the row has an availability_date or build")
        if kb and not day:
            f.fail("availability_date", "is empty, but the row has a KB")
        if not f.ok:
            continue
        product = products[0]
        label = month_label(year, month)
        if kind == "Hotpatch":
            update_kind = UpdateKind.HOTPATCH
        else:
            update_kind = UpdateKind.UNPLANNED_BASELINE if unplanned else UpdateKind.BASELINE
        kinds[(product.code, label)] = update_kind
        if not kb:
            continue  # a planned month, not published yet
        if update_kind == UpdateKind.HOTPATCH:
            title = hotpatch_title(product, label, kb)
            reboot = RebootBehavior.NEVER
        else:
            title = lcu_title(product, label, kb)
            reboot = RebootBehavior.ALWAYS
        rows.append(
            Row(
                product.code,
                kb,
                title,
                update_kind,
                Classification.SECURITY,
                reboot,
                release_moment(day),
                label,
                build or "",
                UpdateSource.HOTPATCH_CALENDAR,
                where,
            )
        )
    return rows, kinds


def _int_between(value: str, low: int, high: int) -> int:
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise ValueError(f"{value!r} is not a number from {low} to {high}")
    return int(value)


RELEASE_KINDS = {
    "B": (UpdateKind.MONTHLY, Classification.SECURITY),
    "OOB": (UpdateKind.OUT_OF_BAND, Classification.UPDATES),
    "D": (UpdateKind.PREVIEW, Classification.UPDATES),
}


def _release_history_rows(records, calendar: CalendarKinds, problems: list[str]) -> list[Row]:
    """Windows cumulative updates, one row per product with the release's product name."""
    rows = []
    for where, record in records:
        f = _Fields(where, record, problems)
        name = f.get("product")
        products = _products_named(name, "release_history_name") if name else []
        if name and not products:
            names = ", ".join(sorted({p.release_history_name for p in PRODUCTS.values()}))
            f.fail("product", f"{name!r} is not a product of the release history ({names})")
        release_kind = f.get("release_kind", lambda v: _choice(v, ("A", *RELEASE_KINDS), "release_kind"))
        update_type = f.get("update_type")
        label = update_type.split(" ")[0] if update_type else None
        if label and not _MONTH_RE.fullmatch(label):
            f.fail("update_type", f"{update_type!r} does not start with a month like 2026-02")
        day = f.get("availability_date", _parse_date)
        build = f.get("build", _check_build, required=False)
        os_build = f.get("os_build", required=False)
        if build and os_build and not build.startswith(f"{os_build}."):
            f.fail("build", f"{build!r} is not a build of OS build {os_build}")
        if release_kind == "A":
            continue  # the release build itself: no KB, nothing to install
        kb = f.get("kb", normalize_kb)
        if not f.ok:
            continue
        kind, classification = RELEASE_KINDS[release_kind]
        for product in products:
            product_kind = kind
            if kind == UpdateKind.MONTHLY and product.has_hotpatch:
                planned = calendar.get((product.code, label))
                if planned in BASELINE_KINDS:
                    product_kind = planned
            rows.append(
                Row(
                    product.code,
                    kb,
                    lcu_title(product, label, kb, kind),
                    product_kind,
                    classification,
                    RebootBehavior.ALWAYS,
                    release_moment(day),
                    label,
                    build or "",
                    UpdateSource.RELEASE_HISTORY,
                    where,
                )
            )
    return rows


def _product_code(value: str) -> str:
    for product in PRODUCTS.values():
        if value.lower() in (product.code, product.name.lower()):
            return product.code
    raise ValueError(f"{value!r} is not a product (use {', '.join(PRODUCTS)})")


def _classification(value: str) -> str:
    for token, label in Classification.choices:
        if value.lower() in (token.lower(), label.lower()):
            return token
    raise ValueError(f"{value!r} is not a classification (use {', '.join(Classification.values)})")


def _generic_rows(records, problems: list[str]) -> list[Row]:
    rows = []
    for where, record in records:
        f = _Fields(where, record, problems)
        product = f.get("product", _product_code)
        kb = f.get("kb", normalize_kb)
        title = f.get("title")
        if title and len(title) > 250:
            f.fail("title", f"is {len(title)} characters long, at most 250 are allowed")
        kind = f.get("kind", lambda v: _choice(v, UpdateKind.values, "kind"))
        classification = f.get("classification", _classification)
        reboot = f.get("reboot_behavior", lambda v: _choice(v, RebootBehavior.values, "reboot_behavior"))
        published = f.get("published", _parse_published)
        release_month = f.get("release_month", required=False)
        if release_month and not _MONTH_RE.fullmatch(release_month):
            f.fail("release_month", f"{release_month!r} is not a month: use YYYY-MM")
        build = f.get("build", _check_build, required=False)
        baseline_kb = f.get("baseline_kb", normalize_kb, required=False)
        if baseline_kb and kind and kind != UpdateKind.HOTPATCH:
            f.fail("baseline_kb", f"only a hotpatch builds on a baseline, this row is a {kind}")
        if product and kind in (*BASELINE_KINDS, UpdateKind.HOTPATCH) and not PRODUCTS[product].has_hotpatch:
            f.fail("kind", f"{product} is not in the hotpatch programme, its cumulative updates are monthly")
        if not f.ok:
            continue
        rows.append(
            Row(
                product,
                kb,
                title,
                kind,
                classification,
                reboot,
                published,
                release_month or published.strftime("%Y-%m"),
                build or "",
                UpdateSource.IMPORTED,
                where,
                baseline_kb or "",
            )
        )
    return rows


def _parse_files(paths: Sequence[Path], problems: list[str]) -> list[Row]:
    """Every row of the files; the calendar goes first because it decides which B releases are baselines."""
    by_format: dict[str, list] = defaultdict(list)
    for path in paths:
        kind, records = _read_records(path, problems)
        by_format[kind].extend(records)

    calendar_rows, calendar = _calendar_rows(by_format["hotpatch-calendar"], problems)
    if by_format["release-history"]:
        # The shipped calendar says which months are baselines unless the files bring their own.
        calendar = {**planned_calendar(), **calendar}
    history_rows = _release_history_rows(by_format["release-history"], calendar, problems)
    # A calendar baseline is the release history's B release of that month: keep the latter's row.
    in_history = {(r.product, r.kb) for r in history_rows}
    calendar_rows = [r for r in calendar_rows if r.kind not in BASELINE_KINDS or (r.product, r.kb) not in in_history]
    return [*history_rows, *calendar_rows, *_generic_rows(by_format["generic"], problems)]


def _merge(rows: Iterable[Row], problems: list[str]) -> dict[uuid.UUID, Row]:
    """The rows by patch_id; the same update listed twice must say the same thing both times."""
    merged: dict[uuid.UUID, Row] = {}
    for row in rows:
        other = merged.setdefault(row.patch_id, row)
        if other is not row and (other.fields(), other.baseline_kb) != (row.fields(), row.baseline_kb):
            different = [name for name in FIELDS if getattr(other, name) != getattr(row, name)] or ["baseline_kb"]
            problems.append(f"{row.where}: the same update as {other.where}, but a different {', '.join(different)}")
    return merged


# --- Writing -------------------------------------------------------------------------------------------


def _existing() -> dict[uuid.UUID, dict]:
    """Every catalog row by patch_id (a few thousand rows at most, one query)."""
    values = Update.objects.values("id", "patch_id", "baseline_id", "source", *FIELDS)
    return {row["patch_id"]: row for row in values}


def _resolve_baselines(rows: dict[uuid.UUID, Row], existing: dict[uuid.UUID, dict], problems: list[str]) -> None:
    """Point each hotpatch at its baseline: the given KB, else the product's latest baseline before it."""
    baselines: dict[str, list[tuple[datetime, str, uuid.UUID]]] = defaultdict(list)
    for patch_id, row in existing.items():
        if patch_id not in rows and row["kind"] in BASELINE_KINDS:
            baselines[row["product"]].append((row["published_at"], row["kb"], patch_id))
    for patch_id, row in rows.items():
        if row.kind in BASELINE_KINDS:
            baselines[row.product].append((row.published_at, row.kb, patch_id))
    for candidates in baselines.values():
        candidates.sort()
    for row in rows.values():
        if row.kind != UpdateKind.HOTPATCH:
            continue
        before = [c for c in baselines[row.product] if c[0] < row.published_at]
        if row.baseline_kb:
            before = [c for c in before if c[1] == row.baseline_kb]
            if not before:
                problems.append(
                    _problem(
                        row.where,
                        "baseline_kb",
                        f"no baseline KB{row.baseline_kb} of {row.product} published before "
                        f"{row.published_at:%Y-%m-%d}, in the file or in the catalog",
                    )
                )
        row.baseline = before[-1][2] if before else None


def _write(rows: Iterable[Row], existing: dict[uuid.UUID, dict], *, generated: bool) -> CatalogResult:
    """Create or update the rows by patch_id; generated rows never replace a real one."""
    result = CatalogResult()
    id_of = {patch_id: row["id"] for patch_id, row in existing.items()}
    rows = list(rows)
    # Baselines first, so the hotpatches written after them can point at them.
    for phase in (
        [r for r in rows if r.kind != UpdateKind.HOTPATCH],
        [r for r in rows if r.kind == UpdateKind.HOTPATCH],
    ):
        to_create, to_update = [], []
        for row in phase:
            patch_id = row.patch_id
            wanted = {**row.fields(), "baseline_id": id_of.get(row.baseline) if row.baseline else None}
            old = existing.get(patch_id)
            if old is None:
                to_create.append(Update(patch_id=patch_id, source=row.source, **wanted))
                continue
            if generated and old["source"] != UpdateSource.GENERATED:
                result.unchanged += 1
                continue
            # Real data replaces a generated row; a real row keeps its first source.
            wanted["source"] = row.source if old["source"] == UpdateSource.GENERATED else old["source"]
            if all(old[name] == value for name, value in wanted.items()):
                result.unchanged += 1
            else:
                to_update.append(Update(id=old["id"], patch_id=patch_id, **wanted))
        # ignore_conflicts: a concurrent loader may have inserted the same patch_id meanwhile.
        Update.objects.bulk_create(to_create, batch_size=500, ignore_conflicts=True)
        Update.objects.bulk_update(to_update, [*FIELDS, "baseline", "source"], batch_size=200)
        result.created += len(to_create)
        result.updated += len(to_update)
        if to_create:
            created = Update.objects.filter(patch_id__in=[u.patch_id for u in to_create]).values_list("patch_id", "id")
            id_of.update(created)
    return result


def import_files(paths: Sequence[str | Path]) -> CatalogResult:
    """Import several files at once, all or nothing (see the module docstring for the formats)."""
    paths = [Path(p) for p in paths]
    problems: list[str] = []
    rows = _merge(_parse_files(paths, problems), problems)
    with transaction.atomic():
        existing = _existing()
        _resolve_baselines(rows, existing, problems)
        if problems:
            raise CatalogError(sorted(problems, key=lambda message: _message_place(message, paths)))
        return _write(rows.values(), existing, generated=False)


def _message_place(message: str, paths: list[Path]) -> tuple[int, int]:
    """(file, line) of a problem, to report them in file order."""
    file = next((i for i, path in enumerate(paths) if message.startswith(f"{path},")), len(paths))
    line = re.search(r", (?:line|row) ([0-9]+)", message)
    return file, int(line[1]) if line else 0


def import_file(path: str | Path) -> CatalogResult:
    """Import one release-history, hotpatch-calendar or generic CSV/JSON file; CatalogError if any row is bad."""
    return import_files([path])


def load_shipped_data() -> CatalogResult:
    """Load the release history and hotpatch calendar shipped in patching/data (idempotent)."""
    return import_files([RELEASE_HISTORY_CSV, HOTPATCH_CALENDAR_CSV])


# --- Generating -------------------------------------------------------------------------------------


@dataclass
class _RealData:
    """What the real rows already cover, for generating around them."""

    covered_until: dict[str, int]  # OS (release-history name) -> last month index with real Windows rows
    last_revision: dict[str, int]  # OS -> highest real build revision
    kbs: set[str]
    months: set[tuple[str, str, str]]  # (product, kind, "YYYY-MM") with a real row

    @classmethod
    def of(cls, rows: Iterable[dict]) -> "_RealData":
        data = cls({}, {}, set(), set())
        for row in rows:
            data.kbs.add(row["kb"])
            data.months.add((row["product"], row["kind"], row["release_month"]))
            product = PRODUCTS.get(row["product"])
            if product is None or row["kind"] not in WINDOWS_KINDS or not _MONTH_RE.fullmatch(row["release_month"]):
                continue
            os_name = product.release_history_name
            month = _label_index(row["release_month"])
            data.covered_until[os_name] = max(data.covered_until.get(os_name, month), month)
            if _BUILD_RE.fullmatch(row["build"]):
                revision = int(row["build"].split(".")[1])
                data.last_revision[os_name] = max(data.last_revision.get(os_name, revision), revision)
        return data

    def supersedes(self, row: dict) -> bool:
        """Whether real data now covers this generated row's product, month and family."""
        if row["source"] != UpdateSource.GENERATED or not _MONTH_RE.fullmatch(row["release_month"]):
            return False
        if row["kind"] in WINDOWS_KINDS:
            product = PRODUCTS.get(row["product"])
            covered = self.covered_until.get(product.release_history_name, -1) if product else -1
            return _label_index(row["release_month"]) <= covered
        return (row["product"], row["kind"], row["release_month"]) in self.months


class _KbNumbers:
    """Generated KB numbers: one per (family, month), rising with time, never a real KB."""

    def __init__(self, taken: set[str]):
        names = list(dict.fromkeys(p.release_history_name for p in PRODUCTS.values()))
        self.families = [
            *(f"lcu|{n}" for n in names),
            *(f"hotpatch|{p.code}" for p in PRODUCTS.values() if p.has_hotpatch),
            *(f"preview|{n}" for n in names),
            *(f"dotnet|{n}" for n in names),
        ]
        self.width = KB_PER_MONTH // len(self.families)
        self.taken = set(taken)
        self.given: dict[tuple[str, int], str] = {}

    def __call__(self, family: str, month: int) -> str:
        if (family, month) not in self.given:
            year, number = _month_of(month)
            jitter = random.Random(f"kb|{family}|{month_label(year, number)}").randrange(self.width // 2)
            kb = (
                KB_ANCHOR
                + (month - _month_index(*KB_ANCHOR_MONTH)) * KB_PER_MONTH
                + self.families.index(family) * self.width
                + jitter
            )
            while str(kb) in self.taken:
                kb += 1
            self.taken.add(str(kb))
            self.given[(family, month)] = str(kb)
        return self.given[(family, month)]


def _months(first: int, last: int) -> Iterator[tuple[int, int, int, str]]:
    """(index, year, month, label) for each month index in [first, last]."""
    for index in range(first, last + 1):
        year, month = _month_of(index)
        yield index, year, month, month_label(year, month)


def planned_calendar() -> CalendarKinds:
    """The shipped hotpatch calendar's kind for every month it lists, published or not."""
    problems: list[str] = []
    _, kinds = _calendar_rows(_read_records(HOTPATCH_CALENDAR_CSV, problems)[1], problems)
    if problems:
        raise CatalogError(problems)
    return kinds


def _generated_rows(start: date, end: date, real: _RealData, planned: CalendarKinds) -> list[Row]:
    """The generated rows for [start, end] around the real data (pure and deterministic)."""
    first, last = _month_index(start.year, start.month), _month_index(end.year, end.month)
    kb = _KbNumbers(real.kbs)
    rows: list[Row] = []

    def add(product: Product, kb_: str, title: str, kind: str, cls: str, reboot: str, day: date, label: str, build=""):
        rows.append(
            Row(product.code, kb_, title, kind, cls, reboot, release_moment(day), label, build, UpdateSource.GENERATED)
        )

    def ga_month(product: Product) -> int:
        ga = GENERAL_AVAILABILITY.get(product.code, date(1990, 1, 1))
        return _month_index(ga.year, ga.month)

    # Windows: each OS's LCU builds continue upward from its last real build, month after month.
    for os_name in dict.fromkeys(p.release_history_name for p in PRODUCTS.values()):
        products = [p for p in PRODUCTS.values() if p.release_history_name == os_name]
        chain_start = real.covered_until.get(os_name, min(ga_month(p) for p in products) - 1) + 1
        revision = real.last_revision.get(os_name, 1000)
        for index, year, month, label in _months(chain_start, last):
            revision += random.Random(f"build|{os_name}|{label}").randint(90, 150)
            if index < first:
                continue
            security, preview = patch_tuesday(year, month), fourth_tuesday(year, month)
            lcu_kb = kb(f"lcu|{os_name}", index)
            for product in products:
                if index < ga_month(product):
                    continue
                build = f"{product.build_major}.{revision}"
                lcu = lcu_title(product, label, lcu_kb)
                args = (Classification.SECURITY, RebootBehavior.ALWAYS, security, label, build)
                if not product.has_hotpatch:
                    add(product, lcu_kb, lcu, UpdateKind.MONTHLY, *args)
                    preview_kb = kb(f"preview|{os_name}", index)
                    preview_build = (
                        f"{product.build_major}.{revision + random.Random(f'preview|{label}').randint(25, 60)}"
                    )
                    add(
                        product,
                        preview_kb,
                        lcu_title(product, label, preview_kb, UpdateKind.PREVIEW),
                        UpdateKind.PREVIEW,
                        Classification.UPDATES,
                        RebootBehavior.ALWAYS,
                        preview,
                        label,
                        preview_build,
                    )
                    continue
                default = UpdateKind.BASELINE if month in PLANNED_BASELINE_MONTHS else UpdateKind.HOTPATCH
                kind = planned.get((product.code, label), default)
                if kind in BASELINE_KINDS:
                    add(product, lcu_kb, lcu, kind, *args)
                    continue
                # A hotpatch for enrolled VMs, the month's LCU for the others.
                hotpatch_kb = kb(f"hotpatch|{product.code}", index)
                below = random.Random(f"hotpatch-build|{product.code}|{label}").randint(20, 70)
                add(
                    product,
                    hotpatch_kb,
                    hotpatch_title(product, label, hotpatch_kb),
                    UpdateKind.HOTPATCH,
                    Classification.SECURITY,
                    RebootBehavior.NEVER,
                    security,
                    label,
                    f"{product.build_major}.{revision - below}",
                )
                add(product, lcu_kb, lcu, UpdateKind.MONTHLY, *args)

    # .NET and MSRT: every Patch Tuesday the real data has none for.
    for index, year, month, label in _months(first, last):
        security = patch_tuesday(year, month)
        for product in PRODUCTS.values():
            if index < ga_month(product):
                continue
            if (product.code, UpdateKind.DOTNET, label) not in real.months:
                dotnet_kb = kb(f"dotnet|{product.release_history_name}", index)
                title = dotnet_title(product, label, dotnet_kb)
                add(
                    product,
                    dotnet_kb,
                    title,
                    UpdateKind.DOTNET,
                    Classification.SECURITY,
                    RebootBehavior.ALWAYS,
                    security,
                    label,
                )
            if (product.code, UpdateKind.MSRT, label) not in real.months:
                title = msrt_title(year, month)
                cls, reboot = Classification.UPDATE_ROLLUP, RebootBehavior.CAN_REQUEST
                add(product, MSRT_KB, title, UpdateKind.MSRT, cls, reboot, security, label)

    # Defender definitions: only the last 60 days matter, older ones are superseded.
    day = max(start, end - timedelta(days=DEFINITION_DAYS - 1))
    while day <= end:
        if day.weekday() in DEFINITION_WEEKDAYS:
            label = month_label(day.year, day.month)
            for product in PRODUCTS.values():
                ga = GENERAL_AVAILABILITY.get(product.code, date.min)
                if day >= ga and (product.code, UpdateKind.DEFINITION, label) not in real.months:
                    title = definition_title(day)
                    cls, reboot = Classification.DEFINITION, RebootBehavior.NEVER
                    add(product, DEFENDER_KB, title, UpdateKind.DEFINITION, cls, reboot, day, label)
        day += timedelta(days=1)
    return rows


def generate(start: date, end: date) -> CatalogResult:
    """Generate the catalog for the months of [start, end] that the real data does not cover (idempotent)."""
    if start > end:
        raise ValueError(f"start {start} is after end {end}")
    planned = planned_calendar()
    with transaction.atomic():
        existing = _existing()
        real = _RealData.of(row for row in existing.values() if row["source"] != UpdateSource.GENERATED)
        superseded = {patch_id for patch_id, row in existing.items() if real.supersedes(row)}
        rows = {row.patch_id: row for row in _generated_rows(start, end, real, planned)}
        # Hotpatches must not build on a generated baseline that real data has replaced.
        _resolve_baselines(rows, {k: v for k, v in existing.items() if k not in superseded}, [])
        result = _write(rows.values(), existing, generated=True)
        result.removed = _remove_unreferenced([existing[patch_id]["id"] for patch_id in superseded])
        return result


def _remove_unreferenced(ids: list[int]) -> int:
    """Delete these catalog rows except those anything else still points at (installs, results, guests)."""
    if not ids:
        return 0
    referenced: set[int] = set()
    # Every reverse relation, including the hidden ones (related_name="+").
    relations = [f for f in Update._meta.get_fields(include_hidden=True) if f.auto_created and not f.concrete]
    for relation in relations:
        if relation.many_to_many:
            continue  # covered by the through model's foreign key
        pointing = relation.related_model._base_manager.filter(**{f"{relation.field.name}__in": ids})
        if relation.related_model is Update:
            pointing = pointing.exclude(id__in=ids)  # removed together
        referenced.update(pointing.values_list(relation.field.attname, flat=True))
    doomed = Update.objects.filter(id__in=set(ids) - referenced)
    # Hotpatches before the baselines they point at.
    removed, _ = doomed.exclude(kind__in=BASELINE_KINDS).delete()
    removed += doomed.filter(kind__in=BASELINE_KINDS).delete()[0]
    return removed


def ensure_catalog(until: date) -> None:
    """Load the shipped data and generate everything from 2023-01 to `until`; fast when already done."""
    if isinstance(until, datetime):
        until = until.date()
    load_shipped_data()
    generate(CATALOG_START, until)
