"""Patching: the update catalog, each VM's guest state, and one record per operation."""

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import models
from django.db.models import Q
from django.utils import timezone

from vms.images import PRODUCT_CHOICES
from vms.models import sort_indexes

from .vocabulary import (
    BASELINE_KINDS,
    CUMULATIVE_KINDS,
    Classification,
    FaultKind,
    HotpatchStatus,
    PatchState,
    RebootBehavior,
    UpdateKind,
)


class UpdateSource(models.TextChoices):
    RELEASE_HISTORY = "release-history", "Microsoft release history"
    HOTPATCH_CALENDAR = "hotpatch-calendar", "Microsoft hotpatch calendar"
    GENERATED = "generated", "Generated (no public data)"
    IMPORTED = "imported", "Imported"


class UpdateQuerySet(models.QuerySet):
    def released(self, now: datetime) -> "UpdateQuerySet":
        return self.filter(published_at__lte=now)

    def baselines(self) -> "UpdateQuerySet":
        return self.filter(kind__in=Update.BASELINE_KINDS)


class Update(models.Model):
    """One update as Windows Update offers it to one product."""

    BASELINE_KINDS = tuple(sorted(BASELINE_KINDS))
    CUMULATIVE_KINDS = tuple(sorted(CUMULATIVE_KINDS))

    patch_id = models.UUIDField(unique=True, default=uuid.uuid4)
    product = models.CharField(max_length=20, choices=PRODUCT_CHOICES)
    kb = models.CharField("KB", max_length=10, help_text="Digits only, as in 5073457.")
    title = models.CharField(max_length=250)
    kind = models.CharField(max_length=20, choices=UpdateKind.choices)
    classification = models.CharField(max_length=20, choices=Classification.choices)
    reboot_behavior = models.CharField(max_length=24, choices=RebootBehavior.choices)
    published_at = models.DateTimeField()
    release_month = models.CharField(max_length=7, help_text="The update's month label, e.g. 2026-02.")
    build = models.CharField(max_length=20, blank=True)
    # A hotpatch builds on one baseline; only VMs on that baseline can take it.
    baseline = models.ForeignKey(
        "self",
        models.PROTECT,
        null=True,
        blank=True,
        related_name="hotpatches",
        limit_choices_to={"kind__in": BASELINE_KINDS},
    )
    source = models.CharField(max_length=20, choices=UpdateSource.choices, default=UpdateSource.IMPORTED)

    objects = UpdateQuerySet.as_manager()

    class Meta:
        ordering = ["-published_at", "product", "kb"]
        indexes = [models.Index(fields=["product", "published_at"])]
        constraints = [
            models.CheckConstraint(condition=Q(kb__regex=r"^[0-9]{6,8}$"), name="kb_is_digits"),
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def classification_label(self) -> str:
        return Classification(self.classification).label

    @property
    def is_baseline(self) -> bool:
        return self.kind in self.BASELINE_KINDS

    @property
    def is_hotpatch(self) -> bool:
        return self.kind == UpdateKind.HOTPATCH

    @property
    def never_reboots(self) -> bool:
        return self.reboot_behavior == RebootBehavior.NEVER


class PatchDecision(models.TextChoices):
    """Why automatic patching did (or did not) patch a VM when it last looked."""

    PATCHED = "patched", "Patched"
    UP_TO_DATE = "up_to_date", "Nothing to install"
    OFF = "off", "VM not running"
    OUTSIDE_WINDOW = "outside_window", "Outside its off-peak window"
    WAITING_PHASE = "waiting_phase", "Waiting for its region's rollout phase"
    WAITING_ZONE = "waiting_zone", "Waiting for another zone to finish"
    WAITING_BATCH = "waiting_batch", "Waiting for its update-domain batch"
    HALTED = "halted", "Rollout halted"
    MODE_MANUAL = "mode_manual", "Patch orchestration is Manual"
    MODE_BY_OS = "mode_by_os", "Patch orchestration is AutomaticByOS"
    BEHIND_BASELINE = "behind_baseline", "Behind the baseline"
    HELD_FOR_BASELINE = "held_for_baseline", "Rebooting updates held for the baseline month"
    RETRY = "retry", "Failed or pending: retried in the next window"
    USER_SCHEDULE = "user_schedule", "Customer-managed schedule, none attached"
    IN_PROGRESS = "in_progress", "An on-demand installation is running"


class GuestState(models.Model):
    """What runs inside one VM, and what its last assessment and installation found (1:1 with the VM)."""

    vm = models.OneToOneField("vms.VirtualMachine", models.CASCADE, primary_key=True, related_name="guest")
    # The VM's name, copied (it never changes): the fleet list sorts by a guest column, then name and
    # id, with one index of this table per order (see Meta.indexes).
    vm_name = models.CharField(max_length=64, editable=False, default="")
    build = models.CharField(max_length=20)
    baseline = models.ForeignKey(Update, models.PROTECT, null=True, blank=True, related_name="+")
    reboot_pending = models.BooleanField(default=False)
    last_boot_at = models.DateTimeField(null=True, blank=True)
    installed = models.ManyToManyField(Update, through="InstalledUpdate", related_name="+")
    # The compliance summary, copied from the last finished assessment/installation for list pages.
    # Set only by record_findings, to runs it holds locked; no foreign-key constraint in the database
    # (as WRITTEN_BY_RECORDING): the deferred check, locking the run row again, was 20 µs a run.
    # Pruning a run clears them (Django's SET_NULL). No index either: nothing looks a guest up by its
    # last run but that pruning (a background job), and every index is rewritten by every recording.
    last_assessment = models.ForeignKey(
        "Operation", models.SET_NULL, null=True, blank=True, related_name="+", db_constraint=False, db_index=False
    )
    last_installation = models.ForeignKey(
        "Operation", models.SET_NULL, null=True, blank=True, related_name="+", db_constraint=False, db_index=False
    )
    assessed_at = models.DateTimeField(null=True, blank=True)
    critical_security_count = models.PositiveIntegerField(default=0)
    other_count = models.PositiveIntegerField(default=0)
    hotpatch_status = models.CharField(max_length=20, choices=HotpatchStatus.choices, default=HotpatchStatus.UNKNOWN)
    hotpatch_status_reason = models.CharField(max_length=300, blank=True)
    # The platform's latest decision about automatic patching of this VM ("why wasn't it patched?").
    patch_decision = models.CharField(max_length=24, choices=PatchDecision.choices, blank=True)
    patch_decision_detail = models.CharField(max_length=300, blank=True)
    patch_decision_at = models.DateTimeField(null=True, blank=True)
    # For the fleet overview: how many updates of each classification the VM misses ({"Security": 2}),
    # and when the oldest Critical or Security one it misses was published (compliance: none > 30 days).
    missing_by_classification = models.JSONField(default=dict, blank=True)
    oldest_critical_security_at = models.DateTimeField(null=True, blank=True)
    # This year's (counted_year's) installations that did not restart the VM, and those of them that
    # installed a hotpatch (a reboot avoided): counted as runs are recorded, so they survive pruning.
    counted_year = models.PositiveSmallIntegerField(null=True, blank=True)
    installs_without_reboot = models.PositiveIntegerField(default=0)
    reboots_avoided = models.PositiveIntegerField(default=0)

    class Meta:
        # The fleet list's sorts by a guest column (they also serve filters and ranges on the column);
        # assessed_at's, NULLS FIRST (which SQLite's indexes cannot spell), is made by migration 0013
        # on PostgreSQL only.
        indexes = sort_indexes(
            "guest",
            *("hotpatch_status", "critical_security_count", "other_count", "reboot_pending"),
            name="vm_name",
            pk="vm_id",
        )

    def __str__(self) -> str:
        return f"{self.vm} guest ({self.build})"

    @property
    def decision_is_settled(self) -> bool:
        """The platform patched it, or there was nothing to install."""
        return self.patch_decision in (PatchDecision.PATCHED, PatchDecision.UP_TO_DATE)

    @property
    def decision_is_halted(self) -> bool:
        return self.patch_decision == PatchDecision.HALTED


class InstalledUpdate(models.Model):  # noqa: DJ008 (a through table)
    guest = models.ForeignKey(GuestState, models.CASCADE, related_name="installed_updates")
    update = models.ForeignKey(Update, models.PROTECT, related_name="+")
    installed_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["guest", "update"], name="install_once")]


