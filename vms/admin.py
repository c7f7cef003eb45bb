from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from patching import services
from patching.models import GuestState, OperationKind, StartedBy

from . import features, images
from .models import (
    FeatureRegistration,
    ProviderRegistration,
    ResourceGroup,
    RoleAssignment,
    ServicePrincipal,
    Subscription,
    VirtualMachine,
)


class RoleAssignmentInline(admin.TabularInline):
    model = RoleAssignment
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ["display_name", "id"]
    search_fields = ["display_name", "id"]
    inlines = [RoleAssignmentInline]


@admin.register(FeatureRegistration)
class FeatureRegistrationAdmin(admin.ModelAdmin):
    list_display = ["name", "namespace", "subscription", "state", "changed_at"]
    list_filter = ["state", "namespace", "name"]
    list_select_related = ["subscription"]
    search_fields = ["name", "subscription__display_name"]
    actions = ["register", "unregister"]

    @admin.action(description="Register (the seed's az feature register)", permissions=["change"])
    def register(self, request, queryset):
        for row in queryset.select_related("subscription"):
            features.register_feature(row.subscription, row.name, row.namespace)
        self.message_user(request, "Registration started; it completes in the background.")

    @admin.action(description="Unregister", permissions=["change"])
    def unregister(self, request, queryset):
        for row in queryset.select_related("subscription"):
            features.unregister_feature(row.subscription, row.name, row.namespace)
        self.message_user(request, "Unregistration started; it completes in the background.")


@admin.register(ProviderRegistration)
class ProviderRegistrationAdmin(admin.ModelAdmin):
    list_display = ["namespace", "subscription", "state", "changed_at"]
    list_filter = ["state", "namespace"]
    list_select_related = ["subscription"]
    search_fields = ["namespace", "subscription__display_name"]


@admin.register(ResourceGroup)
class ResourceGroupAdmin(admin.ModelAdmin):
    list_display = ["name", "subscription", "location"]
    list_filter = ["subscription", "location"]
    list_select_related = ["subscription"]
    search_fields = ["name"]


@admin.register(RoleAssignment)
class RoleAssignmentAdmin(admin.ModelAdmin):
    list_display = ["user", "subscription", "role"]
    list_filter = ["role", "subscription"]
    list_select_related = ["user", "subscription"]
    search_fields = ["user__username", "subscription__display_name"]
    autocomplete_fields = ["user"]


class VirtualMachineForm(forms.ModelForm):
    class Meta:
        model = VirtualMachine
        fields = [
            *("resource_group", "name", "location", "zone", "availability_set", "update_domain", "size"),
            *("image_publisher", "image_offer", "image_sku", "image_version", "product"),
            *("power_state", "time_zone", "created_at", "provision_vm_agent", "enable_automatic_updates"),
            *("patch_mode", "enable_hotpatching", "assessment_mode", "reboot_setting", "bypass_platform_safety_checks"),
        ]

    def clean(self):
        """The same patchSettings rules as the portal and the API (azure-api.md §1)."""
        data = super().clean()
        if self.errors:
            return data
        vm = VirtualMachine(
            image_publisher=data["image_publisher"],
            image_offer=data["image_offer"],
            image_sku=data["image_sku"],
            location=data["location"],
        )
        creating = self.instance.pk is None
        if not creating:
            vm = self.instance  # still holds the saved settings: the rules compare old and new
        new = self.instance.patch_settings.with_changes(
            patch_mode=data["patch_mode"],
            enable_hotpatching=data["enable_hotpatching"],
            assessment_mode=data["assessment_mode"],
            reboot_setting=data["reboot_setting"],
            bypass_platform_safety_checks=data["bypass_platform_safety_checks"],
            provision_vm_agent=data["provision_vm_agent"],
            enable_automatic_updates=data["enable_automatic_updates"],
        )
        for problem in services.check_patch_settings(vm, new, creating=creating):
            self.add_error(None, problem.message)
        product = images.product_for_image(data["image_publisher"], data["image_offer"], data["image_sku"])
        if product is None:
            self.add_error("image_sku", "This image is not one of the simulated Windows Server images.")
        elif product.code != data["product"]:
            self.add_error("product", f"Image {data['image_sku']} installs {product.name}.")
        return data


