"""A broker outage, for real: a Redis of this test's own is stopped and started again under a real
Celery worker and beat. An operation accepted during the outage runs once Redis is back.

The machine's Redis (the other live tests' broker) is never touched: this test starts redis-server on
a free port of 127.0.0.1, without persistence, and points its worker, its beat and the test process's
publishing at it.
"""

import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from celery import Celery
from django.conf import settings

from patching import services
from patching.models import Operation, OperationStatus
from tests.arm_client import vm_path
from tests.conftest import ROOT, WORKER_STOP_TIMEOUT, _require_postgres_and_redis, live_environment
from tests.helpers import stop_process, wait_for

pytestmark = [
    pytest.mark.live,
    pytest.mark.worker,
    pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server on the PATH"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OwnRedis:
    """A redis-server of this test's own, that can be stopped and started again on the same port."""

    def __init__(self, port: int):
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self.answers, timeout=10, message=f"redis-server on port {self.port}")

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()  # an outage, not a shutdown: nothing is saved (there is nothing to save to)
            self.process.wait()


def stop(process: subprocess.Popen) -> None:
    stop_process(process, WORKER_STOP_TIMEOUT)


@dataclass
class Outage:
    """The test's own Redis, to stop and start again, and the worker consuming from it."""

    redis: OwnRedis
    worker: subprocess.Popen
    worker_log: Path
    app: Celery  # this process's publishing, at the test's Redis

    def stop(self) -> None:
        self.redis.stop()

    def start(self) -> None:
        self.redis.start()


@pytest.fixture
def outage(transactional_db, django_db_setup, tmp_path, monkeypatch):
    """Own Redis, a worker and a beat (dispatching every 2 s) on it, and this process publishing to it."""
    _require_postgres_and_redis()
    redis = OwnRedis(free_port())
    redis.start()
    env = {**live_environment(), "REDIS_URL": redis.url, "PORTAL_DISPATCH_BEAT_SECONDS": "2"}
    processes = []
    for role, args in (
        ("worker", ["worker", "--pool=threads", "--concurrency=2", "--without-gossip", "--without-mingle"]),
        ("beat", ["beat", "--schedule", str(tmp_path / "beat-schedule")]),
    ):
        with open(tmp_path / f"{role}.log", "wb") as log:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "celery", "-A", "portal", *args, "--loglevel=info"],
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    wait_for(
        lambda: "ready." in (tmp_path / "worker.log").read_text(errors="replace"), timeout=60, message="the worker"
    )
    # The web process's publishing, with the settings' timeouts, at this Redis.
    app = Celery("outage", broker=redis.url, set_as_current=False)  # the other tests keep the portal's app
    app.conf.update(
        broker_connection_timeout=settings.CELERY_BROKER_CONNECTION_TIMEOUT,
        broker_transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        task_publish_retry=settings.CELERY_TASK_PUBLISH_RETRY,
    )
    monkeypatch.setattr(services, "current_app", app)
    try:
        yield Outage(redis, processes[0], tmp_path / "worker.log", app)
    finally:
        for process in processes:
            stop(process)
        redis.stop()


def test_an_operation_accepted_during_a_broker_outage_runs_once_redis_is_back(outage, api, fleet, arm_settings):
    outage.stop()

    started = time.monotonic()
    response = api.post(vm_path(fleet["web1"], "/assessPatches"))
    latency = time.monotonic() - started
    assert response.status_code == 202
    assert latency < 1.5, f"the request took {latency:.2f} s with the broker down"
    operation = Operation.objects.get(vm=fleet["web1"])
    assert operation.status == OperationStatus.NOT_STARTED and operation.dispatched_at is None

    time.sleep(3)  # the beat and the worker notice the outage too
    outage.start()
    back = time.monotonic()
    wait_for(
        lambda: Operation.objects.get(pk=operation.pk).status == OperationStatus.SUCCEEDED,
        timeout=90,
        message="the operation accepted during the outage to succeed",
    )
    recovery = time.monotonic() - back
    print(f"request latency with the broker down: {latency:.3f} s; recovery after Redis returned: {recovery:.1f} s")
    assert recovery < 60
    assert Operation.objects.get(pk=operation.pk).attempts == 1


def test_a_worker_holding_a_scheduled_task_lives_through_the_outage(outage):
    """A worker always holds scheduled tasks (each run in progress has its next due step, sent with an
    eta): they are unacknowledged when Redis goes away. Celery 5.7.0 then died ("Unrecoverable error"
    closing the lost connection); the worker must wait for Redis and go on consuming."""
    held = outage.app.send_task("patching.tasks.fold_rollups", countdown=600, queue=settings.PLATFORM_QUEUE)
    log = outage.worker_log
    wait_for(lambda: f"{held.id}] received" in log.read_text(errors="replace"), timeout=30, message="the task held")
    time.sleep(2)  # held a while, as a due step is: a loss at the very moment of receipt did not show it

    outage.stop()
    time.sleep(4)  # the worker notices, and tries to reconnect
    assert outage.worker.poll() is None, f"the worker died with Redis away:\n{log.read_text(errors='replace')[-3000:]}"
    outage.start()
    after = outage.app.send_task("patching.tasks.fold_rollups", queue=settings.PLATFORM_QUEUE)
    wait_for(
        lambda: f"{after.id}] succeeded" in log.read_text(errors="replace"),
        timeout=60,
        message="the worker to reconnect and run a task sent after Redis came back",
    )
    assert outage.worker.poll() is None
