"""Fixtures for the whole suite.

The suite runs against PostgreSQL and Redis (`make test` points DATABASE_URL and REDIS_URL at them:
scripts/test_services.py, which starts private ones when the machine has none); pytest-django creates
and drops the test database itself.

Live worker: a test that needs tasks to run for real, in a real Celery worker process, asks for
`live_worker`. The worker is started once per session against the test database and the same Redis
the test process publishes to. Its data must be committed to be seen, hence `transactional_db`:

    def test_something(live_worker):
        op, _ = services.start_operation(vm, OperationKind.ASSESSMENT)
        wait_for(lambda: Operation.objects.get(pk=op.pk).is_finished, timeout=30)

The worker takes its settings from the environment (plus WORKER_SETTINGS), not from pytest-django's
`settings` fixture: an override in a test does not reach it.
"""

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from django.conf import settings
from django.test import Client
from hypothesis import settings as hypothesis_settings

from tests.arm_client import ArmClient
from tests.factories import load_catalog, make_resource_group, make_subscription, make_vm
from tests.helpers import stop_process, wait_for

ROOT = Path(__file__).resolve().parent.parent

# CI runs the property tests derandomized, so a red run is reproducible; locally they explore.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")
WORKER_BOOT_TIMEOUT = 60
WORKER_STOP_TIMEOUT = 10
WORKER_IDLE_TIMEOUT = 30
# Settings the live worker runs with, whatever the environment says. Fast simulated work, and a
# registration delay short enough to watch Registering -> Registered; a test whose own process must
# agree (the live server schedules the settle task with its PORTAL_REGISTRATION_SECONDS) sets the
# same value through the `settings` fixture.
WORKER_SETTINGS = {"PORTAL_SIM_SPEED": "1200", "PORTAL_REGISTRATION_SECONDS": "1"}


@dataclass
class LiveWorker:
    node: str  # the worker's node name, for app.control(destination=[node])
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(
                f"the live Celery worker exited with code {self.process.returncode}; its log ends:\n{self.log_tail()}",
                pytrace=False,
            )

    def busy(self) -> bool:
        from portal.celery import app

        inspect = app.control.inspect(destination=[self.node], timeout=1)
        return any((inspect.active() or {}).get(self.node, [])) or any((inspect.reserved() or {}).get(self.node, []))

    def stop(self) -> None:
        stop_process(self.process, WORKER_STOP_TIMEOUT)


# Tests that start processes or virtualenvs of their own besides the live worker and beat: the
# browser (Chromium), the az CLI (.venv-azcli) and the previous SDK generation (.venv-sdk37).
LIVE_PATHS = ("tests/browser/", "tests/test_azure_cli.py", "tests/test_arm_sdk37.py")


def pytest_collection_modifyitems(items):
    """Mark the tests that start processes of their own, so `-m` can leave them out.

    `worker`: tests that start the live Celery worker (`-m "not worker"`).
    `live`: those, and every other test that starts processes or virtualenvs of its own (beat, the
    browser, the az CLI, the SDK 37 venv); `make test-fast` runs `-m "not live"`.
    """
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        path = item.path.relative_to(ROOT).as_posix() if item.path.is_relative_to(ROOT) else ""
        if "celery_worker_process" in fixtures:
            item.add_marker(pytest.mark.worker)
            item.add_marker(pytest.mark.live)
        elif "start_beat" in fixtures or path.startswith(LIVE_PATHS):
            item.add_marker(pytest.mark.live)


def _require_postgres_and_redis() -> None:
    engine = settings.DATABASES["default"]["ENGINE"]
    problems = []
    if "postgresql" not in engine:
        problems.append(f"DATABASE_URL must point at PostgreSQL (the database engine is {engine})")
    if not settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        problems.append(f"REDIS_URL must point at Redis (the broker is {settings.CELERY_BROKER_URL})")
    if problems:
        pytest.fail(
            "The live Celery worker needs PostgreSQL and Redis: "
            + "; ".join(problems)
            + ". Run `make test`, or set DATABASE_URL=postgres://... and REDIS_URL=redis://...",
            pytrace=False,
        )


def live_environment() -> dict[str, str]:
    """The environment of a live Celery process: the test database, the tests' Redis, WORKER_SETTINGS."""
    # django_db_setup has created the test database and pointed the settings at it.
    test_database = settings.DATABASES["default"]["NAME"]
    database_url = urlsplit(os.environ["DATABASE_URL"])._replace(path="/" + quote(test_database)).geturl()
    return {
        **os.environ,
        **WORKER_SETTINGS,
        "DATABASE_URL": database_url,
        "REDIS_URL": settings.REDIS_URL,
        # One key for the test process and its live processes: what one signs, the others accept.
        "SECRET_KEY": settings.SECRET_KEY,
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, tmp_path_factory):
    """A real `celery -A portal worker` process on the test database, for the whole session."""
    _require_postgres_and_redis()
    from portal.celery import app

    env = live_environment()
    node = f"pytest-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"

    app.control.purge()  # messages left over by an earlier run would run against this database
    log_path = tmp_path_factory.mktemp("celery") / "worker.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "portal", "worker", "--loglevel=info", "-n", node]
            + ["--pool=threads", "--concurrency=4", "--without-gossip", "--without-mingle"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    worker = LiveWorker(node=node, process=process, log_path=log_path)
    try:
        deadline = time.monotonic() + WORKER_BOOT_TIMEOUT
        while not app.control.ping(destination=[node], timeout=0.5):
            worker.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the live Celery worker {node} did not answer a ping within {WORKER_BOOT_TIMEOUT} s; "
                    f"its log ends:\n{worker.log_tail()}",
                    pytrace=False,
                )
        yield worker
    finally:
        worker.stop()  # before django_db_setup's teardown drops the database it is connected to


