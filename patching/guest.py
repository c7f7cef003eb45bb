"""The simulated guest: what an assessment finds and what an installation does (SPEC §3.3).

Pure functions over plain dataclasses, no ORM, so the rules are easy to read and to test. The
service layer turns catalog rows and guest state into these values and writes the outcome back.
"""

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from .vocabulary import (  # noqa: F401 (the kind sets are the guest's vocabulary too: sim.BASELINE_KINDS)
    BASELINE_KINDS,
    QUALITY_CUMULATIVE_KINDS,
    SECURITY_CUMULATIVE_KINDS,
    STANDALONE_KINDS,
    WINDOWS_KINDS,
)

# Simulated seconds each kind of work takes inside the guest.
INSTALL_SECONDS = {
    "baseline": 1200,
    "unplanned_baseline": 1200,
    "monthly": 1200,
    "oob": 1200,
    "preview": 1200,
    "hotpatch": 180,
    "dotnet": 420,
    "msrt": 240,
    "definition": 60,
}
ASSESSMENT_SECONDS = 90
REBOOT_SECONDS = 240

CRITICAL_AND_SECURITY = frozenset({"Critical", "Security"})


@dataclass(frozen=True)
class Patch:
    """An update as the guest sees it."""

    id: int
    kb: str
    kind: str
    classification: str
    reboot_behavior: str
    published_at: datetime
    build: str = ""
    baseline_id: int | None = None

    @property
    def requires_reboot(self) -> bool:
        """excludeKbsRequiringReboot drops every KB whose behaviour isn't NeverReboots."""
        return self.reboot_behavior != "NeverReboots"

    @property
    def is_critical_or_security(self) -> bool:
        return self.classification in CRITICAL_AND_SECURITY


@dataclass(frozen=True)
class Guest:
    """The part of a VM's state the guest rules read."""

    hotpatch_enrolled: bool
    build: str
    baseline_id: int | None
    installed: frozenset[int]
    reboot_pending: bool = False


def latest(patches: Iterable[Patch]) -> Patch | None:
    return max(patches, key=lambda p: (p.published_at, p.id), default=None)


def latest_baseline(catalog: Sequence[Patch], now: datetime) -> Patch | None:
    return _released(catalog, now).latest(BASELINE_KINDS)


class _Released:
    """What a catalog offers at a moment, whatever the guest: computed once per (catalog, now) and
    shared by every guest of a batch (the same product's catalog, the same clock)."""

    def __init__(self, catalog: Sequence[Patch], now: datetime):
        self.released = [p for p in catalog if p.published_at <= now]
        self.by_id = {p.id: p for p in self.released}
        self._latest: dict = {}

    def latest(self, kinds: frozenset[str], baseline_id: int | None = None, *, of_baseline: bool = False):
        key = (kinds, baseline_id, of_baseline)
        if key not in self._latest:
            self._latest[key] = latest(
                p for p in self.released if p.kind in kinds and (not of_baseline or p.baseline_id == baseline_id)
            )
        return self._latest[key]


_released_memo: dict[tuple[int, datetime], tuple[Sequence[Patch], _Released]] = {}


def _released(catalog: Sequence[Patch], now: datetime) -> _Released:
    key = (id(catalog), now)
    found = _released_memo.get(key)
    if found is not None and found[0] is catalog:  # the same list, not one that reused its id
        return found[1]
    if len(_released_memo) >= 64:
        _released_memo.clear()
    view = _Released(catalog, now)
    _released_memo[key] = (catalog, view)
    return view


def applicable(guest: Guest, catalog: Sequence[Patch], now: datetime) -> list[Patch]:
    """Updates released by `now` for this guest, not installed and not superseded by something installed.

    `catalog` is the product's catalog. A hotpatch-enrolled guest follows the hotpatch track: the
    latest baseline if it is not on it, else the latest hotpatch built on that baseline.
    """
    view = _released(catalog, now)
    installed = guest.installed
    mine = [view.by_id[pid] for pid in installed if pid in view.by_id]  # what it has of what was released
    offered: list[Patch] = []

    def newest_installed(kinds: Iterable[str]) -> datetime | None:
        kinds = frozenset(kinds)
        return max((p.published_at for p in mine if p.kind in kinds), default=None)

    windows_installed_at = newest_installed(WINDOWS_KINDS)

    def is_new(patch: Patch | None, installed_at: datetime | None) -> bool:
        return (
            patch is not None
            and patch.id not in installed
            and (installed_at is None or patch.published_at > installed_at)
        )

    if guest.hotpatch_enrolled:
        baseline = view.latest(frozenset(BASELINE_KINDS))
        if baseline is not None and guest.baseline_id != baseline.id:
            # Behind the baseline: the baseline (with its reboot) comes before any hotpatch.
            if baseline.id not in installed:
                offered.append(baseline)
        elif baseline is not None:
            hotpatch = view.latest(frozenset({"hotpatch"}), baseline.id, of_baseline=True)
            if is_new(hotpatch, windows_installed_at):
                offered.append(hotpatch)
    else:
        security = view.latest(frozenset(SECURITY_CUMULATIVE_KINDS))
        if is_new(security, windows_installed_at):
            offered.append(security)
        quality = view.latest(frozenset(QUALITY_CUMULATIVE_KINDS))
        if is_new(quality, windows_installed_at):
            offered.append(quality)

    for kind in STANDALONE_KINDS:
        newest = view.latest(frozenset({kind}))
        if is_new(newest, newest_installed([kind])):
            offered.append(newest)
    return sorted(offered, key=install_order)


