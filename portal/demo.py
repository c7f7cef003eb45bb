"""`make demo`: the whole portal in one foreground command.

Prepares the database (migrate, then the idempotent demo fleet), makes sure the `demo` superuser can
sign in, collects static files, makes a self-signed certificate on first start, and then runs four
children side by side: the web server over http for the browser (gunicorn on PORT), the same app over
https for the Azure CLI (a second gunicorn on PORTAL_TLS_PORT with that certificate), a Celery worker
and Celery beat, their output interleaved line by line with a prefix.
Ctrl-C or SIGTERM stops them all; if one of them dies, the others are stopped and the command fails,
naming the one that died.

With no DATABASE_URL / REDIS_URL this is the embedded default (SQLite and a filesystem broker under
var/); with them, the same processes run against PostgreSQL and Redis.
"""

import http.client
import os
import secrets
import selectors
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
STOP_TIMEOUT = 10  # seconds a child gets to exit after SIGTERM before it is killed


def prepare() -> str:
    """Migrate, seed, reset the demo login and collect static files; returns the demo password.

    Everything here finishes before any child starts, so with SQLite nothing else touches the
    database while the migrations run.
    """
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", interactive=False)
    call_command("seed_demo")
    password = os.environ.get("PORTAL_DEMO_PASSWORD") or secrets.token_urlsafe(12)
    user, _ = get_user_model().objects.get_or_create(username="demo")
    user.is_active = user.is_staff = user.is_superuser = True
    # Reset on every start, so the password printed below is always the one that works.
    user.set_password(password)
    user.save()
    call_command("collectstatic", interactive=False, verbosity=0)
    connections.close_all()
    return password


def ensure_certificate(cert: Path, key: Path) -> None:
    """The self-signed certificate for https (manage.py make_dev_cert): made once, renewed when expired."""
    import datetime

    from cryptography import x509

    from vms.management.commands.make_dev_cert import write_self_signed

    if cert.exists() and key.exists():
        expires = x509.load_pem_x509_certificate(cert.read_bytes()).not_valid_after_utc
        if expires > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1):
            return
    write_self_signed(cert, key, ["127.0.0.1", "::1", "localhost"])


def set_parent_death_signal() -> None:
    """Runs in each child before exec: on Linux, if this process is killed outright, so is the child."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    def __init__(self, name: str, argv: list[str]):
        self.name = name
        self.argv = argv
        self.buffer = b""
        self.proc = subprocess.Popen(
            argv,
            cwd=BASE_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            # Its own process group: Ctrl-C reaches only this supervisor, which then stops the
            # children itself; signalling the group also reaches gunicorn's worker processes.
            process_group=0,
            preexec_fn=set_parent_death_signal,
        )

    @property
    def command(self) -> str:
        return " ".join(self.argv[2:])  # without "python -m"

    def signal(self, signum: int) -> None:
        try:
            os.killpg(self.proc.pid, signum)
        except ProcessLookupError:
            pass


class Supervisor:
    def __init__(self, commands: dict[str, list[str]]):
        self.stop_requested: str | None = None
        self.children: list[Child] = []
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self.on_signal)
        self.width = max(len(name) for name in ("demo", *commands))
        self.children.extend(Child(name, argv) for name, argv in commands.items())
        self.selector = selectors.DefaultSelector()
        for child in self.children:
            os.set_blocking(child.proc.stdout.fileno(), False)
            self.selector.register(child.proc.stdout, selectors.EVENT_READ, child)

    def say(self, text: str) -> None:
        sys.stdout.write(f"{'demo':<{self.width}} | {text}\n")
        sys.stdout.flush()

    def pump(self, timeout: float) -> None:
        """Copy whatever the children printed, whole lines only, each with its child's name."""
        for key, _ in self.selector.select(timeout):
            child: Child = key.data
            chunk = os.read(key.fd, 65536)
            if not chunk:  # the child closed its output
                self.selector.unregister(key.fileobj)
                chunk = b"\n" if child.buffer else b""
            child.buffer += chunk
            *lines, child.buffer = child.buffer.split(b"\n")
            for line in lines:
                sys.stdout.write(f"{child.name:<{self.width}} | {line.decode(errors='replace')}\n")
        sys.stdout.flush()

    def on_signal(self, signum: int, frame) -> None:
        # A second Ctrl-C: don't wait any longer. (Only SIGINT: a SIGTERM to the process group
        # reaches this process twice, directly and forwarded by make.)
        if self.stop_requested and signum == signal.SIGINT:
            for child in self.children:
                child.signal(signal.SIGKILL)
        self.stop_requested = self.stop_requested or signal.Signals(signum).name

    def run(self, on_ready) -> int:
        ready = False
        died = None
        while True:
            self.pump(0.25)
            if self.stop_requested:
                break
            died = next((c for c in self.children if c.proc.poll() is not None), None)
            if died:
                break
            if not ready and on_ready():
                ready = True
        if died:
            self.pump(0)
            code = died.proc.returncode
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            self.say(f"the {died.name} ({died.command}) {how}; stopping the others")
        else:
            self.say(f"{self.stop_requested} received: stopping the web servers, the worker and beat")
        self.stop()
        if died:
            self.say(f"stopped because the {died.name} died")
            return 1
        self.say("all stopped")
        return 0

    def stop(self) -> None:
        for child in self.children:
            if child.proc.poll() is None:
                child.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and any(c.proc.poll() is None for c in self.children):
            self.pump(0.1)
        for child in self.children:
            if child.proc.poll() is None:
                self.say(f"the {child.name} did not stop within {STOP_TIMEOUT} s: killing it")
                child.signal(signal.SIGKILL)
            child.proc.wait()
        self.pump(0)


