"""Inventory: subscriptions, resource groups, virtual machines, and who may see them."""

import hashlib
import hmac
import re
import secrets
import uuid
from datetime import timedelta

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from . import images, regions
from .patch_settings import PatchSettings
from .patch_settings import validate as validate_settings
from .vocabulary import AssessmentMode, PatchMode, RebootSetting, RegistrationState

RESOURCE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}[A-Za-z0-9_]$|^[A-Za-z0-9]$")
RESOURCE_NAME = RegexValidator(
    RESOURCE_NAME_RE,
    "Use 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit.",
)


class Subscription(models.Model):
    # ARM clients build URLs from this and require the GUID form.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    display_name = models.CharField(max_length=100)

    class Meta:
        ordering = ["display_name"]

    def __str__(self) -> str:
        return self.display_name

    def to_arm(self, tenant_id: str) -> dict:
        """The subscription as ARM shows it (azure-api.md §1), in the tenant given."""
        return {
            "id": f"/subscriptions/{self.pk}",
            "subscriptionId": str(self.pk),
            "displayName": self.display_name,
            "state": "Enabled",
            "tenantId": tenant_id,
            "authorizationSource": "RoleBased",
            "managedByTenants": [],
            "subscriptionPolicies": {
                "locationPlacementId": "Public_2014-09-01",
                "quotaId": "Internal_2014-09-01",
                "spendingLimit": "Off",
            },
        }


class Role(models.TextChoices):
    READER = "Reader"
    CONTRIBUTOR = "Contributor"
    OWNER = "Owner"


