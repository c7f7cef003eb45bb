"""The seed's own commands, verbatim: the unmodified Azure CLI drives the portal (issue 6).

A pinned `azure-cli` from PyPI, installed into .venv-azcli on first use (a stamp file remembers what
it installed), runs against a live portal over TLS: gunicorn with a fresh self-signed certificate on
the pytest-django test database, and the real Celery worker over Redis advancing registrations and
patch runs. The CLI gets a private AZURE_CONFIG_DIR per test, telemetry off, the version check
pre-seeded (az-cli.md §6.5), and a dead proxy for anything but loopback, so it cannot leave the machine.

Never skipped in CI: the install needs PyPI, which CI reaches. Locally, PORTAL_SKIP_AZCLI=1 skips it.
"""

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from django.conf import settings
from django.core.cache import cache

from patching.models import Operation, OperationKind
from portal.arm import identity
from tests.conftest import WORKER_SETTINGS
from tests.factories import load_catalog, make_resource_group, make_subscription, make_vm
from tests.helpers import wait_for
from vms import principals
from vms.management.commands.make_dev_cert import write_self_signed
from vms.models import FeatureRegistration, ProviderRegistration

ROOT = Path(__file__).resolve().parent.parent
AZ_VERSION = "2.91.0"
PACKAGES = [f"azure-cli=={AZ_VERSION}"]
VENV = ROOT / ".venv-azcli"
SERVER_BOOT_TIMEOUT = 60
AZ_TIMEOUT = 180
CLOUD = "HotpatchPortal"
FEATURES = FeatureRegistration.HOTPATCH_FEATURES
FAILURES_PER_CLIENT = 3  # the live server's limit, low enough to reach from the CLI


@pytest.fixture(scope="session")
def az_executable() -> Path:
    """`az` from the pinned azure-cli in its own virtualenv, installed once and reused while it matches."""
    if os.environ.get("PORTAL_SKIP_AZCLI") and not os.environ.get("CI"):
        pytest.skip("PORTAL_SKIP_AZCLI is set")
    az = VENV / "bin" / "az"
    stamp = VENV / ".installed"
    wanted = " ".join(PACKAGES)
    if not (az.exists() and stamp.exists() and stamp.read_text() == wanted):
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        install = subprocess.run(
            [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PACKAGES],
            capture_output=True,
            text=True,
        )
        errors = "\n".join(line for line in install.stderr.splitlines() if "is ignored" not in line)
        assert install.returncode == 0, f"pip could not install {wanted}:\n{errors[-3000:]}"
        stamp.write_text(wanted)
        print(f"installed {wanted} into {VENV} in {time.monotonic() - started:.0f} s")
    return az


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url_for_tests() -> str:
    """The pytest-django test database, as a URL for another process (as conftest's worker gets it)."""
    name = settings.DATABASES["default"]["NAME"]
    return urlsplit(os.environ["DATABASE_URL"])._replace(path="/" + quote(name)).geturl()


class TlsPortal:
    """gunicorn serving the portal over https with a self-signed certificate, on the test database."""

    def __init__(self, folder: Path):
        self.cert, self.key = folder / "cert.pem", folder / "key.pem"
        write_self_signed(self.cert, self.key, ["127.0.0.1", "::1", "localhost"])
        self.port = free_port()
        self.base = f"https://127.0.0.1:{self.port}"
        self.log_path = folder / "gunicorn.log"
        self.env = {
            **os.environ,
            **WORKER_SETTINGS,
            "DATABASE_URL": database_url_for_tests(),
            "REDIS_URL": settings.REDIS_URL,
            "SECRET_KEY": settings.SECRET_KEY,
            "PORTAL_TENANT_ID": settings.PORTAL_TENANT_ID,
            "PORTAL_ARM_RETRY_AFTER": "1",
            "PORTAL_TOKEN_FAILURES_PER_CLIENT": str(FAILURES_PER_CLIENT),
            "PORTAL_TOKEN_FAILURES_PER_IP": "1000",
            "PYTHONUNBUFFERED": "1",
        }
        self.process = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "portal.wsgi:application", "--bind", f"127.0.0.1:{self.port}"]
                + ["--workers", "1", "--threads", "8", "--certfile", str(self.cert), "--keyfile", str(self.key)]
                + ["--graceful-timeout", "2", "--no-control-socket"],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        context = ssl.create_default_context(cafile=str(self.cert))  # verified, as the CLI will
        deadline = time.monotonic() + SERVER_BOOT_TIMEOUT
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"gunicorn exited with {self.process.returncode}:\n{self.log_tail()}", pytrace=False)
            try:
                url = f"{self.base}/adfs/.well-known/openid-configuration"
                with urllib.request.urlopen(url, timeout=2, context=context) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"gunicorn did not answer within {SERVER_BOOT_TIMEOUT} s:\n{self.log_tail()}", pytrace=False
                )
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def tls_portal(live_worker, tmp_path):
    portal = TlsPortal(tmp_path)
    # The live server counts failed secrets per address in Redis; start this test with a clean slate.
    address_key = identity._failure_keys("", "127.0.0.1")[1][0]
    cache.delete(address_key)
    portal.start()
    yield portal
    portal.stop()  # before transactional_db empties the tables it reads
    cache.delete(address_key)