class GuestStateInline(admin.StackedInline):
    model = GuestState
    can_delete = False
    readonly_fields = [
        "build",
        "baseline",
        "reboot_pending",
        "last_boot_at",
        "hotpatch_status",
        "hotpatch_status_reason",
        "assessed_at",
        "critical_security_count",
        "other_count",
        "last_assessment",
        "last_installation",
    ]
    exclude = ["installed"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(VirtualMachine)
class VirtualMachineAdmin(admin.ModelAdmin):
    form = VirtualMachineForm
    list_display = [
        "name",
        "resource_group",
        "location",
        "product",
        "power_state",
        "patch_mode",
        "hotpatch_status",
        "critical_security",
        "other",
        "reboot_pending",
        "last_assessed",
        "history",
    ]
    list_filter = [
        "resource_group__subscription",
        "power_state",
        "patch_mode",
        "enable_hotpatching",
        "guest__hotpatch_status",
        "product",
        "location",
    ]
    list_select_related = ["resource_group", "guest"]
    search_fields = ["name", "resource_group__name", "=vm_id"]
    readonly_fields = ["vm_id", "hotpatch_disabled_at"]
    inlines = [GuestStateInline]
    actions = ["assess_now", "install_critical_and_security_now"]
    fieldsets = [
        (
            None,
            {"fields": ["resource_group", "name", "vm_id", "location", "zone", "availability_set", "update_domain"]},
        ),
        (
            "Image and size",
            {"fields": ["size", "image_publisher", "image_offer", "image_sku", "image_version", "product"]},
        ),
        ("State", {"fields": ["power_state", "time_zone", "created_at"]}),
        (
            "Guest OS updates (patchSettings)",
            {
                "fields": [
                    "provision_vm_agent",
                    "enable_automatic_updates",
                    "patch_mode",
                    "enable_hotpatching",
                    "assessment_mode",
                    "reboot_setting",
                    "bypass_platform_safety_checks",
                    "hotpatch_disabled_at",
                ]
            },
        ),
    ]

    @admin.display(description="Hotpatch", ordering="guest__hotpatch_status")
    def hotpatch_status(self, vm):
        return vm.guest.get_hotpatch_status_display() if hasattr(vm, "guest") else "-"

    @admin.display(description="Critical + security", ordering="guest__critical_security_count")
    def critical_security(self, vm):
        return vm.guest.critical_security_count if hasattr(vm, "guest") else None

    @admin.display(description="Other", ordering="guest__other_count")
    def other(self, vm):
        return vm.guest.other_count if hasattr(vm, "guest") else None

    @admin.display(description="Reboot pending", boolean=True, ordering="guest__reboot_pending")
    def reboot_pending(self, vm):
        return vm.guest.reboot_pending if hasattr(vm, "guest") else None

    @admin.display(description="Last assessed", ordering="guest__assessed_at")
    def last_assessed(self, vm):
        return vm.guest.assessed_at if hasattr(vm, "guest") else None

    @admin.display(description="Operations")
    def history(self, vm):
        url = reverse("admin:patching_operation_changelist") + f"?vm__id__exact={vm.pk}"
        return format_html('<a href="{}">History</a>', url)

    def save_model(self, request, obj, form, change):
        """New VMs get a guest on the image's current build and their first assessment."""
        if not change:
            super().save_model(request, obj, form, change)
            services.provision_guest(obj, timezone.now())
            services.start_operation(obj, OperationKind.ASSESSMENT, started_by=StartedBy.PLATFORM)
            return
        saved = VirtualMachine.objects.get(pk=obj.pk)
        if saved.enable_hotpatching and not obj.enable_hotpatching:
            obj.hotpatch_disabled_at = timezone.now()
        super().save_model(request, obj, form, change)
        services.refresh_hotpatch_status(obj, turned_on=obj.enable_hotpatching and not saved.enable_hotpatching)

    def _start(self, request, queryset, kind):
        # One bulk insert for the whole selection (it may be the whole fleet); VMs with one in flight keep it.
        vms = list(queryset.select_related("resource_group"))
        started = len(services.queue_operations(vms, kind, started_by=StartedBy.USER, user=request.user))
        joined = len(vms) - started
        noun = "assessment" if kind == OperationKind.ASSESSMENT else "installation"
        msg = f"Started {started} {noun}(s)."
        if joined:
            msg += f" {joined} VM(s) already had one in progress; that one continues."
        self.message_user(request, msg, messages.SUCCESS)

    @admin.action(description="Assess now", permissions=["change"])
    def assess_now(self, request, queryset):
        self._start(request, queryset, OperationKind.ASSESSMENT)

    @admin.action(description="Install critical and security updates now", permissions=["change"])
    def install_critical_and_security_now(self, request, queryset):
        self._start(request, queryset, OperationKind.INSTALLATION)


@admin.register(ServicePrincipal)
class ServicePrincipalAdmin(admin.ModelAdmin):
    """Service principals for the Azure CLI: look and revoke here; create them on a subscription's page
    or with manage.py create_service_principal (the secret is shown once, there)."""

    list_display = ("display_name", "client_id", "created_by", "created_at", "expires_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("display_name", "client_id", "created_by__username")
    readonly_fields = ("user", "client_id", "secret_hint", "created_by", "created_at", "last_used_at")
    exclude = ("secret_hash",)
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Revoke the selected service principals")
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at=None).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} service principal(s).", messages.SUCCESS)
