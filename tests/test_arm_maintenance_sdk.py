"""Conformance: the unmodified azure-mgmt-maintenance SDK (2.1, api-version 2023-04-01) drives the
portal's Microsoft.Maintenance API on a live server: configurations, VM and subscription-scope
(dynamic) assignments, applyUpdates, updates, and Azure's refusals.
"""

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.maintenance import models as m

from patching.maintenance.models import ConfigurationAssignment, MaintenanceConfiguration
from tests.factories import load_catalog, make_resource_group, make_subscription, make_vm
from tests.sdk.clients import clients
from vms.models import ApiToken, VirtualMachine
from vms.patch_settings import defaults_for_image

PACIFIC_WINDOW = {
    "start_date_time": "2030-01-14 22:00",
    "duration": "03:55",
    "time_zone": "Pacific Standard Time",
    "recur_every": "Month Second Tuesday Offset3",
}


def configuration(**overrides) -> m.MaintenanceConfiguration:
    fields = {
        "location": "westeurope",
        "maintenance_scope": "InGuestPatch",
        "visibility": "Custom",
        "extension_properties": {"InGuestPatchMode": "User"},
        "install_patches": m.InputPatchConfiguration(
            reboot_setting="IfRequired",
            windows_parameters=m.InputWindowsParameters(
                classifications_to_include=["Critical", "Security"], kb_numbers_to_exclude=["5034439"]
            ),
        ),
        "tags": {"team": "web"},
        **PACIFIC_WINDOW,
    }
    fields.update(overrides)
    return m.MaintenanceConfiguration(**fields)


def scheduled_vm(rg, name, **fields):
    """Customer Managed Schedules: AutomaticByPlatform with bypassPlatformSafetyChecksOnUserSchedule."""
    settings = defaults_for_image("MicrosoftWindowsServer", "WindowsServer", "2022-datacenter-g2", rg.location)
    settings = settings.with_changes(
        patch_mode="AutomaticByPlatform", enable_hotpatching=False, bypass_platform_safety_checks=True
    )
    return make_vm(resource_group=rg, name=name, product="ws2022", settings=settings, **fields)


@pytest.fixture
def lab(live_server, transactional_db, django_user_model, settings):
    load_catalog()
    alice = django_user_model.objects.create_user("alice", password="pw-alice-123")
    bob = django_user_model.objects.create_user("bob", password="pw-bob-123")
    contoso = make_subscription("Contoso", user=alice, role="Contributor")
    fabrikam = make_subscription("Fabrikam", user=alice, role="Reader")
    bobs = make_subscription("Bob's", user=bob, role="Owner")
    rg = make_resource_group(contoso, "rg-web")
    other_rg = make_resource_group(bobs, "rg-bob")
    ro_rg = make_resource_group(fabrikam, "rg-ro")
    vms = {
        "web1": scheduled_vm(rg, "web-01", tags={"env": "prod"}),
        "web2": scheduled_vm(rg, "web-02", tags={"env": "test"}),
        "ro1": scheduled_vm(ro_rg, "ro-01"),
        "bob1": scheduled_vm(other_rg, "bob-01"),
    }
    token = ApiToken.issue(alice, "sdk")[1]
    sdk = clients(token, f"{live_server.url}/arm", str(contoso.pk))
    reader = clients(token, f"{live_server.url}/arm", str(fabrikam.pk))
    yield {"sdk": sdk, "reader": reader, "contoso": contoso, "fabrikam": fabrikam, "bobs": bobs, "rg": rg, **vms}
    for client in (*sdk.values(), *reader.values()):
        client.close()


