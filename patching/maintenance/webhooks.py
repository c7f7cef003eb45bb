"""Pre- and post-maintenance events, sent to a configuration's webhooks as Event Grid sends them.

Each event is a CloudEvents 1.0 JSON object (Event Grid's Microsoft.Maintenance.PreMaintenanceEvent /
PostMaintenanceEvent, their data as Learn's "Azure Maintenance as an Event Grid source" lists it),
POSTed with an HMAC-SHA256 signature of the exact body in SIGNATURE_HEADER ("sha256=<hex>", keyed by the
webhook's secret). One WebhookDelivery row per (webhook, run, event) is the delivery log; a Celery task
sends it, retrying with exponential backoff. A pre-event's answer may cancel the run: a 2xx JSON body
with "cancel": true.
"""

import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Q

from vms import clock

from .models import DeliveryStatus, MaintenanceRun, WebhookDelivery, WebhookSubscription

log = logging.getLogger(__name__)

PRE_EVENT = "Microsoft.Maintenance.PreMaintenanceEvent"
POST_EVENT = "Microsoft.Maintenance.PostMaintenanceEvent"
SIGNATURE_HEADER = "X-Hotpatch-Signature"
DELIVER_TASK = "patching.maintenance.tasks.deliver_webhook"
CANCEL_CUTOFF = timedelta(minutes=10)


def check_url(url: str) -> str | None:
    """Why a webhook URL is refused, or None: https (plain http only with PORTAL_WEBHOOK_ALLOW_HTTP)."""
    try:
        parts = urlsplit(url or "")
    except ValueError:
        return "The webhook URL is not a URL."
    if parts.scheme == "http" and settings.PORTAL_WEBHOOK_ALLOW_HTTP:
        pass
    elif parts.scheme != "https":
        return "The webhook URL must be https."
    if not parts.hostname or len(url) > 500:
        return "The webhook URL needs a host name (and at most 500 characters)."
    return None


def _time(moment) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def event(run: MaintenanceRun, kind: str, now) -> dict:
    config = run.configuration
    data = {
        "correlationId": str(run.correlation_id),
        "maintenanceConfigurationId": config.arm_id,
        "startDateTime": _time(run.scheduled_start),
        "endDateTime": _time(run.window_end),
        "resourceSubscriptionIds": [str(config.resource_group.subscription_id)],
    }
    if kind == PRE_EVENT:
        data["cancellationCutOffDateTime"] = _time(run.scheduled_start - CANCEL_CUTOFF)
    else:
        data["status"] = "Cancelled" if run.is_cancelled else "Succeeded"
        data["machines"] = run.counts
    return {
        "specversion": "1.0",
        "type": kind,
        "source": config.arm_id,
        "subject": config.arm_id,
        "time": _time(now),
        "datacontenttype": "application/json",
        "data": data,
    }


def queue(run: MaintenanceRun, kind: str, now) -> list[int]:
    """A delivery per subscribed webhook (once per run and event), sent by workers after commit."""
    flag = {"pre_event": True} if kind == PRE_EVENT else {"post_event": True}
    hooks = list(WebhookSubscription.objects.filter(configuration_id=run.configuration_id, **flag))
    if not hooks:
        return []
    payload = event(run, kind, now)
    WebhookDelivery.objects.bulk_create(
        [WebhookDelivery(webhook=h, run=run, event_type=kind, payload=payload, created_at=now) for h in hooks],
        ignore_conflicts=True,
    )
    ids = list(
        WebhookDelivery.objects.filter(run=run, event_type=kind, status=DeliveryStatus.PENDING, attempts=0).values_list(
            "pk", flat=True
        )
    )
    transaction.on_commit(lambda: send(ids))
    return ids


