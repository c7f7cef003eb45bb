"""Benchmark: what one round of automatic patching and of periodic assessment costs on a big fleet,
and how long `manage.py simulate` takes for a year.

Seeds N VMs (default 100,000, the generated fleet's mix: zones, availability sets, four products,
five percent off) into its own PostgreSQL database, up to date a month before, then times, on
the night after a Patch Tuesday:

- `engine.patch_fleet(now)`: the beat task's round (read the fleet, decide for every VM, record the
  decisions, queue the installations): wall time and number of SQL queries, first and second round;
- `engine.assess_fleet(now)`: the periodic-assessment round (who is due, queue their assessments).

Queued operations are not run (no worker): the installations stay in flight, as they would while
workers run them, so the second round shows the steady state. With --simulate it also times
`manage.py simulate --start 2024-01-01 --end 2025-01-01 --vms 1000` (in its own throwaway SQLite).

    .venv/bin/python bench/orchestrator_rounds.py [--vms 100000] [--simulate]

Environment: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/hotpatch_bench_rounds),
BENCH_REDIS_URL (default redis://127.0.0.1:6379/14; queued tasks are purged afterwards).
"""

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import harness
from harness import ROOT, timed

ENV = harness.environment("hotpatch_bench_rounds", redis="redis://127.0.0.1:6379/14")
# 2024-09-11 00:30 UTC: the night after September's Patch Tuesday in Europe.
NIGHT = datetime(2024, 9, 11, 0, 30, tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=100_000)
    parser.add_argument("--simulate", action="store_true", help="also time a year of simulate over 1,000 VMs")
    args = parser.parse_args()

    harness.setup_django(ENV)
    from patching import catalog
    from patching.orchestrator import engine, fleets
    from portal.celery import app

    catalog.ensure_catalog(until=(NIGHT + timedelta(days=62)).date())
    began = time.perf_counter()
    start = NIGHT - timedelta(days=25)
    fleets.create(fleets.generated(args.vms, start, NIGHT), start)
    seeded = round(time.perf_counter() - began, 1)

    first, first_seconds, first_queries = timed(engine.patch_fleet, NIGHT)
    second, second_seconds, second_queries = timed(engine.patch_fleet, NIGHT + timedelta(minutes=5))
    assessed, assess_seconds, assess_queries = timed(engine.assess_fleet, NIGHT)
    app.control.purge()
    result = {
        "vms": args.vms,
        "seed_seconds": seeded,
        "patch_round": {
            "first": {"seconds": first_seconds, "queries": first_queries, "started": len(first.started)},
            "second": {"seconds": second_seconds, "queries": second_queries, "started": len(second.started)},
            "decisions": first.decisions,
        },
        "assessment_round": {"seconds": assess_seconds, "queries": assess_queries, "started": len(assessed.started)},
    }
    if args.simulate:
        began = time.perf_counter()
        subprocess.run(
            [sys.executable, "manage.py", "simulate", "--start", "2024-01-01", "--end", "2025-01-01", "--vms", "1000"],
            cwd=ROOT,
            env=ENV,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        result["simulate_1000_vms_one_year_seconds"] = round(time.perf_counter() - began, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
