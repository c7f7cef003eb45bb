"""The inventory's admin. The VirtualMachine admin is patching's (patching/admin.py): past the
inventory, every column and action of it is about the guest."""

from django.contrib import admin, messages
from django.utils import timezone

from . import features
from .models import (
    FeatureRegistration,
    ProviderRegistration,
    ResourceGroup,
    RoleAssignment,
    ServicePrincipal,
    Subscription,
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
