"""The Celery app, wired the standard Django way."""

import gc
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


@signals.worker_process_init.connect
def freeze_startup_objects(**kwargs) -> None:
    """What a worker process starts with (Django, Celery, every module: hundreds of thousands of
    objects) is never garbage: frozen out of the collector's sight, a full collection during a batch
    traverses the batch's objects only. Measured running 2,000-run batches in one process: full
    collections took about a tenth of the time; frozen, a sixth of that."""
    gc.freeze()