def install_order(patch: Patch) -> tuple:
    """Servicing-stack order: the Windows cumulative update or hotpatch first, then the rest by date."""
    return (patch.kind not in WINDOWS_KINDS, patch.published_at, patch.id)


def is_behind_baseline(guest: Guest, catalog: Sequence[Patch], now: datetime) -> bool:
    baseline = latest_baseline(catalog, now)
    return baseline is not None and guest.baseline_id != baseline.id


# --- Selection ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """installPatches' filters (azure-api.md §4), already validated."""

    classifications: frozenset[str] = frozenset()
    kbs_to_include: frozenset[str] = frozenset()
    kbs_to_exclude: frozenset[str] = frozenset()
    exclude_kbs_requiring_reboot: bool = False
    max_patch_publish_date: datetime | None = None


def select(available: Sequence[Patch], selection: Selection) -> dict[int, str]:
    """Each available patch's fate before installing: 'Selected', 'Excluded' or 'NotSelected'."""
    fate: dict[int, str] = {}
    for patch in available:
        chosen = patch.classification in selection.classifications or patch.kb in selection.kbs_to_include
        if patch.kb in selection.kbs_to_exclude:
            fate[patch.id] = "Excluded"
        elif (
            not chosen
            or (selection.exclude_kbs_requiring_reboot and patch.requires_reboot)
            or (selection.max_patch_publish_date is not None and patch.published_at > selection.max_patch_publish_date)
        ):
            fate[patch.id] = "NotSelected"
        else:
            fate[patch.id] = "Selected"
    return fate


# --- Installation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstallOutcome:
    states: dict[int, str]  # patch id -> Installed / Failed / Pending / Excluded / NotSelected
    errors: dict[int, str]
    installed: list[Patch]
    status: str  # Succeeded / CompletedWithWarnings / Failed
    reboot_status: str  # NotNeeded / Required / Completed
    reboot_pending: bool
    maintenance_window_exceeded: bool
    build: str
    baseline_id: int | None
    simulated_seconds: int
    counts: dict[str, int] = field(default_factory=dict)


