"""Celery tasks of the inventory: preview-feature and provider registration."""

from celery import shared_task

from . import features
from .models import FeatureRegistration, ProviderRegistration

MODELS = {"feature": FeatureRegistration, "provider": ProviderRegistration}


@shared_task(name=features.SETTLE_TASK, acks_late=True)
def settle_registration(kind: str, pk: int) -> bool:
    """Finish a Registering/Unregistering transition once its delay has passed (idempotent)."""
    return features.settle(MODELS[kind], pk)


@shared_task
def settle_due_registrations() -> int:
    """Beat: finish transitions whose delayed task was lost (a broker restart, a purge)."""
    return features.settle_due()
