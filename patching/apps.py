from django.apps import AppConfig


class PatchingConfig(AppConfig):
    name = "patching"
    verbose_name = "Patching"
