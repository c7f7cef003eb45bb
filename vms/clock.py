"""The time of the simulated world: what "now" is for the fleet, its guests, operations and schedules.

Real time by default. In sandbox mode (a stored `SandboxClock.simulated_now`) it is the stored
simulated time, which stands still until an Owner advances it (patching.sandbox). The stored value is
kept in the cache (Redis; the embedded default's file cache), so reading the clock costs no SQL
query: list pages keep their constant query counts. `set_simulated` writes the row and the cache
together; the cache key names the database, so test databases (and xdist workers) do not share it.

Security clocks (token expiry, sign-in lockout, sessions) are not the world's time and keep using
`django.utils.timezone.now()`.
"""

import logging
from datetime import datetime

from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone

log = logging.getLogger(__name__)

REAL = "real"  # the cached value meaning "real time"


def _key() -> str:
    return f"sandbox-clock:{connection.settings_dict['NAME']}"


def simulated_now() -> datetime | None:
    """The stored simulated time, or None in real-time mode."""
    try:
        cached = cache.get(_key())
    except Exception as exc:  # the cache is down: the row is the truth
        log.warning("Clock cache unavailable (%s); reading the database", exc)
        cached = None
    if cached is None:
        from .models import SandboxClock

        stored = SandboxClock.objects.filter(pk=1).values_list("simulated_now", flat=True).first()
        cached = stored.isoformat() if stored else REAL
        _cache(cached)
    return None if cached == REAL else datetime.fromisoformat(cached)


def is_simulated() -> bool:
    return simulated_now() is not None


def now() -> datetime:
    return simulated_now() or timezone.now()


def _cache(value: str) -> None:
    try:
        cache.set(_key(), value, timeout=None)
    except Exception as exc:
        log.warning("Clock cache unavailable (%s)", exc)


def forget() -> None:
    """Drop the cached value: the next read takes the row (after a write, a reset, in tests)."""
    try:
        cache.delete(_key())
    except Exception as exc:
        log.warning("Clock cache unavailable (%s)", exc)


def set_simulated(moment: datetime | None) -> None:
    """Store the simulated time (None: back to real time); the cache follows when the write commits."""
    from .models import SandboxClock

    SandboxClock.objects.update_or_create(pk=1, defaults={"simulated_now": moment, "changed_at": timezone.now()})
    forget()
    transaction.on_commit(forget)
