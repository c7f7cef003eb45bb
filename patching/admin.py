from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.http import Http404
from django.urls import reverse
from django.utils.html import format_html

from vms import clock, images
from vms.models import VirtualMachine

from . import sandbox, services
from .models import Fault, GuestState, Operation, OperationKind, PatchResult, RolloutHalt, StartedBy, Update


@admin.register(Update)
class UpdateAdmin(admin.ModelAdmin):
    list_display = [
        "kb",
        "title",
        "product",
        "kind",
        "classification",
        "reboot_behavior",
        "published_at",
        "build",
        "source",
    ]
    list_filter = ["product", "kind", "classification", "reboot_behavior", "source"]
    search_fields = ["kb", "title", "build"]
    date_hierarchy = "published_at"
    raw_id_fields = ["baseline"]
    list_select_related = ["baseline"]


class PatchResultInline(admin.TabularInline):
    model = PatchResult
    fields = ["kb", "title", "classification", "reboot_behavior", "state", "error"]
    readonly_fields = fields
    can_delete = False
    extra = 0

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("update")

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="KB")
    def kb(self, result):
        return f"KB{result.update.kb}"

    def title(self, result):
        return result.update.title

    def classification(self, result):
        return result.update.classification_label

    @admin.display(description="Reboot")
    def reboot_behavior(self, result):
        return result.update.reboot_behavior


@admin.register(Operation)
class OperationAdmin(admin.ModelAdmin):
    """Operations are records of what happened: read-only here; start new ones from the VM list."""

    list_display = [
        "created_at",
        "vm_name",
        "kind",
        "status",
        "started_by",
        "user",
        "critical_security_count",
        "other_count",
        "installed_count",
        "failed_count",
        "pending_count",
        "excluded_count",
        "not_selected_count",
        "reboot_status",
        "finished_at",
    ]
    list_filter = ["kind", "status", "started_by", "reboot_status", "created_at"]
    list_select_related = ["user"]
    search_fields = ["vm_name", "=activity_id"]
    date_hierarchy = "created_at"
    inlines = [PatchResultInline]
    readonly_fields = [f.name for f in Operation._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(GuestState)
class GuestStateAdmin(admin.ModelAdmin):
    list_display = [
        "vm",
        "build",
        "baseline",
        "hotpatch_status",
        "reboot_pending",
        "critical_security_count",
        "other_count",
        "assessed_at",
        "patch_decision",
        "patch_decision_at",
    ]
    list_filter = ["hotpatch_status", "reboot_pending", "patch_decision"]
    list_select_related = ["vm", "baseline"]
    search_fields = ["vm__name", "build"]
    readonly_fields = [
        "vm",
        "last_assessment",
        "last_installation",
        "baseline",
        "patch_decision",
        "patch_decision_detail",
        "patch_decision_at",
    ]
    exclude = ["installed"]
    fieldsets = [
        (None, {"fields": ["vm", "build", "baseline", "reboot_pending", "last_boot_at"]}),
        (
            "Compliance",
            {
                "fields": [
                    "assessed_at",
                    "last_assessment",
                    "last_installation",
                    "critical_security_count",
                    "other_count",
                    "hotpatch_status",
                    "hotpatch_status_reason",
                ]
            },
        ),
        # Why automatic patching did or did not patch it when it last looked (patching/orchestrator).
        ("Automatic patching", {"fields": ["patch_decision", "patch_decision_detail", "patch_decision_at"]}),
    ]


@admin.register(RolloutHalt)
class RolloutHaltAdmin(admin.ModelAdmin):
    """Halted rollouts: automatic patching stopped a release whose installations failed too often."""

    list_display = [
        "release_month",
        "product",
        "halted_at",
        "failed",
        "attempted",
        "is_active",
        "resumed_at",
        "resumed_by",
    ]
    list_filter = ["product", ("resumed_at", admin.EmptyFieldListFilter)]
    list_select_related = ["resumed_by"]
    date_hierarchy = "halted_at"
    readonly_fields = [f.name for f in RolloutHalt._meta.fields]
    actions = ["resume_rollout"]

    def has_add_permission(self, request):
        return False  # the platform halts rollouts; people resume them

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(boolean=True, description="Halted")
    def is_active(self, halt: RolloutHalt) -> bool:
        return halt.is_active

    @admin.action(description="Resume rollout", permissions=["resume"])
    def resume_rollout(self, request, queryset):
        from .orchestrator import engine

        resumed = [halt for halt in queryset if engine.resume_rollout(halt, user=request.user)]
        if resumed:
            names = ", ".join(f"{h.release_month} {h.product}" for h in resumed)
            self.message_user(
                request,
                f"Resumed {len(resumed)} rollout(s): {names}. Failures count afresh from now.",
                messages.SUCCESS,
            )
        if len(resumed) < len(queryset):
            self.message_user(request, f"{len(queryset) - len(resumed)} had been resumed already.", messages.INFO)

    def has_resume_permission(self, request) -> bool:
        return request.user.has_perm("patching.change_rollouthalt")


# --- Virtual machines: the inventory's columns and the guest's, Assess now and Install -----------


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
            services.provision_guest(obj, clock.now())
            services.start_operation(obj, OperationKind.ASSESSMENT, started_by=StartedBy.PLATFORM)
            return
        with transaction.atomic():
            # In the lock order (services.lock_vms), and a new version: an ARM client's etag goes stale.
            saved = services.lock_vm(obj.pk)
            if saved is None:
                raise Http404(f"The virtual machine '{obj.name}' was deleted.")
            if saved.enable_hotpatching and not obj.enable_hotpatching:
                obj.hotpatch_disabled_at = clock.now()
            obj.version = saved.version + 1
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


class FaultForm(forms.ModelForm):
    class Meta:
        model = Fault
        fields = ["kind", "vm", "subscription", "location", "kb", "probability", "remaining"]

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        try:
            fields = sandbox.validate_fault(
                self.request_user,
                data["kind"],
                vm=data.get("vm"),
                subscription=data.get("subscription"),
                location=data.get("location") or "",
                kb=data.get("kb") or "",
                probability=data.get("probability"),
                next_n=data.get("remaining"),
            )
        except sandbox.SandboxError as exc:
            raise forms.ValidationError(str(exc)) from None
        data.update(fields)  # normalised (KB digits, region name): the instance is built from these
        return data


@admin.register(Fault)
class FaultAdmin(admin.ModelAdmin):
    """The sandbox's injected faults (also on /sandbox/, the API and `manage.py sandbox fault`)."""

    form = FaultForm
    list_display = ["pk", "kind", "vm", "subscription", "location", "kb", "probability", "remaining", "fired"]
    list_filter = ["kind"]
    list_select_related = ["vm", "subscription"]
    raw_id_fields = ["vm"]

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        form.request_user = request.user
        return form

    def has_change_permission(self, request, obj=None):
        return False  # a fault is set and removed, not edited: what it already did stays marked

    def save_model(self, request, obj, form, change):
        obj.created_at = clock.now()
        obj.created_by = request.user
        super().save_model(request, obj, form, change)
