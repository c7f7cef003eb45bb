"""Smoke test of the embedded default: `make demo` on a clean var/ dir, used the way a newcomer would.

Starts `make demo` with DATABASE_URL and REDIS_URL unset (SQLite and the filesystem broker in a
temporary PORTAL_VAR_DIR), signs in to the admin as `demo` through the real login form, runs the
"Assess now" admin action on a running VM, waits until the demo's own Celery worker has finished
that assessment with per-patch results, then stops the demo with Ctrl-C (SIGINT to its process
group) and checks that every process it started has exited.

    .venv/bin/python scripts/smoke_demo.py      (CI runs it after `make test`)

Exits non-zero on any failure; the demo's processes are always cleaned up.
"""

import http.cookiejar
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
PORT = 18765
PASSWORD = "smoke-test-pass"
BOOT_TIMEOUT = 120
ASSESSMENT_TIMEOUT = 90
STOP_TIMEOUT = 30
BASE = f"http://127.0.0.1:{PORT}"
TLS_PORT = 18766  # the same portal over https for the Azure CLI


class SmokeFailure(Exception):
    pass


def check(condition, message: str) -> None:
    if not condition:
        raise SmokeFailure(message)
    print(f"ok    {message}", flush=True)


def wait(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def descendants(pid: int) -> set[int]:
    """Every process below pid (Linux /proc), so none of the demo's children can escape the checks."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Demo:
    """`make demo` in the background, in its own process group, output into a log file."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            ["make", "--no-print-directory", "demo"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.seen: set[int] = set()

    def remember_processes(self) -> set[int]:
        self.seen |= descendants(self.proc.pid)
        return self.seen

    def stop(self) -> int | None:
        """Ctrl-C, as a user would press it: SIGINT to the process group."""
        self.remember_processes()
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            return None

    def cleanup(self) -> None:
        """Whatever happened, leave nothing running."""
        if self.proc.poll() is None:
            self.remember_processes()
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        for pid in [self.proc.pid, *self.seen]:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def manage_py(env: dict[str, str], code: str) -> dict:
    """Runs code in `manage.py shell` against the demo's var/ dir; the code prints one JSON line."""
    out = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=ASSESSMENT_TIMEOUT + 60,
    )
    if out.returncode != 0:
        raise SmokeFailure(f"manage.py shell failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


PICK_VM = """
import json
from patching.models import IN_FLIGHT, Operation
from vms.models import VirtualMachine
running = VirtualMachine.objects.filter(power_state="running").order_by("pk")
idle = running.exclude(operations__kind="assessment", operations__status__in=IN_FLIGHT)
vm = idle.first() or running.first()
last = Operation.objects.filter(vm=vm, kind="assessment").order_by("-pk").first() if vm else None
print(json.dumps({"vms": VirtualMachine.objects.count(), "running": running.count(), "idle": idle.exists(),
                  "vm": vm and vm.pk, "name": vm and vm.name, "last_op": last and last.pk}))
"""

WAIT_FOR_ASSESSMENT = """
import json, os, time
from patching.models import Operation
deadline = time.monotonic() + float(os.environ["SMOKE_TIMEOUT"])
while True:
    op = Operation.objects.filter(vm_id=int(os.environ["SMOKE_VM"]), kind="assessment").order_by("-created_at", "-pk").first()
    if (op and op.is_finished) or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print(json.dumps(op and {"id": op.pk, "status": op.status, "finished": op.is_finished, "results": op.results.count(),
                         "error": f"{op.error_code} {op.error_message}".strip(),
                         "critical_security": op.critical_security_count, "other": op.other_count}))
"""


class Browser:
    """Just enough of a browser: cookies, redirects, and Django's CSRF token from each form."""

    def __init__(self):
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def get(self, path: str) -> tuple[int, str, str]:
        with self.opener.open(BASE + path, timeout=30) as response:
            return response.status, response.geturl(), response.read().decode()

    def post(self, path: str, fields: list[tuple[str, str]]) -> tuple[int, str, str]:
        data = urllib.parse.urlencode(fields).encode()
        request = urllib.request.Request(BASE + path, data=data, headers={"Referer": BASE + path})
        with self.opener.open(request, timeout=30) as response:
            return response.status, response.geturl(), response.read().decode()

    @staticmethod
    def csrf_token(html: str) -> str:
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
        if not match:
            raise SmokeFailure("no CSRF token in the page's form")
        return match.group(1)


def wait_until_up(demo: Demo) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        if demo.proc.poll() is not None:
            raise SmokeFailure(f"`make demo` exited with code {demo.proc.returncode} before answering")
        try:
            with urllib.request.urlopen(f"{BASE}/admin/login/", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    raise SmokeFailure(f"/admin/login/ did not answer 200 within {BOOT_TIMEOUT} s")


def smoke(demo: Demo, env: dict[str, str]) -> None:
    started = time.monotonic()
    wait_until_up(demo)
    print(f"ok    `make demo` answers 200 on {BASE}/admin/login/ after {time.monotonic() - started:.0f} s")
    printed = wait(lambda: "demo / smoke-test-pass" in demo.log_path.read_text(), 15)
    check(printed, "the demo prints the login: demo / smoke-test-pass")

    browser = Browser()
    _, _, page = browser.get("/admin/login/?next=/admin/")
    fields = [("csrfmiddlewaretoken", browser.csrf_token(page)), ("username", "demo"), ("password", PASSWORD)]
    status, url, page = browser.post("/admin/login/?next=/admin/", [*fields, ("next", "/admin/")])
    check(
        status == 200 and urllib.parse.urlsplit(url).path == "/admin/" and "logout" in page.lower(),
        "signed in to the admin as demo through the login form (CSRF token, session cookie)",
    )
    status, _, _ = browser.get("/static/admin/css/base.css")
    check(status == 200, "static files are served (collectstatic + WhiteNoise)")

    # The Azure CLI's side: https with the demo's own certificate, verified as the CLI verifies it.
    import ssl

    cert = Path(env["PORTAL_VAR_DIR"]) / "tls" / "cert.pem"
    context = ssl.create_default_context(cafile=str(cert))
    oidc_url = f"https://127.0.0.1:{TLS_PORT}/adfs/.well-known/openid-configuration"
    with urllib.request.urlopen(oidc_url, timeout=10, context=context) as response:
        oidc = json.loads(response.read())
    check(
        oidc["token_endpoint"] == f"https://127.0.0.1:{TLS_PORT}/adfs/oauth2/token/",
        f"https on {TLS_PORT} with the demo's certificate ({cert}): the CLI's sign-in is served",
    )

    fleet = manage_py(env, PICK_VM)
    check(fleet["vm"] is not None, f"seed_demo built a fleet: {fleet['vms']} VMs, {fleet['running']} running")
    vm = fleet["vm"]

    changelist = "/admin/vms/virtualmachine/"
    status, _, page = browser.get(changelist)
    check(status == 200 and 'value="assess_now"' in page, "the VM changelist offers the 'Assess now' action")
    status, url, page = browser.post(
        changelist,
        [
            ("csrfmiddlewaretoken", browser.csrf_token(page)),
            ("action", "assess_now"),
            ("select_across", "0"),
            ("index", "0"),
            ("_selected_action", str(vm)),
        ],
    )
    message = re.search(r'<li class="success">(.*?)</li>', page, re.S)
    check(
        status == 200 and message is not None,
        f"'Assess now' on VM {fleet['name']} (pk {vm}): {message.group(1).strip() if message else 'no success message'}",
    )

    op = manage_py({**env, "SMOKE_VM": str(vm), "SMOKE_TIMEOUT": str(ASSESSMENT_TIMEOUT)}, WAIT_FOR_ASSESSMENT)
    # A VM with no assessment in flight gets a new one; otherwise the action joins the one in flight.
    new = op is not None and (fleet["last_op"] is None or op["id"] > fleet["last_op"])
    check(new or (op is not None and not fleet["idle"]), f"the action started assessment operation {op}")
    check(op["finished"], f"the demo's worker finished assessment {op['id']} within {ASSESSMENT_TIMEOUT} s")
    check(op["status"] in ("Succeeded", "CompletedWithWarnings"), f"assessment {op['id']} ended {op['status']}")
    check(op["results"] > 0, f"assessment {op['id']} has {op['results']} per-patch results")

    processes = demo.remember_processes()
    check(len(processes) >= 4, f"the demo runs {len(processes)} processes below `make demo` (web, worker, beat)")
    code = demo.stop()
    check(code is not None, f"`make demo` exited within {STOP_TIMEOUT} s of Ctrl-C (code {code})")
    time.sleep(1)
    survivors = sorted(pid for pid in processes if alive(pid))
    check(
        not survivors,
        f"all {len(processes)} of the demo's processes exited" + (f"; left: {survivors}" if survivors else ""),
    )
    check("demo   | all stopped" in demo.log_path.read_text(), "the demo reports a clean stop ('all stopped')")


def main() -> int:
    var_dir = Path(tempfile.mkdtemp(prefix="portal-smoke-"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        PORTAL_VAR_DIR=str(var_dir),
        PORT=str(PORT),
        PORTAL_TLS_PORT=str(TLS_PORT),
        PORTAL_DEMO_PASSWORD=PASSWORD,
        PORTAL_SIM_SPEED="600",
    )
    print(f"Smoke test of the embedded default: `make demo` with PORTAL_VAR_DIR={var_dir}, no DATABASE_URL/REDIS_URL")
    # SIGTERM (CI's timeout, a user's kill) ends the script through `finally`, like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    demo = Demo(env, var_dir / "demo.log")
    ok = False
    try:
        smoke(demo, env)
        ok = True
    except SmokeFailure as failure:
        print(f"FAIL  {failure}", flush=True)
    except Exception as error:
        print(f"FAIL  {type(error).__name__}: {error}", flush=True)
    finally:
        demo.cleanup()
        if not ok:
            print(f"--- last lines of `make demo` ({demo.log_path}) ---\n{demo.tail()}\n---")
        shutil.rmtree(var_dir, ignore_errors=True)
    print("smoke test passed" if ok else "smoke test FAILED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
