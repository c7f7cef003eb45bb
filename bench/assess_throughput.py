"""Benchmark: how many assessments per second real Celery workers complete over Redis + PostgreSQL.

Seeds N VMs (default 10,000) into its own database, queues one assessment per VM the way the
platform's periodic assessment does (one bulk insert, one task each), and measures completions per
second and the workers' peak memory (resident set size, sampled from /proc).

    .venv/bin/python bench/assess_throughput.py [--vms 10000] [--concurrency 2]

Environment: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/hotpatch_bench),
BENCH_REDIS_URL (default redis://127.0.0.1:6379/14). The database is created if missing and its
fleet tables are emptied first. Nothing sleeps: PORTAL_SIM_SPEED=0, so this measures the engine.
"""

import argparse
import json
import subprocess
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import harness
from harness import ROOT

ENV = harness.environment(
    "hotpatch_bench", redis="redis://127.0.0.1:6379/14", PORTAL_SIM_SPEED="0", PORTAL_PATCH_FAILURE_RATE="0.02"
)


def seed(count: int) -> list:
    """Bulk-create the fleet: subscriptions, resource groups, VMs and their guests."""
    from patching import catalog, services
    from patching.models import Operation
    from vms import images
    from vms.models import ResourceGroup, Subscription, VirtualMachine
    from vms.patch_settings import defaults_for_image

    now = datetime.now(UTC)
    catalog.ensure_catalog(until=now.date())
    Operation.objects.all().delete()
    Subscription.objects.all().delete()
    subscription = Subscription.objects.create(id=uuid.uuid4(), display_name="Benchmark")
    groups = ResourceGroup.objects.bulk_create(
        ResourceGroup(subscription=subscription, name=f"rg-{i:03d}", location="westeurope") for i in range(100)
    )
    products = list(images.PRODUCTS.values())
    vms = []
    for i in range(count):
        product = products[i % len(products)]
        vm = VirtualMachine(
            resource_group=groups[i % len(groups)],
            name=f"vm-{i:06d}",
            location="westeurope",
            zone=str(1 + i % 3),
            image_sku=product.default_sku,
            product=product.code,
            created_at=now,
        )
        vm.apply_patch_settings(defaults_for_image(images.PUBLISHER, images.OFFER, product.default_sku, "westeurope"))
        vms.append(vm)
    VirtualMachine.objects.bulk_create(vms, batch_size=2000)
    vms = list(VirtualMachine.objects.select_related("resource_group"))
    services.provision_guests(vms, now)
    return vms


class MemorySampler(threading.Thread):
    """Peak RSS of the worker's process tree, sampled every 0.2 s from /proc."""

    def __init__(self, root_pid: int):
        super().__init__(daemon=True)
        self.root_pid, self.peak_total, self.peak_process, self.running = root_pid, 0, 0, True

    def tree(self) -> list[int]:
        pids, todo = [], [self.root_pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            todo.extend(int(c) for c in children)
        return pids

    def run(self) -> None:
        while self.running:
            sizes = []
            for pid in self.tree():
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                line = next((ln for ln in status.splitlines() if ln.startswith("VmRSS:")), None)
                if line:
                    sizes.append(int(line.split()[1]) * 1024)
            if sizes:
                self.peak_total = max(self.peak_total, sum(sizes))
                self.peak_process = max(self.peak_process, max(sizes))
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes (prefork pool)")
    args = parser.parse_args()

    harness.setup_django(ENV, drop=False)  # kept if it exists: seed() empties its fleet tables
    from django.db import connection
    from django.db.models import Count

    from patching import services
    from patching.models import Operation, OperationKind, OperationStatus
    from portal.celery import app

    t = time.perf_counter()
    vms = seed(args.vms)
    seeded = time.perf_counter() - t
    app.control.purge()

    node = f"bench-{uuid.uuid4().hex[:6]}@%h"
    worker = subprocess.Popen(
        [
            str(ROOT / ".venv/bin/celery"),
            "-A",
            "portal",
            "worker",
            "-n",
            node,
            "--pool=prefork",
            f"--concurrency={args.concurrency}",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=ENV,
    )
    sampler = MemorySampler(worker.pid)
    sampler.start()
    try:
        deadline = time.time() + 60
        while not app.control.ping(timeout=1.0):
            if time.time() > deadline or worker.poll() is not None:
                raise SystemExit("the worker did not start")
        start = time.perf_counter()
        queued = services.start_operations(vms, OperationKind.ASSESSMENT)
        enqueued = time.perf_counter() - start
        done = 0
        while done < queued:
            time.sleep(0.5)
            done = Operation.objects.finished().count()
            if time.perf_counter() - start > 1800:
                raise SystemExit(f"timed out with {done}/{queued} finished")
        elapsed = time.perf_counter() - start
        connection.close()
        statuses = dict(Operation.objects.values_list("status").annotate(n=Count("pk")))
    finally:
        sampler.running = False
        worker.terminate()
        worker.wait(30)
    result = {
        "vms": args.vms,
        "worker_concurrency": args.concurrency,
        "seed_seconds": round(seeded, 1),
        "enqueue_seconds": round(enqueued, 2),
        "assessments": queued,
        "statuses": statuses,
        "elapsed_seconds": round(elapsed, 1),
        "assessments_per_second": round(queued / elapsed, 1),
        "worker_peak_rss_total_mib": round(sampler.peak_total / 2**20, 1),
        "worker_peak_rss_largest_process_mib": round(sampler.peak_process / 2**20, 1),
    }
    print(json.dumps(result, indent=2))
    assert statuses.get(OperationStatus.SUCCEEDED, 0) == queued, "every assessment should have succeeded"


if __name__ == "__main__":
    main()