def send(ids: list[int], countdown: float = 0) -> None:
    """Hand deliveries to Celery; never raises (the beat sends pending ones again: `resend_pending`)."""
    try:
        for pk in ids:
            current_app.send_task(DELIVER_TASK, (pk,), countdown=countdown)
    except Exception as exc:
        log.warning("Could not hand webhook deliveries to the broker (%s: %s)", type(exc).__name__, exc)


# A delivery whose retry is this late (its message lost: the broker restarted, a worker died) is sent again.
RESEND_GRACE = timedelta(minutes=2)


def resend_due(now) -> int:
    """The outbox for webhooks: pending deliveries never sent or overdue for their retry are sent again.
    A duplicate is harmless: `attempt` claims by attempt count, and X-Hotpatch-Delivery names the event."""
    late = now - RESEND_GRACE
    ids = list(
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING)
        .filter(Q(next_attempt_at__lte=late) | Q(next_attempt_at__isnull=True, created_at__lte=late))
        .values_list("pk", flat=True)[:500]
    )
    send(ids)
    return len(ids)


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Attempt:
    delivered: bool
    retry_in: float | None  # seconds until the next attempt, None when done
    cancel: bool  # the webhook's answer asks to cancel the run


def backoff(attempts: int) -> float:
    """Exponential: the first retry after PORTAL_WEBHOOK_RETRY_SECONDS, then twice as long each time."""
    return settings.PORTAL_WEBHOOK_RETRY_SECONDS * 2 ** (attempts - 1)


def attempt(delivery_id: int, now=None) -> Attempt:
    """POST one delivery once and log the outcome (compare-and-swap on the attempt count)."""
    now = now or clock.now()
    delivery = WebhookDelivery.objects.select_related("webhook").filter(pk=delivery_id).first()
    if delivery is None or delivery.status != DeliveryStatus.PENDING:
        return Attempt(False, None, False)
    claimed = WebhookDelivery.objects.filter(
        pk=delivery.pk, status=DeliveryStatus.PENDING, attempts=delivery.attempts
    ).update(attempts=delivery.attempts + 1)
    if not claimed:
        return Attempt(False, None, False)
    attempts = delivery.attempts + 1
    body = json.dumps(delivery.payload, separators=(",", ":")).encode()
    request = urllib.request.Request(
        delivery.webhook.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/cloudevents+json; charset=utf-8",
            SIGNATURE_HEADER: sign(delivery.webhook.secret, body),
            "X-Hotpatch-Delivery": str(delivery.event_id),
            "X-Hotpatch-Attempt": str(attempts),
            "User-Agent": "HotpatchPortal-Webhooks/1.0",
        },
    )
    code, answer, error = None, b"", ""
    try:
        with urllib.request.urlopen(request, timeout=settings.PORTAL_WEBHOOK_TIMEOUT_SECONDS) as response:
            code, answer = response.status, response.read(65536)
    except urllib.error.HTTPError as e:
        code, error = e.code, f"HTTP {e.code}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        error = f"{type(e).__name__}: {getattr(e, 'reason', e)}"[:300]
    if code is not None and 200 <= code < 300:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=DeliveryStatus.DELIVERED,
            last_status_code=code,
            last_error="",
            delivered_at=now,
            next_attempt_at=None,
        )
        return Attempt(True, None, delivery.event_type == PRE_EVENT and _asks_to_cancel(answer))
    if attempts >= settings.PORTAL_WEBHOOK_MAX_ATTEMPTS:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=DeliveryStatus.FAILED, last_status_code=code, last_error=error, next_attempt_at=None
        )
        return Attempt(False, None, False)
    delay = backoff(attempts)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        last_status_code=code, last_error=error, next_attempt_at=now + timedelta(seconds=delay)
    )
    return Attempt(False, delay, False)


def _asks_to_cancel(answer: bytes) -> bool:
    try:
        body = json.loads(answer or b"{}")
    except ValueError:
        return False
    return isinstance(body, dict) and (body.get("cancel") is True or str(body.get("status", "")).lower() == "cancel")
