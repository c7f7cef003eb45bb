"""ARM API of the inventory: subscriptions, resource groups, VMs (shapes, paging, create/update/delete)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from patching import services
from patching.models import Operation, OperationKind
from tests.arm_client import error_of, vm_path
from tests.factories import make_vm
from vms.models import FeatureRegistration, VirtualMachine

pytestmark = pytest.mark.usefixtures("arm_settings")

WINDOWS = ("properties", "osProfile", "windowsConfiguration")


def dig(body: dict, *keys):
    for key in keys:
        body = body[key]
    return body


def test_subscriptions_tenants_and_locations(api, fleet):
    value = api.get("subscriptions", api_version="2022-12-01").json()["value"]
    assert value[0] == {
        "id": f"/subscriptions/{fleet['contoso'].pk}",
        "subscriptionId": str(fleet["contoso"].pk),
        "displayName": "Contoso",
        "state": "Enabled",
        "tenantId": value[0]["tenantId"],
        "authorizationSource": "RoleBased",
        "managedByTenants": [],
        "subscriptionPolicies": value[0]["subscriptionPolicies"],
    }
    tenants = api.get("tenants").json()["value"]
    assert tenants[0]["tenantId"] == value[0]["tenantId"]
    locations = api.get(f"subscriptions/{fleet['contoso'].pk}/locations").json()["value"]
    west = next(loc for loc in locations if loc["name"] == "westeurope")
    assert west["displayName"] == "West Europe" and west["metadata"]["pairedRegion"][0]["name"] == "northeurope"


def test_resource_groups(api, fleet):
    sub = fleet["contoso"].pk
    assert [rg["name"] for rg in api.get(f"subscriptions/{sub}/resourcegroups").json()["value"]] == ["rg-web"]
    assert api.get(f"subscriptions/{sub}/resourcegroups/RG-WEB").json()["location"] == "westeurope"
    assert api.request("HEAD", f"subscriptions/{sub}/resourcegroups/rg-web").status_code == 204
    assert api.request("HEAD", f"subscriptions/{sub}/resourcegroups/rg-none").status_code == 404
    created = api.put(f"subscriptions/{sub}/resourcegroups/rg-new", {"location": "North Europe"})
    assert created.status_code == 201 and created.json()["location"] == "northeurope"
    assert api.put(f"subscriptions/{sub}/resourcegroups/rg-new", {"location": "northeurope"}).status_code == 200
    moved = api.put(f"subscriptions/{sub}/resourcegroups/rg-new", {"location": "eastus"})
    assert moved.status_code == 409 and error_of(moved)["code"] == "InvalidResourceGroupLocation"
    bad = api.put(f"subscriptions/{sub}/resourcegroups/rg-x", {"location": "atlantis"})
    assert bad.status_code == 400 and error_of(bad)["target"] == "location"


def test_a_vm_as_arm_shows_it(api, fleet):
    vm = fleet["web1"]
    body = api.get(vm_path(vm)).json()
    assert body["id"] == vm.arm_id and body["name"] == "web-01"
    assert body["type"] == "Microsoft.Compute/virtualMachines" and body["location"] == "westeurope"
    assert "instanceView" not in body["properties"]
    assert dig(body, "properties", "storageProfile", "imageReference") == {
        "publisher": "MicrosoftWindowsServer",
        "offer": "WindowsServer",
        "sku": "2022-datacenter-azure-edition-hotpatch",
        "version": "latest",
        "exactVersion": vm.guest.build,
    }
    assert dig(body, *WINDOWS, "patchSettings") == {
        "patchMode": "AutomaticByPlatform",
        "enableHotpatching": True,
        "assessmentMode": "AutomaticByPlatform",
        "automaticByPlatformSettings": {
            "rebootSetting": "IfRequired",
            "bypassPlatformSafetyChecksOnUserSchedule": False,
        },
    }
    assert dig(body, *WINDOWS, "provisionVMAgent") is True and body["properties"]["provisioningState"] == "Succeeded"


def test_the_instance_view_carries_power_state_and_patch_status(api, fleet):
    vm = fleet["web2"]
    assessment, _ = services.start_operation(vm, OperationKind.ASSESSMENT, enqueue=False)
    services.execute_operation(assessment.pk)
    assessment.refresh_from_db()

    expanded = api.get(vm_path(vm), **{"$expand": "instanceView"}).json()["properties"]["instanceView"]
    bare = api.get(vm_path(vm, "/instanceView")).json()
    assert {k: v for k, v in expanded.items() if k != "vmAgent"} == {k: v for k, v in bare.items() if k != "vmAgent"}
    assert {"code": "PowerState/running", "level": "Info", "displayStatus": "VM running"} in bare["statuses"]
    summary = bare["patchStatus"]["availablePatchSummary"]
    assert summary["status"] == "Succeeded"
    assert summary["assessmentActivityId"] == str(assessment.activity_id)
    assert summary["criticalAndSecurityPatchCount"] == assessment.critical_security_count
    assert summary["otherPatchCount"] == assessment.other_count
    assert summary["startTime"] and summary["lastModifiedTime"] and summary["error"] is None
    assert "lastPatchInstallationSummary" not in bare["patchStatus"]
    codes = [s["code"] for s in bare["patchStatus"]["configurationStatuses"]]
    assert codes[:2] == ["PatchModeConfigurationState/Ready", "AssessmentModeConfigurationState/Ready"]
    assert codes[2].startswith("HotpatchEnablementStatus/")

    # A run in flight: InProgress, with the last known counts.
    running, _ = services.start_operation(vm, OperationKind.ASSESSMENT, enqueue=False)
    summary = api.get(vm_path(vm, "/instanceView")).json()["patchStatus"]["availablePatchSummary"]
    assert summary["status"] == "InProgress" and summary["assessmentActivityId"] == str(running.activity_id)
    assert summary["criticalAndSecurityPatchCount"] == assessment.critical_security_count


def test_vm_lists_page_with_next_links(api, fleet, settings):
    settings.PORTAL_ARM_PAGE_SIZE = 2
    for n in range(3):
        make_vm(resource_group=fleet["web"], name=f"web-1{n}")
    url = f"subscriptions/{fleet['contoso'].pk}/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines"
    names, response = [], api.get(url)
    while True:
        body = response.json()
        names += [vm["name"] for vm in body["value"]]
        if "nextLink" not in body:
            break
        assert body["nextLink"].startswith("http://testserver/arm/") and "api-version=2026-04-01" in body["nextLink"]
        response = api.client.get(body["nextLink"], headers={"Authorization": f"Bearer {api.token}"})
    assert names == ["web-01", "web-02", "web-10", "web-11", "web-12"]
    all_vms = api.get(
        f"subscriptions/{fleet['contoso'].pk}/providers/Microsoft.Compute/virtualMachines", **{"$top": "1"}
    )
    assert len(all_vms.json()["value"]) == 1 and "nextLink" in all_vms.json()


def _follow(api, response) -> list[str]:
    body = response.json()
    names = [vm["name"] for vm in body["value"]]
    if "nextLink" in body:
        names += _follow(api, api.client.get(body["nextLink"], headers={"Authorization": f"Bearer {api.token}"}))
    return names


def test_next_links_are_stable_while_vms_come_and_go(api, fleet, settings):
    """A client paging through a list while VMs are created and deleted neither sees one twice nor
    misses one that was there all along (an offset would shift under it)."""
    settings.PORTAL_ARM_PAGE_SIZE = 2
    for n in range(4):
        make_vm(resource_group=fleet["web"], name=f"web-1{n}")
    url = f"subscriptions/{fleet['contoso'].pk}/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines"
    first = api.get(url).json()
    assert [vm["name"] for vm in first["value"]] == ["web-01", "web-02"]
    make_vm(resource_group=fleet["web"], name="web-00")  # sorts before the position: not seen now
    VirtualMachine.objects.get(name="web-01").delete()  # already seen
    make_vm(resource_group=fleet["web"], name="web-99")  # after it: seen
    rest = _follow(api, api.client.get(first["nextLink"], headers={"Authorization": f"Bearer {api.token}"}))
    assert rest == ["web-10", "web-11", "web-12", "web-13", "web-99"]


def test_listing_with_instance_views_takes_a_constant_number_of_queries(api, fleet):
    url = f"subscriptions/{fleet['contoso'].pk}/providers/Microsoft.Compute/virtualMachines"

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            response = api.get(url, **{"$expand": "instanceView"})
        assert response.status_code == 200
        return len(captured)

    few = queries()
    for n in range(6):
        vm = make_vm(resource_group=fleet["web"], name=f"more-{n}")
        services.start_operation(vm, OperationKind.ASSESSMENT, enqueue=False)
    assert queries() == few


def put_body(**changes) -> dict:
    body = {
        "location": "westeurope",
        "properties": {
            "hardwareProfile": {"vmSize": "Standard_D2s_v5"},
            "storageProfile": {
                "imageReference": {
                    "publisher": "MicrosoftWindowsServer",
                    "offer": "WindowsServer",
                    "sku": "2022-Datacenter-Azure-Edition-Core",
                    "version": "latest",
                }
            },
            "osProfile": {"computerName": "app", "adminUsername": "azureuser", "adminPassword": "x"},
        },
    }
    body.update(changes)
    return body


def test_put_creates_a_vm_with_the_portals_defaults(api, fleet):
    response = api.put(vm_path(fleet["web1"]).replace("web-01", "app-01"), put_body(zones=["1"]))
    assert response.status_code == 201, response.content
    assert response["Azure-AsyncOperation"].startswith("http://testserver/arm/subscriptions/")
    body = response.json()
    assert dig(body, *WINDOWS, "patchSettings", "enableHotpatching") is True  # hotpatch on for a capable image
    assert dig(body, *WINDOWS, "patchSettings", "patchMode") == "AutomaticByPlatform"
    vm = VirtualMachine.objects.get(name="app-01")
    assert vm.zone == "1" and vm.image_sku == "2022-datacenter-azure-edition-core"
    assert vm.operations.filter(kind=OperationKind.ASSESSMENT, started_by="Platform").exists()

    status = api.client.get(response["Azure-AsyncOperation"], headers={"Authorization": f"Bearer {api.token}"})
    assert status.status_code == 200 and status.json()["status"] == "Succeeded"


def test_put_refuses_bad_bodies_with_targets(api, fleet):
    path = vm_path(fleet["web1"]).replace("web-01", "app-02")
    cases = [
        (put_body(location="atlantis"), "location"),
        ({"properties": put_body()["properties"]}, "location"),
        (put_body(properties={}), "properties.storageProfile.imageReference"),
        (put_body(zones=["9"]), "zones"),
        (put_body(zones="1"), "zones"),
        (
            put_body(properties={**put_body()["properties"], "hardwareProfile": {"vmSize": 42}}),
            "properties.hardwareProfile.vmSize",
        ),
        (
            put_body(
                properties={
                    **put_body()["properties"],
                    "osProfile": {"windowsConfiguration": {"patchSettings": {"patchMode": "Sometimes"}}},
                }
            ),
            "properties.osProfile.windowsConfiguration.patchSettings.patchMode",
        ),
        (
            put_body(
                properties={
                    **put_body()["properties"],
                    "osProfile": {"windowsConfiguration": {"enableAutomaticUpdates": "yes"}},
                }
            ),
            "properties.osProfile.windowsConfiguration.enableAutomaticUpdates",
        ),
        (
            put_body(
                properties={
                    **put_body()["properties"],
                    "osProfile": {"windowsConfiguration": {"timeZone": "Mars/Olympus"}},
                }
            ),
            "properties.osProfile.windowsConfiguration.timeZone",
        ),
    ]
    for body, target in cases:
        response = api.put(path, body)
        assert response.status_code == 400, (target, response.content)
        assert error_of(response)["code"] == "InvalidParameter" and error_of(response)["target"] == target
    assert not VirtualMachine.objects.filter(name="app-02").exists()


def test_put_refuses_hotpatch_until_the_preview_is_registered(api, fleet):
    FeatureRegistration.objects.filter(subscription=fleet["contoso"]).delete()
    response = api.put(vm_path(fleet["web1"]).replace("web-01", "app-03"), put_body())
    assert response.status_code == 400
    error = error_of(response)
    assert error["target"] == "properties.osProfile.windowsConfiguration.patchSettings.enableHotpatching"
    assert "InGuestHotPatchVMPreview" in error["message"]
    # Asking for another orchestration on the same image needs no preview.
    settings = {"windowsConfiguration": {"patchSettings": {"patchMode": "AutomaticByOS"}}}
    body = put_body(properties={**put_body()["properties"], "osProfile": settings})
    created = api.put(vm_path(fleet["web1"]).replace("web-01", "app-03"), body)
    assert created.status_code == 201
    assert dig(created.json(), *WINDOWS, "patchSettings", "enableHotpatching") is False


def test_patch_and_put_change_patch_settings_with_the_portals_rules(api, fleet):
    vm = fleet["web1"]
    ps = "properties.osProfile.windowsConfiguration.patchSettings"
    off = {"properties": {"osProfile": {"windowsConfiguration": {"patchSettings": {"enableHotpatching": False}}}}}
    response = api.patch(vm_path(vm), off)
    assert response.status_code == 200 and "Azure-AsyncOperation" in response
    assert dig(response.json(), *WINDOWS, "patchSettings", "enableHotpatching") is False
    vm.refresh_from_db()
    assert vm.enable_hotpatching is False and vm.hotpatch_disabled_at is not None

    on = {"properties": {"osProfile": {"windowsConfiguration": {"patchSettings": {"enableHotpatching": True}}}}}
    refused = api.patch(vm_path(vm), on)
    assert refused.status_code == 400 and error_of(refused)["target"] == f"{ps}.enableHotpatching"
    assert "next baseline" in error_of(refused)["message"]

    manual = {"properties": {"osProfile": {"windowsConfiguration": {"patchSettings": {"patchMode": "Manual"}}}}}
    refused = api.patch(vm_path(vm), manual)
    assert refused.status_code == 400
    assert error_of(refused)["target"] == "properties.osProfile.windowsConfiguration.enableAutomaticUpdates"

    # PUT with the VM's own GET body (read-only fields and all) and one change: a round trip.
    body = api.get(vm_path(vm)).json()
    body["properties"]["osProfile"]["windowsConfiguration"]["patchSettings"]["automaticByPlatformSettings"][
        "rebootSetting"
    ] = "Always"
    body["properties"]["hardwareProfile"]["vmSize"] = "Standard_D8s_v5"
    updated = api.put(vm_path(vm), body)
    assert updated.status_code == 200
    vm.refresh_from_db()
    assert vm.reboot_setting == "Always" and vm.size == "Standard_D8s_v5"


def test_immutable_properties_are_refused_and_nothing_half_written(api, fleet):
    vm = fleet["web1"]
    body = api.get(vm_path(vm)).json()
    body["properties"]["hardwareProfile"]["vmSize"] = "Standard_D16s_v5"
    body["properties"]["storageProfile"]["imageReference"]["sku"] = "2019-datacenter"
    response = api.put(vm_path(vm), body)
    assert response.status_code == 409 and error_of(response)["code"] == "PropertyChangeNotAllowed"
    assert error_of(response)["target"] == "properties.storageProfile.imageReference"
    # A valid size with invalid settings: the size is not kept either.
    bad = {
        "properties": {
            "hardwareProfile": {"vmSize": "Standard_D16s_v5"},
            "osProfile": {"windowsConfiguration": {"patchSettings": {"patchMode": "AutomaticByOS"}}},
        }
    }
    assert api.patch(vm_path(vm), bad).status_code == 400
    vm.refresh_from_db()
    assert vm.size == "Standard_D2s_v5" and vm.patch_mode == "AutomaticByPlatform"


def test_delete_is_a_long_running_operation(api, fleet):
    vm = fleet["web2"]
    running, _ = services.start_operation(vm, OperationKind.ASSESSMENT, enqueue=False)
    response = api.delete(vm_path(vm))
    assert response.status_code == 202 and response.content == b""
    assert not VirtualMachine.objects.filter(pk=vm.pk).exists()
    auth = {"Authorization": f"Bearer {api.token}"}
    status = api.client.get(response["Azure-AsyncOperation"], headers=auth)
    assert status.json()["status"] == "Succeeded" and status.json()["endTime"]
    assert api.client.get(response["Location"], headers=auth).status_code == 204
    # The run in flight failed cleanly and stays in the history.
    assert Operation.objects.get(pk=running.pk).error_code == "VMDeleted"
    assert api.delete(vm_path(vm)).status_code == 204


def test_an_operation_name_cannot_be_forged_or_reused_elsewhere(api, fleet):
    response = api.delete(vm_path(fleet["web2"]))
    auth = {"Authorization": f"Bearer {api.token}"}
    url = response["Azure-AsyncOperation"]
    assert api.client.get(url.replace("/operations/", "/operations/x"), headers=auth).status_code == 404
    other = url.replace(str(fleet["contoso"].pk), str(fleet["fabrikam"].pk))
    assert api.client.get(other, headers=auth).status_code == 404


def test_power_actions_are_long_running_operations(api, fleet):
    vm = fleet["web1"]
    auth = {"Authorization": f"Bearer {api.token}"}
    for action, state in (("powerOff", "stopped"), ("start", "running"), ("deallocate", "deallocated")):
        response = api.post(vm_path(vm, f"/{action}"))
        assert response.status_code == 202, action
        assert api.client.get(response["Azure-AsyncOperation"], headers=auth).json()["status"] == "Succeeded"
        vm.refresh_from_db()
        assert vm.power_state == state
    refused = api.post(vm_path(vm, "/restart"))
    assert refused.status_code == 409 and "deallocated" in error_of(refused)["message"]
    api.post(vm_path(vm, "/start"))
    assert api.post(vm_path(vm, "/restart")).status_code == 202
    assert api.post(vm_path(fleet["ro1"], "/powerOff")).status_code == 403  # a Reader


def test_reading_one_vm_takes_a_few_queries_whatever_the_fleet(api, fleet, django_assert_max_num_queries):
    for n in range(5):
        make_vm(resource_group=fleet["web"], name=f"extra-{n}")
    # token, role, subscription, resource group, VM with guest, latest operations (2)
    with django_assert_max_num_queries(8):
        assert api.get(vm_path(fleet["web1"]), **{"$expand": "instanceView"}).status_code == 200
