"""Benchmark: the portal at 100 / 10,000 / 100,000 VMs, side by side in one run (issue 11).

    .venv/bin/python bench/scale.py [--sizes 100,10000[,100000]] [--only execution] [--procs 1,2] [--rounds 4]

Sections (`--only NAME`, repeatable; default all):

- execution: a fleet assessment (the platform's round: one bulk insert, batches on the platform
  queue) through real Celery workers started here (prefork, `--procs` processes, Redis, PostgreSQL,
  PORTAL_SIM_SPEED=0) against the COPY floor: the same rows (operations, per-patch results, missing
  updates) COPYed into bare copies of their tables, measured in the same run. `--rounds` rounds per
  worker count, interleaved, medians; every round is the daily case, a re-assessment of an assessed
  fleet (the seed assesses it once). Each round is also run queued before the workers start: the
  workers alone, without the round's queueing, which on two cores competes with them. Then, with
  the demo's simulated pace (PORTAL_SIM_SPEED=120) and the largest worker count, the same round again
  while a user presses Assess now: its latency (the assessment's simulated duration is 0.75 s of it)
  and the round's wall time (the daily assessment at demo pace).

- pages: the fleet page (default, every sort, filters, next/last page), the fleet history and the
  ARM list-all following every nextLink, timed over HTTP against gunicorn, all sizes side by side
  (bench/fleet_pages.py: each size built as a user would, `generate_fleet_file` + `import_fleet`, in
  databases of its own, hp_pages_bench_<size>, kept for the next run unless `--reseed`).

For the execution section each size has its own database,
BENCH_DATABASE_URL + "_<size>" (default postgres://postgres@127.0.0.1:5432/hp_exec_bench_<size>),
created, migrated and seeded set-based once (kept for the next run; `--reseed` starts over). Redis:
BENCH_REDIS_URL (default redis://127.0.0.1:6379/3), purged before each run.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import harness
from harness import ROOT

BASE_URL = harness.database_url("hp_exec_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/3")
DEMO_PACE = "120"
FLOOR_REPEAT = 5


def env_for(size: int, **extra: str) -> dict[str, str]:
    """The environment of the size's processes (not made this process's: each size's runs in a child)."""
    settings = {"PORTAL_SIM_SPEED": "0", "PORTAL_PATCH_FAILURE_RATE": "0.02", **extra}
    return harness.portal_env(f"{BASE_URL}_{size}", redis_url=REDIS_URL, **settings)


def prepare(size: int, reseed: bool) -> None:
    """Create, migrate and seed the size's database in a child process (Django is set up once per
    process, and each size has its own database)."""
    env = env_for(size)
    harness.create_database(env["DATABASE_URL"], drop=False)  # kept for the next run
    harness.migrate(env)
    subprocess.run(
        [sys.executable, __file__, "--seed", str(size), *(["--reseed"] if reseed else [])],
        cwd=ROOT,
        env=env,
        check=True,
    )


def seed(size: int, reseed: bool) -> None:
    """Bulk-create the fleet, set-based: resource groups, VMs and their guests (as bench/overview.py)."""
    from patching import catalog, services
    from patching.models import GuestState
    from vms import images
    from vms.models import ResourceGroup, Subscription, VirtualMachine
    from vms.patch_settings import defaults_for_image

    if not reseed and VirtualMachine.objects.count() == size:
        if not GuestState.objects.filter(assessed_at__isnull=True).exists():
            return
        first_assessment()  # a fleet seeded by an earlier version of this script
        return
    now = datetime.now(UTC)
    catalog.ensure_catalog(until=now.date())
    reset()
    Subscription.objects.all().delete()
    subscription = Subscription.objects.create(id=uuid.uuid4(), display_name="Scale")
    groups = ResourceGroup.objects.bulk_create(
        ResourceGroup(subscription=subscription, name=f"rg-{i:03d}", location="westeurope") for i in range(100)
    )
    products = list(images.PRODUCTS.values())
    for start in range(0, size, 10_000):
        vms = []
        for i in range(start, min(size, start + 10_000)):
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
            vm.apply_patch_settings(
                defaults_for_image(images.PUBLISHER, images.OFFER, product.default_sku, "westeurope")
            )
            vms.append(vm)
        VirtualMachine.objects.bulk_create(vms, batch_size=2000)
        with services.fixed_catalog():
            services.provision_guests(list(VirtualMachine.objects.filter(name__in=[v.name for v in vms])), now)
    first_assessment()


