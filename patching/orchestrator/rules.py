"""The configured rules of automatic patching, parsed and validated once. Pure: no Django models.

patching/checks.py calls `from_settings_values()` (through engine.current_rules) as a system check,
so a bad off-peak window or phase plan stops `manage.py check`, `migrate` and `make demo` with a clear
message instead of crashing a beat task later.
"""

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from vms.regions import PAIRS, REGIONS, normalize_region

MINUTES_PER_DAY = 24 * 60
MIN_WINDOW = timedelta(hours=1)

# Three phases, every region once, geo pairs apart: a few small regions first (the canaries), then
# the big ones, then their pairs.
DEFAULT_PHASES = (
    "westcentralus, northeurope, swedensouth, ukwest; "
    "westeurope, swedencentral, uksouth, germanywestcentral, francecentral, eastus, eastus2, westus2, "
    "southeastasia, japaneast, australiaeast, usgovvirginia; "
    "germanynorth, francesouth, westus, centralus, eastasia, japanwest, australiasoutheast, usgovtexas"
)
DEFAULT_WINDOW = "23:00-05:00"

_CLOCK = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")


def resolve_time_zone(name: str) -> ZoneInfo | None:
    """The IANA zone, or None when Python cannot resolve it (never raises)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return None


@dataclass(frozen=True)
class OffPeakWindow:
    """A daily window of local wall-clock time, e.g. 23:00-05:00 (it may cross midnight)."""

    start: int  # minutes after local midnight
    length: int  # minutes, 60..1440

    @classmethod
    def parse(cls, text: str) -> "OffPeakWindow":
        parts = (text or "").split("-")
        if len(parts) != 2:
            raise ValueError(f"'{text}' is not a window: write it as HH:MM-HH:MM, e.g. 23:00-05:00.")
        start, end = (cls._minutes(part, text) for part in parts)
        if start == MINUTES_PER_DAY:
            raise ValueError(f"'{text}': a window starts at 23:59 at the latest.")
        length = (end - start) % MINUTES_PER_DAY or (MINUTES_PER_DAY if end != start else 0)
        if length < MIN_WINDOW.total_seconds() // 60:
            raise ValueError(
                f"'{text}' is {length} minutes long; an off-peak window needs at least an hour "
                "(a baseline installs and reboots in about half an hour)."
            )
        return cls(start, length)

    @staticmethod
    def _minutes(part: str, text: str) -> int:
        match = _CLOCK.match(part)
        if not match:
            raise ValueError(f"'{text}' is not a window: write it as HH:MM-HH:MM, e.g. 23:00-05:00.")
        hours, minutes = int(match[1]), int(match[2])
        if hours > 24 or minutes > 59 or (hours == 24 and minutes):
            raise ValueError(f"'{part.strip()}' in '{text}' is not a time of day (00:00 to 24:00).")
        return hours * 60 + minutes

    @property
    def label(self) -> str:
        end = (self.start + self.length) % MINUTES_PER_DAY
        if self.length == MINUTES_PER_DAY:
            return "all day"
        return f"{self.start // 60:02d}:{self.start % 60:02d}–{end // 60:02d}:{end % 60:02d}"

    def _opening(self, local: datetime) -> datetime:
        """The wall-clock start of the window that contains `local`, or of the last one before it."""
        start = datetime.combine(local.date(), time(self.start // 60, self.start % 60), tzinfo=local.tzinfo)
        minute_of_day = local.hour * 60 + local.minute
        return start if minute_of_day >= self.start else start - timedelta(days=1)

    def remaining(self, now: datetime, zone: ZoneInfo) -> timedelta:
        """How long the window that contains `now` stays open (zero when outside it)."""
        local = now.astimezone(zone)
        opening = self._opening(local)
        # Wall-clock arithmetic, then back to real time: a DST change inside the window is honoured.
        closing = (opening + timedelta(minutes=self.length)).replace(tzinfo=zone).astimezone(UTC)
        opened = opening.astimezone(UTC)
        if opened <= now < closing:
            return closing - now
        return timedelta(0)

    def opened_at(self, now: datetime, zone: ZoneInfo) -> datetime | None:
        """When the window that contains `now` opened (UTC), or None outside the window."""
        if not self.remaining(now, zone):
            return None
        return self._opening(now.astimezone(zone)).astimezone(UTC)

    def next_opening(self, now: datetime, zone: ZoneInfo) -> datetime:
        """When the window next opens after `now` (UTC); `now` itself if it is open."""
        if self.remaining(now, zone):
            return now
        local = now.astimezone(zone)
        opening = self._opening(local)
        while opening.astimezone(UTC) <= now:
            opening = datetime.combine(opening.date() + timedelta(days=1), opening.time(), tzinfo=zone)
        return opening.astimezone(UTC)


@dataclass(frozen=True)
class PhasePlan:
    """Regions in rollout phases. Regions the plan does not name roll out after it (pairs apart)."""

    phases: tuple[tuple[str, ...], ...]
    configured: int  # how many phases were written; the rest were added for unlisted regions
    _index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> "PhasePlan":
        phases: list[list[str]] = []
        seen: dict[str, int] = {}
        problems = []
        for number, chunk in enumerate((text or "").split(";"), start=1):
            names = [name.strip() for name in chunk.split(",") if name.strip()]
            if not names:
                if chunk.strip() or number < len(text.split(";")):
                    problems.append(f"phase {number} is empty")
                continue
            phase = []
            for name in names:
                region = normalize_region(name)
                if region is None:
                    problems.append(f"'{name}' in phase {number} is not a known region")
                elif region in seen:
                    problems.append(f"{region} is in phase {seen[region]} and again in phase {number}")
                else:
                    seen[region] = number
                    phase.append(region)
            pair_clash = [r for i, r in enumerate(phase) if PAIRS.get(r) in phase[i + 1 :]]
            for region in pair_clash:
                problems.append(
                    f"{region} and {PAIRS[region]} are a geo pair and cannot be in the same phase (phase {number})"
                )
            phases.append(phase)
        if problems:
            raise ValueError(
                "; ".join(problems) + f". Known regions: {', '.join(REGIONS)}. Write phases as "
                "'region, region; region, ...' (';' between phases)."
            )
        configured = len(phases)
        # Unlisted regions: after the plan, each in the first added phase its pair is not in.
        extra: list[list[str]] = []
        for region in REGIONS:
            if region in seen:
                continue
            phase = next((p for p in extra if PAIRS.get(region) not in p), None)
            if phase is None:
                phase = []
                extra.append(phase)
            phase.append(region)
        all_phases = tuple(tuple(p) for p in phases + extra)
        index = {region: i for i, phase in enumerate(all_phases) for region in phase}
        return cls(all_phases, configured, index)

    def phase_of(self, region: str) -> int:
        """The 0-based phase of a region; a region the portal does not know goes last."""
        return self._index.get(region, len(self.phases))

    def regions(self, phase: int) -> tuple[str, ...]:
        return self.phases[phase] if phase < len(self.phases) else ()


@dataclass(frozen=True)
class Rules:
    """Everything the planner needs to know besides the fleet and the time."""

    window: OffPeakWindow
    phases: PhasePlan
    halt_failure_rate: float = 0.25
    halt_min_attempts: int = 10
    catch_up_baseline: bool = True
    assessment_interval: timedelta = timedelta(days=3)
    # Availability sets: at most this share of the set at once; one VM at a time below small_set VMs.
    set_fraction: float = 0.2
    small_set: int = 10
    # VMs in neither a zone nor a set: at most this share of a subscription's VMs in a region at once.
    subscription_fraction: float = 0.2
    # installPatches' maximumDuration is the time left in the window, at most Azure's 3 h 55 min; a VM
    # is not started with less than min_duration left (a baseline and its reboot take ~30 minutes).
    max_duration: timedelta = timedelta(hours=3, minutes=55)
    min_duration: timedelta = timedelta(minutes=40)


def from_settings_values(
    *,
    window: str,
    phases: str,
    halt_failure_rate: float,
    halt_min_attempts: int,
    catch_up_baseline: bool,
    assessment_interval_days: int,
) -> Rules:
    """Rules from the settings' raw values; ValueError names the setting and what is wrong."""
    try:
        off_peak = OffPeakWindow.parse(window)
    except ValueError as e:
        raise ValueError(f"PORTAL_OFF_PEAK_WINDOW: {e}") from None
    try:
        plan = PhasePlan.parse(phases)
    except ValueError as e:
        raise ValueError(f"PORTAL_ROLLOUT_PHASES: {e}") from None
    if not 0 < halt_failure_rate <= 1:
        raise ValueError(f"PORTAL_ROLLOUT_HALT_FAILURE_RATE must be above 0 and at most 1, not {halt_failure_rate}.")
    if halt_min_attempts < 1:
        raise ValueError(f"PORTAL_ROLLOUT_HALT_MIN_ATTEMPTS must be at least 1, not {halt_min_attempts}.")
    if not 1 <= assessment_interval_days <= 30:
        raise ValueError(
            f"PORTAL_ASSESSMENT_INTERVAL_DAYS must be between 1 and 30 (assessed several times in 30 days), "
            f"not {assessment_interval_days}."
        )
    return Rules(
        window=off_peak,
        phases=plan,
        halt_failure_rate=halt_failure_rate,
        halt_min_attempts=halt_min_attempts,
        catch_up_baseline=catch_up_baseline,
        assessment_interval=timedelta(days=assessment_interval_days),
    )