# WRITTEN_BY_RECORDING: per-patch results and missing updates, eight rows per run, are written only by
# record_findings (COPY), for runs, guests and catalog updates it holds locked or has just read; rows
# go away only through Django's deletes, which cascade (and protect) in Python. Their foreign keys
# are not checked by the database: deferred to commit, those checks were a sixth of a batch's time
# (eight index probes per run, each locking a catalog row every worker's batch shares).


class MissingUpdate(models.Model):  # noqa: DJ008 (a summary row)
    """An update one VM misses (its last run found it applicable and did not install it): the per-VM
    summary the by-update view counts from. Replaced for a VM whenever a run of it is recorded, so it
    outlives the pruning of the operation that found it."""

    # No foreign-key constraints in the database (WRITTEN_BY_RECORDING): Django still cascades.
    guest = models.ForeignKey(GuestState, models.CASCADE, related_name="missing_updates", db_constraint=False)
    # No index of its own: the unique (update, guest) below leads with it.
    update = models.ForeignKey(Update, models.CASCADE, related_name="+", db_index=False, db_constraint=False)
    # The VM's last installation tried it and failed (kept by the assessments after it while still missing).
    failed = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["update", "guest"], name="missing_once")]


class ComplianceSnapshot(models.Model):  # noqa: DJ008 (a daily figure)
    """One subscription's compliance on one day, recorded by a beat task: the overview's trend is drawn
    from these, cheap to read and independent of how much operation history is kept."""

    subscription = models.ForeignKey("vms.Subscription", models.CASCADE, related_name="+")
    day = models.DateField()
    machines = models.PositiveIntegerField(default=0)
    assessed = models.PositiveIntegerField(default=0)
    # Assessed machines with no Critical or Security update outstanding for more than COMPLIANCE_GRACE.
    compliant = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["day"]
        constraints = [models.UniqueConstraint(fields=["subscription", "day"], name="one_snapshot_per_day")]


