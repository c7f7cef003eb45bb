"""History across the fleet: every operation of the machines the user can see, filtered, in keyset
pages (newest first, fast at any depth), and exported as CSV or JSON, streamed."""

import csv
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_GET

from patching.models import Operation, OperationKind, OperationStatus, PatchResult, StartedBy

from .common import HtmxHttpRequest, partial_for, portal_view
from .fleet import Fleet, fleet_for, fleet_operations
from .overview import POLL_SECONDS, SCOPE

PAGE_SIZE = 50
CHOICE_FILTERS = [
    ("kind", "Operation", OperationKind.choices),
    ("status", "Status", OperationStatus.choices),
    ("started_by", "Started by", StartedBy.choices),
]


@dataclass
class History:
    """One request's filtered operations and what the page says about its filters."""

    fleet: Fleet
    operations: QuerySet[Operation]
    values: dict[str, str] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)

    def query(self, **more) -> str:
        params = {f.param: f.value for f in self.fleet.filters if f.value}
        params.update(self.values)
        params.update({k: v for k, v in more.items() if v not in (None, "")})
        return urlencode(params)


def _day(raw: str) -> date | None:
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        return None
    return day if date.min < day < date.max else None  # a day either side must exist: the filter is [day, day + 1)


def history_for(request: HttpRequest) -> History:
    """The scope's operations with the URL's filters applied; a value that is not valid is ignored with a notice."""
    found = fleet_for(request, only=SCOPE)
    history = History(found, fleet_operations(request.user, found), notices=list(found.notices))
    operations = history.operations
    for param, label, choices in CHOICE_FILTERS:
        raw = request.GET.get(param, "").strip()
        if not raw:
            continue
        known = {value.lower(): value for value, _ in choices}
        if raw.lower() not in known:
            history.notices.append(f"Ignored the {label.lower()} filter: “{raw}” is not one of the choices.")
            continue
        history.values[param] = known[raw.lower()]
        operations = operations.filter(**{param: known[raw.lower()]})

    zone = timezone.get_current_timezone()
    days = {}
    for param, label in (("from", "from"), ("to", "to")):
        raw = request.GET.get(param, "").strip()
        if not raw:
            continue
        day = _day(raw)
        if day is None:
            history.notices.append(f"Ignored the “{label}” date “{raw}”: use a date such as 2026-11-03.")
            continue
        days[param] = day
    if "from" in days and "to" in days and days["from"] > days["to"]:
        history.notices.append("Ignored the dates: “from” is after “to”.")
        days = {}
    if "from" in days:
        history.values["from"] = days["from"].isoformat()
        operations = operations.filter(created_at__gte=datetime.combine(days["from"], time(), tzinfo=zone))
    if "to" in days:
        history.values["to"] = days["to"].isoformat()
        end = datetime.combine(days["to"] + timedelta(days=1), time(), tzinfo=zone)
        operations = operations.filter(created_at__lt=end)

    raw = request.GET.get("kb", "").strip()
    if raw:
        kb = raw.upper().removeprefix("KB")
        if kb.isascii() and kb.isdigit() and 6 <= len(kb) <= 8:
            history.values["kb"] = kb
            # An operation that reported on the KB, or (queued or running) was asked to install it by name.
            touched = Q(Exists(PatchResult.objects.filter(operation_id=OuterRef("pk"), update__kb=kb)))
            if connection.features.supports_json_field_contains:  # not SQLite (the embedded default)
                touched |= Q(parameters__windowsParameters__kbNumbersToInclude__contains=[kb])
            operations = operations.filter(touched)
        else:
            history.notices.append(f"Ignored the update filter “{raw[:20]}”: give a KB number such as KB5073457.")
    history.operations = operations.order_by("-created_at", "-pk")
    return history


def _cursor(raw: str) -> tuple[datetime, int] | None:
    """`after` is the last row's created_at (microseconds since the epoch) and id: "1764500000000000.4711"."""
    stamp, _, pk = raw.partition(".")
    if not (raw.isascii() and stamp.lstrip("-").isdigit() and pk.isdigit()) or len(stamp) > 20 or len(pk) > 19:
        return None
    try:
        moment = datetime(1970, 1, 1, tzinfo=ZoneInfo("UTC")) + timedelta(microseconds=int(stamp))
    except OverflowError:
        return None
    return moment, int(pk)


