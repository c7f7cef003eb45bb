"""Chaos: SIGKILL prefork workers mid-install, and stop the broker, then count what is stuck or doubled.

Everything runs on 127.0.0.1 and stops by itself: a redis-server of its own on a free port (no
persistence), a prefork `celery worker` and a `celery beat` on it, and its own PostgreSQL database.

    .venv/bin/python bench/chaos_worker.py [--kills 6] [--vms-per-kill 3] [--outage 30]

Each kill round starts an installation on fresh VMs, waits until they run, then SIGKILLs either the
worker's main process (a supervisor starts a new one at once) or its pool children (the worker
forks new ones), alternately; then it waits for every operation to finish and measures the time from
the kill to each operation being finished (resumed by a takeover, or failed). The outage round stops
Redis, accepts assessments (the publish fails and is logged), starts Redis again and measures the
time until each has succeeded. At the end: operations stuck in flight, VMs left starting, an
installation recorded twice (two results for an update), and the figures, as JSON.

Environment: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/hotpatch_chaos; created
if missing, its operations emptied first). The portal's own settings apply (heartbeat, dispatch beat),
except PORTAL_SIM_SPEED=60 so that an installation runs for a while.
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness
from harness import ROOT

DEADLINE = 600  # no round waits longer than this for its operations


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PORT = free_port()
ENV = harness.environment(
    "hotpatch_chaos",
    log_level=None,  # not WARNING: the portal's own level (INFO unless set) in the logs kept under LOGS
    REDIS_URL=f"redis://127.0.0.1:{PORT}/0",  # its own redis-server, not BENCH_REDIS_URL
    PORTAL_SIM_SPEED=os.environ.get("PORTAL_SIM_SPEED", "60"),
    PORTAL_PATCH_FAILURE_RATE="0",
    PORTAL_AGENT_UNREACHABLE_RATE="0",
    PYTHONUNBUFFERED="1",
)
LOGS = Path(tempfile.mkdtemp(prefix="chaos-"))


class Redis:
    def __init__(self):
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(PORT), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        wait(self.answers, 10)

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", PORT), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def wait(predicate, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def celery(role: str, *args: str) -> subprocess.Popen:
    log = open(LOGS / f"{role}-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115 (the process owns it)
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "portal", role, "--loglevel=info", *args],
        cwd=ROOT,
        env=ENV,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def start_worker() -> subprocess.Popen:
    return celery("worker", "--pool=prefork", "--concurrency=3", "--without-gossip", "--without-mingle")


def children(pid: int) -> list[int]:
    """The process's children, forked by any of its threads (billiard replaces dead pool processes
    from a thread of its own)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # the thread ended meanwhile
            pass
    return found


def seconds_to_finished(ops: list[int], since: float) -> dict[int, float]:
    """Wait (up to DEADLINE) for the operations to finish; how long after `since` each did."""
    from patching.models import Operation

    finished_at: dict[int, float] = {}

    def all_finished() -> bool:
        for pk, is_finished in ((op.pk, op.is_finished) for op in Operation.objects.filter(pk__in=ops)):
            if is_finished:
                finished_at.setdefault(pk, time.monotonic() - since)
        return len(finished_at) == len(ops)

    wait(all_finished, DEADLINE, interval=0.5)
    return finished_at


