"""Benchmark: the what-if year (patching.what_if.compare, what the Celery job runs) over imported fleets.

For each size it empties its own PostgreSQL database, imports a generated `az vm list -d` fleet
(vms/fleetfile.py) for one user, then times `what_if.compare` over that user's fleet for a year from
the world's today: both scenarios ("as it is", "every capable machine enrolled"), each in its throwaway
in-memory database. It prints wall time and the cost per VM and simulated day per scenario (the
figure the page's estimate starts from: patching.what_if.MEASURED_SECONDS_PER_VM_DAY).

    .venv/bin/python bench/what_if.py [--sizes 1000,10000] [--days 365]

Environment: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/hotpatch_bench_what_if).
"""

import argparse
import json
import time

import harness

ENV = harness.environment("hotpatch_bench_what_if")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args()
    harness.create_database(ENV["DATABASE_URL"])
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection

    from patching import services, what_if
    from vms import clock, fleet_import, fleetfile
    from vms.models import Subscription

    call_command("migrate", verbosity=0)
    user = User.objects.create_user("bench")
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        Subscription.objects.all().delete()
        entries = fleet_import.parse(json.dumps(fleetfile.generate(size, seed=size)).encode())
        vms = services.import_fleet(fleet_import.plan(entries, user), user, clock.now())
        connection.close()
        began = time.perf_counter()
        result = what_if.compare(what_if.fleet_of(user), clock.now().date(), args.days)
        seconds = time.perf_counter() - began
        per_vm_day = (seconds - what_if.FIXED_SECONDS) / (len(vms) * args.days * len(what_if.SCENARIOS))
        rows.append((len(vms), seconds, per_vm_day, result))
        as_is, enrolled = result["scenarios"]["as_is"], result["scenarios"]["all_enrolled"]
        print(
            f"{len(vms):>6} VMs, {args.days} days: {seconds:6.1f} s ({per_vm_day * 1e6:.1f} µs per VM-day and scenario); "
            f"reboots per machine-year {as_is['reboots_per_machine_year']} as it is, "
            f"{enrolled['reboots_per_machine_year']} all enrolled",
            flush=True,
        )


if __name__ == "__main__":
    main()
