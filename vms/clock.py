"""The time of the simulated world: what "now" is for the fleet, its guests, operations and schedules.

Real time by default. In sandbox mode (a stored `SandboxClock.simulated_now`) it is the stored
simulated time, which stands still until an Owner advances it (patching.sandbox). The stored value is
kept in the cache (Redis; the embedded default's file cache), so reading the clock costs no SQL
query: list pages keep their constant query counts. patching.sandbox writes the row and calls
`stored()`, which drops the cached value now and when the write commits; the cache key names the
database, so test databases (and xdist workers) do not share it.

Security clocks (token expiry, sign-in lockout, sessions) are not the world's time and keep using
`django.utils.timezone.now()`.
"""

import logging
from datetime import UTC, datetime

from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone

log = logging.getLogger(__name__)

REAL = "real"  # the cached value meaning "real time"
TABLE = "vms_sandboxclock"


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
        stored = _read_row()
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


def _read_row() -> datetime | None:
    """The stored simulated time (vms.models.SandboxClock, read here without importing the models,
    which take their defaults from this module)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT simulated_now FROM {TABLE} WHERE id = 1")
        row = cursor.fetchone()
    value = row[0] if row else None
    if value is None:
        return None
    if isinstance(value, str):  # SQLite
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def stored() -> None:
    """After the row changed (patching.sandbox writes it): the cache follows, now and at commit."""
    forget()
    transaction.on_commit(forget)
