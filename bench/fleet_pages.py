"""Benchmark: the fleet page (default, every sort, filters, the next page) and the ARM list-all over HTTP,
at 100 and 100,000 VMs side by side, as the independent check measures them.

Each fleet is built as a user would: `manage.py generate_fleet_file --vms N` and `manage.py import_fleet
FILE --owner bench` into a fresh PostgreSQL database of its own; with `--assess` (the default) the
fleet is then assessed once, set-based (queue_operations + execute_operations with a simulated `now`),
so the guest columns (critical, other, reboot, last assessed) hold values, as they do in a live fleet.
Then a real server (gunicorn, the Procfile's web command) per fleet answers, and each URL is timed
over HTTP, alternating between the fleets so both see the same machine load; medians and the ratio to
the smallest fleet are printed. The user signs in with the portal's form; the API uses a bearer token
(ApiToken, as `az rest` would).

    .venv/bin/python bench/fleet_pages.py [--sizes 100,100000] [--repeat 7] [--reuse] [--no-assess]

`--reuse` keeps a fleet database already built by an earlier run (hp_pages_bench_<N>).
Environment: BENCH_DATABASE_PREFIX (default postgres://postgres@127.0.0.1:5432/hp_pages_bench).
bench/scale.py can call `build_fleet(size)` and `measure_pages([sizes])`.
"""

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import harness
import requests
from harness import ROOT

PREFIX = os.environ.get("BENCH_DATABASE_PREFIX", "postgres://postgres@127.0.0.1:5432/hp_pages_bench")
PASSWORD = "bench-password-not-secret"
API_VERSION = "2024-07-01"

# name -> fleet page query string; {next} is the default page's own "Next page" link.
PAGES = {
    "default": "",
    **{f"sort={s}": f"sort={s}" for s in ("name", "-name", "resource_group", "location", "image")},
    **{f"sort={s}": f"sort={s}" for s in ("power_state", "orchestration", "hotpatch", "-critical", "critical")},
    **{f"sort={s}": f"sort={s}" for s in ("other", "-reboot", "assessed", "-assessed")},
    "location=westeurope": "location=westeurope",
    "os+sort=-critical": "os=ws2022-azure&sort=-critical",
    "update_status=available": "update_status=available",
    "hotpatch=Enabled": "hotpatch=Enabled",
    "q=web (no match)": "q=web",
    "q=vm0000 (100 match)": "q=vm0000",
    "next page": "{next}",
    "next page sort=-critical": "{next_critical}",
    "last page": "page=last",
}
# The fleet history (/history/): name -> query string; {history_next} is its default page's next link.
HISTORY = {
    "history": "",
    "history kind=assessment": "kind=assessment",
    "history status=Failed": "status=Failed",
    "history started_by=user": "started_by=user",
    "history next page": "{history_next}",
}


def database_url(size: int) -> str:
    return f"{PREFIX}_{size}"


