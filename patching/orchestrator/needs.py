"""What automatic patching would install on a VM now, and what it holds back. Pure: no database.

The guest's own rules (patching.guest.applicable) say what applies; this module adds the platform's:
only Critical and Security updates install automatically, and a hotpatch-enrolled VM holds updates
that need a reboot (.NET, anything outside the hotpatch programme) until a baseline month, when
they go in with the baseline's own reboot (SPEC §3.5).

A VM's state is summarised by `GuestSummary` (three timestamps from one aggregate query), which is
all `applicable` depends on for the Windows and .NET tracks, so the fleet is assessed in memory with
one query instead of one per VM, and identical states share one computation.

Behind the baseline (decided here, documented in docs/ARCHITECTURE.md): an enrolled VM that misses a
baseline (it was off through the baseline month's rollout) takes it at its next off-peak window,
even in a hotpatch month, rebooting once; waiting for the next baseline month would leave it without
that quarter's security fixes, since hotpatches only apply on the baseline. This is what Windows does
for a device off the baseline ([R3] in the product anchors). `Rules.catch_up_baseline=False`
(PORTAL_BASELINE_CATCH_UP) makes it wait instead, recorded as "behind the baseline". A VM that is
running and Azure-orchestrated never falls behind: it takes every baseline in its month. A VM on a
monthly (non-baseline) build, e.g. one re-enrolled after a spell without hotpatch, has nothing the
platform can install until the next baseline: it waits, recorded as "behind the baseline".
"""

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime

from patching import guest as sim
from patching.calendar import PLANNED_BASELINE_MONTHS, patch_tuesday

AUTOMATIC = sim.CRITICAL_AND_SECURITY
# The families whose newest installed update decides what applies next (guest.applicable).
WINDOWS_KINDS = sim.WINDOWS_KINDS
DOTNET = "dotnet"


@dataclass(frozen=True)
class CatalogPatch:
    """A catalog row as the guest sees it, with its release label (for rollouts and halts)."""

    patch: sim.Patch
    product: str
    release_month: str


@dataclass(frozen=True)
class GuestSummary:
    """The part of a guest's state automatic patching reads."""

    product: str
    enrolled: bool
    baseline_id: int | None
    newest_windows: datetime | None  # the newest installed Windows update (LCU, baseline or hotpatch)
    newest_dotnet: datetime | None
    newest_baseline: datetime | None  # the newest installed baseline, planned or unplanned


@dataclass(frozen=True)
class Need:
    """What the platform would install now (kbs), and why it might wait."""

    kbs: tuple[str, ...] = ()
    description: str = ""  # e.g. "KB5041160 (2024-08 baseline, reboots)"
    releases: frozenset[tuple[str, str]] = frozenset()  # (product, release month) of what it installs
    reboots: bool = False
    # An enrolled VM outside a baseline month: reboot-requiring updates are left out of this install.
    exclude_reboot: bool = False
    held: tuple[str, ...] = ()  # KBs held for the next baseline month
    held_until: str = ""  # the next baseline month, e.g. "2024-10 (expected 2024-10-08)"
    behind: str = ""  # why an enrolled VM behind the baseline waits ("" if it does not)
    catch_up: str = ""  # set when it takes a missed baseline outside a baseline month

    @property
    def installs(self) -> bool:
        return bool(self.kbs)


class ProductCatalog:
    """One product's catalog, indexed for automatic patching's questions."""

    def __init__(self, product: str, rows: Iterable[CatalogPatch]):
        self.product = product
        self.rows = sorted(rows, key=lambda r: (r.patch.published_at, r.patch.id))
        self.patches = [r.patch for r in self.rows]
        self.month = {r.patch.id: r.release_month for r in self.rows}
        self._by_family: dict[tuple[str, datetime], int] = {}
        for p in self.patches:
            self._by_family[(self._family(p.kind), p.published_at)] = p.id
        self.baselines = [p for p in self.patches if p.kind in sim.BASELINE_KINDS]
        self.automatic = [p for p in self.patches if p.is_critical_or_security]
        self._published = [p.published_at for p in self.patches]
        self._current: dict[int, CatalogPatch | None] = {}

    def epoch(self, now: datetime) -> int:
        """How many of the product's updates are out by `now`: what applies changes only with it."""
        return bisect_right(self._published, now)

    @staticmethod
    def _family(kind: str) -> str:
        return "windows" if kind in WINDOWS_KINDS else kind

    def latest_baseline(self, now: datetime) -> sim.Patch | None:
        return sim.latest(p for p in self.baselines if p.published_at <= now)

    def next_baseline(self, now: datetime) -> str:
        """The next baseline month, from the catalog or else the Jan/Apr/Jul/Oct forecast."""
        upcoming = next((p for p in self.baselines if p.published_at > now), None)
        if upcoming is not None:
            return f"{self.month[upcoming.id]} (expected {upcoming.published_at:%Y-%m-%d})"
        year, month = now.year, now.month
        while True:
            month += 1
            if month > 12:
                year, month = year + 1, 1
            if month in PLANNED_BASELINE_MONTHS:
                return f"{year:04d}-{month:02d} (expected {patch_tuesday(year, month):%Y-%m-%d})"

    def current_release(self, now: datetime) -> CatalogPatch | None:
        """The newest Critical/Security Windows release by `now`: the rollout in progress."""
        epoch = self.epoch(now)
        if epoch not in self._current:
            newest = sim.latest(p for p in self.automatic if p.kind in WINDOWS_KINDS and p.published_at <= now)
            self._current[epoch] = None if newest is None else next(r for r in self.rows if r.patch.id == newest.id)
        return self._current[epoch]

    def installed_view(self, summary: GuestSummary, now: datetime) -> frozenset[int]:
        """Stand-in installed ids that make guest.applicable answer as for the real installed set.

        applicable reads only the newest installed update of each family and whether the latest
        baseline is installed; one id per family (any with that timestamp) is enough.
        """
        ids = set()
        for family, moment in (("windows", summary.newest_windows), (DOTNET, summary.newest_dotnet)):
            if moment is not None and (family, moment) in self._by_family:
                ids.add(self._by_family[(family, moment)])
        baseline = self.latest_baseline(now)
        if (
            baseline is not None
            and summary.newest_baseline is not None
            and summary.newest_baseline >= baseline.published_at
        ):
            ids.add(baseline.id)
        return frozenset(ids)

    def describe(self, patches: Sequence[sim.Patch]) -> str:
        return ", ".join(f"KB{p.kb} ({self.month[p.id]} {_kind_label(p)})" for p in patches)