class OperationKind(models.TextChoices):
    ASSESSMENT = "assessment", "Assessment"
    INSTALLATION = "installation", "Installation"


class OperationStatus(models.TextChoices):
    """PatchOperationStatus, plus NotStarted for a queued operation (as Update Manager reports it)."""

    NOT_STARTED = "NotStarted", "Queued"
    IN_PROGRESS = "InProgress", "In progress"
    SUCCEEDED = "Succeeded", "Succeeded"
    COMPLETED_WITH_WARNINGS = "CompletedWithWarnings", "Completed with warnings"
    FAILED = "Failed", "Failed"


IN_FLIGHT = (OperationStatus.NOT_STARTED, OperationStatus.IN_PROGRESS)


class RebootStatus(models.TextChoices):
    UNKNOWN = "Unknown"
    NOT_NEEDED = "NotNeeded"
    REQUIRED = "Required"
    STARTED = "Started"
    FAILED = "Failed"
    COMPLETED = "Completed"


class StartedBy(models.TextChoices):
    USER = "User"
    PLATFORM = "Platform"
    SCHEDULE = "Schedule", "Maintenance configuration"  # a run of a maintenance configuration (patching.maintenance)


class OperationQuerySet(models.QuerySet):
    def in_flight(self) -> "OperationQuerySet":
        return self.filter(status__in=IN_FLIGHT)

    def finished(self) -> "OperationQuerySet":
        return self.exclude(status__in=IN_FLIGHT)

    def since(self, moment: datetime) -> "OperationQuerySet":
        return self.filter(created_at__gte=moment)

    def among(self, ids, condition: Q) -> "OperationQuerySet":
        """The operations with these ids (a batch's) that meet `condition`, found by their ids, in pk
        order (the lock order).

        The condition is tested inside a CASE, which no index matches. A plain status test would let
        the planner read a whole in-flight index instead, for every batch, whenever the statistics
        were taken while little was in flight (between rounds, as autovacuum takes them): one
        100,000-VM round would read those 100,000 entries once per batch.
        """
        meets = models.Case(models.When(condition, then=True), default=False, output_field=models.BooleanField())
        return self.alias(meets_condition=meets).filter(pk__any=list(ids), meets_condition=True).order_by("pk")


