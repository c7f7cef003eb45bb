"""The configured rules of automatic patching: off-peak windows, the phase plan, assessment slots."""

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from patching.orchestrator.rules import (
    DEFAULT_PHASES,
    OffPeakWindow,
    PhasePlan,
    assessment_due,
    from_settings_values,
    last_assessment_slot,
    resolve_time_zone,
)
from vms.regions import PAIRS, REGIONS

ROOT = Path(__file__).resolve().parent.parent


def test_a_window_may_cross_midnight_and_says_how_long_it_stays_open():
    window = OffPeakWindow.parse("23:00-05:00")
    assert (window.start, window.length, window.label) == (23 * 60, 360, "23:00–05:00")
    stockholm = ZoneInfo("Europe/Stockholm")  # UTC+1 in January
    assert window.remaining(datetime(2024, 1, 10, 21, 59, tzinfo=UTC), stockholm) == timedelta(0)
    assert window.remaining(datetime(2024, 1, 10, 22, 0, tzinfo=UTC), stockholm) == timedelta(hours=6)
    assert window.remaining(datetime(2024, 1, 11, 3, 30, tzinfo=UTC), stockholm) == timedelta(minutes=30)
    assert window.next_opening(datetime(2024, 1, 11, 4, 0, tzinfo=UTC), stockholm) == datetime(
        2024, 1, 11, 22, tzinfo=UTC
    )
    assert window.opened_at(datetime(2024, 1, 11, 1, 0, tzinfo=UTC), stockholm) == datetime(2024, 1, 10, 22, tzinfo=UTC)


def test_a_window_follows_the_vms_own_clock_through_a_dst_change_and_half_hour_zones():
    window = OffPeakWindow.parse("01:00-04:00")
    stockholm = ZoneInfo("Europe/Stockholm")
    # 2024-03-31: clocks jump from 02:00 to 03:00, so 01:00-04:00 local lasts two real hours.
    opens = datetime(2024, 3, 31, 0, 0, tzinfo=UTC)
    assert window.remaining(opens, stockholm) == timedelta(hours=2)
    assert window.remaining(opens + timedelta(hours=2), stockholm) == timedelta(0)
    kolkata = ZoneInfo("Asia/Kolkata")  # UTC+5:30: 01:00 local is 19:30 UTC
    assert window.next_opening(datetime(2024, 3, 31, 12, tzinfo=UTC), kolkata) == datetime(
        2024, 3, 31, 19, 30, tzinfo=UTC
    )


def test_all_day_is_a_window_too():
    window = OffPeakWindow.parse("00:00-24:00")
    assert window.length == 24 * 60 and window.label == "all day"
    assert window.remaining(datetime(2024, 5, 5, 13, 17, tzinfo=UTC), ZoneInfo("UTC")) > timedelta(hours=10)


@pytest.mark.parametrize(
    "text, words",
    [
        ("23:00", "HH:MM-HH:MM"),
        ("night", "HH:MM-HH:MM"),
        ("25:00-03:00", "'25:00'"),
        ("23:60-03:00", "not a time of day"),
        ("05:00-05:00", "at least an hour"),
        ("23:00-23:30", "30 minutes long"),
        ("24:00-03:00", "23:59 at the latest"),
    ],
)
def test_a_bad_window_is_refused_saying_what_is_wrong(text, words):
    with pytest.raises(ValueError, match=words):
        OffPeakWindow.parse(text)


def test_the_default_plan_has_every_region_once_and_keeps_geo_pairs_apart():
    plan = PhasePlan.parse(DEFAULT_PHASES)
    assert plan.configured == len(plan.phases) == 3
    assert sorted(r for phase in plan.phases for r in phase) == sorted(REGIONS)
    for region, pair in PAIRS.items():
        assert plan.phase_of(region) != plan.phase_of(pair)


def test_unlisted_regions_roll_out_after_the_plan_with_their_pairs_apart():
    plan = PhasePlan.parse("West Europe, eastus")  # display names and any case are accepted
    assert plan.phases[0] == ("westeurope", "eastus")
    assert plan.phase_of("northeurope") > 0 and plan.phase_of("westus") > 0
    for region, pair in PAIRS.items():
        assert plan.phase_of(region) != plan.phase_of(pair)
    assert plan.phase_of("atlantis") == len(plan.phases)  # unknown to the portal: last


