from django.contrib import admin, messages

from .models import GuestState, Operation, PatchResult, RolloutHalt, Update


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
