"""Conformance with the previous generation of the SDK: azure-mgmt-compute 37.x (AutoRest,
final-state-via location) and azure-mgmt-resource 23.x, unmodified, in a virtualenv of their own.

They cannot live beside the current packages in one environment, so a session fixture builds
.venv-sdk37 once (a stamp file remembers what it installed) and tests/sdk/drive_sdk37.py runs there
against the live server, printing what it saw. Set PORTAL_SKIP_SDK37=1 to skip these on a machine
without access to PyPI.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connections

from patching.models import GuestState, Operation, OperationKind
from tests.conftest import WORKER_SETTINGS
from tests.factories import load_catalog, make_resource_group, make_subscription, make_vm
from vms.models import ApiToken, FeatureRegistration, ProviderRegistration, VirtualMachine

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-sdk37"
PACKAGES = ["azure-mgmt-compute>=37,<38", "azure-mgmt-resource>=23,<24"]
DRIVER = ROOT / "tests" / "sdk" / "drive_sdk37.py"


@pytest.fixture(scope="session")
def sdk37_python() -> Path:
    if os.environ.get("PORTAL_SKIP_SDK37"):
        pytest.skip("PORTAL_SKIP_SDK37 is set")
    python = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    wanted = " ".join(PACKAGES)
    if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PACKAGES],
            capture_output=True,
            text=True,
        )
        assert install.returncode == 0, f"pip could not install {wanted}:\n{install.stderr[-3000:]}"
        stamp.write_text(wanted)
    return python


@pytest.fixture
def lab37(live_server, live_worker, settings, django_user_model, sdk37_python):
    settings.PORTAL_ARM_RETRY_AFTER = 0
    settings.PORTAL_REGISTRATION_SECONDS = int(WORKER_SETTINGS["PORTAL_REGISTRATION_SECONDS"])
    load_catalog()
    carol = django_user_model.objects.create_user("carol", password="pw-carol-123")
    subscription = make_subscription("Litware", user=carol, role="Contributor", onboarded=False)
    rg = make_resource_group(subscription, "rg-old-sdk")
    vm = make_vm(resource_group=rg, name="legacy-01", product="ws2022", behind_by_months=1)
    token = ApiToken.issue(carol, "sdk 37")[1]

    def drive(scenario: str, vm_name: str = vm.name) -> dict:
        args = [str(sdk37_python), str(DRIVER), scenario, f"{live_server.url}/arm", token, str(subscription.pk)]
        done = subprocess.run([*args, rg.name, vm_name], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-4000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    return {"drive": drive, "subscription": subscription, "vm": vm}


def test_assess_and_install_with_the_autorest_sdk(lab37):
    seen = lab37["drive"]("patching")

    assert seen["compute_version"].startswith("37.") and seen["resource_version"].startswith("23.")
    assert seen["patch_mode"] == "AutomaticByOS" and seen["power"] == ["PowerState/running"]
    assessment = seen["assessment"]
    assert assessment["status"] == "Succeeded" and "890830" in assessment["kbs"]
    assert "Security Updates" in assessment["classifications"]
    operation = Operation.objects.get(activity_id=assessment["activity"])
    assert sorted(r.update.kb for r in operation.results.select_related("update")) == assessment["kbs"]

    install = seen["install"]
    assert install["states"]["890830"] == "Excluded" and install["excluded"] == 1
    security = {
        r.update.kb for r in operation.results.select_related("update") if r.update.classification == "Security"
    }
    assert install["installed"] + install["failed"] == len(security)
    assert install["not_selected"] == len(assessment["kbs"]) - len(security) - 1
    assert install["reboot"] in ("Required", "NotNeeded")  # rebootSetting Never: no reboot, maybe pending
    installation = Operation.objects.get(activity_id=install["activity"])
    assert installation.parameters["maximumDuration"] == "PT4H" and installation.parameters["rebootSetting"] == "Never"

    assert seen["bad_reboot_setting"] == {
        "type": "HttpResponseError",
        "status": 400,
        "code": "InvalidParameter",
        "target": "rebootSetting",
    }
    assert seen["missing_vm"]["type"] == "ResourceNotFoundError" and seen["missing_vm"]["code"] == "ResourceNotFound"


def test_a_concurrent_assessment_is_a_conflict_for_the_autorest_sdk(lab37):
    vm = lab37["vm"]
    connection = connections.create_connection("default")
    try:
        with connection.cursor() as cursor:  # hold the guest row: the first run cannot finish meanwhile
            cursor.execute("BEGIN")
            cursor.execute(f"SELECT 1 FROM {GuestState._meta.db_table} WHERE vm_id = %s FOR UPDATE", [vm.pk])
        seen = lab37["drive"]("conflict")
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ROLLBACK")
        connection.close()
    assert seen["conflict"]["type"] == "ResourceExistsError" and seen["conflict"]["status"] == 409
    assert Operation.objects.filter(vm=vm, kind=OperationKind.ASSESSMENT).count() == 1


def test_onboarding_with_the_previous_resource_sdk(lab37):
    seen = lab37["drive"]("onboarding")
    assert seen["feature"] == {"name": "Microsoft.Compute/InGuestAutoPatchVMPreview", "state": "Registering"}
    assert seen["provider"] == {"namespace": "Microsoft.Compute", "state": "Registering"}
    assert FeatureRegistration.objects.get(name="InGuestAutoPatchVMPreview").state in ("Registering", "Registered")
    assert ProviderRegistration.objects.get(subscription=lab37["subscription"]).state in ("Registering", "Registered")


def test_create_update_delete_with_the_autorest_sdk(lab37):
    seen = lab37["drive"]("lifecycle", "legacy-02")
    # A 2019 image has no hotpatch: Windows' own default orchestration, as in the portal's create form.
    assert seen["created"] == {"name": "legacy-02", "patch_mode": "AutomaticByOS", "hotpatch": False}
    assert seen["updated_assessment_mode"] == "AutomaticByPlatform"
    assert seen["deleted"] is None
    assert seen["after_delete"]["type"] == "ResourceNotFoundError"
    assert not VirtualMachine.objects.filter(name="legacy-02").exists()
