"""The sandbox's three surfaces: the ARM-style endpoint, `manage.py sandbox`, the /sandbox/ page; and
the official Azure SDK reading what an advance did (the README's walk-through, end to end)."""

import json
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from patching import sandbox
from patching.models import Fault, FaultKind, Operation, OperationKind, Update
from tests.arm_client import ArmClient
from tests.factories import make_resource_group, make_subscription, make_vm
from tests.sdk.clients import clients
from vms import clock
from vms.models import ApiToken, VirtualMachine

START = datetime(2026, 11, 30, 12, tzinfo=UTC)
CLOCK = "/providers/Hotpatch.Sandbox/clock"
FAULTS = "/providers/Hotpatch.Sandbox/faults"


@pytest.fixture
def lab(catalog, alice, django_user_model):
    """Alice: Contributor on Contoso (web-01, enrolled; web-02, not); root: a superuser. The clock at START."""
    root = django_user_model.objects.create_superuser("root", password="pw-root-123")
    contoso = make_subscription("Contoso", user=alice, role="Contributor")
    rg = make_resource_group(contoso, "rg-web")
    web1 = make_vm(resource_group=rg, name="web-01", now=START)
    web2 = make_vm(resource_group=rg, name="web-02", hotpatch=False, now=START)
    other = make_vm(resource_group=make_resource_group(make_subscription("Bob's"), "rg-bob"), name="bob-01", now=START)
    sandbox._set_clock(START)
    return {"root": root, "contoso": contoso, "web1": web1, "web2": web2, "other": other}


@pytest.fixture
def root_api(lab) -> ArmClient:
    return ArmClient(Client(enforce_csrf_checks=True), ApiToken.issue(lab["root"], "root")[1])


# --- The ARM-style endpoint -------------------------------------------------------------------------


def test_anyone_signed_in_reads_the_clock(api, lab):
    response = api.get(CLOCK)
    assert response.status_code == 200
    assert response.json()["properties"] == {
        "mode": "sandbox",
        "now": "2026-11-30T12:00:00Z",
        "advancing": False,
        "maxAdvanceDays": 100,
        "activeFaults": 0,
    }


def test_only_an_installation_manager_advances_the_clock(api, root_api, lab):
    refused = api.post(CLOCK + "/advance", {"days": 1})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "AuthorizationFailed"
    assert clock.now() == START

    done = root_api.post(CLOCK + "/advance", {"to": "2026-12-01T00:00:00Z"})
    assert done.status_code == 200, done.content
    body = done.json()["properties"]
    assert body["now"] == "2026-12-01T00:00:00Z" and body["lastAdvance"]["from"] == "2026-11-30T12:00:00Z"
    assert clock.now() == datetime(2026, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"days": -1}, "positive number of days"),
        ({"days": 1000}, "at most 100 days"),
        ({"to": "2026-11-01T00:00:00Z"}, "only moves forward"),
        ({"to": "next tuesday"}, "not a date and time"),
        ({"days": "35"}, "must be a number"),
        ({}, "either a number of days or a moment"),
    ],
)
def test_bad_advances_get_the_arm_error_envelope(root_api, body, says):
    response = root_api.post(CLOCK + "/advance", body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidParameter" and says in response.json()["error"]["message"]
    assert clock.now() == START


def test_a_busy_clock_answers_409(root_api, lab):
    from django.utils import timezone

    from vms.models import SandboxClock

    SandboxClock.objects.filter(pk=1).update(advancing_since=timezone.now())
    response = root_api.post(CLOCK + "/advance", {"days": 1})
    assert response.status_code == 409 and response.json()["error"]["code"] == "Conflict"


def test_faults_through_the_api(api, lab):
    created = api.post(FAULTS, {"kind": "kb_fails", "vmId": lab["web1"].arm_id, "nextOperations": 1})
    assert created.status_code == 201, created.content
    fault = created.json()
    assert fault["properties"]["vmId"] == lab["web1"].arm_id and fault["properties"]["active"] is True
    assert [f["name"] for f in api.get(FAULTS).json()["value"]] == [fault["name"]]

    # A VM Alice cannot see is not found; the whole fleet is not hers to break.
    hidden = api.post(FAULTS, {"kind": "kb_fails", "vmId": lab["other"].arm_id, "nextOperations": 1})
    assert hidden.status_code == 404
    fleet = api.post(FAULTS, {"kind": "agent_unreachable", "probability": 0.5})
    assert fleet.status_code == 403
    assert api.post(FAULTS, {"kind": "kb_fails", "nextOperations": 1, "probability": 0.5}).status_code == 400
    assert Fault.objects.count() == 1

    assert api.delete(f"{FAULTS}/{fault['name']}").status_code == 200
    assert api.delete(f"{FAULTS}/{fault['name']}").status_code == 204
    assert not Fault.objects.exists()


def test_an_injected_result_says_so_in_the_api(api, lab):
    # Probability 1: every run fails (a "next N" fault lets the platform's retry in the next window succeed).
    sandbox.add_fault(None, FaultKind.KB_FAILS, vm=lab["web1"], probability=1)
    sandbox.advance(to=datetime(2026, 12, 10, 12, tzinfo=UTC))
    view = api.get(lab["web1"].arm_id + "/instanceView").json()
    summary = view["patchStatus"]["lastPatchInstallationSummary"]
    codes = [d["code"] for d in summary["error"]["details"]]
    assert summary["status"] == "Failed" and "InjectedFault" in codes


def test_the_openapi_document_describes_the_sandbox(client):
    paths = client.get("/arm/openapi.json").json()["paths"]
    assert set(paths[CLOCK]) == {"get"}
    assert set(paths[CLOCK + "/advance"]) == {"post"} and set(paths[FAULTS]) == {"get", "post"}


# --- manage.py sandbox ----------------------------------------------------------------------------


def command(*args) -> str:
    out = StringIO()
    call_command("sandbox", *args, stdout=out)
    return out.getvalue()


def test_the_commands(lab, tmp_path):
    assert "2026-11-30 12:00 UTC" in command("status")
    assert "Clock advanced from 2026-11-30 12:00 to 2026-12-01 12:00 UTC" in command("advance", "--days", "1")
    assert "Clock advanced" in command("advance", "--to", "2026-12-02T02:00")
    assert clock.now() == datetime(2026, 12, 2, 2, tzinfo=UTC)
    assert "Fault #" in command("fault", "add", "kb_fails", "--vm", "web-01", "--next", "1")
    assert "fired 0 time(s), active" in command("fault", "list")

    first, second = tmp_path / "first.json", tmp_path / "second.json"
    command("export", str(first))
    assert "Snapshot loaded: 3 VMs" in command("import", str(first))
    command("export", str(second))
    assert first.read_bytes() == second.read_bytes()

    assert "Back to real time" in command("realtime")
    assert not clock.is_simulated()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("advance", "--days", "-2"), "positive number of days"),
        (("advance", "--to", "2026-11-01T00:00"), "only moves forward"),
        (("advance", "--to", "soon"), "not a date and time"),
        (("fault", "add", "kb_fails", "--vm", "nope", "--next", "1"), "No VM named"),
        (("fault", "remove", "999"), "No fault #999"),
        (("import", "/nonexistent/snapshot.json"), "Cannot read"),
    ],
)
def test_bad_commands_say_why(lab, args, says):
    with pytest.raises(CommandError, match=says):
        command(*args)
    assert clock.now() == START