@pytest.mark.parametrize(
    "text, words",
    [
        ("westeurope, northeurope", "westeurope and northeurope are a geo pair"),
        ("westeurope; marsnorth", "'marsnorth' in phase 2 is not a known region"),
        ("westeurope; westeurope", "westeurope is in phase 1 and again in phase 2"),
        ("westeurope;; eastus", "phase 2 is empty"),
    ],
)
def test_a_bad_phase_plan_is_refused_saying_what_is_wrong(text, words):
    with pytest.raises(ValueError, match=words):
        PhasePlan.parse(text)


@pytest.mark.parametrize(
    "variable, value, words",
    [
        ("PORTAL_OFF_PEAK_WINDOW", "22:00", "PORTAL_OFF_PEAK_WINDOW: '22:00' is not a window"),
        ("PORTAL_ROLLOUT_PHASES", "westeurope; atlantis", "PORTAL_ROLLOUT_PHASES: 'atlantis' in phase 2"),
        ("PORTAL_ROLLOUT_PHASES", "uksouth, ukwest", "uksouth and ukwest are a geo pair"),
        ("PORTAL_ROLLOUT_HALT_FAILURE_RATE", "0", "PORTAL_ROLLOUT_HALT_FAILURE_RATE must be above 0"),
        ("PORTAL_ASSESSMENT_INTERVAL_DAYS", "45", "PORTAL_ASSESSMENT_INTERVAL_DAYS must be between 1 and 30"),
    ],
)
def test_the_portal_refuses_to_start_with_bad_rules(variable, value, words):
    """The system check stops `manage.py check` (and so migrate and make demo), naming the setting."""
    env = {**os.environ, variable: value, "DJANGO_SETTINGS_MODULE": "portal.settings"}
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert "patching.E001" in done.stderr and words in done.stderr


def test_rules_come_from_the_settings_values():
    rules = from_settings_values(
        window="22:00-04:00",
        phases="westcentralus",
        halt_failure_rate=0.5,
        halt_min_attempts=3,
        catch_up_baseline=False,
        assessment_interval_days=2,
    )
    assert rules.window.length == 360 and rules.phases.phases[0] == ("westcentralus",)
    assert (rules.halt_failure_rate, rules.halt_min_attempts, rules.catch_up_baseline) == (0.5, 3, False)
    assert rules.assessment_interval == timedelta(days=2)


def test_unresolvable_time_zones_read_as_none():
    assert resolve_time_zone("Europe/Stockholm") == ZoneInfo("Europe/Stockholm")
    for name in ("Mars/Olympus_Mons", "", "../etc/passwd"):
        assert resolve_time_zone(name) is None


def test_assessment_slots_spread_the_fleet_over_the_period():
    now = datetime(2024, 6, 1, 12, tzinfo=UTC)
    day = timedelta(days=1)
    slots = [last_assessment_slot(vm_id, day, now) for vm_id in range(1, 2401)]
    assert all(now - day < slot <= now for slot in slots)
    per_hour: dict[int, int] = {}
    for slot in slots:
        per_hour[slot.hour] = per_hour.get(slot.hour, 0) + 1
    assert len(per_hour) == 24 and max(per_hour.values()) < 2 * 100  # ~100 an hour, none crowded


def test_a_vm_is_due_once_per_period_and_catches_up_after_being_off():
    day = timedelta(days=1)
    now = datetime(2024, 6, 1, 12, tzinfo=UTC)
    slot = last_assessment_slot(7, day, now)
    assert assessment_due(7, day, None, now)  # never assessed
    assert not assessment_due(7, day, slot + timedelta(minutes=5), now)
    assert assessment_due(7, day, slot - timedelta(minutes=5), now)
    # Off for three days: its slots passed meanwhile, so it is due at the first beat it runs again.
    assert assessment_due(7, day, slot - 3 * day, now)
