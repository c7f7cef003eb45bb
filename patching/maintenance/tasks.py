"""Celery tasks of maintenance configurations: thin calls into the services."""

import logging

from celery import shared_task

from vms import clock

from . import services, webhooks
from .models import WebhookDelivery

log = logging.getLogger(__name__)


@shared_task(name="patching.maintenance.tasks.run_due")
def run_due() -> dict:
    """Beat: pre-events due, windows opening, windows ending (real time); webhook deliveries lost in transit."""
    now = clock.now()
    step = services.run_due(now)
    return {
        "pre_events": step.pre_events,
        "started": len(step.started),
        "queued": step.queued,
        "closed": len(step.closed),
        "webhooks_resent": webhooks.resend_due(now),
    }


@shared_task(name="patching.maintenance.tasks.prune_runs")
def prune_runs() -> int:
    """Beat: runs older than PORTAL_HISTORY_RETENTION_DAYS go, like the rest of the update history."""
    return services.prune_runs(clock.now())


@shared_task(name=webhooks.DELIVER_TASK, bind=True, acks_late=True)
def deliver_webhook(self, delivery_id: int) -> bool:
    """POST one event; retried with exponential backoff; a pre-event answered with cancel cancels the run."""
    outcome = webhooks.attempt(delivery_id)
    if outcome.cancel:
        delivery = WebhookDelivery.objects.select_related("run__configuration__resource_group", "webhook").get(
            pk=delivery_id
        )
        try:
            services.cancel_occurrence(
                delivery.run.configuration, delivery.run.scheduled_start, by=f"Webhook {delivery.webhook.url}"[:150]
            )
        except services.ScheduleError as e:
            log.warning("Webhook asked to cancel run %s: %s", delivery.run_id, e.message)
    if outcome.retry_in is not None:
        webhooks.send([delivery_id], countdown=outcome.retry_in)
    return outcome.delivered
