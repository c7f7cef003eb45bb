"""The Celery app, wired the standard Django way."""

import os

from celery import Celery, signals

from portal import var

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_init.connect
@signals.beat_init.connect
def prepare_var_dir(**kwargs) -> None:
    """A worker or beat started on its own still finds the embedded default's folders (portal/var.py)."""
    var.prepare()
