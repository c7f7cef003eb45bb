"""Conformance: the unmodified official Azure SDK for Python drives the portal's ARM API.

A live server (pytest-django's live_server, plain http) on PostgreSQL, and the real Celery worker
over Redis doing the work: the SDK's long-running-operation pollers see the Operation rows the worker
advances. Packages: azure-mgmt-compute (current: 39.x), azure-mgmt-resource, azure-mgmt-resource-
features, azure-mgmt-resource-subscriptions. The previous generation of azure-mgmt-compute is driven
by tests/test_arm_sdk37.py.
"""

from datetime import timedelta

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.mgmt.compute import models as compute_models
from django.db import connections

from patching.models import GuestState, Operation, OperationKind, OperationStatus
from tests.conftest import WORKER_SETTINGS
from tests.factories import load_catalog, make_resource_group, make_subscription, make_vm
from tests.helpers import wait_for
from tests.sdk.clients import clients
from vms.models import ApiToken, FeatureRegistration, ProviderRegistration, VirtualMachine

CRITICAL_SECURITY = ["Critical", "Security"]


@pytest.fixture
def lab(live_server, live_worker, settings, django_user_model):
    """Alice (Contributor on Contoso) with an API token, two VMs, and SDK clients on the live server."""
    settings.PORTAL_ARM_RETRY_AFTER = 0
    settings.PORTAL_REGISTRATION_SECONDS = int(WORKER_SETTINGS["PORTAL_REGISTRATION_SECONDS"])
    load_catalog()
    alice = django_user_model.objects.create_user("alice", password="pw-alice-123")
    bob = django_user_model.objects.create_user("bob", password="pw-bob-123")
    contoso = make_subscription("Contoso", user=alice, role="Contributor", onboarded=False)
    make_subscription("Bob's", user=bob, role="Owner")
    rg = make_resource_group(contoso, "rg-web")
    hotpatch_vm = make_vm(resource_group=rg, name="web-01")  # 2022 Azure Edition, hotpatch on
    # A month behind: the monthly LCU, .NET, the MSRT and more are available.
    classic_vm = make_vm(resource_group=rg, name="web-02", product="ws2022", behind_by_months=1)
    token = ApiToken.issue(alice, "sdk tests")[1]
    sdk = clients(token, f"{live_server.url}/arm", str(contoso.pk))
    yield {
        "sdk": sdk,
        "subscription": contoso,
        "rg": rg,
        "hotpatch_vm": hotpatch_vm,
        "classic_vm": classic_vm,
        "alice": alice,
        "token": token,
        "url": live_server.url,
    }
    # Close the clients' keep-alive connections: the live server's request threads (and their
    # database connections) end with them, before the test database is dropped.
    for client in sdk.values():
        client.close()


def test_get_vm_with_instance_view(lab):
    compute = lab["sdk"]["compute"]
    vm = compute.virtual_machines.get("rg-web", "web-01", expand="instanceView")

    assert vm.id == lab["hotpatch_vm"].arm_id and vm.location == "westeurope"
    patch_settings = vm.os_profile.windows_configuration.patch_settings
    assert patch_settings.patch_mode == "AutomaticByPlatform" and patch_settings.enable_hotpatching is True
    assert patch_settings.automatic_by_platform_settings.reboot_setting == "IfRequired"
    assert vm.storage_profile.image_reference.sku == "2022-datacenter-azure-edition-hotpatch"
    codes = [s.code for s in vm.instance_view.statuses]
    assert "PowerState/running" in codes
    assert vm.instance_view.patch_status.configuration_statuses

    # Case-insensitive names, and the bare instanceView route.
    view = compute.virtual_machines.instance_view("RG-WEB", "WEB-01")
    assert view.computer_name == "web-01" and view.os_name.startswith("Windows Server 2022")


def test_assess_patches_returns_the_available_patches_and_updates_the_instance_view(lab):
    compute = lab["sdk"]["compute"]
    result = compute.virtual_machines.begin_assess_patches("rg-web", "web-02").result()

    assert result.status == "Succeeded"
    operation = Operation.objects.get(activity_id=result.assessment_activity_id)
    assert operation.user == lab["alice"]  # the portal's history shows who ran it, via the API
    kbs = {p.kb_id for p in result.available_patches}
    assert kbs == {r.update.kb for r in operation.results.select_related("update")} and "890830" in kbs
    assert result.critical_and_security_patch_count == operation.critical_security_count >= 1
    assert all(p.classifications and p.version == "" for p in result.available_patches)
    assert {c for p in result.available_patches for c in p.classifications} <= {
        "Security Updates",
        "Critical Updates",
        "Update Rollups",
        "Definition Updates",
        "Updates",
    }
    assert result.start_date_time is not None

    summary = compute.virtual_machines.instance_view("rg-web", "web-02").patch_status.available_patch_summary
    assert summary.assessment_activity_id == result.assessment_activity_id
    assert summary.status == "Succeeded"
    assert summary.critical_and_security_patch_count == result.critical_and_security_patch_count