def test_configuration_create_read_list_update_delete(lab):
    mc = lab["sdk"]["maintenance"]
    created = mc.maintenance_configurations.create_or_update("rg-web", "patch-tuesday", configuration())

    assert created.name == "patch-tuesday" and created.maintenance_scope == "InGuestPatch"
    assert created.id.lower().endswith(
        "/resourcegroups/rg-web/providers/microsoft.maintenance/maintenanceconfigurations/patch-tuesday"
    )
    assert (created.recur_every, created.time_zone, created.duration) == (
        "Month Second Tuesday Offset3",
        "Pacific Standard Time",
        "03:55",
    )
    assert created.install_patches.windows_parameters.kb_numbers_to_exclude == ["5034439"]
    assert created.extension_properties == {"InGuestPatchMode": "User"} and created.tags == {"team": "web"}
    assert created.system_data.created_by == "alice"

    got = mc.maintenance_configurations.get("RG-WEB", "Patch-Tuesday")
    assert got.start_date_time == "2030-01-14 22:00" and got.install_patches.reboot_setting == "IfRequired"
    assert [c.name for c in mc.maintenance_configurations.list()] == ["patch-tuesday"]
    assert [c.name for c in mc.maintenance_configurations_for_resource_group.list("rg-web")] == ["patch-tuesday"]

    patched = mc.maintenance_configurations.update(
        "rg-web",
        "patch-tuesday",
        m.MaintenanceConfiguration(location="westeurope", duration="02:00", recur_every="Week Saturday,Sunday"),
    )
    assert (patched.duration, patched.recur_every, patched.time_zone) == (
        "02:00",
        "Week Saturday,Sunday",
        "Pacific Standard Time",
    )

    replaced = mc.maintenance_configurations.create_or_update(
        "rg-web", "patch-tuesday", configuration(recur_every="Day", expiration_date_time="9999-12-31 23:59:59")
    )
    assert replaced.recur_every == "Day" and MaintenanceConfiguration.objects.count() == 1
    assert replaced.expiration_date_time == "9999-12-31 23:59:59"  # Azure's "never", as given

    mc.maintenance_configurations.delete("rg-web", "patch-tuesday")
    with pytest.raises(ResourceNotFoundError):
        mc.maintenance_configurations.get("rg-web", "patch-tuesday")
    mc.maintenance_configurations.delete("rg-web", "patch-tuesday")  # 204: already gone


@pytest.mark.parametrize(
    "override, target",
    [
        ({"recur_every": "Month Second Tuesday Offset7"}, "properties.maintenanceWindow.recurEvery"),
        ({"recur_every": "Fortnight"}, "properties.maintenanceWindow.recurEvery"),
        ({"duration": "04:00"}, "properties.maintenanceWindow.duration"),
        ({"duration": "01:00"}, "properties.maintenanceWindow.duration"),
        ({"time_zone": "Mars Standard Time"}, "properties.maintenanceWindow.timeZone"),
        ({"expiration_date_time": "2029-01-01 00:00"}, "properties.maintenanceWindow.expirationDateTime"),
        ({"maintenance_scope": "Host"}, "properties.maintenanceScope"),
    ],
)
def test_a_configuration_azure_would_refuse_is_refused_naming_the_field(lab, override, target):
    mc = lab["sdk"]["maintenance"]
    with pytest.raises(HttpResponseError) as refused:
        mc.maintenance_configurations.create_or_update("rg-web", "bad", configuration(**override))

    assert refused.value.status_code == 400
    assert refused.value.error.code == "InvalidParameter" and refused.value.error.target == target
    assert not MaintenanceConfiguration.objects.exists()


def test_static_assignment_on_a_vm(lab):
    mc = lab["sdk"]["maintenance"]
    config = mc.maintenance_configurations.create_or_update("rg-web", "nightly", configuration(recur_every="Day"))
    body = m.ConfigurationAssignment(location="westeurope", maintenance_configuration_id=config.id)

    assignment = mc.configuration_assignments.create_or_update(
        "rg-web", "Microsoft.Compute", "virtualMachines", "web-01", "nightly-web-01", body
    )
    assert assignment.maintenance_configuration_id == config.id
    assert assignment.resource_id == lab["web1"].arm_id
    assert assignment.id.endswith("/providers/Microsoft.Maintenance/configurationAssignments/nightly-web-01")
    got = mc.configuration_assignments.get("rg-web", "Microsoft.Compute", "virtualMachines", "web-01", "nightly-web-01")
    assert got.name == "nightly-web-01"
    listed = mc.configuration_assignments.list("rg-web", "Microsoft.Compute", "virtualMachines", "web-01")
    assert [a.name for a in listed] == ["nightly-web-01"]
    within = mc.configuration_assignments_within_subscription.list()
    assert [a.resource_id for a in within] == [lab["web1"].arm_id]

    mc.configuration_assignments.delete("rg-web", "Microsoft.Compute", "virtualMachines", "web-01", "nightly-web-01")
    assert not ConfigurationAssignment.objects.exists()


