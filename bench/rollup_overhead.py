"""Benchmark: what the rollup triggers (patching.rollup) cost the recording of operations.

Seeds 1,000 VMs (PostgreSQL, its own database), then times batches of 1,000 operations - queued
(services.queue_operations) and executed (services.execute_operations on a simulated clock, which
writes guest summaries, missing and installed updates, results and the operations) - with the
rollup triggers enabled and disabled, alternating, side by side in one run. Assessments and
installations. Prints the median of each and the ratio on/off.

    .venv/bin/python bench/rollup_overhead.py [--vms 1000] [--rounds 5]

Environment: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/hotpatch_bench_rollup).
"""

import argparse
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import harness

ENV = harness.environment("hotpatch_bench_rollup", PORTAL_SIM_SPEED="0", PORTAL_PATCH_FAILURE_RATE="0.05")


def seed(count: int, now: datetime) -> list:
    from patching import catalog, services
    from vms import images
    from vms.models import ResourceGroup, Subscription, VirtualMachine
    from vms.patch_settings import defaults_for_image

    catalog.ensure_catalog(until=now.date())
    subscriptions = [Subscription.objects.create(id=uuid.uuid4(), display_name=f"Sub {n}") for n in range(4)]
    groups = ResourceGroup.objects.bulk_create(
        ResourceGroup(subscription=subscriptions[i % 4], name=f"rg-{i:03d}", location="westeurope") for i in range(20)
    )
    products = list(images.PRODUCTS.values())
    vms = []
    for i in range(count):
        product = products[i % len(products)]
        vm = VirtualMachine(
            resource_group=groups[i % len(groups)],
            name=f"vm-{i:06d}",
            location="westeurope",
            image_sku=product.default_sku,
            product=product.code,
            created_at=now,
        )
        vm.apply_patch_settings(defaults_for_image(images.PUBLISHER, images.OFFER, product.default_sku, "westeurope"))
        vms.append(vm)
    VirtualMachine.objects.bulk_create(vms, batch_size=2000)
    vms = list(VirtualMachine.objects.select_related("resource_group"))
    services.provision_guests(vms, now - timedelta(days=90), behind_by_months=2)
    return vms


def set_triggers(enabled: bool) -> None:
    from django.db import connection

    from patching import rollup

    with connection.cursor() as cursor:
        for table in rollup.SOURCES:
            for op in ("insert", "update", "delete"):
                cursor.execute(f"ALTER TABLE {table} {'ENABLE' if enabled else 'DISABLE'} TRIGGER {table}_rollup_{op}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    harness.setup_django(ENV)
    from patching import rollup, services
    from patching.models import OperationKind

    now = datetime.now(UTC) - timedelta(days=2)
    vms = seed(args.vms, now)
    rollup.rebuild(now)
    timings: dict[tuple, list[float]] = {}
    for n in range(args.rounds):
        for kind in (OperationKind.ASSESSMENT, OperationKind.INSTALLATION):
            for enabled in (n % 2 == 0, n % 2 == 1):  # alternate which goes first
                set_triggers(enabled)
                now += timedelta(minutes=30)
                began = time.perf_counter()
                ids = services.queue_operations(vms, kind, enqueue=False, now=now)
                queued = time.perf_counter()
                services.execute_operations(ids, now=now)
                done = time.perf_counter()
                assert len(ids) == len(vms)
                timings.setdefault((kind, "queue", enabled), []).append(queued - began)
                timings.setdefault((kind, "execute", enabled), []).append(done - queued)
                set_triggers(True)
                rollup.rebuild(now)  # the disabled rounds' changes, counted again (and no deltas left)
    print(f"{'batch of ' + str(args.vms):34}{'triggers on':>14}{'off':>10}{'on/off':>9}")
    for kind in (OperationKind.ASSESSMENT, OperationKind.INSTALLATION):
        for step in ("queue", "execute"):
            on = statistics.median(timings[(kind, step, True)]) * 1000
            off = statistics.median(timings[(kind, step, False)]) * 1000
            print(f"{kind + ' ' + step + ' (ms)':34}{on:14.0f}{off:10.0f}{on / off:9.2f}")


if __name__ == "__main__":
    main()