def stop_all(processes):
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the worker's process group: its pool children too
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--vms-per-kill", type=int, default=3)
    parser.add_argument("--outage", type=float, default=30, help="seconds Redis is down (0: no outage round)")
    options = parser.parse_args()

    harness.setup_django(ENV, drop=False)  # kept if it exists: its operations are emptied below
    from django.conf import settings
    from django.db.models import Count
    from django.utils import timezone

    from patching import catalog, services
    from patching.models import Operation, OperationKind, OperationStatus, PatchResult
    from tests.factories import make_vm
    from vms.models import VirtualMachine

    catalog.ensure_catalog(until=timezone.now().date())
    Operation.objects.all().delete()
    VirtualMachine.objects.filter(name__startswith="chaos-").delete()

    redis = Redis()
    redis.start()
    worker = start_worker()
    beat = celery("beat", "--schedule", str(LOGS / "beat-schedule"))
    processes = [worker, beat]
    figures = {"kills": [], "outage": None}
    try:
        wait(lambda: any("ready." in p.read_text(errors="replace") for p in LOGS.glob("worker-*.log")), 60)
        for round_ in range(options.kills):
            target = "worker" if round_ % 2 == 0 else "pool children"
            vms = [make_vm(name=f"chaos-{round_}-{i}", product="ws2022") for i in range(options.vms_per_kill)]
            ops = [services.start_operation(vm, OperationKind.INSTALLATION)[0].pk for vm in vms]
            expected = len(ops)
            running = Operation.objects.filter(pk__in=ops, status=OperationStatus.IN_PROGRESS)
            if not wait(lambda running=running, expected=expected: running.count() == expected, 120):
                print(f"round {round_}: not all running before the kill", file=sys.stderr)
            time.sleep(2)  # mid-install
            killed_at = time.monotonic()
            if target == "worker":
                pool = children(worker.pid)
                worker.send_signal(signal.SIGKILL)
                worker.wait()
                for child in pool:  # orphans would finish the run: the whole worker dies, as with its machine
                    os.kill(child, signal.SIGKILL)
                worker = start_worker()  # as a supervisor would
                processes.append(worker)
            else:
                for child in children(worker.pid):
                    os.kill(child, signal.SIGKILL)
            finished_at = seconds_to_finished(ops, killed_at)
            rows = list(Operation.objects.filter(pk__in=ops).values("status", "attempts"))
            figures["kills"].append(
                {
                    "killed": target,
                    "seconds_to_finished": sorted(round(s, 1) for s in finished_at.values()),
                    "statuses": sorted(r["status"] for r in rows),
                    "attempts": sorted(r["attempts"] for r in rows),
                }
            )
            print(json.dumps(figures["kills"][-1]), flush=True)

        if options.outage:
            vms = [make_vm(name=f"chaos-outage-{i}") for i in range(options.vms_per_kill)]
            redis.stop()
            latencies, ops = [], []
            for vm in vms:
                started = time.monotonic()
                ops.append(services.start_operation(vm, OperationKind.ASSESSMENT)[0].pk)  # its publish fails
                latencies.append(time.monotonic() - started)
            time.sleep(options.outage)
            redis.start()
            back = time.monotonic()
            done = Operation.objects.filter(pk__in=ops, status=OperationStatus.SUCCEEDED)
            wait(lambda: done.count() == len(ops), DEADLINE, interval=0.5)
            figures["outage"] = {
                "outage_seconds": options.outage,
                "accepted_during_outage": len(ops),
                "succeeded": done.count(),
                "seconds_from_redis_back_to_all_succeeded": round(time.monotonic() - back, 1),
                "publish_latency_ms_median": round(1000 * statistics.median(latencies), 1),
                "publish_latency_ms_max": round(1000 * max(latencies), 1),
            }
            print(json.dumps(figures["outage"]), flush=True)
    finally:
        stop_all(processes)
        redis.stop()

    times = [s for k in figures["kills"] for s in k["seconds_to_finished"]]
    figures["summary"] = {
        "kills": len(figures["kills"]),
        "operations_hit": len(times),
        "stuck_in_flight": Operation.objects.in_flight().count(),
        "vms_left_starting": VirtualMachine.objects.filter(power_state=VirtualMachine.PowerState.STARTING).count(),
        "updates_recorded_twice": PatchResult.objects.values("operation", "update")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count(),
        "installations_per_vm_above_one": Operation.objects.filter(kind=OperationKind.INSTALLATION)
        .values("vm")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count(),
        "failed": Operation.objects.filter(status=OperationStatus.FAILED).count(),
        "seconds_kill_to_finished_median": round(statistics.median(times), 1) if times else None,
        "seconds_kill_to_finished_max": max(times) if times else None,
        "heartbeat_timeout_seconds": settings.PORTAL_HEARTBEAT_TIMEOUT.total_seconds(),
        "logs": str(LOGS),
    }
    print(json.dumps(figures["summary"], indent=2))


if __name__ == "__main__":
    main()
