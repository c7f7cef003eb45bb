"""A maintenance window and its recurrence, as Azure's Microsoft.Maintenance API spells them (pure).

`recurEvery` grammar (Maintenance.json 2023-04-01, MaintenanceWindow.recurEvery):
  [n]Hour(s)                                  every n hours from the start
  [n]Day(s)                                   every n days
  [n]Week(s) [Monday,...,Sunday]              every n weeks, on the listed days (default: the start's day)
  [n]Month(s) [day1,...,day31]                every n months, on the listed days of the month
  [n]Month(s) First|Second|Third|Fourth|Last <Weekday> [Offset-6..Offset6]
                                              the nth weekday of the month, shifted by whole days
                                              ("Month Second Tuesday Offset3": Patch Tuesday + 3 days)
The window starts at `startDateTime` ("yyyy-MM-dd HH:mm", wall clock in `timeZone`), lasts `duration`
("HH:mm", 1:30 to 3:55 for InGuestPatch) and recurs until `expirationDateTime`. Occurrences keep the
wall-clock start across daylight-saving changes; a start that falls in a spring-forward gap moves
forward by the gap, as the zone's clocks do.
"""

import calendar
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from vms.patch_settings import Problem

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": -1}
UNITS = ("Hour", "Day", "Week", "Month")
# Learn, "Schedule recurring updates" (update-manager/scheduled-patching): the InGuestPatch window is
# between 1 hour 30 minutes and 3 hours 55 minutes; offsets are -6..6 days (Maintenance.json).
MIN_DURATION = timedelta(hours=1, minutes=30)
MAX_DURATION = timedelta(hours=3, minutes=55)
MAX_OFFSET = 6
# No documented upper bound on the frequency; this one keeps every search for an occurrence finite.
MAX_EVERY = 100
# Azure's default expiration ("9999-12-31 23:59:59" in the portal) stands for "never".
TIME_FORMAT = "%Y-%m-%d %H:%M"

_HEAD = re.compile(r"^(\d*)(hours?|days?|weeks?|months?)$", re.IGNORECASE)
_MONTH_DAY = re.compile(r"^day(\d{1,2})$", re.IGNORECASE)
_OFFSET = re.compile(r"^offset([+-]?\d+)$", re.IGNORECASE)


class RecurrenceError(ValueError):
    """recurEvery is not one of Azure's forms; the message says what is wrong."""


@dataclass(frozen=True)
class Rule:
    unit: str  # one of UNITS
    every: int = 1
    weekdays: tuple[int, ...] = ()  # Week: 0 = Monday
    month_days: tuple[int, ...] = ()  # Month: days of the month
    week_of_month: int = 0  # Month: 1..4, -1 = last; 0 = not this form
    weekday: int = 0  # with week_of_month
    offset: int = 0  # days, with week_of_month

    def describe(self) -> str:
        unit = self.unit.lower() + ("s" if self.every > 1 else "")
        head = f"Every {self.every} {unit}" if self.every > 1 else f"Every {unit}"
        if self.weekdays:
            return f"{head} on {', '.join(WEEKDAYS[d] for d in self.weekdays)}"
        if self.month_days:
            return f"{head} on day {', '.join(str(d) for d in self.month_days)}"
        if self.week_of_month:
            nth = next(k for k, v in ORDINALS.items() if v == self.week_of_month)
            text = f"{head} on the {nth} {WEEKDAYS[self.weekday]}"
            if self.offset:
                text += (
                    f" {'+' if self.offset > 0 else '-'} {abs(self.offset)} day{'s' if abs(self.offset) > 1 else ''}"
                )
            return text
        return head