def test_assignment_refusals(lab):
    mc = lab["sdk"]["maintenance"]
    config = mc.maintenance_configurations.create_or_update("rg-web", "nightly", configuration(recur_every="Day"))
    body = m.ConfigurationAssignment(maintenance_configuration_id=config.id)

    # A configuration of a subscription the caller cannot see: not found.
    foreign = config.id.replace(str(lab["contoso"].pk), str(lab["bobs"].pk))
    with pytest.raises(HttpResponseError) as refused:
        mc.configuration_assignments.create_or_update(
            "rg-web",
            "Microsoft.Compute",
            "virtualMachines",
            "web-01",
            "x",
            m.ConfigurationAssignment(maintenance_configuration_id=foreign),
        )
    assert refused.value.status_code == 404

    # A VM of another subscription (Fabrikam, where Alice reads only): the Reader may not assign.
    reader = lab["reader"]["maintenance"]
    with pytest.raises(HttpResponseError) as refused:
        reader.configuration_assignments.create_or_update(
            "rg-ro", "Microsoft.Compute", "virtualMachines", "ro-01", "x", body
        )
    assert refused.value.status_code == 403 and refused.value.error.code == "AuthorizationFailed"

    # A dynamic scope with no criteria.
    with pytest.raises(HttpResponseError) as refused:
        mc.configuration_assignments_for_subscriptions.create_or_update(
            "empty",
            m.ConfigurationAssignment(
                maintenance_configuration_id=config.id, filter=m.ConfigurationAssignmentFilterProperties()
            ),
        )
    assert refused.value.status_code == 400 and refused.value.error.code == "InvalidParameter"
    assert "criterion" in refused.value.error.message
    assert not ConfigurationAssignment.objects.exists()


def test_the_static_machine_limit_is_azures_quota_error(lab, settings):
    settings.PORTAL_MAINTENANCE_MAX_MACHINES = 1
    mc = lab["sdk"]["maintenance"]
    config = mc.maintenance_configurations.create_or_update("rg-web", "nightly", configuration(recur_every="Day"))
    body = m.ConfigurationAssignment(maintenance_configuration_id=config.id)
    mc.configuration_assignments.create_or_update("rg-web", "Microsoft.Compute", "virtualMachines", "web-01", "a", body)

    with pytest.raises(HttpResponseError) as refused:
        mc.configuration_assignments.create_or_update(
            "rg-web", "Microsoft.Compute", "virtualMachines", "web-02", "a", body
        )
    assert refused.value.status_code == 409 and refused.value.error.code == "QuotaExceeded"
    assert ConfigurationAssignment.objects.count() == 1


def test_dynamic_scope_at_subscription_scope(lab):
    mc = lab["sdk"]["maintenance"]
    config = mc.maintenance_configurations.create_or_update("rg-web", "nightly", configuration(recur_every="Day"))
    scope = m.ConfigurationAssignment(
        maintenance_configuration_id=config.id,
        filter=m.ConfigurationAssignmentFilterProperties(
            resource_groups=["rg-web"],
            os_types=["Windows"],
            locations=["West Europe"],
            tag_settings=m.TagSettingsProperties(tags={"env": ["prod"]}, filter_operator="Any"),
        ),
    )
    created = mc.configuration_assignments_for_subscriptions.create_or_update("prod-web", scope)

    assert created.resource_id == f"/subscriptions/{lab['contoso'].pk}"
    assert created.filter.tag_settings.tags == {"env": ["prod"]} and created.filter.resource_groups == ["rg-web"]
    got = mc.configuration_assignments_for_subscriptions.get("prod-web")
    assert got.filter.tag_settings.filter_operator == "Any"
    assert [a.name for a in mc.configuration_assignments_within_subscription.list()] == ["prod-web"]

    from patching.maintenance.scope import in_scope

    stored = MaintenanceConfiguration.objects.get()
    assert set(in_scope(stored).values_list("name", flat=True)) == {"web-01"}

    mc.configuration_assignments_for_subscriptions.delete("prod-web")
    with pytest.raises(ResourceNotFoundError):
        mc.configuration_assignments_for_subscriptions.get("prod-web")