class RoleAssignment(models.Model):
    """A user's role on one subscription: Reader sees, Contributor acts, Owner also grants."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="role_assignments")
    subscription = models.ForeignKey(Subscription, models.CASCADE, related_name="role_assignments")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.READER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "subscription"], name="one_role_per_user_and_sub")]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} on {self.subscription}"


class ResourceGroup(models.Model):
    subscription = models.ForeignKey(Subscription, models.CASCADE, related_name="resource_groups")
    name = models.CharField(max_length=90, validators=[RESOURCE_NAME])
    location = models.CharField(max_length=40, choices=regions.REGION_CHOICES)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                models.functions.Lower("name"), "subscription", name="unique_rg_name_per_subscription"
            )
        ]

    def __str__(self) -> str:
        return self.name

    def to_arm(self) -> dict:
        """The resource group as ARM shows it (azure-api.md §1)."""
        return {
            "id": f"/subscriptions/{self.subscription_id}/resourceGroups/{self.name}",
            "name": self.name,
            "type": "Microsoft.Resources/resourceGroups",
            "location": self.location,
            "properties": {"provisioningState": "Succeeded"},
        }


class VirtualMachineQuerySet(models.QuerySet):
    def visible_to(self, user) -> "VirtualMachineQuerySet":
        """VMs of the subscriptions the user holds any role on; superusers see all."""
        if user.is_superuser:
            return self
        return self.filter(resource_group__subscription__role_assignments__user=user)

    def running(self) -> "VirtualMachineQuerySet":
        return self.filter(power_state=VirtualMachine.PowerState.RUNNING)

    def bulk_create(self, objs, *args, **kwargs):
        objs = list(objs)
        for vm in objs:
            vm.copy_resource_group_name()
        return super().bulk_create(objs, *args, **kwargs)


def sort_indexes(prefix: str, *columns: str, name: str = "name", pk: str = "id", nullable=()) -> list[models.Index]:
    """The index of each sortable column of a list ordered `col ASC NULLS FIRST, name, pk`, which read
    backwards is its descending order `col DESC NULLS LAST, name DESC, pk DESC`: one index per column,
    since every guest index is written again by each assessment. NULLS FIRST is spelled out only for
    `nullable` columns: for the others the plain order is the same and also matches the indexes that
    lead with another column (location = x ORDER BY name, id)."""
    F = models.F
    indexes = []
    for column in columns:
        order = F(column).asc(nulls_first=True) if column in nullable else F(column).asc()
        ties = [F(pk)] if column == name else [F(name), F(pk)]
        indexes.append(models.Index(order, *ties, name=f"{prefix}_{column[:16]}_asc"))
    return indexes


class VirtualMachine(models.Model):
    class PowerState(models.TextChoices):
        RUNNING = "running", "VM running"
        STOPPED = "stopped", "VM stopped"
        DEALLOCATED = "deallocated", "VM deallocated"
        STARTING = "starting", "VM starting"  # rebooting after an update

    resource_group = models.ForeignKey(ResourceGroup, models.CASCADE, related_name="virtual_machines")
    name = models.CharField(max_length=64, validators=[RESOURCE_NAME])
    # The resource group's name, copied (neither name ever changes): the fleet list sorts by it with an
    # index of this table (resource_group_name, name, id) instead of sorting the whole fleet per page.
    resource_group_name = models.CharField(max_length=90, editable=False, default="")
    vm_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    location = models.CharField(max_length=40, choices=regions.REGION_CHOICES)
    zone = models.CharField(max_length=2, blank=True, help_text="Availability zone (1, 2, 3), or blank.")
    availability_set = models.CharField(max_length=80, blank=True)
    update_domain = models.PositiveSmallIntegerField(null=True, blank=True)
    size = models.CharField(max_length=40, default="Standard_D2s_v5")
    image_publisher = models.CharField(max_length=64, default=images.PUBLISHER)
    image_offer = models.CharField(max_length=64, default=images.OFFER)
    image_sku = models.CharField(max_length=64)
    image_version = models.CharField(max_length=40, default="latest")
    # A gallery or custom image's resource id (imported fleets); then publisher, offer and sku are empty.
    image_id = models.CharField(max_length=400, blank=True)
    product = models.CharField(max_length=20, choices=images.PRODUCT_CHOICES)
    time_zone = models.CharField(max_length=64, default="UTC", help_text="IANA time zone, e.g. Europe/Stockholm.")
    power_state = models.CharField(max_length=12, choices=PowerState.choices, default=PowerState.RUNNING)
    created_at = models.DateTimeField(default=timezone.now)
    tags = models.JSONField(default=dict, blank=True)

    # osProfile.windowsConfiguration and its patchSettings (azure-api.md §1).
    provision_vm_agent = models.BooleanField(default=True)
    enable_automatic_updates = models.BooleanField(default=True)
    patch_mode = models.CharField(max_length=20, choices=PatchMode.choices, default=PatchMode.AUTOMATIC_BY_OS)
    enable_hotpatching = models.BooleanField(default=False)
    assessment_mode = models.CharField(
        max_length=20, choices=AssessmentMode.choices, default=AssessmentMode.IMAGE_DEFAULT
    )
    reboot_setting = models.CharField(max_length=12, choices=RebootSetting.choices, default=RebootSetting.IF_REQUIRED)
    bypass_platform_safety_checks = models.BooleanField(default=False)
    # When hotpatch was last turned off: re-enrolment waits for the next baseline after this.
    hotpatch_disabled_at = models.DateTimeField(null=True, blank=True)
    # Bumped on every write of what ARM shows of the VM (patch settings, size): its etag, so a client
    # (If-Match) or the settings form (a hidden field) can refuse to overwrite a change it has not seen.
    version = models.PositiveIntegerField(default=1, editable=False)

    objects = VirtualMachineQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(models.functions.Lower("name"), "resource_group", name="unique_vm_name_per_rg"),
            models.CheckConstraint(
                condition=Q(enable_hotpatching=False) | Q(patch_mode="AutomaticByPlatform"),
                name="hotpatch_needs_automatic_by_platform",
            ),
        ]
        indexes = [
            models.Index(fields=["location", "zone"]),
            models.Index(fields=["power_state"]),
            models.Index(fields=["resource_group", "name", "id"], name="vm_arm_list_order"),
            # The fleet list's sorts, one index range per page (portal.web.views.fleet; the guest
            # columns' are on patching.GuestState).
            *sort_indexes("vm", "name", "resource_group_name", "location", "image_sku", "power_state", "patch_mode"),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        self.copy_resource_group_name()
        super().save(*args, **kwargs)

    def copy_resource_group_name(self) -> None:
        if not self.resource_group_name and self.resource_group_id:
            self.resource_group_name = self.resource_group.name

    @property
    def subscription_id(self):
        return self.resource_group.subscription_id

    @property
    def arm_id(self) -> str:
        rg = self.resource_group
        return (
            f"/subscriptions/{rg.subscription_id}/resourceGroups/{rg.name}"
            f"/providers/Microsoft.Compute/virtualMachines/{self.name}"
        )

    @property
    def etag(self) -> str:
        """The ARM etag: the version, quoted as Azure Compute quotes it ("\"3\"")."""
        return f'"{self.version}"'

    @property
    def is_azure_orchestrated(self) -> bool:
        return self.patch_mode == PatchMode.AUTOMATIC_BY_PLATFORM

    @property
    def is_running(self) -> bool:
        return self.power_state == self.PowerState.RUNNING

    @property
    def hotpatch_capable(self) -> bool:
        return images.is_hotpatch_capable(self.image_publisher, self.image_offer, self.image_sku)

    @property
    def patch_settings(self) -> PatchSettings:
        return PatchSettings(
            patch_mode=self.patch_mode,
            enable_hotpatching=self.enable_hotpatching,
            assessment_mode=self.assessment_mode,
            reboot_setting=self.reboot_setting,
            bypass_platform_safety_checks=self.bypass_platform_safety_checks,
            provision_vm_agent=self.provision_vm_agent,
            enable_automatic_updates=self.enable_automatic_updates,
        )

    # The columns apply_patch_settings() writes.
    PATCH_SETTINGS_FIELDS = (
        "patch_mode",
        "enable_hotpatching",
        "assessment_mode",
        "reboot_setting",
        "bypass_platform_safety_checks",
        "provision_vm_agent",
        "enable_automatic_updates",
    )

    def apply_patch_settings(self, new: PatchSettings) -> None:
        """Copy validated settings onto the row (the caller validates and saves)."""
        self.patch_mode = new.patch_mode
        self.enable_hotpatching = new.enable_hotpatching
        self.assessment_mode = new.assessment_mode
        self.reboot_setting = "IfRequired" if new.reboot_setting == "Unknown" else new.reboot_setting
        self.bypass_platform_safety_checks = new.bypass_platform_safety_checks
        self.provision_vm_agent = new.provision_vm_agent
        self.enable_automatic_updates = new.enable_automatic_updates

    def validate_patch_settings(self, new: PatchSettings, *, creating: bool = False):
        return validate_settings(
            new,
            publisher=self.image_publisher,
            offer=self.image_offer,
            sku=self.image_sku,
            region=self.location,
            current=None if creating else self.patch_settings,
        )


class FleetImport(models.Model):
    """An uploaded fleet file, parsed and waiting for its uploader to confirm it (the page's preview).

    The parsed entries are kept here, never re-posted by the browser; confirming plans them again
    against the inventory as it is then. `imported_at` is set once, by a compare-and-swap.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="fleet_imports")
    filename = models.CharField(max_length=200)
    entries = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    imported_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.filename} ({len(self.entries)} VMs)"


