"""`make demo`: the whole portal in one foreground command.

Prepares the database (migrate, then the idempotent demo fleet), makes sure the `demo` superuser can
sign in, collects static files, makes a self-signed certificate on first start, and then runs the four
processes of the Procfile side by side with honcho: the web server over http for the browser (gunicorn
on PORT), the same app over https for the Azure CLI (a second gunicorn on PORTAL_TLS_PORT with that
certificate), a Celery worker and Celery beat, their output interleaved line by line with a prefix.
Once both web servers answer it prints the addresses and the login.
Ctrl-C or SIGTERM stops them all; if one of them dies, the others are stopped and the command fails,
naming the one that died. Linux and macOS alike (no platform-specific process handling here).

With no DATABASE_URL / REDIS_URL this is the embedded default (SQLite and a filesystem broker under
var/); with them, the same processes run against PostgreSQL and Redis.
"""

import datetime
import http.client
import os
import queue
import secrets
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

import honcho.environ
import honcho.manager
import honcho.printer

BASE_DIR = Path(__file__).resolve().parent.parent
PROCFILE = BASE_DIR / "Procfile"
STOP_TIMEOUT = 10  # seconds a process gets to exit after SIGTERM before it is killed


def prepare() -> str:
    """Migrate, seed, reset the demo login and collect static files; returns the demo password.

    Everything here finishes before any child starts, so with SQLite nothing else touches the
    database while the migrations run.
    """
    import django

    from portal import var

    var.prepare()  # var/ and its secret key first: the SQLite file, the broker, the children share them
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
    from cryptography import x509

    from vms.management.commands.make_dev_cert import write_self_signed

    if cert.exists() and key.exists():
        expires = x509.load_pem_x509_certificate(cert.read_bytes()).not_valid_after_utc
        if expires > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1):
            return
    write_self_signed(cert, key, ["127.0.0.1", "::1", "localhost"])


class Printer(honcho.printer.Printer):
    """Each line as `name | text`, the name padded to the widest (in colour on a terminal).

    honcho's own printer puts the time in front; this keeps the demo's output as it always was. The
    banner thread and the manager write too, so a lock keeps lines whole.
    """

    def __init__(self, width: int):
        super().__init__(sys.stdout, width=width)
        self.lock = threading.Lock()

    def write(self, message: honcho.printer.Message) -> None:
        if isinstance(message.data, bytes):  # a line a process printed
            lines = message.data.decode(errors="replace").splitlines() or [""]
        else:  # the demo's own, possibly several lines at once (the banner, kept together)
            lines = message.data.split("\n")
        name = f"{message.name:<{self.width}} | "
        if self.colour and self._colours_supported and message.colour:
            name = honcho.printer._colour_string(message.colour, name)
        with self.lock:
            for line in lines:
                self.output.write(f"{name}{line}\n")
            self.output.flush()