def manage(url: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=harness.portal_env(url),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


ASSESS = """
from patching import services
from patching.models import OperationKind
from vms import clock
from vms.models import VirtualMachine
now = clock.now()
ids = services.queue_operations(VirtualMachine.objects.order_by("pk"), OperationKind.ASSESSMENT, enqueue=False, now=now)
for i in range(0, len(ids), 2000):
    services.execute_operations(ids[i:i + 2000], now=now, sleep=lambda s: None)
print(len(ids))
"""

SETUP = f"""
from datetime import timedelta
from django.contrib.auth.models import User
from patching import catalog
from vms import clock
User.objects.create_user("bench", password={PASSWORD!r})
catalog.ensure_catalog(until=clock.now() + timedelta(days=31))
"""


def build_fleet(size: int, *, assess: bool = True, reuse: bool = False) -> str:
    """A fresh database holding an imported fleet of `size` VMs (assessed once): its URL."""
    import psycopg

    url = database_url(size)
    name = url.rsplit("/", 1)[1]
    if not harness.create_database(url, drop=not reuse):  # reused: it exists already
        manage(url, "migrate", "-v0")  # a database built by an earlier branch gets this one's indexes
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")  # the statistics of new expression indexes
        return url
    began = time.perf_counter()
    manage(url, "migrate", "-v0")
    manage(url, "shell", "-c", SETUP)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fleet-{size}.json"
        manage(url, "generate_fleet_file", "--vms", str(size), "--out", str(path))
        manage(url, "import_fleet", str(path), "--owner", "bench")
    if assess:
        manage(url, "shell", "-c", ASSESS)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    print(f"built {size} VMs in {time.perf_counter() - began:.0f} s ({name})", file=sys.stderr, flush=True)
    return url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(url: str):
    """gunicorn as the Procfile's web runs it, on the fleet's database: its base URL."""
    port = free_port()
    env = harness.portal_env(url)
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/5")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "portal.wsgi:application", "--workers", "2", "--threads", "4"]
        + ["--graceful-timeout", "5", "--no-control-socket", "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                requests.get(base + "/accounts/login/", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


def signed_in(base: str) -> requests.Session:
    session = requests.Session()
    session.get(base + "/accounts/login/")
    response = session.post(
        base + "/accounts/login/",
        {"username": "bench", "password": PASSWORD, "csrfmiddlewaretoken": session.cookies["csrftoken"]},
        headers={"Referer": base + "/accounts/login/"},
    )
    response.raise_for_status()
    return session


def api_token(url: str) -> str:
    out = manage(
        url,
        "shell",
        "-c",
        "from django.contrib.auth.models import User; from vms.models import ApiToken; "
        "u = User.objects.get(username='bench'); "
        "print('TOKEN', ApiToken.issue(u, 'bench')[1])",
    )
    return out.split("TOKEN", 1)[1].split()[0]


def next_link(html: str, label: str = "Next page") -> str:
    found = re.search(r'href="\?([^"]*)"[^>]*aria-label="' + label, html)
    if not found:
        raise SystemExit(f"no '{label}' link on the page")
    return found.group(1).replace("&amp;", "&")


def history_next(html: str) -> str:
    found = re.search(r'href="[^"?]*\?([^"]*after=[^"]*)"', html)
    return found.group(1).replace("&amp;", "&") if found else ""


def list_all(base: str, token: str) -> tuple[float, int, float, float]:
    """Every subscription's VMs, following every nextLink: total seconds, VMs, and the median seconds
    of the first pages and of the last pages (of the subscriptions with more than one page)."""
    headers = {"Authorization": f"Bearer {token}"}
    subscriptions = requests.get(f"{base}/arm/subscriptions?api-version=2022-12-01", headers=headers, timeout=60)
    subscriptions.raise_for_status()
    began, count, firsts, lasts = time.perf_counter(), 0, [], []
    for subscription in subscriptions.json()["value"]:
        url = (
            f"{base}/arm/subscriptions/{subscription['subscriptionId']}"
            f"/providers/Microsoft.Compute/virtualMachines?api-version={API_VERSION}"
        )
        times = []
        while url:
            start = time.perf_counter()
            response = requests.get(url, headers=headers, timeout=120)
            times.append(time.perf_counter() - start)
            response.raise_for_status()
            body = response.json()
            count += len(body["value"])
            url = body.get("nextLink")
        if len(times) > 1:
            firsts.append(times[0])
            lasts.append(times[-1])
    first = statistics.median(firsts) if firsts else 0.0
    last = statistics.median(lasts) if lasts else 0.0
    return time.perf_counter() - began, count, first, last


def measure_pages(urls: dict[int, str], repeat: int = 7, list_all_too: bool = True) -> dict:
    """Median seconds of each fleet page (and the ARM list-all) per fleet size, timed alternately."""
    urls_of = {**{name: ("/vms/", q) for name, q in PAGES.items()}, **{n: ("/history/", q) for n, q in HISTORY.items()}}
    results: dict[str, dict[int, float]] = {}
    with ExitStack() as stack:
        bases = {size: stack.enter_context(server(url)) for size, url in urls.items()}
        sessions = {size: signed_in(base) for size, base in bases.items()}
        queries = {}
        for size, base in bases.items():
            first = sessions[size].get(base + "/vms/").text
            crit = sessions[size].get(base + "/vms/?sort=-critical").text
            history = sessions[size].get(base + "/history/").text
            queries[size] = {
                "next": next_link(first),
                "next_critical": next_link(crit),
                "history_next": history_next(history),
            }
        samples = {name: {size: [] for size in urls} for name in urls_of}
        for _ in range(repeat):
            for name, (path, query) in urls_of.items():
                for size, base in bases.items():
                    q = query.format(**queries[size])
                    start = time.perf_counter()
                    response = sessions[size].get(f"{base}{path}{'?' + q if q else ''}")
                    samples[name][size].append(time.perf_counter() - start)
                    assert response.status_code == 200, (name, response.status_code)
        for name in urls_of:
            results[name] = {size: statistics.median(samples[name][size]) for size in urls}
        if list_all_too:
            results["ARM list-all"] = {}
            results["ARM first page"] = {}
            results["ARM last page"] = {}
            for size, url in urls.items():
                token = api_token(url)
                total, count, first, last = list_all(bases[size], token)
                results["ARM list-all"][size] = total
                results["ARM first page"][size] = first
                results["ARM last page"][size] = last
                print(f"ARM list-all at {size}: {count} VMs in {total:.1f} s", file=sys.stderr)
    return results


PROFILE = """
import json, time
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
client = Client(HTTP_HOST="127.0.0.1")
client.force_login(User.objects.get(username="bench"))
out = {}
for path in PATHS:
    assert client.get(path).status_code == 200, path
    best = None
    for _ in range(3):
        with CaptureQueriesContext(connection) as captured:
            began = time.perf_counter()
            client.get(path)
            wall = time.perf_counter() - began
        times = [(float(q["time"]), q["sql"]) for q in captured.captured_queries]
        # The tiles' aggregates (COUNT/SUM over the fleet and its operations) apart from the rest.
        tiles = sum(t for t, sql in times if "COUNT(" in sql.upper() or "SUM(" in sql.upper())
        slowest = [f"{t * 1000:.0f}ms {sql[:90]}" for t, sql in sorted(times, reverse=True)[:4]]
        row = [wall, sum(t for t, _ in times), tiles, len(times), slowest]
        best = row if best is None or row[0] < best[0] else best
    out[path] = best
print("PROFILE" + json.dumps(out))
"""


def profile_queries(url: str, paths: list[str]) -> dict[str, list[float]]:
    """In-process (Django's test client): per path, wall seconds, SQL seconds, the seconds of queries
    that COUNT or SUM (the tiles' aggregates, and a paginator's count), the number of queries and the
    slowest four, best of 3."""
    import json

    out = manage(url, "shell", "-c", f"PATHS = {paths!r}\n" + PROFILE)
    return json.loads(out.split("PROFILE", 1)[1])


def report(results: dict, sizes: list[int]) -> None:
    smallest = sizes[0]
    print(f"{'page':<28}" + "".join(f"{size:>12,} VMs" for size in sizes) + "   ratio to " + f"{smallest:,}")
    for name, by_size in results.items():
        cells = "".join(f"{by_size[size] * 1000:>13.1f}ms" for size in sizes)
        ratios = " ".join(
            f"{by_size[size] / by_size[smallest]:5.2f}x" if by_size[smallest] else "    -" for size in sizes[1:]
        )
        print(f"{name:<28}{cells}   {ratios}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,100000")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--reuse", action="store_true", help="keep fleet databases built by an earlier run")
    parser.add_argument("--no-assess", action="store_true", help="leave the imported fleet unassessed")
    parser.add_argument("--no-list-all", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    urls = {size: build_fleet(size, assess=not args.no_assess, reuse=args.reuse) for size in sizes}
    results = measure_pages(urls, repeat=args.repeat, list_all_too=not args.no_list_all)
    report(results, sizes)
    paths = ["/vms/", "/vms/?sort=-critical", "/vms/?sort=resource_group", "/vms/?location=westeurope", "/history/"]
    print("\nIn-process profile: wall ms / SQL ms / of which COUNT or SUM queries ms / queries; slowest queries")
    for size, url in urls.items():
        for path, (wall, sql, tiles, count, slowest) in profile_queries(url, paths).items():
            print(f"{size:>8,} VMs {path:<32} {wall * 1000:8.1f} {sql * 1000:8.1f} {tiles * 1000:8.1f} {count:4}")
            for line in slowest:
                print(f"{'':<20}{line}")


if __name__ == "__main__":
    main()
