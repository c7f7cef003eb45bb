"""Figures across a fleet, for the overview and the by-update view: each from the per-VM summaries
(GuestState, MissingUpdate) that record_findings keeps current, in a fixed number of set-based
queries whatever the fleet size. Each takes a VirtualMachine queryset (the viewer's, filtered).
"""

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo

from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncDate

from vms import clock
from vms.models import VirtualMachine
from vms.vocabulary import PatchMode

from .models import (
    IN_FLIGHT,
    ComplianceSnapshot,
    GuestState,
    HotpatchStatus,
    InstalledUpdate,
    MissingUpdate,
    Operation,
    OperationKind,
    OperationStatus,
    Update,
)
from .vocabulary import Classification

# Update status as the fleet tiles, the overview and the fleet filter count it: one state per VM (on
# VirtualMachine, through its guest), the first that applies. UPDATE_STATUS_SQL is the same rule over a
# guest row `g` (all NULL for a VM without a guest) for the rollup triggers (patching.rollup); the
# rollup consistency test holds the two to each other.
UPDATE_STATUS: dict[str, tuple[str, Q]] = {
    "reboot": ("Reboot required", Q(guest__reboot_pending=True)),
    "available": (
        "Updates available",
        Q(guest__reboot_pending=False, guest__assessed_at__isnull=False)
        & (Q(guest__critical_security_count__gt=0) | Q(guest__other_count__gt=0)),
    ),
    "none": (
        "No updates",
        Q(
            guest__reboot_pending=False,
            guest__assessed_at__isnull=False,
            guest__critical_security_count=0,
            guest__other_count=0,
        ),
    ),
    "nodata": ("No assessment yet", Q(guest__assessed_at__isnull=True) & ~Q(guest__reboot_pending=True)),
}
UPDATE_STATUS_SQL = (
    "CASE WHEN g.reboot_pending THEN 'reboot' WHEN g.assessed_at IS NULL THEN 'nodata' "
    "WHEN g.critical_security_count > 0 OR g.other_count > 0 THEN 'available' ELSE 'none' END"
)

# Compliant: assessed, and no Critical or Security update outstanding for longer than this.
COMPLIANCE_GRACE = timedelta(days=30)


# "The last 30 days" of installations: today and the 29 days before it, in the viewer's time zone.
INSTALLATION_DAYS = 30
FINISHED_INSTALLATION = (OperationStatus.SUCCEEDED, OperationStatus.COMPLETED_WITH_WARNINGS, OperationStatus.FAILED)


def installations_since(now: datetime, zone: tzinfo) -> datetime:
    """The start of the installation window: midnight, INSTALLATION_DAYS - 1 days before today, in `zone`."""
    today = now.astimezone(zone).date()
    return datetime.combine(today - timedelta(days=INSTALLATION_DAYS - 1), time(), tzinfo=zone)


def recent_installations(operations: QuerySet[Operation], now: datetime, zone: tzinfo) -> QuerySet[Operation]:
    """The installations among `operations` since installations_since: the fleet tiles count them, the
    overview draws them per day (one definition for both)."""
    return operations.filter(kind=OperationKind.INSTALLATION, created_at__gte=installations_since(now, zone))


def installations_per_day(counts: dict[tuple, dict]) -> dict[tuple, int]:
    """Finished recent installations per (local day, status), from installation_counts."""
    return {key: figures["runs"] for key, figures in counts.items() if key[1] in FINISHED_INSTALLATION}