class Az:
    """Runs the real `az` with a private profile; every call returns (returncode, parsed JSON or text, stderr)."""

    def __init__(self, executable: Path, folder: Path, portal: TlsPortal):
        self.executable = executable
        self.config_dir = folder / "azure-config"
        self.config_dir.mkdir(parents=True)
        # az-cli.md §6.5: with this in place the CLI does not check PyPI/blob storage for a newer version.
        (self.config_dir / "versionCheck.json").write_text(
            json.dumps(
                {
                    "versions": {
                        "azure-cli": {"local": AZ_VERSION},
                        "core": {"local": AZ_VERSION},
                        "telemetry": {"local": "1.1.0"},
                    },
                    "update_time": datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f"),
                }
            )
        )
        keep = ("PATH", "LANG", "LC_ALL", "TMPDIR")
        self.env = {name: os.environ[name] for name in keep if name in os.environ}
        self.env.update(
            HOME=str(folder),
            AZURE_CONFIG_DIR=str(self.config_dir),
            REQUESTS_CA_BUNDLE=str(portal.cert),
            AZURE_CORE_COLLECT_TELEMETRY="false",
            AZURE_CORE_NO_COLOR="true",
            AZURE_CORE_SURVEY_MESSAGE="false",
            # Anything that is not loopback would go through a proxy that is not there: it fails, it never leaves.
            HTTPS_PROXY="http://127.0.0.1:9",
            HTTP_PROXY="http://127.0.0.1:9",
            NO_PROXY="127.0.0.1,localhost",
        )
        self.log: list[tuple[str, float]] = []

    def __call__(self, *args: str, check: bool = True):
        started = time.monotonic()
        done = subprocess.run(
            [str(self.executable), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=AZ_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        self.log.append((" ".join(args[:3]), time.monotonic() - started))
        if check:
            assert done.returncode == 0, f"az {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}"
        out = done.stdout.strip()
        try:
            parsed = json.loads(out) if out else None
        except ValueError:
            parsed = out
        return done.returncode, parsed, done.stderr


@pytest.fixture
def lab(tls_portal, az_executable, tmp_path, django_user_model, settings):
    """Olga owns Contoso and made the service principal 'ci' (Contributor); two VMs; Bob's subscription apart."""
    load_catalog()
    olga = django_user_model.objects.create_user("olga", password="pw-olga-123")
    bob = django_user_model.objects.create_user("bob", password="pw-bob-123")
    contoso = make_subscription("Contoso", user=olga, role="Owner", onboarded=False)
    make_subscription("Bob's", user=bob, role="Owner")
    rg = make_resource_group(contoso, "rg-web")
    vm = make_vm(resource_group=rg, name="web-02", product="ws2022", behind_by_months=1)
    principal, secret = principals.create(olga, "ci", contoso, "Contributor")
    return {
        "portal": tls_portal,
        "az": Az(az_executable, tmp_path / "cli", tls_portal),
        "new_az": lambda name: Az(az_executable, tmp_path / name, tls_portal),
        "subscription": contoso,
        "rg": rg,
        "vm": vm,
        "sp": principal,
        "secret": secret,
        "tenant": settings.PORTAL_TENANT_ID,
    }


def register_and_login(az: Az, lab, secret: str | None = None, *, check: bool = True):
    base = lab["portal"].base
    az("cloud", "register", "-n", CLOUD, "--endpoint-resource-manager", f"{base}/arm/")
    az("cloud", "set", "-n", CLOUD)
    return az(
        "login",
        "--service-principal",
        "-u",
        str(lab["sp"].client_id),
        "-p",
        secret or lab["secret"],
        "--tenant",
        lab["tenant"],
        check=check,
    )


def test_the_seeds_commands_verbatim_with_the_unmodified_azure_cli(lab):
    az, base, subscription = lab["az"], lab["portal"].base, lab["subscription"]

    # One URL: the CLI reads the cloud's endpoints from /arm/metadata/endpoints.
    _, login, _ = register_and_login(az, lab)
    _, cloud, _ = az("cloud", "show", "-n", CLOUD, "-o", "json")
    assert cloud["endpoints"]["activeDirectory"] == f"{base}/adfs"
    assert cloud["endpoints"]["resourceManager"] == f"{base}/arm/"
    assert cloud["endpoints"]["activeDirectoryResourceId"] == settings.PORTAL_ARM_AUDIENCE

    assert login == [
        {
            "cloudName": CLOUD,
            "homeTenantId": lab["tenant"],
            "id": str(subscription.pk),
            "isDefault": True,
            "managedByTenants": [],
            "name": "Contoso",
            "state": "Enabled",
            "tenantId": lab["tenant"],
            "user": {"name": str(lab["sp"].client_id), "type": "servicePrincipal"},
        }
    ]

    # The seed's three features, then az feature show until Registered.
    for name in FEATURES:
        _, feature, warnings = az("feature", "register", "--namespace", "Microsoft.Compute", "--name", name)
        assert feature == {
            "id": f"/subscriptions/{subscription.pk}/providers/Microsoft.Features/providers/Microsoft.Compute"
            f"/features/{name}",
            "name": f"Microsoft.Compute/{name}",
            "properties": {"state": "Registering"},
            "type": "Microsoft.Features/providers/features",
        }
        assert "az provider register -n Microsoft.Compute" in warnings

    def feature_state():
        _, shown, _ = az("feature", "show", "--namespace", "Microsoft.Compute", "--name", FEATURES[0])
        assert shown["name"] == f"Microsoft.Compute/{FEATURES[0]}"
        return shown["properties"]["state"] == "Registered" and shown

    wait_for(feature_state, timeout=60, interval=1, message="az feature show to say Registered")
    wait_for(
        lambda: all(f.state == "Registered" for f in FeatureRegistration.objects.filter(subscription=subscription)),
        timeout=30,
        message="all three features Registered",
    )

    code, out, warnings = az("provider", "register", "--namespace", "Microsoft.Compute")
    assert code == 0 and out is None  # az prints nothing; it may warn that registering is still on-going
    assert ProviderRegistration.objects.get(subscription=subscription).state in ("Registering", "Registered")

    # Assess, then install the Critical and Security updates, as the preview's documentation does.
    vm = lab["vm"]
    _, assessment, _ = az("vm", "assess-patches", "-g", "rg-web", "-n", vm.name)
    assert assessment["status"] == "Succeeded"
    operation = Operation.objects.get(activity_id=assessment["assessmentActivityId"])
    assert operation.kind == OperationKind.ASSESSMENT and operation.user == lab["sp"].user
    results = {r.update.kb: r.update.classification for r in operation.results.select_related("update")}
    assert {p["kbId"] for p in assessment["availablePatches"]} == set(results)
    assert assessment["criticalAndSecurityPatchCount"] == operation.critical_security_count >= 1

    _, installation, _ = az(
        "vm",
        "install-patches",
        "-g",
        "rg-web",
        "-n",
        vm.name,
        "--maximum-duration",
        "PT2H",
        "--reboot-setting",
        "IfRequired",
        "--classifications-to-include-win",
        "Critical",
        "Security",
    )
    assert installation["status"] in ("Succeeded", "CompletedWithWarnings")
    run = Operation.objects.get(activity_id=installation["installationActivityId"])
    assert run.kind == OperationKind.INSTALLATION and run.user == lab["sp"].user
    assert run.parameters["maximumDuration"] == "PT2H" and run.parameters["rebootSetting"] == "IfRequired"
    assert run.parameters["windowsParameters"]["classificationsToInclude"] == ["Critical", "Security"]
    selected = {kb for kb, c in results.items() if c in ("Critical", "Security")}
    states = {p["kbId"]: p["installationState"] for p in installation["patches"]}
    assert {kb for kb, s in states.items() if s in ("Installed", "Failed")} == selected
    assert all(states[kb] == "NotSelected" for kb in set(results) - selected)
    assert installation["installedPatchCount"] + installation["failedPatchCount"] == len(selected)
    assert installation["notSelectedPatchCount"] == len(results) - len(selected)
    assert installation["maintenanceWindowExceeded"] is False

    # A restart of the portal forgets nothing: the CLI's cached token still works.
    lab["portal"].stop()
    lab["portal"].start()
    _, shown, _ = az("feature", "show", "--namespace", "Microsoft.Compute", "--name", FEATURES[1])
    assert shown["properties"]["state"] == "Registered"
    print("az timings:", ", ".join(f"{what} {seconds:.1f}s" for what, seconds in az.log))
    # The portal's Retry-After (1 s here) paces the CLI's polls; without it azure-core waits 30 s a poll.
    assert all(seconds < 20 for what, seconds in az.log if what.startswith("vm ")), az.log


def test_the_cli_is_refused_with_a_wrong_secret_a_revoked_principal_and_too_many_attempts(lab):
    az = lab["new_az"]("wrong")
    code, _, error = register_and_login(az, lab, "hpsp_not-the-secret", check=False)
    assert code == 1 and f"ERROR: {identity.BAD_CLIENT}" in error

    # Signed in, then revoked: the very next call is refused (the CLI still holds its token).
    signed_in = lab["new_az"]("revoked")
    register_and_login(signed_in, lab)
    principals.revoke(lab["sp"].created_by, lab["sp"])
    code, _, error = signed_in(
        "feature", "show", "--namespace", "Microsoft.Compute", "--name", FEATURES[0], check=False
    )
    assert code == 1 and "(InvalidAuthenticationToken)" in error and "revoked" in error

    # The client id is locked after FAILURES_PER_CLIENT bad secrets (the failure above counts, too).
    for attempt in range(FAILURES_PER_CLIENT):
        fresh = lab["new_az"](f"attempt-{attempt}")
        code, _, error = register_and_login(fresh, lab, "hpsp_still-wrong", check=False)
        assert code == 1
    assert "Too many failed sign-in attempts" in error
