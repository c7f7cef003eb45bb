"""Benchmark: maintenance configurations. How many window occurrences the pure recurrence module
computes per second, and how long the scheduler's step takes to open a window for 1,000 and for
10,000 VMs in scope (dynamic scopes; side by side in one run, so the ratio is what to read on a
shared, noisy machine).

Seeds N VMs (default 10,000, the generated fleet) into its own PostgreSQL database, puts them on
Customer Managed Schedules, tags 1,000 of them ring=a, and makes two daily configurations: one whose
dynamic scope is ring=a, one whose scope is every Windows VM. Then times `run_due(now)` at each
window's start: scope evaluation, one INSERT of the installations (services.queue_operations), the
per-VM run records, and the hand-off to Celery after commit (purged afterwards; no worker runs them).

    .venv/bin/python bench/maintenance_runs.py [--vms 10000]

Environment: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/hotpatch_bench_maintenance),
BENCH_REDIS_URL (default redis://127.0.0.1:6379/14).
"""

import argparse
import json
import time
from datetime import UTC, datetime, timedelta

import harness
from harness import timed

ENV = harness.environment("hotpatch_bench_maintenance", redis="redis://127.0.0.1:6379/14")
NIGHT = datetime(2024, 9, 11, 0, 30, tzinfo=UTC)
RULES = ["Day", "Week Monday,Friday", "Month day23,day24", "Month Second Tuesday Offset3", "6Hours"]


def occurrences_per_second() -> dict:
    from patching.maintenance import recurrence
    from patching.maintenance.timezones import zone

    result = {}
    tz = zone("Pacific Standard Time")
    for text in RULES:
        rule = recurrence.parse(text)
        start = datetime(2024, 1, 9, 22, 0)
        count, began = 0, time.perf_counter()
        for _ in recurrence.occurrences(rule, start, tz):
            count += 1
            if count == 20_000:
                break
        result[text] = round(count / (time.perf_counter() - began))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=10_000)
    args = parser.parse_args()

    harness.setup_django(ENV)
    from patching import catalog
    from patching.maintenance import services
    from patching.maintenance.models import MaintenanceConfiguration
    from patching.orchestrator import fleets
    from portal.celery import app
    from vms import clock
    from vms.models import ResourceGroup, VirtualMachine

    catalog.ensure_catalog(until=(NIGHT + timedelta(days=62)).date())
    start = NIGHT - timedelta(days=25)
    fleets.create(fleets.generated(args.vms, start, NIGHT), start)
    VirtualMachine.objects.update(
        patch_mode="AutomaticByPlatform",
        enable_hotpatching=False,
        bypass_platform_safety_checks=True,
        tags={"ring": "b"},
    )
    ring_a = list(VirtualMachine.objects.order_by("pk").values_list("pk", flat=True)[:1000])
    VirtualMachine.objects.filter(pk__in=ring_a).update(tags={"ring": "a"})

    rg = ResourceGroup.objects.select_related("subscription").first()
    configs = {}
    for name, first_day, flt in (
        ("ring-a", "2024-09-11", {"tagSettings": {"tags": {"ring": ["a"]}, "filterOperator": "Any"}}),
        ("everyone", "2024-09-12", {"osTypes": ["Windows"]}),
    ):
        body = {
            "location": rg.location,
            "properties": {
                "maintenanceScope": "InGuestPatch",
                "maintenanceWindow": {
                    "startDateTime": f"{first_day} 22:00",
                    "duration": "03:00",
                    "timeZone": "UTC",
                    "recurEvery": "Day",
                },
                "installPatches": {"rebootSetting": "IfRequired"},
            },
        }
        with_clock = clock.now
        clock.now = lambda: NIGHT  # created before its first window (vms.clock is the seam)
        try:
            config, _, problems = services.save_configuration(rg, name, body)
        finally:
            clock.now = with_clock
        assert not problems, problems
        configs[name] = config
        from vms.models import Subscription

        for sub in Subscription.objects.all():
            services.assign_scope(config, sub, f"{name}-{str(sub.pk)[:8]}", flt)
    MaintenanceConfiguration.objects.update(created_at=NIGHT)

    # The hand-off to Celery (one publish per operation, after commit) timed apart from the database work.
    from patching import services as patching_services
    from patching.models import Operation

    handoff = {"seconds": 0.0}
    send = patching_services.send_to_workers

    def timed_send(*args, **kwargs):
        began = time.perf_counter()
        try:
            return send(*args, **kwargs)
        finally:
            handoff["seconds"] += time.perf_counter() - began

    patching_services.send_to_workers = timed_send
    small, small_seconds, small_queries = timed(services.run_due, datetime(2024, 9, 11, 22, 0, 5, tzinfo=UTC))
    small_handoff, handoff["seconds"] = round(handoff["seconds"], 2), 0.0
    Operation.objects.update(status="Succeeded", finished_at=datetime(2024, 9, 11, 23, 0, tzinfo=UTC))  # ring a done
    big, big_seconds, big_queries = timed(services.run_due, datetime(2024, 9, 12, 22, 0, 5, tzinfo=UTC))
    big_handoff = round(handoff["seconds"], 2)
    app.control.purge()
    result = {
        "occurrences_per_second": occurrences_per_second(),
        "open_window": {
            "1000_vms": {
                "seconds": small_seconds,
                "of_which_celery_handoff": small_handoff,
                "queries": small_queries,
                "queued": small.queued,
            },
            f"{args.vms}_vms": {
                "seconds": big_seconds,
                "of_which_celery_handoff": big_handoff,
                "queries": big_queries,
                "queued": big.queued,
            },
            "ratio": round(big_seconds / small_seconds, 1) if small_seconds else None,
        },
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