TRANSITIONAL_STATES = (RegistrationState.REGISTERING, RegistrationState.UNREGISTERING)


class RegistrationStateMixin:
    """What a registration's `state` means, for FeatureRegistration and ProviderRegistration alike."""

    state: str

    @property
    def is_transitioning(self) -> bool:
        return self.state in TRANSITIONAL_STATES

    @property
    def is_registering(self) -> bool:
        return self.state == RegistrationState.REGISTERING

    @property
    def is_unregistering(self) -> bool:
        return self.state == RegistrationState.UNREGISTERING

    @property
    def is_on(self) -> bool:
        """Registered, or on its way there."""
        return self.state in (RegistrationState.REGISTERED, RegistrationState.REGISTERING)


class FeatureRegistration(RegistrationStateMixin, models.Model):
    """One preview feature's state on one subscription (the seed's `az feature register`)."""

    # The three features the 2021 preview asked for, in the order the seed lists them.
    HOTPATCH_FEATURES = ("InGuestHotPatchVMPreview", "InGuestAutoPatchVMPreview", "InGuestPatchVMPreview")
    NAMESPACE = "Microsoft.Compute"

    subscription = models.ForeignKey(Subscription, models.CASCADE, related_name="features")
    namespace = models.CharField(max_length=60, default=NAMESPACE)
    name = models.CharField(max_length=80)
    state = models.CharField(max_length=16, choices=RegistrationState.choices, default=RegistrationState.NOT_REGISTERED)
    changed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["namespace", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "namespace", "name"], name="one_feature_row_per_subscription"
            )
        ]

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}: {self.state}"

    def to_arm(self) -> dict:
        """The feature as Microsoft.Features shows it (azure-api.md §6)."""
        return {
            "id": f"/subscriptions/{self.subscription_id}/providers/Microsoft.Features/providers/{self.namespace}"
            f"/features/{self.name}",
            "name": f"{self.namespace}/{self.name}",
            "type": "Microsoft.Features/providers/features",
            "properties": {"state": self.state},
        }