def test_install_patches_with_classifications_and_kb_filters_returns_correct_counts(lab):
    compute = lab["sdk"]["compute"]
    assessment = compute.virtual_machines.begin_assess_patches("rg-web", "web-02").result()
    available = {p.kb_id: p for p in assessment.available_patches}
    security = [kb for kb, p in available.items() if "Security Updates" in p.classifications]
    assert len(security) >= 2, available  # the month's LCU and .NET update
    excluded = security[-1]
    included = "890830"  # the MSRT: Update Rollups, chosen by KB

    parameters = compute_models.VirtualMachineInstallPatchesParameters(
        maximum_duration=timedelta(hours=4),  # SDK 39 sends "PT04H00M00S"
        reboot_setting="IfRequired",
        windows_parameters=compute_models.WindowsParameters(
            classifications_to_include=CRITICAL_SECURITY,
            kb_numbers_to_include=[included],
            kb_numbers_to_exclude=[excluded],
        ),
    )
    result = compute.virtual_machines.begin_install_patches("rg-web", "web-02", parameters).result()

    selected = {kb for kb in security if kb != excluded} | {included}
    assert result.excluded_patch_count == 1
    assert result.not_selected_patch_count == len(available) - len(selected) - 1
    assert result.installed_patch_count + result.failed_patch_count == len(selected)
    assert result.pending_patch_count == 0 and result.maintenance_window_exceeded is False
    states = {p.kb_id: p.installation_state for p in result.patches}
    assert states[excluded] == "Excluded" and states[included] in ("Installed", "Failed")
    assert result.status in ("Succeeded", "CompletedWithWarnings")
    rebooting = {kb for kb, p in available.items() if p.reboot_behavior == "AlwaysRequiresReboot"}
    installed = {kb for kb, state in states.items() if state == "Installed"}
    # rebootSetting IfRequired: a reboot exactly when an installed update needs one.
    assert result.reboot_status == ("Completed" if installed & rebooting else "NotNeeded")
    operation = Operation.objects.get(activity_id=result.installation_activity_id)
    assert operation.parameters["maximumDuration"] == "PT4H"

    summary = compute.virtual_machines.instance_view("rg-web", "web-02").patch_status.last_patch_installation_summary
    assert summary.installation_activity_id == result.installation_activity_id
    assert summary.excluded_patch_count == 1


def test_a_concurrent_second_assessment_raises_resource_exists(lab):
    compute = lab["sdk"]["compute"]
    vm = lab["classic_vm"]
    # Hold the guest row: the worker's assessment cannot record its outcome until we let go, so the
    # first operation is deterministically still in flight when the second request arrives.
    connection = connections.create_connection("default")
    try:
        with connection.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute(f"SELECT 1 FROM {GuestState._meta.db_table} WHERE vm_id = %s FOR UPDATE", [vm.pk])
        poller = compute.virtual_machines.begin_assess_patches("rg-web", "web-02")
        with pytest.raises(ResourceExistsError) as raised:
            compute.virtual_machines.begin_assess_patches("rg-web", "web-02")
        running = Operation.objects.in_flight().get(vm=vm, kind=OperationKind.ASSESSMENT)
        assert raised.value.status_code == 409
        assert raised.value.error.code == "OperationNotAllowed"
        assert str(running.activity_id) in raised.value.error.message
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ROLLBACK")
        connection.close()
    assert poller.result().status == "Succeeded"


def test_a_bad_classification_is_an_invalid_parameter_with_its_target(lab):
    compute = lab["sdk"]["compute"]
    with pytest.raises(HttpResponseError) as raised:
        compute.virtual_machines.begin_install_patches(
            "rg-web",
            "web-02",
            {"rebootSetting": "IfRequired", "windowsParameters": {"classificationsToInclude": ["Critical", "Bogus"]}},
        )
    assert raised.value.status_code == 400
    assert raised.value.error.code == "InvalidParameter"
    assert raised.value.error.target == "windowsParameters.classificationsToInclude"
    assert not Operation.objects.filter(kind=OperationKind.INSTALLATION).exists()


def test_a_missing_vm_raises_resource_not_found(lab):
    compute = lab["sdk"]["compute"]
    with pytest.raises(ResourceNotFoundError) as raised:
        compute.virtual_machines.get("rg-web", "no-such-vm")
    assert raised.value.error.code == "ResourceNotFound"
    with pytest.raises(ResourceNotFoundError):
        compute.virtual_machines.begin_assess_patches("rg-web", "no-such-vm")
    with pytest.raises(ResourceNotFoundError) as raised:
        compute.virtual_machines.get("rg-nope", "web-01")
    assert raised.value.error.code == "ResourceGroupNotFound"