def test_importing_a_newer_snapshot_with_the_command_is_refused(lab, tmp_path):
    path = tmp_path / "newer.json"
    snapshot = sandbox.export_snapshot()
    snapshot["schemaVersion"] = 99
    path.write_text(json.dumps(snapshot))
    with pytest.raises(CommandError, match="newer than this portal"):
        command("import", str(path))
    assert VirtualMachine.objects.count() == 3


# --- The page -------------------------------------------------------------------------------------


def test_the_top_bar_says_when_the_clock_is_simulated(client, lab):
    client.force_login(lab["root"])
    page = client.get("/vms/").content.decode()
    assert "Simulated clock: 30 Nov 2026, 12:00" in page and 'href="/sandbox/"' in page
    sandbox.realtime()
    assert "Simulated clock" not in client.get("/vms/").content.decode()


def test_a_manager_advances_the_clock_from_the_page(client, lab):
    client.force_login(lab["root"])
    page = client.get("/sandbox/")
    assert page.status_code == 200 and b"Advance the clock" in page.content
    response = client.post("/sandbox/clock/advance/", {"days": "1"}, follow=True)
    assert b"Clock advanced from 2026-11-30 12:00" in response.content
    assert clock.now() == START + timedelta(days=1)
    bad = client.post("/sandbox/clock/advance/", {"to": "2026-01-01T00:00"}, follow=True)
    assert b"only moves forward" in bad.content and clock.now() == START + timedelta(days=1)


def test_others_see_the_clock_but_cannot_move_it(client, lab, alice):
    client.force_login(alice)
    page = client.get("/sandbox/")
    assert page.status_code == 200 and b"Advance the clock" not in page.content
    response = client.post("/sandbox/clock/advance/", {"days": "1"}, follow=True)
    assert b"Only an installation manager" in response.content and clock.now() == START
    assert client.get("/sandbox/snapshot.json").status_code == 403
    client.post("/sandbox/reset/", {"to": "empty"})
    assert VirtualMachine.objects.count() == 3