class ProviderRegistration(RegistrationStateMixin, models.Model):
    """A resource provider's registration on one subscription (`az provider register`)."""

    subscription = models.ForeignKey(Subscription, models.CASCADE, related_name="providers")
    namespace = models.CharField(max_length=60)
    state = models.CharField(max_length=16, choices=RegistrationState.choices, default=RegistrationState.NOT_REGISTERED)
    changed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["namespace"]
        constraints = [
            models.UniqueConstraint(fields=["subscription", "namespace"], name="one_provider_row_per_subscription")
        ]

    def __str__(self) -> str:
        return f"{self.namespace}: {self.state}"


class CredentialQuerySet(models.QuerySet):
    def active(self, now=None) -> "CredentialQuerySet":
        """Not revoked and not expired."""
        now = now or timezone.now()
        return self.filter(revoked_at=None).filter(Q(expires_at=None) | Q(expires_at__gt=now))


class Credential(models.Model):
    """What API tokens and service principals share: a hashed secret that can expire and be revoked."""

    # Writing last_used_at on every request would turn each API read into a write.
    LAST_USED_RESOLUTION = timedelta(minutes=1)

    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = CredentialQuerySet.as_manager()

    class Meta:
        abstract = True

    @staticmethod
    def hash(secret: str) -> str:
        return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()

    def touch(self, now=None) -> None:
        """Record a use, at most once per LAST_USED_RESOLUTION."""
        now = now or timezone.now()
        if self.last_used_at is None or self.last_used_at < now - self.LAST_USED_RESOLUTION:
            type(self).objects.filter(pk=self.pk).update(last_used_at=now)
            self.last_used_at = now

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > timezone.now())

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])


class ApiToken(Credential):
    """A personal bearer token for the ARM API. Only its SHA-256 is stored: the secret is shown once.

    The API authenticates `Authorization: Bearer <secret>` by hashing the secret and looking the hash
    up; the user behind the token then has exactly their portal roles (vms.access).
    """

    PREFIX = "hpp_"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What the token is for, e.g. 'CI pipeline'.")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    # The first characters of the secret, so a user can tell their tokens apart.
    hint = models.CharField(max_length=16, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.hint}…)"

    @classmethod
    def issue(cls, user, name: str, *, expires_at=None) -> tuple["ApiToken", str]:
        """Create a token for `user`; returns the row and the secret, which is not stored anywhere."""
        secret = cls.PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(
            user=user, name=name, token_hash=cls.hash(secret), hint=secret[: len(cls.PREFIX) + 6], expires_at=expires_at
        )
        return token, secret

    @classmethod
    def authenticate(cls, secret: str, now=None) -> "ApiToken | None":
        """The active token with this secret (its user active too), or None. Records when it was used."""
        now = now or timezone.now()
        digest = cls.hash(secret)
        token = cls.objects.active(now).select_related("user").filter(token_hash=digest).first()
        # The lookup is by a one-way hash; compare_digest keeps the final check constant-time anyway.
        if token is None or not hmac.compare_digest(token.token_hash, digest) or not token.user.is_active:
            return None
        token.touch(now)
        return token


