"""Maintenance configurations in the admin: read what schedules did (their runs and webhook deliveries).

Configurations and assignments are changed through the portal's pages or the API, where they are
validated; the admin lists them and may delete them.
"""

from django.contrib import admin

from .models import MaintenanceConfiguration, MaintenanceRun, WebhookDelivery


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(MaintenanceConfiguration)
class MaintenanceConfigurationAdmin(ReadOnly):
    list_display = ("name", "resource_group", "recur_every", "start_date_time", "duration", "time_zone")
    list_select_related = ("resource_group",)
    search_fields = ("name",)


@admin.register(MaintenanceRun)
class MaintenanceRunAdmin(ReadOnly):
    list_display = ("configuration", "scheduled_start", "status", "counts", "cancelled_by")
    list_filter = ("status",)
    list_select_related = ("configuration",)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnly):
    list_display = ("event_type", "webhook", "run", "status", "attempts", "last_status_code", "delivered_at")
    list_filter = ("status", "event_type")
    list_select_related = ("webhook", "run__configuration")
