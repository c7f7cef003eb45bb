"""Maintenance configurations (customer-managed schedules), their assignments, runs and webhooks.

A configuration is Azure's Microsoft.Maintenance/maintenanceConfigurations resource with the
InGuestPatch scope: a recurring window and what to install in it. Assignments put VMs in its scope:
statically (one VM) or dynamically (a subscription and a filter, evaluated at each run). Each
occurrence of the window is a MaintenanceRun; each VM it considered is a RunMachine, linked to the
installation it queued. Webhooks receive the run's pre- and post-events; each send is a delivery.
"""

import uuid
from datetime import timedelta

from django.db import models
from django.db.models import Q
from django.utils.functional import cached_property

from . import recurrence


class Visibility(models.TextChoices):
    CUSTOM = "Custom"
    PUBLIC = "Public"


class ScheduleReboot(models.TextChoices):
    """installPatches.rebootSetting (InputPatchConfiguration): Azure's maintenance spelling."""

    IF_REQUIRED = "IfRequired"
    NEVER = "Never"
    ALWAYS = "Always"


class MaintenanceConfiguration(models.Model):
    resource_group = models.ForeignKey("vms.ResourceGroup", models.CASCADE, related_name="maintenance_configurations")
    name = models.CharField(max_length=80)
    location = models.CharField(max_length=40)
    tags = models.JSONField(default=dict, blank=True)
    visibility = models.CharField(max_length=8, choices=Visibility.choices, default=Visibility.CUSTOM)
    extension_properties = models.JSONField(default=dict, blank=True)
    # The window as Azure spells it: a wall-clock start in a Windows time zone.
    start_date_time = models.CharField(max_length=16)  # "yyyy-MM-dd HH:mm"
    duration = models.DurationField()
    time_zone = models.CharField(max_length=64)  # Windows name, e.g. "Pacific Standard Time"
    expiration_date_time = models.CharField(max_length=19, blank=True)
    recur_every = models.CharField(max_length=120)
    # installPatches
    reboot_setting = models.CharField(max_length=10, choices=ScheduleReboot.choices, default=ScheduleReboot.IF_REQUIRED)
    windows_parameters = models.JSONField(default=dict, blank=True)
    linux_parameters = models.JSONField(default=dict, blank=True)
    # Pre-event lead time (Azure: up to 20 minutes before the window; 0 = no pre-event).
    pre_event_minutes = models.PositiveSmallIntegerField(default=20)
    created_at = models.DateTimeField()
    created_by = models.CharField(max_length=150, blank=True)
    modified_at = models.DateTimeField()
    modified_by = models.CharField(max_length=150, blank=True)
    version = models.PositiveIntegerField(default=1)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                "resource_group", models.functions.Lower("name"), name="maintenance_config_unique_name"
            ),
        ]
        indexes = [models.Index(fields=["location"])]

    def __str__(self) -> str:
        return self.name

    @property
    def subscription_id(self):
        return self.resource_group.subscription_id

    @property
    def arm_id(self) -> str:
        rg = self.resource_group
        return (
            f"/subscriptions/{rg.subscription_id}/resourcegroups/{rg.name}"
            f"/providers/Microsoft.Maintenance/maintenanceConfigurations/{self.name}"
        )

    @cached_property
    def window(self) -> recurrence.Window:
        """The stored window (validated when it was written, so it parses)."""
        found, problems = recurrence.window(
            self.start_date_time,
            recurrence.format_duration(self.duration),
            self.time_zone,
            self.recur_every,
            self.expiration_date_time or None,
        )
        if problems:
            raise ValueError(f"{self.name}: stored window is invalid: {problems}")
        return found

    @property
    def describe(self) -> str:
        return self.window.rule.describe()

    @property
    def pre_event_lead(self) -> timedelta:
        return timedelta(minutes=self.pre_event_minutes)