def _kind_label(patch: sim.Patch) -> str:
    labels = {
        "baseline": "baseline",
        "unplanned_baseline": "unplanned baseline",
        "hotpatch": "hotpatch",
        "monthly": "cumulative update",
        "oob": "out-of-band update",
        "dotnet": ".NET update",
    }
    label = labels.get(patch.kind, patch.kind)
    return f"{label}, reboots" if patch.requires_reboot else label


def need(summary: GuestSummary, catalog: ProductCatalog, now: datetime, *, catch_up: bool = True) -> Need:
    """What the platform would install on this guest now (Critical and Security only)."""
    guest = sim.Guest(
        hotpatch_enrolled=summary.enrolled,
        build="",
        baseline_id=summary.baseline_id,
        installed=catalog.installed_view(summary, now),
    )
    available = [p for p in sim.applicable(guest, catalog.patches, now) if p.is_critical_or_security]
    latest_baseline = catalog.latest_baseline(now)
    if summary.enrolled and latest_baseline is not None and summary.baseline_id != latest_baseline.id:
        if not any(p.kind in sim.BASELINE_KINDS for p in available):
            # On a build that is not a baseline, with the baseline installed: no hotpatch applies.
            return Need(
                behind=(
                    f"Not on a baseline build (it took a monthly update while hotpatch was off): hotpatches "
                    f"resume after the next baseline, {catalog.next_baseline(now)}."
                ),
                held=tuple(p.kb for p in available),
                held_until=catalog.next_baseline(now),
            )
    if not available:
        return Need()
    releases = frozenset((catalog.product, catalog.month[p.id]) for p in available)
    if not summary.enrolled:
        return _installing(available, catalog, releases)

    baseline = next((p for p in available if p.kind in sim.BASELINE_KINDS), None)
    if baseline is not None:
        # A baseline reboots anyway: whatever was held goes in with it.
        late = any(
            p.kind == "hotpatch" and p.baseline_id == baseline.id and p.published_at <= now for p in catalog.patches
        )
        if not late:
            return _installing(available, catalog, releases)
        missed = f"Missed the {catalog.month[baseline.id]} baseline KB{baseline.kb}"
        if not catch_up:
            return Need(
                behind=f"{missed}; it waits for the next baseline month, {catalog.next_baseline(now)}, "
                "rather than reboot in a hotpatch month (hotpatches do not apply meanwhile).",
                held=tuple(p.kb for p in available),
                held_until=catalog.next_baseline(now),
            )
        return replace(
            _installing(available, catalog, releases),
            catch_up=f"{missed}: it takes it now, rebooting outside a baseline month; hotpatches resume after it.",
        )

    now_patches = [p for p in available if not p.requires_reboot]
    held = [p for p in available if p.requires_reboot]
    if not now_patches:
        return Need(held=tuple(p.kb for p in held), held_until=catalog.next_baseline(now))
    releases = frozenset((catalog.product, catalog.month[p.id]) for p in now_patches)
    return replace(
        _installing(now_patches, catalog, releases),
        exclude_reboot=bool(held),
        held=tuple(p.kb for p in held),
        held_until=catalog.next_baseline(now) if held else "",
    )


def _installing(patches: Sequence[sim.Patch], catalog: ProductCatalog, releases) -> Need:
    return Need(
        kbs=tuple(p.kb for p in patches),
        description=catalog.describe(patches),
        releases=releases,
        reboots=any(p.requires_reboot for p in patches),
    )


def day_end(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 23, 59, 59, tzinfo=UTC)
