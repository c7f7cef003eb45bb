"""Azure's maintenance windows name time zones the Windows way ("Pacific Standard Time").

The mapping to IANA is CLDR's windowsZones table as tzlocal ships it (tzlocal.windows_tz.win_tz),
kept up to date with tzlocal releases rather than typed by hand here.
"""

from functools import cache
from zoneinfo import ZoneInfo

from tzlocal.windows_tz import win_tz

# Lower-cased Windows name -> (the name as Windows spells it, IANA name).
_BY_LOWER = {name.lower(): (name, iana) for name, iana in win_tz.items()}


def windows_names() -> list[str]:
    return sorted(win_tz)


def canonical(name: str) -> str | None:
    """The Windows name as Windows spells it, or None for a name Windows does not have."""
    found = _BY_LOWER.get((name or "").strip().lower())
    return found[0] if found else None


@cache
def zone(name: str) -> ZoneInfo:
    """The IANA zone of a Windows time-zone name (KeyError for an unknown name)."""
    return ZoneInfo(_BY_LOWER[name.strip().lower()][1])