class ConfigurationAssignment(models.Model):
    """A VM assigned statically (`vm`), or a dynamic scope: a subscription and a `filter`."""

    configuration = models.ForeignKey(MaintenanceConfiguration, models.CASCADE, related_name="assignments")
    name = models.CharField(max_length=80)
    vm = models.ForeignKey(
        "vms.VirtualMachine", models.CASCADE, null=True, blank=True, related_name="maintenance_assignments"
    )
    subscription = models.ForeignKey("vms.Subscription", models.CASCADE, related_name="maintenance_assignments")
    # A dynamic scope at resource-group scope (configurationAssignments under a resource group): only its VMs.
    resource_group = models.ForeignKey(
        "vms.ResourceGroup", models.CASCADE, null=True, blank=True, related_name="maintenance_assignments"
    )
    # Dynamic scope (configurationAssignments at subscription scope): resourceGroups, locations, osTypes,
    # resourceTypes, tagSettings {tags: {name: [values]}, filterOperator: Any|All}.
    filter = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField()
    created_by = models.CharField(max_length=150, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                "vm",
                models.functions.Lower("name"),
                name="maintenance_assignment_vm_name",
                condition=Q(vm__isnull=False),
            ),
            models.UniqueConstraint(
                "subscription",
                models.functions.Lower("name"),
                name="maintenance_assignment_scope_name",
                condition=Q(vm__isnull=True, resource_group__isnull=True),
            ),
            models.UniqueConstraint(
                "resource_group",
                models.functions.Lower("name"),
                name="maintenance_assignment_group_name",
                condition=Q(vm__isnull=True, resource_group__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_dynamic(self) -> bool:
        return self.vm_id is None


class RunStatus(models.TextChoices):
    """A run's status, in Azure's applyUpdates vocabulary (UpdateStatus) plus Cancelled."""

    PENDING = "Pending"
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    CANCELLED = "Cancelled"


class MaintenanceRun(models.Model):
    """One occurrence of a configuration's window."""

    configuration = models.ForeignKey(MaintenanceConfiguration, models.CASCADE, related_name="runs")
    correlation_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    scheduled_start = models.DateTimeField()
    window_end = models.DateTimeField()
    status = models.CharField(max_length=12, choices=RunStatus.choices, default=RunStatus.PENDING)
    pre_event_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    cancelled_by = models.CharField(max_length=150, blank=True)  # a user, "API", or "Webhook <url>"
    # Counts per VM status, written when the window closes (RunMachine holds the detail).
    counts = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint("configuration", "scheduled_start", name="maintenance_run_once"),
        ]
        indexes = [models.Index(fields=["status", "scheduled_start"]), models.Index(fields=["window_end"])]
        ordering = ["-scheduled_start"]

    def __str__(self) -> str:
        return f"{self.configuration} at {self.scheduled_start:%Y-%m-%d %H:%M}"

    @property
    def is_cancelled(self) -> bool:
        return self.status == RunStatus.CANCELLED

    @property
    def is_pending(self) -> bool:
        return self.status == RunStatus.PENDING


class MachineStatus(models.TextChoices):
    QUEUED = "Queued", "Installing"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    WINDOW_EXCEEDED = "MaintenanceWindowExceeded", "Maintenance window exceeded"
    SKIPPED = "Skipped"


class RunMachine(models.Model):
    """What one run did for one VM in its scope."""

    run = models.ForeignKey(MaintenanceRun, models.CASCADE, related_name="machines")
    vm = models.ForeignKey("vms.VirtualMachine", models.SET_NULL, null=True, related_name="+")
    vm_name = models.CharField(max_length=64)
    operation = models.OneToOneField(
        "patching.Operation", models.SET_NULL, null=True, blank=True, related_name="maintenance_result"
    )
    status = models.CharField(max_length=26, choices=MachineStatus.choices)
    reason = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint("run", "vm", name="maintenance_run_machine_once")]

    def __str__(self) -> str:
        return f"{self.vm_name}: {self.status}"


class WebhookSubscription(models.Model):
    """An endpoint receiving a configuration's Event Grid events (CloudEvents JSON), signed."""

    configuration = models.ForeignKey(MaintenanceConfiguration, models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=80)
    pre_event = models.BooleanField(default=True)
    post_event = models.BooleanField(default=True)
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.url


class DeliveryStatus(models.TextChoices):
    PENDING = "Pending"
    DELIVERED = "Delivered"
    FAILED = "Failed"


class WebhookDelivery(models.Model):
    """One event sent to one webhook: its attempts and outcome (the delivery log)."""

    webhook = models.ForeignKey(WebhookSubscription, models.CASCADE, related_name="deliveries")
    run = models.ForeignKey(MaintenanceRun, models.CASCADE, related_name="deliveries")
    event_type = models.CharField(max_length=60)
    event_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint("webhook", "run", "event_type", name="maintenance_delivery_once")]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.event_type} to {self.webhook_id}: {self.status}"