class ServicePrincipal(Credential):
    """An app registration for the Azure CLI (`az login --service-principal -u <client id> -p <secret>`).

    Each one is backed by a Django user of its own that can never sign in to the pages (inactive, no
    usable password): role assignments, vms.access and the operation history work for it exactly as
    for people. Only a SHA-256 of the secret is stored; the secret is shown once.
    """

    SECRET_PREFIX = "hpsp_"

    user = models.OneToOneField(settings.AUTH_USER_MODEL, models.CASCADE, related_name="service_principal")
    display_name = models.CharField(max_length=100, help_text="What it is for, e.g. 'ci' or 'patch pipeline'.")
    client_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    # The first characters of the secret, so an owner can tell which secret a script holds.
    secret_hint = models.CharField(max_length=16, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="service_principals_created"
    )

    class Meta:
        ordering = ["display_name", "created_at"]

    def __str__(self) -> str:
        return f"{self.display_name} ({self.client_id})"

    @classmethod
    def create(
        cls, display_name: str, *, created_by=None, expires_at=None, roles: dict | None = None
    ) -> tuple["ServicePrincipal", str]:
        """A new principal with `roles` ({subscription: role}); returns it and its secret (stored hashed only)."""
        from django.contrib.auth import get_user_model

        secret = cls.SECRET_PREFIX + secrets.token_urlsafe(32)
        client_id = uuid.uuid4()
        user = get_user_model()(username=f"app-{client_id}", first_name=display_name[:150], is_active=False)
        user.set_unusable_password()
        user.save()
        principal = cls.objects.create(
            user=user,
            display_name=display_name,
            client_id=client_id,
            secret_hash=cls.hash(secret),
            secret_hint=secret[: len(cls.SECRET_PREFIX) + 4],
            created_by=created_by,
            expires_at=expires_at,
        )
        for subscription, role in (roles or {}).items():
            RoleAssignment.objects.update_or_create(user=user, subscription=subscription, defaults={"role": role})
        return principal, secret

    # A hash to compare against when the client id is unknown, so both failures take the same time.
    _DUMMY_HASH = hashlib.sha256(b"no such service principal").hexdigest()

    @classmethod
    def authenticate(cls, client_id: str, secret: str, now=None) -> "ServicePrincipal | None":
        """The active principal with this client id and secret, or None (the same for every failure)."""
        now = now or timezone.now()
        try:
            pk = uuid.UUID(client_id)
        except (ValueError, AttributeError, TypeError):
            pk = None
        principal = cls.objects.active(now).select_related("user").filter(client_id=pk).first() if pk else None
        digest = cls.hash(secret)
        matches = hmac.compare_digest(principal.secret_hash if principal else cls._DUMMY_HASH, digest)
        if principal is None or not matches:
            return None
        principal.touch(now)
        return principal


class SandboxClock(models.Model):
    """The installation's clock (one row, pk 1): real time, or a stored simulated "now" (sandbox mode).

    Read through `vms.clock.now()`, which keeps it in the cache so pages pay no query for it. In
    sandbox mode the simulated time stands still until an Owner advances it (patching.sandbox).
    """

    simulated_now = models.DateTimeField(null=True, blank=True, help_text="Empty: real time.")
    # The advance in progress (real time when it began); the lock against a second advance.
    advancing_since = models.DateTimeField(null=True, blank=True)
    changed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "vms_sandboxclock"  # vms.clock reads it by name (it cannot import the models)
        constraints = [models.CheckConstraint(condition=Q(pk=1), name="one_sandbox_clock")]

    def __str__(self) -> str:
        return f"simulated {self.simulated_now:%Y-%m-%d %H:%M} UTC" if self.simulated_now else "real time"