def test_a_platform_failure_fails_the_operation(lab):
    compute = lab["sdk"]["compute"]
    assert compute.virtual_machines.begin_deallocate("rg-web", "web-02").result() is None
    view = compute.virtual_machines.instance_view("rg-web", "web-02")
    assert "PowerState/deallocated" in [s.code for s in view.statuses]

    poller = compute.virtual_machines.begin_assess_patches("rg-web", "web-02")
    with pytest.raises(HttpResponseError) as raised:
        poller.result()
    assert raised.value.error.code == "VMNotRunning"
    assert poller.status() == "Failed"

    compute.virtual_machines.begin_start("rg-web", "web-02").result()
    assert compute.virtual_machines.begin_assess_patches("rg-web", "web-02").result().status == "Succeeded"


def test_a_wrong_token_raises_client_authentication_error(lab):
    compute = clients("hpp_not-a-token", f"{lab['url']}/arm", str(lab["subscription"].pk))["compute"]
    with compute, pytest.raises(ClientAuthenticationError) as raised:
        compute.virtual_machines.get("rg-web", "web-01")
    assert raised.value.error.code == "InvalidAuthenticationToken"
    assert "WWW-Authenticate" not in raised.value.response.headers


def test_feature_registration_goes_registering_then_registered(lab):
    features = lab["sdk"]["features"].features
    feature = features.register("Microsoft.Compute", "InGuestHotPatchVMPreview")
    assert feature.properties.state == "Registering"
    assert feature.name == "Microsoft.Compute/InGuestHotPatchVMPreview"

    wait_for(
        lambda: features.get("Microsoft.Compute", "InGuestHotPatchVMPreview").properties.state == "Registered",
        timeout=30,
        message="the worker to settle the registration",
    )
    states = {f.name: f.properties.state for f in features.list("Microsoft.Compute")}
    assert states["Microsoft.Compute/InGuestHotPatchVMPreview"] == "Registered"
    assert states["Microsoft.Compute/InGuestAutoPatchVMPreview"] == "NotRegistered"
    assert {f.name for f in features.list_all()} >= set(states)

    assert features.unregister("Microsoft.Compute", "InGuestHotPatchVMPreview").properties.state == "Unregistering"
    row = FeatureRegistration.objects.get(subscription=lab["subscription"], name="InGuestHotPatchVMPreview")
    assert row.state == "Unregistering"  # the same row the portal's preview-features page shows


def test_provider_registration_works(lab):
    providers = lab["sdk"]["resources"].providers
    provider = providers.register("Microsoft.Compute")
    assert provider.namespace == "Microsoft.Compute" and provider.registration_state == "Registering"
    wait_for(
        lambda: providers.get("Microsoft.Compute").registration_state == "Registered",
        timeout=30,
        message="the provider to be registered",
    )
    assert ProviderRegistration.objects.get(subscription=lab["subscription"]).state == "Registered"


def test_subscription_client_lists_only_the_callers_subscriptions(lab):
    subscriptions = list(lab["sdk"]["subscriptions"].subscriptions.list())
    assert [s.subscription_id for s in subscriptions] == [str(lab["subscription"].pk)]
    assert subscriptions[0].display_name == "Contoso" and subscriptions[0].state == "Enabled"
    assert lab["sdk"]["subscriptions"].subscriptions.get(str(lab["subscription"].pk)).display_name == "Contoso"
    assert [t.tenant_id for t in lab["sdk"]["subscriptions"].tenants.list()]


def test_listing_vms_follows_next_links(lab, settings):
    settings.PORTAL_ARM_PAGE_SIZE = 1
    make_vm(resource_group=lab["rg"], name="web-03")
    compute = lab["sdk"]["compute"]
    assert [vm.name for vm in compute.virtual_machines.list("rg-web")] == ["web-01", "web-02", "web-03"]
    assert len(list(compute.virtual_machines.list_all(expand="instanceView"))) == 3


