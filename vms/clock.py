"""The time of the simulated world: what "now" is for the fleet, its guests, operations and schedules.

Real time by default. Security clocks (token expiry, sign-in lockout, sessions) are not the world's
time and keep using `django.utils.timezone.now()`.
"""

from datetime import datetime

from django.utils import timezone


def now() -> datetime:
    return timezone.now()