def test_faults_from_the_page_keep_to_what_the_user_may_see(client, lab, alice):
    client.force_login(alice)
    ok = client.post(
        "/sandbox/faults/", {"kind": "kb_fails", "scope": "vm", "vm": "web-01", "next_n": "1"}, follow=True
    )
    assert b"Fault #" in ok.content and Fault.objects.get().vm == lab["web1"]
    hidden = client.post("/sandbox/faults/", {"kind": "kb_fails", "scope": "vm", "vm": "bob-01", "next_n": "1"})
    assert hidden.status_code == 400 and b"No VM of yours has that name" in hidden.content
    fleet = client.post(
        "/sandbox/faults/", {"kind": "agent_unreachable", "scope": "fleet", "probability": "0.5"}, follow=True
    )
    assert b"You may not set this fault" in fleet.content
    assert Fault.objects.count() == 1


def test_the_blade_marks_an_injected_result(client, lab):
    sandbox.add_fault(None, FaultKind.ASSESSMENT_FAILS, vm=lab["web1"], next_n=1)
    from patching import services

    operation, _ = services.start_operation(lab["web1"], OperationKind.ASSESSMENT, enqueue=False)
    services.execute_operation(operation.pk)
    client.force_login(lab["root"])
    blade = client.get(f"/vms/{lab['web1'].pk}/hotpatch/?tab=history&operation={operation.pk}").content.decode()
    assert "Injected fault" in blade and 'id="injected-note"' in blade


def test_snapshot_download_and_upload_from_the_page(client, lab):
    client.force_login(lab["root"])
    download = client.get("/sandbox/snapshot.json")
    assert download.status_code == 200 and "attachment" in download["Content-Disposition"]
    text = download.content
    from django.core.files.uploadedfile import SimpleUploadedFile

    loaded = client.post("/sandbox/snapshot/load/", {"snapshot": SimpleUploadedFile("s.json", text)}, follow=True)
    assert b"Snapshot loaded: 3 VMs" in loaded.content
    assert client.get("/sandbox/snapshot.json").content == text
    broken = client.post("/sandbox/snapshot/load/", {"snapshot": SimpleUploadedFile("s.json", b"{}")}, follow=True)
    assert b"Not a snapshot" in broken.content and VirtualMachine.objects.count() == 3


def test_reset_to_the_demo_fleet_from_the_page(client, lab):
    client.force_login(lab["root"])
    response = client.post("/sandbox/reset/", {"to": "demo"}, follow=True)
    assert b"The demo fleet is back" in response.content
    assert VirtualMachine.objects.filter(name="web-01").count() >= 1 and VirtualMachine.objects.count() > 3


# --- The official SDK, as the README's walk-through -----------------------------------------------


def test_the_sdk_sees_what_an_advance_did(live_server, lab, alice):
    """Advance past December's Patch Tuesday with the command; the SDK reads each VM's last installation."""
    command("fault", "add", "kb_fails", "--vm", "web-02", "--probability", "1")
    command("advance", "--to", "2026-12-10T12:00")
    sdk = clients(ApiToken.issue(alice, "sdk")[1], f"{live_server.url}/arm", str(lab["contoso"].pk))
    try:
        compute = sdk["compute"]
        vm = compute.virtual_machines.get("rg-web", "web-01")
        settings = vm.os_profile.windows_configuration.patch_settings
        assert settings.patch_mode == "AutomaticByPlatform" and settings.enable_hotpatching
        summary = compute.virtual_machines.instance_view("rg-web", "web-01").patch_status
        installed = summary.last_patch_installation_summary
        assert installed.status == "Succeeded" and installed.installed_patch_count >= 1
        assert installed.start_time >= datetime(2026, 12, 8, tzinfo=UTC)
        hotpatch = Update.objects.get(product="ws2022-azure", release_month="2026-12", kind="hotpatch")
        run = Operation.objects.get(activity_id=installed.installation_activity_id)
        assert run.reboot_status == "NotNeeded" and run.results.filter(update=hotpatch, state="Installed").exists()

        failed = compute.virtual_machines.instance_view("rg-web", "web-02").patch_status
        failed = failed.last_patch_installation_summary
        assert failed.status == "Failed" and failed.failed_patch_count >= 1
        assert "InjectedFault" in [d.code for d in failed.error.details]
    finally:
        for client in sdk.values():
            client.close()


def test_faults_from_the_admin_are_validated_as_everywhere(admin_client, lab):
    refused = admin_client.post("/admin/patching/fault/add/", {"kind": "rollout_halt", "remaining": "1"})
    assert refused.status_code == 200 and b"A rollout halt is per region" in refused.content
    assert not Fault.objects.exists()
    added = admin_client.post(
        "/admin/patching/fault/add/", {"kind": "kb_fails", "vm": lab["web1"].pk, "kb": "KB5012345", "probability": "1"}
    )
    assert added.status_code == 302
    fault = Fault.objects.get()
    assert fault.kb == "5012345" and fault.vm == lab["web1"] and fault.created_at == START
