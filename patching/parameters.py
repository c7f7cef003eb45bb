"""installPatches parameters: parsed and validated once, for the UI, the API and the platform.

The canonical form stored on an Operation is the ARM wire shape (azure-api.md §4), so the same dict
is what the API accepts, what the history shows and what the guest simulation reads back.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import isodate

from vms.patch_settings import Problem
from vms.vocabulary import RebootSetting

from .catalog import normalize_kb
from .guest import Selection
from .models import Classification

MIN_DURATION = timedelta(minutes=10)
MAX_DURATION = timedelta(hours=4)
DEFAULT_DURATION = timedelta(hours=2)


class InvalidParameters(ValueError):
    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class InstallParameters:
    selection: Selection
    reboot_setting: str
    maximum_duration: timedelta

    @classmethod
    def from_stored(cls, data: dict) -> "InstallParameters":
        """Read back what to_json stored on an Operation: validated when the operation was created, so
        trusted here (a worker must not turn a stored run into a stuck one by refusing it)."""
        windows = data.get("windowsParameters") or {}
        published = windows.get("maxPatchPublishDate")
        return cls(
            selection=Selection(
                classifications=frozenset(windows.get("classificationsToInclude") or ()),
                kbs_to_include=frozenset(windows.get("kbNumbersToInclude") or ()),
                kbs_to_exclude=frozenset(windows.get("kbNumbersToExclude") or ()),
                exclude_kbs_requiring_reboot=bool(windows.get("excludeKbsRequiringReboot")),
                max_patch_publish_date=datetime.fromisoformat(published) if published else None,
            ),
            reboot_setting=data.get("rebootSetting") or "IfRequired",
            maximum_duration=isodate.parse_duration(data["maximumDuration"])
            if data.get("maximumDuration")
            else DEFAULT_DURATION,
        )

    def to_json(self) -> dict:
        s = self.selection
        return {
            "maximumDuration": isodate.duration_isoformat(self.maximum_duration),
            "rebootSetting": self.reboot_setting,
            "windowsParameters": {
                "classificationsToInclude": sorted(s.classifications),
                "kbNumbersToInclude": sorted(s.kbs_to_include),
                "kbNumbersToExclude": sorted(s.kbs_to_exclude),
                "excludeKbsRequiringReboot": s.exclude_kbs_requiring_reboot,
                "maxPatchPublishDate": s.max_patch_publish_date.isoformat() if s.max_patch_publish_date else None,
            },
        }


CRITICAL_AND_SECURITY = InstallParameters(
    selection=Selection(classifications=frozenset({"Critical", "Security"})),
    reboot_setting="IfRequired",
    maximum_duration=DEFAULT_DURATION,
)


def split_kbs(text: str) -> list[str]:
    """A typed KB list: separated by commas, spaces or new lines."""
    return [item for item in re.split(r"[\s,;]+", text or "") if item]


def parse_duration(value) -> timedelta:
    """ISO 8601 durations in both SDK spellings (PT4H, PT04H00M00S), within Azure's range."""
    if isinstance(value, timedelta):
        duration = value
    else:
        try:
            duration = isodate.parse_duration(str(value).strip())
        except (isodate.ISO8601Error, ValueError):
            raise ValueError(f"'{value}' is not an ISO 8601 duration such as PT2H or PT90M.") from None
        if not isinstance(duration, timedelta):  # years or months: not a fixed length
            raise ValueError(f"'{value}' must be given in hours and minutes, e.g. PT2H.")
    if not MIN_DURATION <= duration <= MAX_DURATION:
        raise ValueError(f"The maximum duration must be between 10 minutes and 4 hours (PT10M to PT4H), not {value}.")
    return duration


def parse_datetime(value) -> datetime:
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = isodate.parse_datetime(str(value).strip()) if "T" in str(value) else None
            if moment is None:
                d = isodate.parse_date(str(value).strip())
                moment = datetime(d.year, d.month, d.day, 23, 59, 59)
        except (isodate.ISO8601Error, ValueError):
            raise ValueError(f"'{value}' is not a date: use YYYY-MM-DD or an ISO 8601 date-time.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def from_arm(body: dict) -> InstallParameters:
    """Parse an installPatches body; every problem is reported, with its wire target."""
    problems: list[Problem] = []
    if not isinstance(body, dict):
        raise InvalidParameters([Problem("", "The request body must be a JSON object.")])
    windows = body.get("windowsParameters") or {}
    if not isinstance(windows, dict):
        problems.append(Problem("windowsParameters", "windowsParameters must be an object."))
        windows = {}

    reboot = body.get("rebootSetting")
    if reboot not in RebootSetting.values:
        problems.append(
            Problem("rebootSetting", f"rebootSetting must be one of {', '.join(RebootSetting.values)}, not {reboot!r}.")
        )

    duration = DEFAULT_DURATION
    if body.get("maximumDuration") not in (None, ""):
        try:
            duration = parse_duration(body["maximumDuration"])
        except ValueError as e:
            problems.append(Problem("maximumDuration", str(e)))

    def string_list(name: str) -> list[str]:
        value = windows.get(name) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.append(Problem(f"windowsParameters.{name}", f"{name} must be a list of strings."))
            return []
        return value

    classifications = set()
    for item in string_list("classificationsToInclude"):
        if item not in Classification.values:
            problems.append(
                Problem(
                    "windowsParameters.classificationsToInclude",
                    f"'{item}' is not a classification; use {', '.join(Classification.values)}.",
                )
            )
        else:
            classifications.add(item)

    def kbs(name: str) -> set[str]:
        found = set()
        for item in string_list(name):
            try:
                found.add(normalize_kb(item))
            except ValueError as e:
                problems.append(Problem(f"windowsParameters.{name}", str(e)))
        return found

    include, exclude = kbs("kbNumbersToInclude"), kbs("kbNumbersToExclude")
    both = include & exclude
    if both:
        listed = ", ".join(f"KB{kb}" for kb in sorted(both))
        problems.append(Problem("windowsParameters.kbNumbersToExclude", f"{listed} is both included and excluded."))
    if not classifications and not include and not problems:
        problems.append(
            Problem(
                "windowsParameters.classificationsToInclude", "Choose at least one classification or KB to include."
            )
        )

    exclude_reboot = windows.get("excludeKbsRequiringReboot", False)
    if not isinstance(exclude_reboot, bool):
        problems.append(
            Problem("windowsParameters.excludeKbsRequiringReboot", "excludeKbsRequiringReboot must be true or false.")
        )
    max_date = None
    if windows.get("maxPatchPublishDate") not in (None, ""):
        try:
            max_date = parse_datetime(windows["maxPatchPublishDate"])
        except ValueError as e:
            problems.append(Problem("windowsParameters.maxPatchPublishDate", str(e)))

    if problems:
        raise InvalidParameters(problems)
    return InstallParameters(
        selection=Selection(
            classifications=frozenset(classifications),
            kbs_to_include=frozenset(include),
            kbs_to_exclude=frozenset(exclude),
            exclude_kbs_requiring_reboot=bool(exclude_reboot),
            max_patch_publish_date=max_date,
        ),
        reboot_setting=reboot,
        maximum_duration=duration,
    )
