"""The sandbox as a new user drives it from the README: the commands, then the official SDK.

Import an `az vm list -d` file with `manage.py import_fleet`, inject a KB failure on one VM with
`manage.py sandbox fault add`, advance past December 2026's Patch Tuesday (a hotpatch month) with
`manage.py sandbox advance`, read the result through azure-mgmt-compute, and export → import → export
the world with `manage.py sandbox export/import`: the two exports are identical.
"""

import json
from datetime import UTC, datetime

import pytest
from django.core.management import call_command

from patching import calendar, sandbox
from patching.models import Operation, OperationKind, RebootStatus, Update
from tests.browser.data import make_user
from tests.factories import load_catalog
from tests.sdk.clients import clients
from tests.test_fleet_import import SUB, sample
from vms.models import ApiToken, VirtualMachine

TODAY = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)  # the README's walk-through starts from the issue's today


@pytest.fixture
def walkthrough(live_server, transactional_db, settings, tmp_path):
    settings.PORTAL_PATCH_FAILURE_RATE = 0.0
    settings.PORTAL_SIM_SPEED = 0
    load_catalog()
    olivia = make_user("olivia")
    sandbox._set_clock(TODAY)  # "now", as if the installation had been switched to sandbox mode today
    fleet_file = tmp_path / "vms.json"
    fleet_file.write_text(json.dumps(sample()))
    call_command("import_fleet", str(fleet_file), owner="olivia", stdout=open(tmp_path / "import.log", "w"))
    token = ApiToken.issue(olivia, "sdk")[1]
    sdk = clients(token, f"{live_server.url}/arm", SUB)
    yield sdk, tmp_path
    for client in sdk.values():
        client.close()


def test_import_advance_past_patch_tuesday_and_read_it_with_the_sdk(walkthrough):
    sdk, tmp_path = walkthrough
    call_command(
        "sandbox", "fault", "add", "kb_fails", "--vm", "web-02", "--probability", "1", stdout=open(tmp_path / "f", "w")
    )
    month = calendar.patch_tuesday(2026, 12)
    assert month.month == 12 and month.day == 8
    call_command("sandbox", "advance", "--to", "2026-12-16T00:00", stdout=open(tmp_path / "a", "w"))

    compute = sdk["compute"]
    builds = {}
    for name in ("web-01", "sql-01"):  # enrolled: Azure-orchestrated with hotpatch on, running
        vm = VirtualMachine.objects.get(name=name)
        hotpatch = Update.objects.get(product=vm.product, kind="hotpatch", published_at__date=month)
        view = compute.virtual_machines.instance_view(vm.resource_group.name, name)
        assert view.os_version == hotpatch.build, name
        builds[name] = view.os_version
        summary = view.patch_status.last_patch_installation_summary
        assert summary.status == "Succeeded" and summary.installed_patch_count >= 1, name
        run = Operation.objects.get(activity_id=summary.installation_activity_id)
        assert run.reboot_status == RebootStatus.NOT_NEEDED, name  # a hotpatch month: no reboot

    faulted = compute.virtual_machines.instance_view("RG-Web", "web-02").patch_status.last_patch_installation_summary
    assert faulted.status == "Failed" and faulted.failed_patch_count >= 1
    assert "InjectedFault" in json.dumps(faulted.error.as_dict())
    assert Operation.objects.filter(vm__name="web-02", kind=OperationKind.INSTALLATION).exclude(injected="").exists()

    first, second = tmp_path / "first.json", tmp_path / "second.json"
    call_command("sandbox", "export", str(first), stdout=open(tmp_path / "e1", "w"))
    call_command("sandbox", "import", str(first), stdout=open(tmp_path / "i", "w"))
    call_command("sandbox", "export", str(second), stdout=open(tmp_path / "e2", "w"))
    assert first.read_bytes() == second.read_bytes()
    # The world loaded back is the one the SDK saw.
    for name, build in builds.items():
        rg = VirtualMachine.objects.get(name=name).resource_group.name
        assert compute.virtual_machines.instance_view(rg, name).os_version == build
