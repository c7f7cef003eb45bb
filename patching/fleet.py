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

from .models import (
    ComplianceSnapshot,
    GuestState,
    InstalledUpdate,
    MissingUpdate,
    Operation,
    OperationKind,
    OperationStatus,
    Update,
)
from .vocabulary import Classification

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


def installations_per_day(operations: QuerySet[Operation], now: datetime, zone: tzinfo) -> dict[tuple, int]:
    """Finished recent installations per (local day, status): one grouped query."""
    rows = (
        recent_installations(operations, now, zone)
        .filter(status__in=FINISHED_INSTALLATION)
        .annotate(day=TruncDate("created_at", tzinfo=zone))
        .order_by()
        .values("day", "status")
        .annotate(n=Count("pk"))
    )
    return {(row["day"], row["status"]): row["n"] for row in rows}


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
