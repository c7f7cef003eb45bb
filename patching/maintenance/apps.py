from django.apps import AppConfig


class MaintenanceConfig(AppConfig):
    name = "patching.maintenance"
    label = "maintenance"
    verbose_name = "Maintenance configurations"
    default_auto_field = "django.db.models.BigAutoField"