class Operation(models.Model):
    """One assessment or installation: the single source of truth for the UI, the API and the admin."""

    # Errors of the platform or agent (the run never happened): the ARM operation itself fails.
    PLATFORM_ERRORS = ("VMNotRunning", "VMAgentStatusCommunicationError", "OperationTimedOut", "VMDeleted")

    activity_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # Null once the VM is deleted; the snapshot fields keep the history readable.
    # Each state change of each run writes every index of this table again, so no index is kept that
    # another already serves: vm by (vm, -created_at), subscription by op_subscription_newest,
    # created_at by op_newest_first; user (people only, never the platform) by a partial index.
    vm = models.ForeignKey("vms.VirtualMachine", models.SET_NULL, null=True, related_name="operations", db_index=False)
    subscription = models.ForeignKey("vms.Subscription", models.CASCADE, related_name="+", db_index=False)
    vm_name = models.CharField(max_length=64)
    location = models.CharField(max_length=40)
    kind = models.CharField(max_length=12, choices=OperationKind.choices)
    status = models.CharField(max_length=24, choices=OperationStatus.choices, default=OperationStatus.NOT_STARTED)
    started_by = models.CharField(max_length=10, choices=StartedBy.choices, default=StartedBy.USER)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+", db_index=False
    )
    # Installation parameters, normalised (see patching.selection.InstallParameters.to_json).
    parameters = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # The outbox: when this row was last handed to the broker (None: never, or the publish failed).
    dispatched_at = models.DateTimeField(null=True, blank=True)
    # A run proves it is alive: set at the claim and refreshed while the guest works. A stale one is
    # taken over (services._claim) or failed (services.fail_stale_operations).
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Simulated time is scheduled, not slept (services.advance_operations): while its guest works a run
    # holds no worker, only these due times (real time): when its reboot starts (an installation that
    # restarts the VM) and when it finishes. Its heartbeat is set to `due_at` meanwhile: a run whose
    # due step never came is taken over like one whose worker died. `plan` keeps the sandbox faults
    # decided at the claim (patching.faults) for the step that finishes the run.
    due_at = models.DateTimeField(null=True, blank=True)
    reboot_at = models.DateTimeField(null=True, blank=True)
    plan = models.JSONField(default=dict, blank=True)

    critical_security_count = models.PositiveIntegerField(default=0)
    other_count = models.PositiveIntegerField(default=0)
    reboot_pending = models.BooleanField(default=False)
    installed_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    pending_count = models.PositiveIntegerField(default=0)
    excluded_count = models.PositiveIntegerField(default=0)
    not_selected_count = models.PositiveIntegerField(default=0)
    reboot_status = models.CharField(max_length=10, choices=RebootStatus.choices, default=RebootStatus.UNKNOWN)
    maintenance_window_exceeded = models.BooleanField(default=False)
    error_code = models.CharField(max_length=60, blank=True)
    error_message = models.TextField(blank=True)
    # What the sandbox's injected faults did to this run (patching.faults); empty: a real result.
    injected = models.CharField(max_length=300, blank=True)

    objects = OperationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # A double click or a repeated API call joins the run already in flight (SPEC §3.7).
            models.UniqueConstraint(
                fields=["vm", "kind"], condition=Q(status__in=IN_FLIGHT), name="one_in_flight_per_vm_and_kind"
            )
        ]
        indexes = [
            models.Index(fields=["vm", "-created_at"]),
            models.Index(fields=["status", "created_at"], name="op_in_flight", condition=Q(status__in=IN_FLIGHT)),
            # The fleet history's keyset pages, newest first: across the fleet, and per subscription.
            models.Index(fields=["-created_at", "-id"], name="op_newest_first"),
            models.Index(fields=["subscription", "-created_at", "-id"], name="op_subscription_newest"),
            # The fleet history's filters, each in the keyset's order (newest first, then id). Full
            # indexes: partial ones (the few values only) would be lighter to write, but SQLite cannot
            # match a bound parameter to an index's condition, and the simulation's queries then
            # scanned every operation.
            models.Index(fields=["kind", "-created_at", "-id"], name="op_kind_newest"),
            models.Index(fields=["status", "-created_at", "-id"], name="op_status_newest"),
            models.Index(fields=["started_by", "-created_at", "-id"], name="op_started_by_newest"),
            models.Index(fields=["user"], name="op_user", condition=Q(user__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of {self.vm_name} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status not in IN_FLIGHT

    @property
    def is_assessment(self) -> bool:
        return self.kind == OperationKind.ASSESSMENT

    @property
    def is_failed(self) -> bool:
        return self.status == OperationStatus.FAILED

    @property
    def is_succeeded(self) -> bool:
        return self.status == OperationStatus.SUCCEEDED

    @property
    def is_completed_with_warnings(self) -> bool:
        return self.status == OperationStatus.COMPLETED_WITH_WARNINGS

    @property
    def is_rebooting(self) -> bool:
        """Running, and its VM restarting as part of it."""
        return self.status == OperationStatus.IN_PROGRESS and self.reboot_status == RebootStatus.STARTED

    @property
    def is_injected(self) -> bool:
        return bool(self.injected)

    @property
    def started_by_user(self) -> bool:
        return self.started_by == StartedBy.USER

    @property
    def started_by_schedule(self) -> bool:
        return self.started_by == StartedBy.SCHEDULE

    @property
    def schedule_name(self) -> str:
        """The maintenance configuration whose run started this (select_related maintenance_result__run__configuration)."""
        try:
            return self.maintenance_result.run.configuration.name
        except ObjectDoesNotExist:
            return "(deleted)"

    @property
    def arm_status(self) -> str:
        """The long-running operation's status: a failed patch run is still a finished operation."""
        if not self.is_finished:
            return "InProgress"
        if self.status == OperationStatus.FAILED and self.error_code in self.PLATFORM_ERRORS:
            return "Failed"
        return "Succeeded"

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class PatchResultQuerySet(models.QuerySet):
    def still_available(self, guest) -> "PatchResultQuerySet":
        """The guest's last assessment's findings that it has not installed since."""
        return self.filter(operation_id=guest.last_assessment_id).exclude(
            update_id__in=InstalledUpdate.objects.filter(guest_id=guest.pk).values("update_id")
        )


class PatchResult(models.Model):
    """One update's outcome in one operation: 'Available' for an assessment, its fate for an install."""

    # No index of its own: the unique (operation, update) below leads with it. No foreign-key
    # constraints in the database (WRITTEN_BY_RECORDING): Django still cascades and protects.
    operation = models.ForeignKey(
        Operation, models.CASCADE, related_name="results", db_index=False, db_constraint=False
    )
    # Not indexed either: nothing looks results up by update but the deletion of a catalog update,
    # which never happens outside a sandbox reset; the index cost four entries a run.
    update = models.ForeignKey(Update, models.PROTECT, related_name="+", db_index=False, db_constraint=False)
    state = models.CharField(max_length=12, choices=PatchState.choices)
    error = models.CharField(max_length=300, blank=True)

    objects = PatchResultQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["operation", "update"], name="one_result_per_update")]

    def __str__(self) -> str:
        return f"KB{self.update.kb}: {self.state}"


class RolloutHalt(models.Model):
    """A release's automatic rollout stopped because too many VMs failed; an operator resumes it."""

    release_month = models.CharField(max_length=7, help_text="The release, e.g. 2026-11.")
    product = models.CharField(max_length=20, choices=PRODUCT_CHOICES)
    halted_at = models.DateTimeField(default=timezone.now)
    failed = models.PositiveIntegerField(default=0)
    attempted = models.PositiveIntegerField(default=0)
    reason = models.CharField(max_length=300)
    resumed_at = models.DateTimeField(null=True, blank=True)
    resumed_by = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+")

    class Meta:
        ordering = ["-halted_at"]
        constraints = [
            # At most one open halt per release and product.
            models.UniqueConstraint(
                fields=["release_month", "product"], condition=Q(resumed_at=None), name="one_open_halt_per_release"
            )
        ]

    def __str__(self) -> str:
        return f"{self.release_month} {self.product} halted"

    @property
    def is_active(self) -> bool:
        return self.resumed_at is None


class WhatIfStatus(models.TextChoices):
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class WhatIfRun(models.Model):
    """One what-if year over a user's fleet (/sandbox/what-if/): the record the page polls and the job fills.

    The Celery task claims it Queued -> Running (compare-and-swap), writes `progress` as the simulated
    clock advances, and stores the comparison in `result`. One run queued or running per user.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="what_if_runs")
    status = models.CharField(max_length=10, choices=WhatIfStatus.choices, default=WhatIfStatus.QUEUED)
    vms = models.PositiveIntegerField(help_text="VMs in the fleet when the run was asked for.")
    days = models.PositiveIntegerField(default=365)
    start = models.DateField(help_text="The first simulated day (the world's today).")
    estimate_seconds = models.FloatField()
    progress = models.FloatField(default=0.0)  # 0..1
    created_at = models.DateTimeField(default=timezone.now)
    queued_at = models.DateTimeField(default=timezone.now)  # when it was last sent to the workers
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(default=dict, blank=True)
    error = models.CharField(max_length=500, blank=True)
    # The maintenance schedule compared as a third scenario (patching.what_if.schedule_window), or {}.
    schedule = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["user"], condition=Q(status__in=["Queued", "Running"]), name="one_what_if_in_flight_per_user"
            )
        ]

    def __str__(self) -> str:
        return f"What-if {self.start} over {self.vms} VMs: {self.status}"

    @property
    def is_finished(self) -> bool:
        return self.status in (WhatIfStatus.SUCCEEDED, WhatIfStatus.FAILED)

    @property
    def is_succeeded(self) -> bool:
        return self.status == WhatIfStatus.SUCCEEDED

    @property
    def is_failed(self) -> bool:
        return self.status == WhatIfStatus.FAILED

    @property
    def is_unclaimed(self) -> bool:
        """Queued for over a minute: no worker took it. The page stops polling and offers to send it again."""
        return self.status == WhatIfStatus.QUEUED and timezone.now() - self.queued_at > timedelta(minutes=1)

    @property
    def percent(self) -> int:
        return 100 if self.is_finished else int(self.progress * 100)

    @property
    def runtime_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class FaultQuerySet(models.QuerySet):
    def active(self) -> "FaultQuerySet":
        """Faults that still fire: by probability, or with operations left of their "next N"."""
        return self.filter(Q(remaining=None) | Q(remaining__gt=0))


class Fault(models.Model):
    """A fault injected in the sandbox: on one VM, a subscription, a region or the whole fleet.

    It fires with a probability on each matching operation, or on the next N of them. What it did is
    marked on the operation it hit (Operation.injected), so nobody mistakes it for a real result.
    """

    kind = models.CharField(max_length=20, choices=FaultKind.choices)
    # The scope: the narrowest given applies; none of them is the whole fleet.
    vm = models.ForeignKey("vms.VirtualMachine", models.CASCADE, null=True, blank=True, related_name="+")
    subscription = models.ForeignKey("vms.Subscription", models.CASCADE, null=True, blank=True, related_name="+")
    location = models.CharField(max_length=40, blank=True, help_text="A region (required for a rollout halt).")
    kb = models.CharField("KB", max_length=10, blank=True, help_text="For 'KB fails': digits only; empty: every KB.")
    probability = models.FloatField(null=True, blank=True, help_text="0 < p <= 1; or give Remaining.")
    remaining = models.PositiveIntegerField(null=True, blank=True, help_text="Fires on the next N operations.")
    fired = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+")

    objects = FaultQuerySet.as_manager()

    class Meta:
        ordering = ["pk"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(probability__isnull=True) & Q(remaining__isnull=False))
                | (Q(remaining__isnull=True) & Q(probability__gt=0) & Q(probability__lte=1)),
                name="fault_probability_or_next_n",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.scope_label}, {self.rate_label})"

    @property
    def scope_label(self) -> str:
        if self.vm_id:
            return f"VM {self.vm.name}"
        if self.subscription_id:
            return f"subscription {self.subscription}"
        if self.location:
            return f"region {self.location}"
        return "whole fleet"

    @property
    def rate_label(self) -> str:
        if self.probability is not None:
            return f"{self.probability:.0%} of operations"
        return f"next {self.remaining} operation(s)"

    @property
    def is_active(self) -> bool:
        return self.remaining is None or self.remaining > 0


# --- Rollups (patching.rollup) --------------------------------------------------------------------
# Fleet figures kept current by PostgreSQL statement triggers: each writing statement appends its net
# change per key to a *Delta table (insert-only: concurrent recorders never wait on one another); the
# fold moves deltas into the base table. Readers sum base + deltas in one statement. Models (not raw
# tables) so that migrations create them and test flushes truncate them with the rest.


class _ScopeKey(models.Model):
    """The fleet filters a rollup row is counted under: the VM's subscription, resource group name
    (lowered, as the filter matches it), location, OS product and patch orchestration."""

    subscription_id = models.UUIDField()
    resource_group = models.CharField(max_length=90)
    location = models.CharField(max_length=40)
    product = models.CharField(max_length=20)
    patch_mode = models.CharField(max_length=20)

    class Meta:
        abstract = True


class _FleetFigures(_ScopeKey):
    """Machines per scope, hotpatch status, update status bucket (patching.fleet.UPDATE_STATUS) and
    counted year, with their per-VM summaries summed."""

    hotpatch_status = models.CharField(max_length=20)  # "" for a VM without a guest yet
    update_status = models.CharField(max_length=10)
    counted_year = models.PositiveSmallIntegerField()  # 0: never counted
    machines = models.IntegerField(default=0)
    # Machines missing at least one update of each classification (one column per Classification).
    for _c in Classification:
        locals()[f"missing_{_c.value.lower()}"] = models.IntegerField(default=0)
    del _c
    installs_without_reboot = models.BigIntegerField(default=0)
    reboots_avoided = models.BigIntegerField(default=0)

    KEYS = ("subscription_id", "resource_group", "location", "product", "patch_mode", "hotpatch_status",
            "update_status", "counted_year")  # fmt: skip

    class Meta:
        abstract = True


class FleetRollup(_FleetFigures):  # noqa: DJ008 (a figure)
    class Meta:
        constraints = [models.UniqueConstraint(fields=_FleetFigures.KEYS, name="fleet_rollup_key")]


class FleetRollupDelta(_FleetFigures):  # noqa: DJ008 (a figure)
    pass


class _CoarseFleetFigures(_FleetFigures):
    """_FleetFigures without the resource group: what the fleet pages read when no resource group is
    chosen (rows per subscription and location, not per group: a few, whatever the number of groups)."""

    resource_group = None
    KEYS = tuple(k for k in _FleetFigures.KEYS if k != "resource_group")

    class Meta:
        abstract = True


class CoarseFleetRollup(_CoarseFleetFigures):  # noqa: DJ008 (a figure)
    class Meta:
        constraints = [models.UniqueConstraint(fields=_CoarseFleetFigures.KEYS, name="coarse_fleet_rollup_key")]


class CoarseFleetRollupDelta(_CoarseFleetFigures):  # noqa: DJ008 (a figure)
    pass


class _UpdateFigures(_ScopeKey):
    """Per update and scope: machines missing it, of which failed it last, and machines with it installed."""

    update_id = models.IntegerField()
    missing = models.IntegerField(default=0)
    failed = models.IntegerField(default=0)
    installed = models.IntegerField(default=0)

    KEYS = ("update_id", "subscription_id", "resource_group", "location", "product", "patch_mode")

    class Meta:
        abstract = True


class UpdateRollup(_UpdateFigures):  # noqa: DJ008 (a figure)
    class Meta:
        constraints = [models.UniqueConstraint(fields=_UpdateFigures.KEYS, name="update_rollup_key")]


class UpdateRollupDelta(_UpdateFigures):  # noqa: DJ008 (a figure)
    pass


class _InstallFigures(models.Model):
    """Installations (of existing VMs) created in one UTC hour, per status: runs and patches. Hour
    buckets, so a local day is a sum of whole buckets in any whole-hour time zone."""

    hour = models.DateTimeField()
    status = models.CharField(max_length=24)
    subscription_id = models.UUIDField()
    runs = models.IntegerField(default=0)
    installed = models.BigIntegerField(default=0)
    failed = models.BigIntegerField(default=0)

    KEYS = ("hour", "status", "subscription_id")

    class Meta:
        abstract = True


class InstallRollup(_InstallFigures):  # noqa: DJ008 (a figure)
    """Per subscription only: the unfiltered (and subscription-filtered) pages read this small one."""

    class Meta:
        constraints = [models.UniqueConstraint(fields=_InstallFigures.KEYS, name="install_rollup_key")]


class InstallRollupDelta(_InstallFigures):  # noqa: DJ008 (a figure)
    pass


class _ScopedInstallFigures(_InstallFigures):
    """Keyed by the VM's scope and its current hotpatch and update status too (a run that changes them
    moves the VM's recent installations to its new cell)."""

    resource_group = models.CharField(max_length=90)
    location = models.CharField(max_length=40)
    product = models.CharField(max_length=20)
    patch_mode = models.CharField(max_length=20)
    hotpatch_status = models.CharField(max_length=20)
    update_status = models.CharField(max_length=10)

    KEYS = ("hour", "status", "subscription_id", "resource_group", "location", "product", "patch_mode",
            "hotpatch_status", "update_status")  # fmt: skip

    class Meta:
        abstract = True


class ScopedInstallRollup(_ScopedInstallFigures):  # noqa: DJ008 (a figure)
    """Per full scope, for pages filtered by more than the subscription."""

    class Meta:
        constraints = [models.UniqueConstraint(fields=_ScopedInstallFigures.KEYS, name="scoped_install_rollup_key")]


class ScopedInstallRollupDelta(_ScopedInstallFigures):  # noqa: DJ008 (a figure)
    pass


class RollupWindow(models.Model):  # noqa: DJ008 (one row)
    """The oldest installation hour the installation rollups keep (set by the fold from the portal's
    clock): a VM's move between scopes re-counts only its installations since then."""

    since = models.DateTimeField()
