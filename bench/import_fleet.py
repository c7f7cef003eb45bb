"""Benchmark: `manage.py import_fleet` on `az vm list -d -o json` files of 100, 10,000 and 100,000 VMs.

For each size it writes the file with `manage.py generate_fleet_file` (vms/fleetfile.py, the generator
the tests use too) into a temporary directory, empties its own PostgreSQL database (migrate), creates
the owner, then times the command as a user runs it (a subprocess: parse, plan, bulk create, provision
the guests), and reports wall time, VMs per second and the file size, side by side in one run.

    .venv/bin/python bench/import_fleet.py [--sizes 100,10000,100000]

Environment: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/hotpatch_bench_import).
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness
from harness import ROOT

ENV = harness.environment("hotpatch_bench_import")


def manage(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=ENV, capture_output=True, text=True, check=False
    )
    if result.returncode:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def fresh_database() -> None:
    harness.create_database(ENV["DATABASE_URL"])
    manage("migrate", "-v0")
    manage("shell", "-c", "from django.contrib.auth.models import User; User.objects.create_user('bench')")
    # The catalog once, outside the timing: a portal has it before anyone imports.
    manage(
        "shell",
        "-c",
        "from patching import catalog; from vms import clock; from datetime import timedelta; "
        "catalog.ensure_catalog(until=clock.now() + timedelta(days=31))",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,10000,100000")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            path = Path(tmp) / f"fleet-{size}.json"
            manage("generate_fleet_file", "--vms", str(size), "--out", str(path))
            fresh_database()
            began = time.perf_counter()
            out = manage("import_fleet", str(path), "--owner", "bench")
            seconds = time.perf_counter() - began
            imported = int(out.rsplit("Imported ", 1)[1].split()[0])
            rows.append((size, imported, path.stat().st_size / 2**20, seconds))
            print(
                f"{size:>7} VMs in the file: {imported} imported in {seconds:6.1f} s "
                f"({imported / seconds:,.0f} VMs/s), file {rows[-1][2]:.1f} MiB",
                flush=True,
            )
    print("\nsize      imported  file MiB  seconds  VMs/s")
    for size, imported, mib, seconds in rows:
        print(f"{size:<9} {imported:<9} {mib:<9.1f} {seconds:<8.1f} {imported / seconds:,.0f}")


if __name__ == "__main__":
    main()