class Demo(honcho.manager.Manager):
    """honcho's manager, with the demo's rules for stopping.

    honcho starts each Procfile process in a session of its own (so Ctrl-C reaches only this process,
    which then stops them itself, and signalling the group also reaches gunicorn's worker processes)
    and reads its output in a helper process. What this class adds to honcho's own loop: the banner
    once both web servers answer, SIGHUP, a second Ctrl-C that kills at once, STOP_TIMEOUT, and an exit
    code that tells a clean stop (0) from a process that died (1).
    """

    def __init__(self, procfile: Path, env: dict[str, str]):
        commands = honcho.environ.parse_procfile(procfile.read_text()).processes
        super().__init__(printer=Printer(width=max(len(name) for name in ("demo", *commands))))
        for name, command in commands.items():
            self.add_process(name, command, env=env, cwd=str(BASE_DIR))
        self.stop_requested: str | None = None

    def say(self, text: str) -> None:
        self._printer.write(honcho.printer.Message("line", text, datetime.datetime.now(), "demo", None))

    def _system_print(self, data: str) -> None:  # honcho's own messages, under the demo's name
        self.say(data.rstrip("\n"))

    def on_signal(self, signum: int, frame) -> None:
        # A second Ctrl-C: don't wait any longer. (Only SIGINT: a SIGTERM to the process group
        # reaches this process twice, directly and forwarded by make.)
        if self.stop_requested and signum == signal.SIGINT:
            self.kill()
        self.stop_requested = self.stop_requested or signal.Signals(signum).name

    def kill(self) -> None:
        """SIGKILL to the process group of each process still running."""
        for process in self._processes.values():
            if process.get("pid") is not None and process.get("returncode") is None:
                self._procmgr.kill(process["pid"])

    def command(self, name: str) -> str:
        return self._processes[name]["obj"].cmd.removeprefix("exec ")

    def pump(self, timeout: float) -> str | None:
        """Print what the processes wrote; returns the name of a process that has just stopped."""
        try:
            message = self.events.get(timeout=timeout)
        except queue.Empty:
            return None
        if message.type == "line":
            self._printer.write(message)
        elif message.type == "start":
            self._processes[message.name]["pid"] = message.data["pid"]
        elif message.type == "stop":
            self._processes[message.name]["returncode"] = message.data["returncode"]
            return message.name
        return None

    def run(self, on_ready) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self.on_signal)
        self._start()
        ready = threading.Event()
        threading.Thread(target=self.wait_until_ready, args=(on_ready, ready), daemon=True).start()
        died = None
        while not (self.stop_requested or died):
            died = self.pump(0.25)
        ready.set()  # the banner thread stops looking
        if died:
            code = self._processes[died]["returncode"]
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            self.say(f"the {died} ({self.command(died)}) {how}; stopping the others")
        else:
            self.say(f"{self.stop_requested} received: stopping the web servers, the worker and beat")
        self.stop()
        if died:
            self.say(f"stopped because the {died} died")
            return 1
        self.say("all stopped")
        return 0

    def wait_until_ready(self, on_ready, stop: threading.Event) -> None:
        while not stop.is_set():
            if on_ready():
                return
            stop.wait(0.25)

    def stop(self) -> None:
        """SIGTERM to each, STOP_TIMEOUT seconds to exit, then SIGKILL; returns once every one has stopped."""
        deadline = time.monotonic() + STOP_TIMEOUT
        terminated: set[str] = set()
        killed_at = 0.0
        while not self._all_stopped():
            for name, process in self._processes.items():
                # A process whose start is still on its way is signalled once it shows up.
                if name not in terminated and process.get("pid") is not None and process.get("returncode") is None:
                    self._procmgr.terminate(process["pid"])
                    terminated.add(name)
            if time.monotonic() > deadline and not killed_at:
                for name, process in self._processes.items():
                    if process.get("returncode") is None:
                        self.say(f"the {name} did not stop within {STOP_TIMEOUT} s: killing it")
                self.kill()
                killed_at = time.monotonic()
            if killed_at and time.monotonic() > killed_at + STOP_TIMEOUT:
                # Only if honcho's helper for a process died before it could report the end (a signal
                # in the instant it started): stop waiting for that report.
                for name, process in self._processes.items():
                    if process.get("returncode") is None:
                        self.say(f"the {name}: no word of its end; giving up on it")
                        process["returncode"] = -signal.SIGKILL
            self.pump(0.1)
        while self.pump(0.05) or not self.events.empty():  # the last lines they printed
            pass
        for process in self._processes.values():
            process["process"].join(5)


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
    # The Procfile's processes take their ports, certificate and interpreter (this virtualenv's, first
    # on the PATH) from the environment; the web servers also build the "Use the Azure CLI" page from
    # PORTAL_TLS_PORT and PORTAL_TLS_CERT.
    env = {
        **os.environ,
        "PORT": str(port),
        "PORTAL_TLS_PORT": str(tls_port),
        "PORTAL_TLS_CERT": str(cert),
        "PORTAL_TLS_KEY": str(key),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)]),
        "PYTHONUNBUFFERED": "1",
    }
    demo = Demo(PROCFILE, env)
    database = "PostgreSQL" if os.environ.get("DATABASE_URL") else f"SQLite ({settings.DATABASES['default']['NAME']})"
    broker = "Redis" if os.environ.get("REDIS_URL") else f"the filesystem broker in {settings.VAR_DIR / 'broker'}"

    def banner() -> bool:
        if not (web_answers(port) and web_answers(tls_port, cafile=cert)):
            return False
        url = f"http://127.0.0.1:{port}/"
        lines = (
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
        )
        demo.say("\n".join(lines))
        return True

    return demo.run(on_ready=banner)


if __name__ == "__main__":
    sys.exit(main())
