"""Benchmark: how fast the sandbox clock advances (simulated days per second) at 1,000 and 10,000 VMs.

For each fleet size, in its own fresh PostgreSQL database: the generated fleet's mix (four products,
mostly hotpatch-enrolled, zones and availability sets) created up to date on 2026-11-30 12:00 UTC,
the clock set there, then `patching.sandbox.advance(days=D)` (what `manage.py sandbox advance
--days D` runs): periodic assessment of every running VM every day, December's Patch Tuesday
(2026-12-08) and its automatic patching in each VM's window. Reports wall seconds, simulated days
per second, operations run and rounds, and the snapshot export and import of the result.

    .venv/bin/python bench/sandbox_advance.py [--sizes 1000 10000] [--days 10]

Environment: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/hotpatch_bench_sandbox),
BENCH_REDIS_URL (default redis://127.0.0.1:6379/14).
"""

import argparse
import json
import time
from datetime import UTC, datetime, timedelta

import harness

ENV = harness.environment("hotpatch_bench_sandbox", redis="redis://127.0.0.1:6379/14")
START = datetime(2026, 11, 30, 12, tzinfo=UTC)


def fresh_database() -> None:
    """Empty and migrated: dropped even with sessions still on it, as each size starts afresh in this process."""
    harness.create_database(ENV["DATABASE_URL"], force=True)
    harness.migrate(ENV)


def one_size(vms: int, days: float) -> dict:
    from django.db import connections

    from patching import catalog, sandbox
    from patching.orchestrator import fleets
    from vms import clock

    connections.close_all()
    fresh_database()
    clock.forget()
    catalog.ensure_catalog(until=(START + timedelta(days=days + 31)).date())
    fleet = fleets.generated(vms, START, START + timedelta(days=days))
    fleet.initially_off.clear()  # every VM running: the advance assesses and patches them all
    fleets.create(fleet, START)
    sandbox._set_clock(START)

    result = sandbox.advance(days=days)
    began = time.perf_counter()
    text = sandbox.dumps(sandbox.export_snapshot())
    exported = time.perf_counter() - began
    began = time.perf_counter()
    sandbox.import_snapshot(sandbox.loads(text))
    imported = time.perf_counter() - began
    return {
        "vms": vms,
        "simulated_days": days,
        "seconds": round(result.seconds, 1),
        "simulated_days_per_second": round(result.days_per_second, 3),
        "operations": result.operations,
        "patch_rounds": result.rounds,
        "snapshot_mb": round(len(text) / 1e6, 1),
        "snapshot_export_seconds": round(exported, 1),
        "snapshot_import_seconds": round(imported, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--days", type=float, default=10)
    args = parser.parse_args()
    fresh_database()
    import django

    django.setup()
    rows = [one_size(n, args.days) for n in args.sizes]
    if len(rows) > 1:
        base = rows[0]["seconds"] or 1
        for row in rows:
            row["seconds_relative_to_first"] = round(row["seconds"] / base, 2)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