def parse(text: str) -> Rule:
    """The rule of a recurEvery value (RecurrenceError with a reason if Azure would refuse it)."""
    tokens = (text or "").replace(", ", ",").split()
    if not tokens:
        raise RecurrenceError("recurEvery is required, e.g. 'Day', 'Week Saturday,Sunday' or 'Month Second Tuesday'.")
    head = _HEAD.match(tokens[0])
    if not head:
        raise RecurrenceError(f"recurEvery '{text}' must start with [n]Hour(s), [n]Day(s), [n]Week(s) or [n]Month(s).")
    every = int(head.group(1)) if head.group(1) else 1
    if not 1 <= every <= MAX_EVERY:
        raise RecurrenceError(f"recurEvery's frequency must be between 1 and {MAX_EVERY}.")
    unit = head.group(2).rstrip("sS").capitalize()
    rest = tokens[1:]
    if unit in ("Hour", "Day"):
        if rest:
            raise RecurrenceError(f"recurEvery '{text}': a {unit.lower()}ly recurrence takes no days or weekdays.")
        return Rule(unit, every)
    if unit == "Week":
        if not rest:
            return Rule(unit, every)
        names = ",".join(rest).split(",")
        days = tuple(sorted({_weekday(name, text) for name in names if name}))
        return Rule(unit, every, weekdays=days)
    # Month
    if not rest:
        return Rule(unit, every)
    if _MONTH_DAY.match(rest[0].split(",")[0]):
        days = []
        for name in ",".join(rest).split(","):
            found = _MONTH_DAY.match(name)
            if not found or not 1 <= int(found.group(1)) <= 31:
                raise RecurrenceError(f"recurEvery '{text}': month days are day1 to day31, comma separated.")
            days.append(int(found.group(1)))
        return Rule(unit, every, month_days=tuple(sorted(set(days))))
    nth = ORDINALS.get(rest[0].lower())
    if nth is None or len(rest) not in (2, 3):
        raise RecurrenceError(
            f"recurEvery '{text}': a monthly recurrence is 'Month day1,day15' or "
            "'Month First|Second|Third|Fourth|Last <weekday> [Offset<n>]'."
        )
    weekday = _weekday(rest[1], text)
    offset = 0
    if len(rest) == 3:
        found = _OFFSET.match(rest[2])
        if not found:
            raise RecurrenceError(f"recurEvery '{text}': '{rest[2]}' is not an offset such as Offset3 or Offset-2.")
        offset = int(found.group(1))
        if not -MAX_OFFSET <= offset <= MAX_OFFSET:
            raise RecurrenceError(f"recurEvery '{text}': the offset must be between -6 and 6 days.")
    return Rule(unit, every, week_of_month=nth, weekday=weekday, offset=offset)


def _weekday(name: str, text: str) -> int:
    for i, day in enumerate(WEEKDAYS):
        if name.lower() == day.lower():
            return i
    raise RecurrenceError(f"recurEvery '{text}': '{name}' is not a weekday (Monday to Sunday).")


# --- The window's fields ---------------------------------------------------------------------------


def parse_local(text: str) -> datetime:
    """'yyyy-MM-dd HH:mm' (a wall-clock time, no zone) -> naive datetime (ValueError if not)."""
    return datetime.strptime((text or "").strip(), TIME_FORMAT)


def parse_duration(text: str) -> timedelta:
    """'HH:mm' -> timedelta (ValueError if not)."""
    found = re.fullmatch(r"(\d{1,2}):(\d{2})", (text or "").strip())
    if not found or int(found.group(2)) > 59:
        raise ValueError(text)
    return timedelta(hours=int(found.group(1)), minutes=int(found.group(2)))


def format_duration(value: timedelta) -> str:
    minutes = int(value.total_seconds() // 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def nth_weekday(year: int, month: int, nth: int, weekday: int) -> date:
    """The nth (1..4, or -1 for the last) given weekday of a month."""
    if nth == -1:
        last = date(year, month, calendar.monthrange(year, month)[1])
        return last - timedelta(days=(last.weekday() - weekday) % 7)
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (nth - 1))


# --- Occurrences -----------------------------------------------------------------------------------