def fleet_counts(vms: QuerySet[VirtualMachine], now: datetime, *, guest: bool = False) -> dict:
    """The fleet tiles' counts (total, status_<key>, mode_<mode>, hotpatch_enabled, hotpatch_action)
    and with `guest` the overview's (guest_aggregates' names), aggregated over `vms`: one query.
    (patching.rollup.fleet_counts reads the same from its rollups.)"""
    return vms.order_by().aggregate(
        **(guest_aggregates(now) if guest else {}),
        total=Count("pk"),
        **{f"status_{key}": Count("pk", filter=q) for key, (_, q) in UPDATE_STATUS.items()},
        **{f"mode_{mode}": Count("pk", filter=Q(patch_mode=mode)) for mode in PatchMode.values},
        hotpatch_enabled=Count("pk", filter=Q(guest__hotpatch_status=HotpatchStatus.ENABLED)),
        hotpatch_action=Count("pk", filter=Q(guest__hotpatch_status=HotpatchStatus.ACTION_REQUIRED)),
    )


def installation_counts(operations: QuerySet[Operation], now: datetime, zone: tzinfo) -> dict[tuple, dict]:
    """Recent installations (since installations_since) per (local day, status): {"runs", "installed",
    "failed"} (runs, and patches installed and failed), grouped over `operations`: one query."""
    rows = (
        recent_installations(operations, now, zone)
        .annotate(day=TruncDate("created_at", tzinfo=zone))
        .order_by()
        .values("day", "status")
        .annotate(
            runs=Count("pk"), installed=Coalesce(Sum("installed_count"), 0), failed=Coalesce(Sum("failed_count"), 0)
        )
    )
    return {
        (r["day"], r["status"]): {"runs": r["runs"], "installed": r["installed"], "failed": r["failed"]} for r in rows
    }


def installations_tile(counts: dict[tuple, dict]) -> dict:
    """The fleet list's 30-day installations tile, from installation_counts."""
    runs = {}
    for (_, status), figures in counts.items():
        runs[status] = runs.get(status, 0) + figures["runs"]
    return {
        "runs": sum(runs.values()),
        "succeeded": runs.get(OperationStatus.SUCCEEDED, 0),
        "warnings": runs.get(OperationStatus.COMPLETED_WITH_WARNINGS, 0),
        "failed": runs.get(OperationStatus.FAILED, 0),
        "running": sum(runs.get(status, 0) for status in IN_FLIGHT),
        "patches_installed": sum(f["installed"] for f in counts.values()),
        "patches_failed": sum(f["failed"] for f in counts.values()),
    }


def compliant(now: datetime, prefix: str = "") -> Q:
    """The compliance rule as a filter on GuestState (prefix "guest__" on VirtualMachine)."""
    return Q(**{f"{prefix}assessed_at__isnull": False}) & (
        Q(**{f"{prefix}oldest_critical_security_at__isnull": True})
        | Q(**{f"{prefix}oldest_critical_security_at__gt": now - COMPLIANCE_GRACE})
    )


def record_compliance_snapshots(now: datetime | None = None) -> int:
    """Today's compliance per subscription (one aggregate, one upsert): the beat re-records today's
    row until the day ends, so the last figure of each day stays. Returns the number of rows written."""
    now = now or clock.now()
    figures = (
        GuestState.objects.order_by()
        .values("vm__resource_group__subscription_id")
        .annotate(
            machines=Count("pk"),
            assessed=Count("pk", filter=Q(assessed_at__isnull=False)),
            compliant=Count("pk", filter=compliant(now)),
        )
    )
    rows = [
        ComplianceSnapshot(
            subscription_id=f["vm__resource_group__subscription_id"],
            day=now.date(),
            machines=f["machines"],
            assessed=f["assessed"],
            compliant=f["compliant"],
        )
        for f in figures
    ]
    ComplianceSnapshot.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["subscription", "day"],
        update_fields=["machines", "assessed", "compliant"],
    )
    return len(rows)


def compliance_trend(subscription_ids, first: date, last: date) -> list[dict]:
    """Per day from first to last: machines assessed and compliant, summed over the subscriptions
    (None for a day with no snapshot)."""
    recorded = {
        row["day"]: row
        for row in ComplianceSnapshot.objects.filter(subscription__in=subscription_ids, day__range=(first, last))
        .order_by()
        .values("day")
        .annotate(assessed=Sum("assessed"), compliant=Sum("compliant"))
    }
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    return [{"day": day, **(recorded.get(day) or {"assessed": None, "compliant": None})} for day in days]


