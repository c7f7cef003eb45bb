from django.apps import AppConfig


class PatchingConfig(AppConfig):
    name = "patching"
    verbose_name = "Patching"

    def ready(self) -> None:
        from . import checks  # noqa: F401 (registers the system checks)
