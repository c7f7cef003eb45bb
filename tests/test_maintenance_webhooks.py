"""Pre- and post-maintenance events to a real local HTTP receiver: signature, retries with exponential
backoff, the delivery log, and a pre-event answered with cancel. The last test lets a real Celery
worker deliver (and retry) them."""

import hashlib
import hmac
import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from patching.maintenance import services, webhooks
from patching.maintenance.models import DeliveryStatus, MaintenanceRun, RunStatus, WebhookDelivery
from tests.factories import load_catalog, make_resource_group, make_subscription
from tests.helpers import wait_for
from tests.test_maintenance_runs import START, body, scheduled_vm


class Receiver:
    """A webhook endpoint on 127.0.0.1: answers from a script (status, JSON body), records what came."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.received = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), raw))
                status, answer = receiver.answers.pop(0) if receiver.answers else (200, {})
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(*answers):
        made.append(Receiver(answers))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def scheduled(settings):
    settings.PORTAL_WEBHOOK_ALLOW_HTTP = True
    settings.PORTAL_PATCH_FAILURE_RATE = 0.0
    load_catalog()
    from django.contrib.auth import get_user_model

    alice = get_user_model().objects.create_user("alice", password="pw-alice-123")
    sub = make_subscription("Contoso", user=alice, role="Contributor")
    rg = make_resource_group(sub, "rg-web")
    config, _, _ = services.save_configuration(rg, "nightly", body())
    vm = scheduled_vm(rg, "web-a")
    services.assign_vm(config, vm, "a")
    return config


def test_a_pre_event_is_signed_and_retried_with_exponential_backoff(
    db, scheduled, receiver, django_capture_on_commit_callbacks
):
    hook_at = receiver((500, {}), (503, {}), (200, {}))
    hook = services.add_webhook(scheduled, hook_at.url)
    with django_capture_on_commit_callbacks():
        step = services.run_due(START - timedelta(minutes=20))
    assert step.pre_events == 1
    delivery = WebhookDelivery.objects.get()

    first = webhooks.attempt(delivery.pk, now=START - timedelta(minutes=20))
    second = webhooks.attempt(delivery.pk, now=START - timedelta(minutes=19))
    third = webhooks.attempt(delivery.pk, now=START - timedelta(minutes=18))

    assert (first.retry_in, second.retry_in, third.retry_in) == (10.0, 20.0, None) and third.delivered
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 3 and delivery.last_status_code == 200
    headers, raw = hook_at.received[-1]
    assert (
        headers["X-Hotpatch-Signature"] == "sha256=" + hmac.new(hook.secret.encode(), raw, hashlib.sha256).hexdigest()
    )
    event = json.loads(raw)
    assert event["type"] == "Microsoft.Maintenance.PreMaintenanceEvent" and event["specversion"] == "1.0"
    assert event["data"]["maintenanceConfigurationId"] == scheduled.arm_id
    assert event["data"]["startDateTime"] == "2030-06-04T22:00:00Z"
    assert event["data"]["cancellationCutOffDateTime"] == "2030-06-04T21:50:00Z"
    # A delivery done is not sent again.
    assert webhooks.attempt(delivery.pk).delivered is False and len(hook_at.received) == 3


def test_a_delivery_that_keeps_failing_gives_up_after_the_last_attempt(db, scheduled, receiver, settings):
    settings.PORTAL_WEBHOOK_MAX_ATTEMPTS = 2
    hook_at = receiver((500, {}), (500, {}))
    services.add_webhook(scheduled, hook_at.url)
    services.run_due(START - timedelta(minutes=5))
    delivery = WebhookDelivery.objects.get()
    assert webhooks.attempt(delivery.pk).retry_in == 10.0
    assert webhooks.attempt(delivery.pk).retry_in is None
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED and delivery.last_error == "HTTP 500"


def test_an_http_webhook_is_refused_outside_debug(db, scheduled, settings):
    settings.PORTAL_WEBHOOK_ALLOW_HTTP = False
    with pytest.raises(services.ScheduleError) as refused:
        services.add_webhook(scheduled, "http://example.com/hook")
    assert refused.value.code == "InvalidParameter" and "https" in refused.value.message


def test_the_post_event_carries_the_runs_results(db, scheduled, receiver):
    hook_at = receiver((200, {}))
    services.add_webhook(scheduled, hook_at.url, pre_event=False)
    services.run_due(START + timedelta(seconds=1), execute=True)
    services.run_due(START + timedelta(hours=3))
    delivery = WebhookDelivery.objects.get(event_type=webhooks.POST_EVENT)
    assert webhooks.attempt(delivery.pk).delivered
    event = json.loads(hook_at.received[0][1])
    assert event["type"] == "Microsoft.Maintenance.PostMaintenanceEvent"
    assert event["data"]["machines"] == {"Succeeded": 1} and event["data"]["status"] == "Succeeded"


def test_a_live_worker_delivers_retries_and_a_cancel_answer_cancels_the_run(live_worker, scheduled, receiver):
    # The pre-event fails once, then the receiver answers {"cancel": true}: the worker retries after the
    # backoff (PORTAL_WEBHOOK_RETRY_SECONDS, 10 s) and the answer cancels the run.
    hook_at = receiver((500, {}), (200, {"cancel": True}))
    services.add_webhook(scheduled, hook_at.url)
    now = datetime.now(UTC)
    # A window 15 minutes from now: the pre-event is due, cancellation still open.
    services.save_configuration(
        scheduled.resource_group,
        "nightly",
        body(startDateTime=(now + timedelta(minutes=15)).strftime("%Y-%m-%d %H:%M")),
    )
    step = services.run_due()
    assert step.pre_events == 1
    wait_for(
        lambda: MaintenanceRun.objects.get().status == RunStatus.CANCELLED,
        timeout=45,
        message="the run to be cancelled",
    )
    delivery = WebhookDelivery.objects.get()
    assert delivery.attempts == 2 and delivery.status == DeliveryStatus.DELIVERED
    assert MaintenanceRun.objects.get().cancelled_by.startswith("Webhook http://127.0.0.1")
    assert len(hook_at.received) == 2


def test_a_delivery_whose_message_was_lost_is_sent_again_by_the_beat(db, scheduled, receiver, settings, monkeypatch):
    hook_at = receiver((500, {}))
    services.add_webhook(scheduled, hook_at.url)
    services.run_due(START - timedelta(minutes=20))
    delivery = WebhookDelivery.objects.get()
    webhooks.attempt(delivery.pk, now=START - timedelta(minutes=20))  # failed: retry due in 10 s
    sent = []
    monkeypatch.setattr(webhooks, "send", lambda ids, countdown=0: sent.extend(ids))
    assert webhooks.resend_due(START - timedelta(minutes=19, seconds=55)) == 0  # its retry is not late yet
    assert webhooks.resend_due(START - timedelta(minutes=17)) == 1 and sent == [delivery.pk]


def test_a_run_announced_by_its_pre_event_starts_at_its_window(db, scheduled, receiver):
    hook_at = receiver((200, {}))
    services.add_webhook(scheduled, hook_at.url)
    assert services.next_due(START - timedelta(hours=1)) == START - timedelta(minutes=20)
    assert services.run_due(START - timedelta(minutes=20)).pre_events == 1
    assert services.next_due(START - timedelta(minutes=20)) == START
    step = services.run_due(START + timedelta(seconds=1), execute=True)
    assert len(step.started) == 1 and step.queued == 1
    assert MaintenanceRun.objects.get().status == RunStatus.IN_PROGRESS