def first_assessment() -> None:
    """Assess the fleet once, in this process, untimed: every measured round is then the daily case, a
    re-assessment (of the same findings), and does the same work whichever worker count comes first. A
    fleet's first assessment also changes every VM's statuses (and their rollups), which the rounds after
    it do not: measured first, it made the one-process round the slower by a third."""
    from patching import services
    from patching.models import OperationKind
    from vms.models import VirtualMachine

    vms = list(VirtualMachine.objects.select_related("resource_group").order_by("pk"))
    ids = services.queue_operations(vms, OperationKind.ASSESSMENT, enqueue=False)
    for i in range(0, len(ids), 2000):
        services.execute_operations(ids[i : i + 2000], wait=False)
    reset()


def reset() -> None:
    """Forget every run: the same work for each measurement."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("UPDATE patching_gueststate SET last_assessment_id = NULL, last_installation_id = NULL")
        cursor.execute("TRUNCATE patching_patchresult, patching_missingupdate")
        cursor.execute("DELETE FROM patching_operation")
    vacuum()


def vacuum() -> None:
    """What autovacuum does in the background of a real database (this machine's PostgreSQL runs
    with it off): dead rows reclaimed and statistics current, so no run inherits the last one's bloat."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "VACUUM ANALYZE vms_virtualmachine, vms_resourcegroup, patching_gueststate, patching_operation, "
            "patching_patchresult, patching_missingupdate, patching_installedupdate"
        )
        # Every round starts just after a checkpoint, so each pays the same full-page images in the
        # WAL, instead of whichever a checkpoint the last round's WAL triggered falls in.
        cursor.execute("CHECKPOINT")


