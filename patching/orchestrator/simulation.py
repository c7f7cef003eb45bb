"""The platform over simulated time: the real engine and orchestrator on a clock that jumps ahead.

`Simulation` creates a fleet, then steps a clock from `start` to `end`. At each step it applies the
power changes due, lets an operator resume halted rollouts after a delay, runs periodic assessment
(optional: it costs one operation per VM and day and changes no patching decision) and one round of
automatic patching (`engine.patch_fleet(now, execute=True)`): installations run at once through
services.execute_operations(ids, now=...), the same code a Celery worker runs.

The clock does not tick through idle hours: after a round that started nothing, with nothing in
flight, it jumps to the earliest moment something can happen (a window opening for a VM that
needs an update, a release, a power change, a resume, an assessment slot). A year of 1,000 VMs
is a few thousand rounds.

`manage.py simulate` runs it in a throwaway in-memory SQLite database (`throwaway_database`); the
demo seeder runs it over the real database for the past 45 days.
"""

import calendar as calendar_module
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from django.db.models import Count

from patching import calendar, services
from patching import fleet as figures
from patching.models import InstalledUpdate, Operation, OperationKind, RebootStatus, RolloutHalt, StartedBy, Update
from vms import features, images
from vms.models import ResourceGroup, Subscription, VirtualMachine

from ..maintenance import services as maintenance
from ..maintenance.models import MaintenanceConfiguration
from . import engine, fleets
from .needs import GuestSummary, day_end, need

STEP = timedelta(hours=1)
COMPLIANCE_DAYS = 30