def local_instant(day: date, wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant of a wall-clock time on a day in a zone (a gap moves it forward, fold=0)."""
    return datetime.combine(day, wall.time()).replace(tzinfo=zone).astimezone(UTC)


def _dates(rule: Rule, first: date, from_day: date) -> Iterator[date]:
    """Matching dates in order, from the period containing `from_day` (never before `first`)."""
    if rule.unit == "Day":
        k = max(0, (from_day - first).days // rule.every)
        while True:
            yield first + timedelta(days=k * rule.every)
            k += 1
    elif rule.unit == "Week":
        week0 = first - timedelta(days=first.weekday())
        days = rule.weekdays or (first.weekday(),)
        k = max(0, (from_day - week0).days // (7 * rule.every))
        while True:
            monday = week0 + timedelta(days=7 * rule.every * k)
            for d in days:
                candidate = monday + timedelta(days=d)
                if candidate >= first:
                    yield candidate
            k += 1
    else:
        m0 = first.year * 12 + first.month - 1
        start_month = from_day.year * 12 + from_day.month - 1 - 1  # the month before: offsets cross month ends
        k = max(0, (start_month - m0) // rule.every)
        while True:
            year, month = divmod(m0 + k * rule.every, 12)
            month += 1
            if rule.week_of_month:
                candidates = [nth_weekday(year, month, rule.week_of_month, rule.weekday) + timedelta(days=rule.offset)]
            else:
                length = calendar.monthrange(year, month)[1]
                candidates = [date(year, month, d) for d in (rule.month_days or (first.day,)) if d <= length]
            for candidate in candidates:
                if candidate >= first:
                    yield candidate
            k += 1


def occurrences(
    rule: Rule,
    start: datetime,
    zone: ZoneInfo,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[datetime]:
    """The UTC start instants of the windows, in order: at or after `since` (and the first start),
    at or before `until` (the expiration) when given. `start` is the naive wall-clock first start."""
    first = local_instant(start.date(), start, zone)
    since = max(since or first, first)
    if rule.unit == "Hour":
        step = timedelta(hours=rule.every)
        k = -(-(since - first) // step)  # ceiling
        while True:
            moment = first + k * step
            if until is not None and moment > until:
                return
            yield moment
            k += 1
    from_day = since.astimezone(zone).date() - timedelta(days=1)
    for day in _dates(rule, start.date(), max(from_day, start.date())):
        moment = local_instant(day, start, zone)
        if moment < since:
            continue
        if until is not None and moment > until:
            return
        yield moment


def next_occurrences(rule: Rule, start: datetime, zone: ZoneInfo, since: datetime, count: int, until=None):
    found = []
    for moment in occurrences(rule, start, zone, since=since, until=until):
        found.append(moment)
        if len(found) >= count:
            break
    return found


def matches(rule: Rule, first: date, day: date) -> bool:
    """Whether a date is one of the rule's days (for a rule that is not hourly) — the test's oracle."""
    if day < first:
        return False
    if rule.unit == "Day":
        return (day - first).days % rule.every == 0
    if rule.unit == "Week":
        week0 = first - timedelta(days=first.weekday())
        monday = day - timedelta(days=day.weekday())
        return day.weekday() in (rule.weekdays or (first.weekday(),)) and ((monday - week0).days // 7) % rule.every == 0
    if rule.week_of_month:
        base = day - timedelta(days=rule.offset)
        months = base.year * 12 + base.month - (first.year * 12 + first.month)
        # Months count from the first start's: an anchor in the month before it is not the schedule's, even
        # when its offset lands after the first start (Last Sunday of December + 6 = 4 January).
        return (
            months >= 0
            and months % rule.every == 0
            and base == nth_weekday(base.year, base.month, rule.week_of_month, rule.weekday)
        )
    months = day.year * 12 + day.month - (first.year * 12 + first.month)
    return months % rule.every == 0 and day.day in (rule.month_days or (first.day,))


# --- Validation of a whole window ----------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    start: datetime  # naive wall clock in the zone
    duration: timedelta
    time_zone: str  # the Windows name
    zone: ZoneInfo
    rule: Rule
    expiration: datetime | None  # naive wall clock in the zone

    @property
    def expires_at(self) -> datetime | None:
        if self.expiration is None or self.expiration.year >= 9999:  # Azure's "never" (9999-12-31 23:59:59)
            return None
        return self.expiration.replace(tzinfo=self.zone).astimezone(UTC)

    def occurrences(self, since: datetime | None = None) -> Iterator[datetime]:
        return occurrences(self.rule, self.start, self.zone, since=since, until=self.expires_at)

    def next(self, since: datetime, count: int = 10) -> list[datetime]:
        return next_occurrences(self.rule, self.start, self.zone, since, count, self.expires_at)


PREFIX = "properties.maintenanceWindow"


def window(start: str, duration: str, time_zone: str, recur_every: str, expiration: str | None) -> tuple:
    """(Window | None, [Problem]): every field checked, each problem naming its property path."""
    from .timezones import canonical, zone

    problems = []
    start_at = parsed_duration = tz_name = rule = expires = None
    try:
        start_at = parse_local(start)
    except ValueError:
        problems.append(
            Problem(f"{PREFIX}.startDateTime", "startDateTime must be 'yyyy-MM-dd HH:mm', e.g. '2025-01-14 22:00'.")
        )
    try:
        parsed_duration = parse_duration(duration)
        if not MIN_DURATION <= parsed_duration <= MAX_DURATION:
            problems.append(
                Problem(f"{PREFIX}.duration", "duration must be between 01:30 and 03:55 for the InGuestPatch scope.")
            )
    except ValueError:
        problems.append(Problem(f"{PREFIX}.duration", "duration must be 'HH:mm', between 01:30 and 03:55."))
    tz_name = canonical(time_zone)
    if tz_name is None:
        problems.append(
            Problem(
                f"{PREFIX}.timeZone",
                f"timeZone '{time_zone}' is not a Windows time zone, e.g. 'Pacific Standard Time'.",
            )
        )
    try:
        rule = parse(recur_every)
    except RecurrenceError as e:
        problems.append(Problem(f"{PREFIX}.recurEvery", str(e)))
    if expiration:
        try:
            expires = parse_local(expiration[:16])
            if start_at and expires <= start_at:
                problems.append(
                    Problem(f"{PREFIX}.expirationDateTime", "expirationDateTime must be after startDateTime.")
                )
        except ValueError:
            problems.append(Problem(f"{PREFIX}.expirationDateTime", "expirationDateTime must be 'yyyy-MM-dd HH:mm'."))
    if rule and parsed_duration and rule.unit == "Hour" and parsed_duration >= timedelta(hours=rule.every):
        problems.append(
            Problem(f"{PREFIX}.recurEvery", "An hourly recurrence must be longer than the window's duration.")
        )
    if problems:
        return None, problems
    return Window(start_at, parsed_duration, tz_name, zone(tz_name), rule, expires), []