# --- Periodic assessment ----------------------------------------------------------------------------

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def assessment_period(assessment_mode: str, rules: Rules) -> timedelta:
    """Every 24 h with assessmentMode AutomaticByPlatform, every few days otherwise (SPEC §3.5)."""
    return timedelta(days=1) if assessment_mode == "AutomaticByPlatform" else rules.assessment_interval


def _slot_offset(vm_id: int, period: timedelta) -> timedelta:
    # A fixed, well-spread offset per VM: Knuth's multiplicative hash of the id.
    seconds = int(period.total_seconds())
    return timedelta(seconds=(vm_id * 2654435761) % seconds)


def last_assessment_slot(vm_id: int, period: timedelta, now: datetime) -> datetime:
    """The VM's latest scheduled assessment moment at or before `now`: its slot staggers the fleet."""
    offset = _slot_offset(vm_id, period)
    since = (now - EPOCH - offset) % period
    return now - since


def assessment_due(vm_id: int, period: timedelta, assessed_at: datetime | None, now: datetime) -> bool:
    """Due when never assessed, or not assessed since its latest slot (a VM that was off catches up)."""
    return assessed_at is None or assessed_at < last_assessment_slot(vm_id, period, now)


def next_assessment_slot(vm_id: int, period: timedelta, now: datetime) -> datetime:
    return last_assessment_slot(vm_id, period, now) + period


def today_utc(now: datetime) -> date:
    return now.astimezone(UTC).date()