def fails(vm_key: str, patch: Patch, day: date, rate: float) -> bool:
    """A deterministic per-(VM, KB, day) failure draw: the same run fails the same way every time."""
    if rate <= 0:
        return False
    digest = hashlib.sha256(f"{vm_key}|{patch.id}|{patch.kb}|{day.isoformat()}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


@dataclass(frozen=True)
class Injected:
    """Sandbox faults an installation runs under (patching.faults decides which; the guest obeys)."""

    failing_kbs: frozenset[str] = frozenset()
    every_kb_fails: bool = False
    slowdown: int = 1  # each install takes this many times as long
    reboot_hangs: bool = False

    def fails(self, patch: Patch) -> bool:
        return self.every_kb_fails or patch.kb in self.failing_kbs


NO_FAULTS = Injected()
INJECTED = "Injected fault"  # how every injected result says so


def install(
    guest: Guest,
    available: Sequence[Patch],
    selection: Selection,
    *,
    reboot_setting: str,
    maximum_duration: timedelta,
    vm_key: str,
    today: date,
    failure_rate: float,
    injected: Injected = NO_FAULTS,
) -> InstallOutcome:
    """Install the selected patches one by one in simulated time, then reboot per rebootSetting.

    `injected`: the sandbox's faults; what they cause says "Injected fault" in its error."""
    fate = select(available, selection)
    budget = maximum_duration.total_seconds()
    elapsed = 0
    states: dict[int, str] = {}
    errors: dict[int, str] = {}
    installed: list[Patch] = []
    window_exceeded = False
    reboot_reserved = False
    build, baseline_id = guest.build, guest.baseline_id

    for patch in sorted(available, key=install_order):
        if fate[patch.id] != "Selected":
            states[patch.id] = fate[patch.id]
            continue
        seconds = INSTALL_SECONDS.get(patch.kind, 300) * injected.slowdown
        # Leave room for the reboot that will follow: Azure doesn't start an install it can't finish.
        reboots = reboot_setting != "Never" and (
            patch.requires_reboot or reboot_setting == "Always" or guest.reboot_pending
        )
        needed = seconds + (REBOOT_SECONDS if reboots or reboot_reserved else 0)
        if elapsed + needed > budget:
            states[patch.id] = "Pending"
            window_exceeded = True
            continue
        elapsed += seconds
        reboot_reserved = reboot_reserved or reboots
        if injected.fails(patch):
            states[patch.id] = "Failed"
            errors[patch.id] = f"KB{patch.kb} failed to install (0x80070643). {INJECTED} (sandbox)."
            continue
        if fails(vm_key, patch, today, failure_rate):
            states[patch.id] = "Failed"
            errors[patch.id] = f"KB{patch.kb} failed to install (0x80070643)."
            continue
        states[patch.id] = "Installed"
        installed.append(patch)
        if patch.kind in BASELINE_KINDS:
            build, baseline_id = patch.build or build, patch.id
        elif patch.kind == "hotpatch":
            build = patch.build or build  # in memory: the revision moves, no reboot
        elif patch.kind in ("monthly", "oob"):
            # A non-baseline cumulative update leaves the hotpatch baseline behind.
            build, baseline_id = patch.build or build, None

    needs_reboot = guest.reboot_pending or any(p.reboot_behavior == "AlwaysRequiresReboot" for p in installed)
    if reboot_setting == "Never":
        reboot_status = "Required" if needs_reboot else "NotNeeded"
        reboot_pending = needs_reboot
    elif (needs_reboot or (reboot_setting == "Always" and installed)) and injected.reboot_hangs:
        # The restart never completes: the updates wait for a reboot that someone has to force.
        reboot_status, reboot_pending = "Failed", True
        elapsed += REBOOT_SECONDS
    elif needs_reboot or (reboot_setting == "Always" and installed):
        reboot_status, reboot_pending = "Completed", False
        elapsed += REBOOT_SECONDS
    else:
        reboot_status, reboot_pending = "NotNeeded", False

    counts = {state: 0 for state in ("Installed", "Failed", "Pending", "Excluded", "NotSelected")}
    for state in states.values():
        counts[state] += 1
    if (counts["Failed"] and not counts["Installed"]) or reboot_status == "Failed":
        status = "Failed"
    elif counts["Failed"] or counts["Pending"]:
        status = "CompletedWithWarnings"
    else:
        status = "Succeeded"
    return InstallOutcome(
        states=states,
        errors=errors,
        installed=installed,
        status=status,
        reboot_status=reboot_status,
        reboot_pending=reboot_pending,
        maintenance_window_exceeded=window_exceeded,
        build=build,
        baseline_id=baseline_id,
        simulated_seconds=int(elapsed),
        counts=counts,
    )


# --- Hotpatch status ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HotpatchVerdict:
    status: str  # hotpatchEnablementStatus
    reason: str


def hotpatch_status(
    *,
    capable: bool,
    enabled: bool,
    patch_mode: str,
    assessed: bool,
    guest: Guest,
    baseline: Patch | None,
    baseline_label: str = "",
) -> HotpatchVerdict:
    """hotpatchEnablementStatus from real state (SPEC §3.4), with the reason a person needs."""
    if not capable:
        return HotpatchVerdict("Disabled", "The image does not support hotpatch.")
    if not enabled:
        return HotpatchVerdict("Disabled", "Hotpatch is turned off; the VM takes a rebooting update every month.")
    if patch_mode != "AutomaticByPlatform":
        return HotpatchVerdict("ActionRequired", "Hotpatch needs patch orchestration 'Azure-orchestrated'.")
    if not assessed:
        return HotpatchVerdict("PendingEvaluation", "Waiting for the first assessment.")
    if baseline is not None and guest.baseline_id != baseline.id:
        if baseline.id in guest.installed:
            return HotpatchVerdict(
                "ActionRequired",
                "Not on a baseline build: hotpatches resume after the next baseline is installed.",
            )
        return HotpatchVerdict(
            "ActionRequired",
            f"Behind the baseline: install {baseline_label or 'KB' + baseline.kb} (requires a reboot) to get hotpatches.",
        )
    return HotpatchVerdict("Enabled", "On the current baseline; hotpatches install without a reboot.")
