"""The live-worker fixture: a real Celery worker process, reached through the real broker."""

from portal.celery import app
from tests.helpers import wait_for


def test_the_live_worker_answers_a_ping(live_worker):
    replies = app.control.inspect(destination=[live_worker.node], timeout=5).ping()

    assert replies == {live_worker.node: {"ok": "pong"}}


def test_the_live_worker_runs_a_task_sent_through_the_broker(live_worker):
    def executed() -> int:
        stats = app.control.inspect(destination=[live_worker.node], timeout=5).stats() or {}
        return stats.get(live_worker.node, {}).get("total", {}).get("celery.accumulate", 0)

    before = executed()
    # A task every Celery app has built in, so this test depends on no task of the portal's.
    app.send_task("celery.accumulate", args=(1, 2))

    wait_for(lambda: executed() > before, timeout=30, message="the worker to execute celery.accumulate")