def test_apply_updates_and_pending_updates(lab):
    mc = lab["sdk"]["maintenance"]
    config = mc.maintenance_configurations.create_or_update("rg-web", "nightly", configuration(recur_every="Day"))
    mc.configuration_assignments.create_or_update(
        "rg-web",
        "Microsoft.Compute",
        "virtualMachines",
        "web-01",
        "a",
        m.ConfigurationAssignment(maintenance_configuration_id=config.id),
    )

    pending = list(mc.updates.list("rg-web", "Microsoft.Compute", "virtualMachines", "web-01"))
    assert len(pending) == 1 and pending[0].maintenance_scope == "InGuestPatch" and pending[0].impact_type == "Restart"

    applied = mc.apply_updates.create_or_update("rg-web", "Microsoft.Compute", "virtualMachines", "web-01")
    assert applied.status == "Pending" and applied.resource_id == lab["web1"].arm_id
    again = mc.apply_updates.get("rg-web", "Microsoft.Compute", "virtualMachines", "web-01", applied.name)
    assert again.name == applied.name
    operation = VirtualMachine.objects.get(pk=lab["web1"].pk).operations.get()
    assert operation.parameters["windowsParameters"]["kbNumbersToExclude"] == ["5034439"]


def test_a_reader_reads_and_another_user_sees_nothing(lab):
    mc = lab["sdk"]["maintenance"]
    mc.maintenance_configurations.create_or_update("rg-web", "nightly", configuration(recur_every="Day"))
    reader = lab["reader"]["maintenance"]
    assert list(reader.maintenance_configurations.list()) == []
    with pytest.raises(HttpResponseError) as refused:
        reader.maintenance_configurations.create_or_update("rg-ro", "mine", configuration())
    assert refused.value.status_code == 403


def test_another_users_configurations_are_not_found(lab, live_server, django_user_model):
    lab["sdk"]["maintenance"].maintenance_configurations.create_or_update(
        "rg-web", "nightly", configuration(recur_every="Day")
    )
    bob = django_user_model.objects.get(username="bob")
    bobs = clients(ApiToken.issue(bob, "x")[1], f"{live_server.url}/arm", str(lab["contoso"].pk))
    try:
        with pytest.raises(HttpResponseError) as refused:
            bobs["maintenance"].maintenance_configurations.get("rg-web", "nightly")
        assert refused.value.status_code == 404 and refused.value.error.code == "SubscriptionNotFound"
    finally:
        for client in bobs.values():
            client.close()


def test_dynamic_scope_at_resource_group_scope_and_the_providers_lists(lab):
    mc = lab["sdk"]["maintenance"]
    config = mc.maintenance_configurations.create_or_update("rg-web", "nightly", configuration(recur_every="Day"))
    # At resource-group scope the group itself is the criterion: an empty filter is fine.
    created = mc.configuration_assignments_for_resource_group.create_or_update(
        "rg-web", "all-of-web", m.ConfigurationAssignment(maintenance_configuration_id=config.id)
    )
    assert created.resource_id == f"/subscriptions/{lab['contoso'].pk}/resourceGroups/rg-web"
    assert mc.configuration_assignments_for_resource_group.get("rg-web", "all-of-web").name == "all-of-web"

    from patching.maintenance.scope import in_scope

    assert set(in_scope(MaintenanceConfiguration.objects.get()).values_list("name", flat=True)) == {"web-01", "web-02"}
    mc.configuration_assignments_for_resource_group.delete("rg-web", "all-of-web")
    assert not ConfigurationAssignment.objects.exists()

    assert list(mc.public_maintenance_configurations.list()) == []
    assert any(op.name == "Microsoft.Maintenance/maintenanceConfigurations/write" for op in mc.operations.list())
    assert list(mc.apply_update_for_resource_group.list("rg-web")) == []