def _cursor_of(operation: Operation) -> str:
    delta = operation.created_at - datetime(1970, 1, 1, tzinfo=ZoneInfo("UTC"))
    micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    return f"{micros}.{operation.pk}"


@require_GET
@portal_view
def history(request: HtmxHttpRequest) -> HttpResponse:
    """The fleet's operations, newest first, PAGE_SIZE at a time after a keyset cursor."""
    found = history_for(request)
    operations = found.operations
    after = request.GET.get("after", "").strip()
    if after:
        cursor = _cursor(after)
        if cursor is None:
            found.notices.append("Ignored the page position: it is not one this page made. Showing the newest.")
            after = ""
        else:
            moment, pk = cursor
    operations = operations.select_related("user")
    if after:
        # Two index ranges, each stopping after a page: the rest of the cursor's own moment (a platform
        # round creates thousands of operations at one created_at), then the older ones.
        rows = list(operations.filter(created_at=moment, pk__lt=pk)[: PAGE_SIZE + 1])
        if len(rows) <= PAGE_SIZE:
            rows += operations.filter(created_at__lt=moment)[: PAGE_SIZE + 1 - len(rows)]
    else:
        rows = list(operations[: PAGE_SIZE + 1])
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    context = {
        "history": found,
        "fleet": found.fleet,
        "rows": rows,
        "next_query": found.query(after=_cursor_of(rows[-1])) if more else None,
        "first_query": found.query() if after else None,
        "export_query": found.query(),
        "choice_filters": [
            {"param": param, "label": label, "choices": choices, "value": found.values.get(param, "")}
            for param, label, choices in CHOICE_FILTERS
        ],
        "in_flight": any(not op.is_finished for op in rows),
        "poll_seconds": POLL_SECONDS,
        "retention_days": settings.PORTAL_HISTORY_RETENTION_DAYS,
        "nav": "history",
    }
    template = "patching/history.html"
    if partial_for(request, ("history",)):
        return render(request, template + "#history", context)
    return render(request, template, context)


EXPORT_FIELDS = [
    ("activity_id", "Activity ID"),
    ("vm_name", "Machine"),
    ("subscription_id", "Subscription ID"),
    ("location", "Location"),
    ("kind", "Operation"),
    ("status", "Status"),
    ("started_by", "Started by"),
    ("user__username", "User"),
    ("created_at", "Queued (UTC)"),
    ("started_at", "Started (UTC)"),
    ("finished_at", "Finished (UTC)"),
    ("critical_security_count", "Critical and security updates"),
    ("other_count", "Other updates"),
    ("installed_count", "Installed"),
    ("failed_count", "Failed"),
    ("pending_count", "Pending"),
    ("excluded_count", "Excluded"),
    ("not_selected_count", "Not selected"),
    ("reboot_status", "Reboot status"),
    ("error_code", "Error code"),
    ("error_message", "Error message"),
]


def _plain(value, empty=""):
    """A cell: times in UTC ISO 8601, ids as text, nothing as `empty` ("" in CSV, null in JSON)."""
    if isinstance(value, datetime):
        return value.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ")
    if value is None:
        return empty
    return value if isinstance(value, int | str) else str(value)


class _Echo:
    def write(self, value: str) -> str:
        return value


@require_GET
@portal_view
def history_export(request: HttpRequest, fmt: str) -> StreamingHttpResponse:
    """The filtered history, every page of it, as CSV or JSON, streamed in chunks: flat memory at any size."""
    found = history_for(request)
    columns = [name for name, _ in EXPORT_FIELDS]
    rows = found.operations.values_list(*columns).iterator(chunk_size=2000)
    # The query runs here, before the response starts, so an error is an ordinary error page.
    first = next(rows, None)
    rows = itertools.chain([first], rows) if first is not None else iter(())

    if fmt == "csv":
        writer = csv.writer(_Echo())

        def lines() -> Iterator[str]:
            yield writer.writerow([label for _, label in EXPORT_FIELDS])
            for row in rows:
                yield writer.writerow([_plain(value) for value in row])

        content_type = "text/csv; charset=utf-8"
    else:

        def lines() -> Iterator[str]:
            yield "["
            for n, row in enumerate(rows):
                record = {name: _plain(value, None) for name, value in zip(columns, row, strict=True)}
                yield ("," if n else "") + "\n" + json.dumps(record)
            yield "\n]\n"

        content_type = "application/json"
    response = StreamingHttpResponse(lines(), content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="update-history-{stamp}.{fmt}"'
    return response