@contextmanager
def throwaway_database():
    """Point Django's default database at a fresh in-memory SQLite database, migrated, for this block.

    Nothing of the configured database is read or written meanwhile; it is restored afterwards.
    """
    from django.contrib.contenttypes.models import ContentType
    from django.core.management import call_command
    from django.db import connections
    from django.db.utils import ConnectionHandler

    original = connections["default"]
    scratch = ConnectionHandler({"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}})["default"]
    connections["default"] = scratch
    try:
        call_command("migrate", verbosity=0, interactive=False)
        yield
    finally:
        scratch.close()
        connections["default"] = original
        ContentType.objects.clear_cache()  # its ids were the scratch database's


@dataclass
class Simulation:
    start: datetime
    end: datetime
    # The fleet it creates and its power changes; the sandbox runs the fleet already in the database.
    fleet: fleets.Fleet = field(default_factory=lambda: fleets.Fleet([], []))
    assessments: bool = False
    # An operator resumes a halted rollout this long after it halted (None: nobody does).
    resume_after: timedelta | None = timedelta(hours=24)
    # Periodic assessments run in batches at most this often (None: at each VM's own slot).
    assessment_step: timedelta | None = None
    # Each step also settles preview-feature registrations and fails stale operations (the beat's work).
    housekeeping: bool = False
    # Each simulated day that ends leaves its compliance figure (the overview's trend), as the beat does.
    daily_compliance: bool = False
    snapshot_day: date | None = None  # the day whose figure is recorded next
    rounds: int = 0
    operations: int = 0
    reached: datetime | None = None  # how far the clock got (the sandbox stores it, even after an error)
    seconds: float = 0.0
    vms: list[VirtualMachine] = field(default_factory=list)
    # What the engine read in the previous round; verify=True checks it against a fresh read each round.
    cache: engine.FleetCache = field(default_factory=engine.FleetCache)

    def create_fleet(self) -> list[VirtualMachine]:
        self.vms = fleets.create(self.fleet, self.start)
        return self.vms

    def schedule(
        self,
        share: float,
        recur_every: str,
        *,
        time_zone: str = "UTC",
        duration: str = "03:55",
        start_time: str = "22:00",
        install_patches: dict | None = None,
    ):
        """Put `share` of the Azure-orchestrated VMs (every k-th by name, hotpatch off) on Customer Managed
        Schedules under one maintenance configuration whose dynamic scopes pick them by tag, its window
        starting at `start_time` on the first simulated day and installing `install_patches` (ARM shape;
        default: what the rules ask for, reboot if required). Returns the problems with the schedule."""
        candidates = list(
            VirtualMachine.objects.filter(patch_mode="AutomaticByPlatform")
            .order_by("name")
            .values_list("pk", flat=True)
        )
        # Spread evenly: the i-th candidate is chosen when it crosses the next whole multiple of the share.
        chosen = [pk for i, pk in enumerate(candidates) if int((i + 1) * share) > int(i * share)]
        VirtualMachine.objects.filter(pk__in=chosen).update(
            enable_hotpatching=False, bypass_platform_safety_checks=True, tags={"schedule": "customer"}
        )
        rg = ResourceGroup.objects.select_related("subscription").order_by("pk").first()
        body = {
            "location": rg.location,
            "properties": {
                "maintenanceScope": "InGuestPatch",
                "maintenanceWindow": {
                    "startDateTime": f"{self.start:%Y-%m-%d} {start_time}",
                    "duration": duration,
                    "timeZone": time_zone,
                    "recurEvery": recur_every,
                },
                "installPatches": install_patches or {"rebootSetting": "IfRequired"},
            },
        }
        config, _, problems = maintenance.save_configuration(rg, "simulated-schedule", body)
        if problems:
            return problems
        MaintenanceConfiguration.objects.filter(pk=config.pk).update(created_at=self.start, modified_at=self.start)
        for subscription in Subscription.objects.all():
            maintenance.assign_scope(
                config,
                subscription,
                f"scope-{str(subscription.pk)[:8]}",
                {"tagSettings": {"tags": {"schedule": ["customer"]}}},
            )
        self.cache.touch(chosen)
        return []

    def run(self, until: datetime | None = None, on_round: Callable[[datetime], None] | None = None) -> None:
        """Step the clock from start to `until` (default: end); `on_round(clock)` after each step (progress)."""
        began = time.perf_counter()
        until = until or self.end
        by_name = {vm.name: vm.pk for vm in self.vms}
        changes = sorted((c for c in self.fleet.changes if self.start <= c.at < until), key=lambda c: c.at)
        releases = sorted(
            set(
                Update.objects.filter(
                    published_at__gt=self.start, published_at__lt=until, classification__in=("Critical", "Security")
                ).values_list("published_at", flat=True)
            )
        )
        clock, cache = self.start, self.cache
        next_patch, next_assessment = clock, clock if self.assessments else None
        next_maintenance = clock
        with services.fixed_catalog():
            while clock < until:
                self.reached = clock
                if self.housekeeping:
                    self._housekeeping(clock)
                if self.daily_compliance:
                    self._record_days_before(clock)
                while changes and changes[0].at <= clock:
                    change = changes.pop(0)
                    VirtualMachine.objects.filter(pk=by_name[change.vm]).update(power_state=change.power_state)
                    cache.touch([by_name[change.vm]])
                    if change.power_state == "running":  # a VM switched off waits for the next round
                        next_patch = clock
                if self._resume_halts(clock):
                    next_patch = clock
                if next_assessment is not None and next_assessment <= clock:
                    assessed = engine.assess_fleet(clock, execute=True)
                    self.operations += len(assessed.started)
                    next_assessment = assessed.next_due or until
                    if self.assessment_step:
                        next_assessment = max(next_assessment, clock + self.assessment_step)
                if next_maintenance <= clock:
                    next_maintenance = self._run_schedules(clock, cache) or until
                if next_patch <= clock:
                    result = engine.patch_fleet(clock, execute=True, cache=cache, wait=True)
                    self.rounds += 1
                    self.operations += len(result.started)
                    releases = [r for r in releases if r > clock]
                    moments = [until, *releases[:1], *(m for m in (result.wake_at, self._next_resume()) if m)]
                    if result.hurry or result.busy:
                        moments.append(clock + STEP)
                    next_patch = min(moments)
                moments = [next_patch, next_maintenance, *(change.at for change in changes[:1])]
                if next_assessment is not None:
                    moments.append(next_assessment)
                clock = max(min(moments), clock + timedelta(minutes=1))
                if on_round is not None:
                    on_round(min(clock, until))
        self.reached = until
        if self.daily_compliance:
            self._record_days_before(until)
            figures.record_compliance_snapshots(until)
        self.seconds += time.perf_counter() - began

    def _run_schedules(self, clock: datetime, cache) -> datetime | None:
        """Maintenance configurations' step at `clock` (pre-events, windows opening and closing), their
        installations run at once; returns when the schedules next have something to do."""
        step = maintenance.run_due(clock, execute=True)
        self.operations += len(step.operations)
        if step.operations:
            cache.touch(Operation.objects.filter(pk__in=step.operations).values_list("vm_id", flat=True))
        return maintenance.next_due(clock)

    def _housekeeping(self, clock: datetime) -> None:
        """What the beat does besides patching: registrations settle, runs nobody finishes fail."""
        features.settle_due(clock)
        services.fail_stale_operations(clock)

    def _record_days_before(self, clock: datetime) -> None:
        """The compliance figure of every day that ended before `clock`, idle ones too (the 30-day rule ages)."""
        day = self.snapshot_day or clock.date()
        while day < clock.date():
            figures.record_compliance_snapshots(day_end(day))
            day += timedelta(days=1)
        self.snapshot_day = clock.date()

    def _resume_halts(self, clock: datetime) -> int:
        """The operator resumes the halts open for `resume_after` by `clock`; returns how many."""
        if self.resume_after is None:
            return 0
        due = RolloutHalt.objects.filter(resumed_at=None, halted_at__lte=clock - self.resume_after)
        return sum(engine.resume_rollout(halt, now=clock) for halt in due)

    def _next_resume(self) -> datetime | None:
        if self.resume_after is None:
            return None
        first = RolloutHalt.objects.filter(resumed_at=None).order_by("halted_at").first()
        return first.halted_at + self.resume_after if first else None

    # --- The report ---------------------------------------------------------------------------------

    def report(self) -> dict:
        """Reboots, compliance and releases, as one JSON-able dict (`manage.py simulate --json`)."""
        catalogs = engine.load_catalogs()
        rules = engine.current_rules()
        vms = list(VirtualMachine.objects.select_related("guest").order_by("name"))
        reboots: dict[int, list[datetime]] = defaultdict(list)
        for vm_id, finished in Operation.objects.filter(
            kind=OperationKind.INSTALLATION, reboot_status=RebootStatus.COMPLETED, vm__isnull=False
        ).values_list("vm_id", "finished_at"):
            reboots[vm_id].append(finished)
        installs = dict(
            Operation.objects.filter(
                kind=OperationKind.INSTALLATION,
                started_by__in=(StartedBy.PLATFORM, StartedBy.SCHEDULE),
                vm__isnull=False,
            )
            .values_list("vm_id")
            .annotate(n=Count("pk"))
        )
        installed: dict[int, list[tuple[datetime, int]]] = defaultdict(list)
        for guest_id, update_id, at in InstalledUpdate.objects.values_list("guest_id", "update_id", "installed_at"):
            installed[guest_id].append((at, update_id))
        off = self._off_intervals(vms)
        halts = list(RolloutHalt.objects.order_by("halted_at"))
        kinds = dict(Update.objects.values_list("id", "kind"))
        published = dict(Update.objects.values_list("id", "published_at"))
        memo: dict = {}
        days = [self.start.date() + timedelta(days=i) for i in range((self.end - self.start).days)]
        years = max(sum(1 / (366 if calendar_module.isleap(day.year) else 365) for day in days), 1 / 365)
        moments = [min(day_end(day), self.end) for day in days]

        rows = []
        for vm in vms:
            enrolled = vm.enable_hotpatching and vm.hotpatch_capable
            compliance = self._compliance(
                vm, enrolled, installed[vm.pk], kinds, published, catalogs, rules, moments, off[vm.pk], halts, memo
            )
            rows.append(
                {
                    "name": vm.name,
                    "product": vm.product,
                    "region": vm.location,
                    "patch_mode": vm.patch_mode,
                    "customer_schedule": vm.patch_mode == "AutomaticByPlatform" and vm.bypass_platform_safety_checks,
                    "hotpatch_enrolled": enrolled,
                    "reboot_setting": vm.reboot_setting,
                    "reboots": len(reboots[vm.pk]),
                    "reboot_months": sorted({f"{r:%Y-%m}" for r in reboots[vm.pk]}),
                    "reboots_per_year": round(len(reboots[vm.pk]) / years, 2),
                    "installations": installs.get(vm.pk, 0),
                    "days_off": round(sum((b - a).total_seconds() for a, b in off[vm.pk]) / 86400, 1),
                    **compliance,
                    "build": vm.guest.build,
                    "decision": vm.guest.patch_decision,
                    "decision_detail": vm.guest.patch_decision_detail,
                }
            )
        return {
            "start": self.start.date().isoformat(),
            "end": self.end.date().isoformat(),
            "rounds": self.rounds,
            "runtime_seconds": round(self.seconds, 1),
            "summary": summarize(rows, years),
            "releases": self._releases(),
            "halts": [
                {
                    "product": h.product,
                    "month": h.release_month,
                    "halted_at": h.halted_at.isoformat(),
                    "resumed_at": h.resumed_at.isoformat() if h.resumed_at else None,
                    "failed": h.failed,
                    "attempted": h.attempted,
                    "reason": h.reason,
                }
                for h in halts
            ],
            "vms": rows,
        }

    def _off_intervals(self, vms) -> dict[int, list[tuple[datetime, datetime]]]:
        """When each VM was not running, from the fleet's power changes."""
        by_name = {vm.name: vm.pk for vm in vms}
        intervals: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
        state = {name: self.fleet.initially_off.get(name, "running") for name in by_name}
        since = {name: self.start for name in by_name}
        for change in sorted(self.fleet.changes, key=lambda c: c.at):
            if not (self.start <= change.at < self.end) or change.vm not in by_name:
                continue
            if state[change.vm] != "running" and change.power_state == "running":
                intervals[by_name[change.vm]].append((since[change.vm], change.at))
            if state[change.vm] == "running" and change.power_state != "running":
                since[change.vm] = change.at
            state[change.vm] = change.power_state
        for name, power in state.items():
            if power != "running":
                intervals[by_name[name]].append((since[name], self.end))
        return intervals

    def _compliance(self, vm, enrolled, installs, kinds, published, catalogs, rules, moments, off, halts, memo) -> dict:
        """Day by day (`moments`: each day's 23:59:59 UTC): were Critical/Security updates outstanding, and for how long?

        Outstanding: what automatic patching would install, or what waits while the VM is behind the
        baseline; not the .NET updates an enrolled VM holds for its baseline month (by design). Out of
        compliance: outstanding continuously for more than 30 days since the oldest such release.
        Each such day gets a reason: not Azure-orchestrated, off, halted, or behind the baseline.
        """
        catalog = catalogs.get(vm.product)
        installs = sorted(installs)
        outstanding_days, out_days = 0, 0
        reasons: dict[str, int] = defaultdict(int)
        streak_since: datetime | None = None
        i, windows, dotnet, baseline, baseline_id = 0, None, None, None, None
        summary, known = None, {}
        for moment in moments:
            changed = summary is None
            while i < len(installs) and installs[i][0] <= moment:
                changed = True
                update_id = installs[i][1]
                kind, at = kinds[update_id], published[update_id]
                if kind in engine.sim.WINDOWS_KINDS:
                    windows = max(windows or at, at)
                    if kind in engine.sim.BASELINE_KINDS:
                        baseline, baseline_id = max(baseline or at, at), update_id
                    elif kind in ("monthly", "oob"):
                        baseline_id = None
                elif kind == "dotnet":
                    dotnet = max(dotnet or at, at)
                i += 1
            if catalog is None:
                continue
            if changed:  # the guest's state changed: its answers per day are shared by every VM in that state
                summary = GuestSummary(vm.product, enrolled, baseline_id, windows, dotnet, baseline)
                known = memo.setdefault(summary, {})
            if moment not in known:
                wanted = need(summary, catalog, moment, catch_up=rules.catch_up_baseline)
                missing = wanted.kbs + (wanted.held if wanted.behind else ())
                oldest = min(
                    (p.published_at for p in catalog.patches if p.kb in missing and p.published_at <= moment),
                    default=None,
                )
                known[moment] = (oldest, bool(wanted.behind))
            oldest, behind = known[moment]
            if oldest is None:
                streak_since = None
                continue
            outstanding_days += 1
            streak_since = oldest if streak_since is None else min(streak_since, oldest)
            if moment - streak_since <= timedelta(days=COMPLIANCE_DAYS):
                continue
            out_days += 1
            window_start = streak_since
            if vm.patch_mode != "AutomaticByPlatform":
                reasons["not_azure_orchestrated"] += 1
            elif any(a < moment and b > window_start for a, b in off):
                reasons["off"] += 1
            elif any(
                h.product == vm.product and h.halted_at < moment and (h.resumed_at or self.end) > window_start
                for h in halts
            ):
                reasons["halted"] += 1
            elif behind:
                reasons["behind_baseline"] += 1
            else:
                reasons["unexplained"] += 1
        return {
            "days_outstanding": outstanding_days,
            "days_out_of_compliance": out_days,
            "out_of_compliance_reasons": dict(reasons),
        }

    def _releases(self) -> list[dict]:
        """Each month of the range and what it brought, per product in the fleet."""
        products = sorted(set(VirtualMachine.objects.values_list("product", flat=True)))
        rows = []
        for product in products:
            for year in range(self.start.year, self.end.year + 1):
                for month in calendar.month_kinds(product, year):
                    if self.start.date() <= month.patch_tuesday < self.end.date():
                        rows.append(
                            {
                                "month": month.label,
                                "product": product,
                                "product_name": images.PRODUCTS[product].name,
                                "kind": str(month.kind),
                                "kb": month.kb,
                                "reboots": month.reboots,
                            }
                        )
        return rows


def summarize(rows: list[dict], years: float) -> dict:
    """Reboots per VM-year, hotpatch-enrolled against not, among Azure-orchestrated VMs that ran throughout."""

    def group(members: list[dict]) -> dict:
        n = len(members)
        return {
            "vms": n,
            "reboots_per_vm_year": round(sum(r["reboots"] for r in members) / n / years, 2) if n else None,
            "days_outstanding_per_vm": round(sum(r["days_outstanding"] for r in members) / n, 1) if n else None,
            "days_out_of_compliance": sum(r["days_out_of_compliance"] for r in members),
            "vms_out_of_compliance": sum(1 for r in members if r["days_out_of_compliance"]),
        }

    automatic = [r for r in rows if r["patch_mode"] == "AutomaticByPlatform" and r["reboot_setting"] != "Never"]
    orchestrated = [r for r in automatic if not r.get("customer_schedule")]
    steady = [r for r in orchestrated if not r["days_off"]]
    scheduled = group([r for r in automatic if r.get("customer_schedule") and not r["days_off"]])
    hotpatch = group([r for r in steady if r["hotpatch_enrolled"]])
    other = group([r for r in steady if not r["hotpatch_enrolled"]])
    saved = None
    if hotpatch["vms"] and other["vms"]:
        saved = round(other["reboots_per_vm_year"] - hotpatch["reboots_per_vm_year"], 2)
    reasons: dict[str, int] = defaultdict(int)
    for row in rows:
        for reason, n in row["out_of_compliance_reasons"].items():
            reasons[reason] += n
    return {
        "hotpatch": hotpatch,
        "not_hotpatch": other,
        "customer_schedule": scheduled,
        "reboots_saved_per_vm_year": saved,
        "all_vms": group(rows),
        "out_of_compliance_days_by_reason": dict(reasons),
        "note": "reboots per VM-year: Azure-orchestrated VMs (customer_schedule: those on a maintenance configuration) "
        "with rebootSetting other than Never that ran all the time",
    }


def utc(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)