def test_create_update_and_delete_a_vm(lab):
    compute = lab["sdk"]["compute"]
    # The preview's onboarding first: without it, hotpatch cannot be turned on (the preview gate).
    for name in FeatureRegistration.HOTPATCH_FEATURES:
        FeatureRegistration.objects.create(subscription=lab["subscription"], name=name, state="Registered")
    ProviderRegistration.objects.create(
        subscription=lab["subscription"], namespace="Microsoft.Compute", state="Registered"
    )

    body = compute_models.VirtualMachine(
        location="westeurope",
        zones=["2"],
        hardware_profile=compute_models.HardwareProfile(vm_size="Standard_D4s_v5"),
        storage_profile=compute_models.StorageProfile(
            image_reference=compute_models.ImageReference(
                publisher="MicrosoftWindowsServer",
                offer="WindowsServer",
                sku="2025-datacenter-azure-edition",
                version="latest",
            )
        ),
        os_profile=compute_models.OSProfile(
            computer_name="app-01",
            admin_username="azureuser",
            admin_password="Secret-Passw0rd!",
            windows_configuration=compute_models.WindowsConfiguration(
                provision_vm_agent=True,
                enable_automatic_updates=True,
                patch_settings=compute_models.PatchSettings(patch_mode="AutomaticByPlatform", enable_hotpatching=True),
            ),
        ),
    )
    vm = compute.virtual_machines.begin_create_or_update("rg-web", "app-01", body).result()
    assert vm.name == "app-01" and vm.zones == ["2"] and vm.hardware_profile.vm_size == "Standard_D4s_v5"
    assert vm.os_profile.windows_configuration.patch_settings.enable_hotpatching is True
    created = VirtualMachine.objects.get(name="app-01")
    assert created.product == "ws2025-azure" and created.zone == "2"
    # Like the portal's create form: the new VM's first assessment is queued.
    wait_for(
        lambda: created.operations.filter(kind=OperationKind.ASSESSMENT, status=OperationStatus.SUCCEEDED).exists(),
        timeout=30,
        message="the first assessment",
    )

    update = compute_models.VirtualMachineUpdate(
        os_profile=compute_models.OSProfile(
            windows_configuration=compute_models.WindowsConfiguration(
                patch_settings=compute_models.PatchSettings(
                    automatic_by_platform_settings=compute_models.WindowsVMGuestPatchAutomaticByPlatformSettings(
                        reboot_setting="Never"
                    )
                )
            )
        )
    )
    vm = compute.virtual_machines.begin_update("rg-web", "app-01", update).result()
    assert vm.os_profile.windows_configuration.patch_settings.automatic_by_platform_settings.reboot_setting == "Never"
    before = vm.etag

    # PUT on the existing VM: what the SDK round-trips after a get, with hotpatch turned off.
    vm.os_profile.windows_configuration.patch_settings.enable_hotpatching = False
    vm = compute.virtual_machines.begin_create_or_update(
        "rg-web", "app-01", vm, etag=before, match_condition=MatchConditions.IfNotModified
    ).result()
    assert vm.os_profile.windows_configuration.patch_settings.enable_hotpatching is False
    assert vm.etag and vm.etag != before
    # The etag the SDK read before that change is stale now: 412, nothing written.
    with pytest.raises(HttpResponseError) as raised:
        compute.virtual_machines.begin_update(
            "rg-web", "app-01", update, etag=before, match_condition=MatchConditions.IfNotModified
        )
    assert raised.value.status_code == 412
    created.refresh_from_db()
    assert created.enable_hotpatching is False and created.hotpatch_disabled_at is not None

    # Turning it straight back on is refused: re-enrolment waits for the next baseline (the seed's FAQ).
    vm.os_profile.windows_configuration.patch_settings.enable_hotpatching = True
    with pytest.raises(HttpResponseError) as raised:
        compute.virtual_machines.begin_create_or_update("rg-web", "app-01", vm)
    assert raised.value.error.code == "InvalidParameter"
    assert raised.value.error.target.endswith("patchSettings.enableHotpatching")

    assert compute.virtual_machines.begin_delete("rg-web", "app-01").result() is None
    assert not VirtualMachine.objects.filter(name="app-01").exists()
    with pytest.raises(ResourceNotFoundError):
        compute.virtual_machines.get("rg-web", "app-01")
    # Deleting what is not there is no error (ARM answers 204).
    assert compute.virtual_machines.begin_delete("rg-web", "app-01").result() is None


def test_creating_with_a_bad_image_is_an_invalid_parameter(lab):
    compute = lab["sdk"]["compute"]
    body = {
        "location": "westeurope",
        "properties": {
            "storageProfile": {"imageReference": {"publisher": "Canonical", "offer": "Ubuntu", "sku": "22_04-lts"}}
        },
    }
    with pytest.raises(HttpResponseError) as raised:
        compute.virtual_machines.begin_create_or_update("rg-web", "app-02", body)
    assert raised.value.error.code == "InvalidParameter"
    assert raised.value.error.target == "properties.storageProfile.imageReference"
    assert not VirtualMachine.objects.filter(name="app-02").exists()


def test_resource_groups_through_the_resource_client(lab):
    resources = lab["sdk"]["resources"]
    assert resources.resource_groups.check_existence("rg-web") is True
    assert resources.resource_groups.check_existence("rg-none") is False
    created = resources.resource_groups.create_or_update("rg-new", {"location": "northeurope"})
    assert created.name == "rg-new" and created.location == "northeurope"
    assert {rg.name for rg in resources.resource_groups.list()} == {"rg-web", "rg-new"}
    assert lab["subscription"].resource_groups.filter(name="rg-new", location="northeurope").exists()