@pytest.fixture
def live_worker(transactional_db, celery_worker_process):
    """The live worker, for a test whose data is committed (so the worker sees it)."""
    from portal.celery import app

    celery_worker_process.check_alive()
    yield celery_worker_process
    # Nothing of this test may run after transactional_db empties the tables for the next one.
    app.control.purge()
    wait_for(lambda: not celery_worker_process.busy(), timeout=WORKER_IDLE_TIMEOUT, message="the worker to go idle")


@pytest.fixture
def start_beat(live_worker, tmp_path):
    """Start real `celery -A portal beat` processes feeding the live worker; stopped when the test ends.

    A factory: `start_beat(PORTAL_PATCH_BEAT_SECONDS="2")` starts one beat with those settings on top of
    the live environment (call it twice for two beats started by mistake). Beat only sends the
    periodic tasks; the worker runs them with its own settings.
    """
    beats: list[subprocess.Popen] = []
    logs: list[Path] = []

    def start(**overrides: str) -> subprocess.Popen:
        log_path = tmp_path / f"beat-{len(beats)}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "portal", "beat", "--loglevel=info"]
                + ["--schedule", str(tmp_path / f"beat-{len(beats)}-schedule")],
                cwd=ROOT,
                env={**live_environment(), **overrides},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        beats.append(process)
        logs.append(log_path)
        return process

    yield start
    for process in beats:  # before live_worker purges the queue and waits for the worker to go idle
        stop_process(process, WORKER_STOP_TIMEOUT)


@pytest.fixture(autouse=True, scope="session")
def fast_password_hashing():
    """MD5 instead of PBKDF2's million rounds for the test users' passwords (about a second each here).

    Only the test process hashes them: no password made here is checked by a live process.
    """
    from django.test.utils import override_settings

    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


# --- Data most test files share --------------------------------------------------------------------------


@pytest.fixture
def catalog(db):
    """The real update catalog up to tests.factories.CATALOG_UNTIL (built once per run, copied in here)."""
    load_catalog()


@pytest.fixture
def no_random_failures(settings):
    """Installations succeed unless a test says otherwise (the simulated failure rate is per VM id)."""
    settings.PORTAL_PATCH_FAILURE_RATE = 0.0
    return settings


@pytest.fixture
def user(client, db):
    """Olivia, signed in to the portal with `client` (no role anywhere yet)."""
    from tests.browser.data import make_user

    olivia = make_user("olivia")
    client.force_login(olivia)
    return olivia


# --- The ARM API (tests/test_arm_*.py) --------------------------------------------------------------------


@pytest.fixture
def arm_settings(settings):
    """No Retry-After wait and no simulated delay; the ARM test modules use it for every test."""
    settings.PORTAL_ARM_RETRY_AFTER = 0
    settings.PORTAL_SIM_SPEED = 0
    return settings


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password="pw-alice-123")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", password="pw-bob-123")


@pytest.fixture
def alice_token(alice) -> str:
    from vms.models import ApiToken

    return ApiToken.issue(alice, "tests")[1]


@pytest.fixture
def api(alice_token) -> ArmClient:
    """Alice's ARM client: her bearer token, the current api-version, CSRF checks on."""
    return ArmClient(Client(enforce_csrf_checks=True), alice_token)


@pytest.fixture
def fleet(catalog, alice, bob):
    """Alice: Contributor on Contoso (two VMs in rg-web), Reader on Fabrikam (one VM). Bob: his own subscription."""
    contoso = make_subscription("Contoso", user=alice, role="Contributor")
    fabrikam = make_subscription("Fabrikam", user=alice, role="Reader")
    bobs = make_subscription("Bob's", user=bob, role="Owner")
    web = make_resource_group(contoso, "rg-web")
    ro = make_resource_group(fabrikam, "rg-ro")
    other = make_resource_group(bobs, "rg-bob")
    return {
        "contoso": contoso,
        "fabrikam": fabrikam,
        "bobs": bobs,
        "web": web,
        "web1": make_vm(resource_group=web, name="web-01"),
        "web2": make_vm(resource_group=web, name="web-02", product="ws2022"),
        "ro1": make_vm(resource_group=ro, name="ro-01"),
        "bob1": make_vm(resource_group=other, name="bob-01"),
    }


@pytest.fixture(autouse=True)
def real_time_clock():
    """Every test starts in real time, with that already in the clock's cache (as in a running
    portal, where only the first read after a change reads the row: query counts stay constant), and
    ends with the cached value forgotten: a rolled-back sandbox clock row must not outlive its test
    in the cache (the key names the test database)."""
    from vms import clock

    clock.forget()
    clock._cache(clock.REAL)
    yield
    clock.forget()