def guest_aggregates(now: datetime) -> dict:
    """Aggregates over VirtualMachine of the per-VM summaries the overview draws, to be computed in the
    same pass as the fleet tiles (fleet_tiles(..., **guest_aggregates(now))): machines missing updates of
    each classification, and this year's installations without reboot and reboots avoided."""
    this_year = Q(guest__counted_year=now.year)
    return {
        **{
            f"missing_{c.value}": Count("pk", filter=Q(guest__missing_by_classification__has_key=c.value))
            for c in Classification
        },
        "without_reboot": Coalesce(Sum("guest__installs_without_reboot", filter=this_year), 0),
        "reboots_avoided": Coalesce(Sum("guest__reboots_avoided", filter=this_year), 0),
    }


def missing_by_classification(counts: dict) -> list[dict]:
    """Machines missing at least one update of each classification, from guest_aggregates' counts."""
    return [{"key": c.value, "label": c.label, "count": counts[f"missing_{c.value}"]} for c in Classification]


def hotpatch_year(counts: dict, now: datetime) -> dict:
    """This calendar year's installations that did not restart the machine, and those of them that
    installed a hotpatch (each a restart the month's rebooting cumulative update would have needed),
    from guest_aggregates' sums of the per-VM counters record_findings keeps."""
    since = now.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    return {"since": since, "without_reboot": counts["without_reboot"], "reboots_avoided": counts["reboots_avoided"]}


@dataclass
class UpdateRow:
    update: Update
    missing: int
    installed: int
    failed: int


def updates_missing_or_failed(vms: QuerySet[VirtualMachine]) -> list[UpdateRow]:
    """Every update a VM of `vms` misses (failed in its last installation or not), with how many
    machines miss it, failed it, and have it installed: three queries."""
    in_scope = vms.order_by().values("pk")
    counts = {
        row["update_id"]: row
        for row in MissingUpdate.objects.filter(guest_id__in=in_scope)
        .order_by()
        .values("update_id")
        .annotate(missing=Count("guest_id"), failed=Count("guest_id", filter=Q(failed=True)))
    }
    installed = dict(
        InstalledUpdate.objects.filter(update_id__in=list(counts), guest_id__in=in_scope)
        .order_by()
        .values("update_id")
        .annotate(n=Count("guest_id"))
        .values_list("update_id", "n")
    )
    return [
        UpdateRow(update, counts[update.pk]["missing"], installed.get(update.pk, 0), counts[update.pk]["failed"])
        for update in Update.objects.filter(pk__in=list(counts))
    ]


def machines_missing(vms: QuerySet[VirtualMachine], update: Update) -> QuerySet[VirtualMachine]:
    """The VMs of `vms` that miss the update (including those that failed it), annotated `failed`."""
    return vms.filter(guest__missing_updates__update=update).annotate(failed=F("guest__missing_updates__failed"))


def missing_per_subscription(machines: QuerySet[VirtualMachine]) -> dict:
    """How many of `machines` (machines_missing's queryset) each subscription has: one grouped query."""
    return dict(
        machines.order_by()
        .values("resource_group__subscription_id")
        .annotate(n=Count("pk"))
        .values_list("resource_group__subscription_id", "n")
    )


def machines_page(machines: QuerySet[VirtualMachine], *, after: int | None, before: int | None, size: int):
    """One page of machines_missing in VM id order, keyset-paged (MissingUpdate's (update, guest)
    index walks it): (the page's VMs, whether there are more before, after)."""
    if before is not None:
        rows = list(machines.filter(pk__lt=before).order_by("-pk")[: size + 1])
        more_before, rows = len(rows) > size, rows[:size][::-1]
        return rows, more_before, True
    if after is not None:
        machines = machines.filter(pk__gt=after)
    rows = list(machines.order_by("pk")[: size + 1])
    return rows[:size], after is not None, len(rows) > size