def web_answers(port: int, cafile: Path | None = None) -> bool:
    """True once the portal itself answers (not merely something listening on the port)."""
    scheme, context = "http", None
    if cafile is not None:  # https, verified against our own certificate as the CLI will
        import ssl

        scheme, context = "https", ssl.create_default_context(cafile=str(cafile))
    try:
        with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/admin/login/", timeout=1, context=context) as r:
            return r.status == 200
    except (OSError, http.client.HTTPException):
        return False


def main() -> int:
    os.chdir(BASE_DIR)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    port = int(os.environ.get("PORT", "8000"))
    password = prepare()

    from django.conf import settings

    tls_port = settings.PORTAL_TLS_PORT
    cert = Path(settings.PORTAL_TLS_CERT).resolve()
    key = cert.with_name("key.pem")
    ensure_certificate(cert, key)
    # The web children build the "Use the Azure CLI" page from these.
    os.environ["PORTAL_TLS_PORT"] = str(tls_port)
    os.environ["PORTAL_TLS_CERT"] = str(cert)
    python = [sys.executable, "-m"]
    gunicorn = [*python, "gunicorn", "portal.wsgi:application", "--workers", "2", "--threads", "4",
                "--graceful-timeout", "5", "--no-control-socket"]  # fmt: skip

    # The worker's thread pool suits the filesystem broker and SQLite; with Redis and PostgreSQL it is
    # just as good for a demo on one machine. Beat keeps its schedule file under var/
    # (CELERY_BEAT_SCHEDULE_FILENAME in the settings).
    supervisor = Supervisor(
        {
            "web": [*gunicorn, "--bind", f"127.0.0.1:{port}"],
            "https": [*gunicorn, "--bind", f"127.0.0.1:{tls_port}", "--certfile", str(cert), "--keyfile", str(key)],
            "worker": [*python, "celery", "-A", "portal", "worker", "--loglevel=info",
                       "--pool=threads", "--concurrency=4", "-n", "demo@%h"],
            "beat": [*python, "celery", "-A", "portal", "beat", "--loglevel=info"],
        }
    )  # fmt: skip
    database = "PostgreSQL" if os.environ.get("DATABASE_URL") else f"SQLite ({settings.DATABASES['default']['NAME']})"
    broker = "Redis" if os.environ.get("REDIS_URL") else f"the filesystem broker in {settings.VAR_DIR / 'broker'}"

    def banner() -> bool:
        if not (web_answers(port) and web_answers(tls_port, cafile=cert)):
            return False
        url = f"http://127.0.0.1:{port}/"
        for line in (
            "",
            "=" * 72,
            f"Hotpatch Portal is running:  {url}",
            f"Admin:                       {url}admin/",
            f"Sign in as:                  demo / {password}",
            f"Azure CLI (https):           https://127.0.0.1:{tls_port}/arm/  (the recipe: {url}azure-cli/)",
            f"Trust its certificate:       export REQUESTS_CA_BUNDLE={cert}",
            f"Data:                        {database}, tasks through {broker}",
            "Stop:                        Ctrl-C (stops the web servers, the worker and beat)",
            "More workers:                make worker (in another terminal)",
            "=" * 72,
            "",
        ):
            supervisor.say(line)
        return True

    return supervisor.run(on_ready=banner)


if __name__ == "__main__":
    sys.exit(main())