def start_worker(env: dict, procs: int) -> subprocess.Popen:
    from portal.celery import app

    worker = subprocess.Popen(
        [
            str(ROOT / ".venv/bin/celery"),
            "-A",
            "portal",
            "worker",
            "-Q",
            "user,platform",
            "-n",
            f"scale-{uuid.uuid4().hex[:6]}@%h",
            "--pool=prefork",
            f"--concurrency={procs}",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=env,
    )
    deadline = time.time() + 60
    while not app.control.ping(timeout=1.0):
        if time.time() > deadline or worker.poll() is not None:
            raise SystemExit("the worker did not start")
    return worker


def stop_worker(worker: subprocess.Popen) -> None:
    worker.terminate()
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def wait_finished(count: int, start: float, timeout: float = 3600) -> float:
    """Until none of the round is in flight (a look at the in-flight index, not a count of the table:
    the poll must not compete with the workers for the same two cores)."""
    from patching.models import Operation

    while Operation.objects.in_flight().exists():
        if time.perf_counter() - start > timeout:
            raise SystemExit(f"timed out with {Operation.objects.finished().count()}/{count} finished")
        time.sleep(0.1)
    return time.perf_counter() - start


def assessment_round(size: int, procs: int, queued_first: bool = False) -> dict:
    """Reset, start `procs` worker processes, queue the round, wait until every operation finished.
    `queued_first`: the round is queued before the workers start and only sent to them when the clock
    starts, which measures the workers alone (how they scale), without the round's queueing."""
    from django.db import connection
    from django.db.models import Count

    from patching import services
    from patching.models import Operation, OperationKind
    from portal.celery import app
    from vms.models import VirtualMachine

    reset()
    app.control.purge()
    vms = list(VirtualMachine.objects.select_related("resource_group"))
    if queued_first:
        queued = services.queue_operations(vms, OperationKind.ASSESSMENT, enqueue=False)
    worker = start_worker(env_for(size), procs)
    try:
        before = CpuUse.now(worker.pid)
        start = time.perf_counter()
        if queued_first:
            services.send_to_workers(queued)
        else:
            queued = services.queue_operations(vms, OperationKind.ASSESSMENT)
        enqueued = time.perf_counter() - start
        queueing = CpuUse.now(worker.pid).since(before)["queueing"]
        elapsed = wait_finished(len(queued), start)
        cpu = CpuUse.now(worker.pid).since(before)
        cpu["polling"] = round(cpu["queueing"] - queueing, 2)  # this process, waiting for the round's end
        cpu["queueing"] = queueing
        connection.close()
    finally:
        stop_worker(worker)
    statuses = dict(Operation.objects.values_list("status").annotate(n=Count("pk")))
    return {
        "seconds": round(elapsed, 2),
        "enqueue_seconds": round(enqueued, 2),
        "statuses": statuses,
        "cpu_seconds": cpu,
    }


class CpuUse:
    """Where a round's CPU time went, from /proc (Linux): the workers' Python, their PostgreSQL
    backends, the queueing (this process and its backend), and the machine's idle time. On two cores
    a second worker process can only go as fast as the cores left over from queueing allow."""

    def __init__(self, ticks: dict[str, float], machine: tuple[float, float]):
        self.ticks, self.machine = ticks, machine

    @staticmethod
    def _seconds(pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @classmethod
    def now(cls, worker_pid: int) -> "CpuUse":
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid, pid = pg_backend_pid() FROM pg_stat_activity WHERE datname = current_database()"
            )
            backends = cursor.fetchall()
        pool = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and cls._ppid(p) == worker_pid]
        times = os.times()
        ticks = {
            "workers_python": sum(cls._seconds(pid) for pid in [worker_pid, *pool]),
            "workers_postgres": sum(cls._seconds(pid) for pid, mine in backends if not mine),
            "queueing": times.user + times.system + sum(cls._seconds(pid) for pid, mine in backends if mine),
        }
        total = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        hz = os.sysconf("SC_CLK_TCK")
        return cls(ticks, (sum(total) / hz, (total[3] + total[4]) / hz))

    @staticmethod
    def _ppid(path: Path) -> int:
        try:
            return int((path / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            return -1

    def since(self, before: "CpuUse") -> dict[str, float]:
        used = {name: round(value - before.ticks.get(name, 0.0), 2) for name, value in self.ticks.items()}
        used["machine_idle"] = round(self.machine[1] - before.machine[1], 2)
        return used


def copy_floor() -> dict:
    """COPY the rows the last round wrote (operations, per-patch results, missing updates) into bare
    copies of their tables (no indexes, no constraints): what writing them costs at the least."""
    from django.db import connection

    tables = ("patching_operation", "patching_patchresult", "patching_missingupdate")
    rows, counts = {}, {}
    with connection.cursor() as cursor:
        for table in tables:
            with cursor.cursor.copy(f"COPY {table} TO STDOUT") as copy:
                rows[table] = b"".join(bytes(block) for block in copy)
            cursor.execute(f"SELECT count(*) FROM {table}")
            counts[table] = cursor.fetchone()[0]
        timings = []
        for _ in range(FLOOR_REPEAT):  # it is short, so the machine's noise weighs more: a median
            for table in tables:
                cursor.execute(f"DROP TABLE IF EXISTS floor_{table}")
                cursor.execute(f"CREATE TABLE floor_{table} (LIKE {table})")
            start = time.perf_counter()
            for table in tables:
                with cursor.cursor.copy(f"COPY floor_{table} FROM STDIN") as copy:
                    copy.write(rows[table])
            timings.append(time.perf_counter() - start)
            for table in tables:
                cursor.execute(f"DROP TABLE floor_{table}")
    return {"seconds": round(statistics.median(timings), 3), "each": [round(t, 3) for t in timings], "rows": counts}


def assess_now_during_round(size: int, procs: int) -> dict:
    """At the demo's pace: the round queued, then a user's Assess now 2 s later; its latency, and the
    round's wall time."""
    from django.db import connection

    from patching import services
    from patching.models import Operation, OperationKind, StartedBy
    from portal.celery import app
    from vms.models import VirtualMachine

    reset()
    app.control.purge()
    worker = start_worker(env_for(size, PORTAL_SIM_SPEED=DEMO_PACE), procs)
    try:
        vms = list(VirtualMachine.objects.select_related("resource_group").order_by("pk"))
        start = time.perf_counter()
        queued = services.queue_operations(vms[1:], OperationKind.ASSESSMENT)
        time.sleep(2)
        pressed = time.perf_counter()
        operation, _ = services.start_operation(vms[0], OperationKind.ASSESSMENT, started_by=StartedBy.USER)
        while Operation.objects.filter(pk=operation.pk).finished().count() == 0:
            time.sleep(0.05)
        latency = time.perf_counter() - pressed
        backlog = len(queued) + 1 - Operation.objects.finished().count()
        elapsed = wait_finished(len(queued) + 1, start)
        connection.close()
    finally:
        stop_worker(worker)
    return {
        "assess_now_seconds": round(latency, 2),
        "simulated_duration_seconds": round(90 / float(DEMO_PACE), 2),
        "round_backlog_when_done": backlog,
        "round_seconds_at_demo_pace": round(elapsed, 1),
    }


def execution(size: int, procs: list[int], rounds: int) -> dict:
    """`rounds` rounds per worker count, interleaved (1, 2, then 2, 1, ...): this shared machine's speed
    drifts by up to a fifth between rounds a minute apart (the first rounds of a run are often the
    slowest), so each ratio is of two rounds run side by side, an even number of rounds lets each
    order count alike, and each figure is the median (each round listed). Each round is
    run twice: as the platform runs it (`celery_N_procs`: queued while the workers run it) and with
    the round queued before the workers start (`workers_N_procs`: the workers alone)."""
    runs: dict[str, list[dict]] = {}
    for r in range(rounds):
        for n in procs if r % 2 == 0 else procs[::-1]:
            runs.setdefault(f"celery_{n}_procs", []).append(assessment_round(size, n))
            runs.setdefault(f"workers_{n}_procs", []).append(assessment_round(size, n, queued_first=True))
    floor = copy_floor()
    result: dict = {"copy_floor": floor}
    for name, measured in runs.items():
        seconds = statistics.median(run["seconds"] for run in measured)
        result[name] = {
            "seconds": seconds,
            "x_copy_floor": round(seconds / floor["seconds"], 1),
            "rounds": measured,
        }
    if len(procs) > 1:
        for kind in ("celery", "workers"):
            first, last = (runs[f"{kind}_{n}_procs"] for n in (procs[0], procs[-1]))
            ratios = [a["seconds"] / b["seconds"] for a, b in zip(first, last, strict=True)]
            key = "speedup" if kind == "celery" else "workers_speedup"
            result[key] = round(statistics.median(ratios), 2)  # of the rounds run side by side
            result[key + "s"] = [round(ratio, 2) for ratio in ratios]
    result["demo_pace"] = assess_now_during_round(size, procs[-1])
    return result


SECTIONS = {"execution": execution}
PAGES = "pages"  # all sizes at once, side by side (bench/fleet_pages.py)


def measure(size: int, sections: list[str], procs: list[int], rounds: int) -> dict:
    """In a child process per size (its own database); prints its figures as one JSON line."""
    import django

    django.setup()
    return {name: SECTIONS[name](size, procs, rounds) for name in sections}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,10000", help="comma-separated fleet sizes (100000 is optional)")
    parser.add_argument(
        "--only", action="append", choices=sorted([*SECTIONS, PAGES]), help="sections to run (default all)"
    )
    parser.add_argument("--procs", default="1,2", help="worker processes to compare")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per worker count, best even (medians reported)")
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    procs = [int(p) for p in args.procs.split(",")]
    sections = args.only or [*SECTIONS, PAGES]
    if args.seed:
        import django

        django.setup()
        seed(args.seed, args.reseed)
        return
    if args.measure:
        print(json.dumps(measure(args.measure, sections, procs, args.rounds)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    if PAGES in sections:
        sys.path.insert(0, str(ROOT / "bench"))
        import fleet_pages

        urls = {size: fleet_pages.build_fleet(size, assess=False, reuse=not args.reseed) for size in sizes}
        fleet_pages.report(fleet_pages.measure_pages(urls), sizes)
        sections = [s for s in sections if s != PAGES]
    results = {}
    for size in sizes if sections else []:
        t = time.perf_counter()
        prepare(size, args.reseed)
        print(f"# {size} VMs: seeded in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        out = subprocess.run(
            [sys.executable, __file__, "--measure", str(size), "--procs", args.procs, "--rounds", str(args.rounds)]
            + [f"--only={s}" for s in sections],
            cwd=ROOT,
            env=env_for(size),
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        ).stdout
        results[size] = json.loads(out.strip().splitlines()[-1])
        print(f"# {size} VMs: {json.dumps(results[size])}", file=sys.stderr)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
