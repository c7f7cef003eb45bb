"""The Microsoft.Maintenance API beyond the SDK: cancelling a scheduled run, VM tags for dynamic
scopes, and refusals in the ARM envelope (never a 500)."""

from datetime import timedelta

import pytest

from patching.maintenance import services
from patching.maintenance.models import RunStatus
from tests.arm_client import error_of, vm_path
from tests.test_maintenance_runs import START, body

pytestmark = pytest.mark.usefixtures("arm_settings")


@pytest.fixture
def config(fleet):
    config, _, _ = services.save_configuration(fleet["web"], "nightly", body())
    return config


def run_path(config, name: str) -> str:
    return config.arm_id.lstrip("/") + f"/applyUpdates/{name}"


def test_cancel_a_scheduled_run_until_ten_minutes_before(api, config, monkeypatch):
    from vms import clock

    monkeypatch.setattr(clock, "now", lambda: START - timedelta(hours=1))
    response = api.put(run_path(config, "20300604220000"), {"properties": {"status": "Cancel"}})
    assert response.status_code == 200, response.content
    assert response.json()["properties"]["status"] == "Cancelled"
    assert config.runs.get().status == RunStatus.CANCELLED and config.runs.get().cancelled_by == "alice"
    got = api.get(run_path(config, "20300604220000"))
    assert got.status_code == 200 and got.json()["name"] == "20300604220000"

    monkeypatch.setattr(clock, "now", lambda: START + timedelta(days=1) - timedelta(minutes=5))
    late = api.put(run_path(config, "20300605220000"), {"properties": {"status": "Cancel"}})
    assert late.status_code == 409 and "10 minutes" in error_of(late)["message"]


@pytest.mark.parametrize(
    "name, payload, status, code",
    [
        ("20300604220000", {"properties": {"status": "Pending"}}, 400, "InvalidParameter"),
        ("tomorrow", {"properties": {"status": "Cancel"}}, 400, "InvalidParameter"),
        ("20300604223000", {"properties": {"status": "Cancel"}}, 404, "ResourceNotFound"),
        ("20300604220000", [], 400, "InvalidRequestContent"),
    ],
)
def test_cancel_refusals(api, config, name, payload, status, code):
    response = api.put(run_path(config, name), payload)
    assert response.status_code == status and error_of(response)["code"] == code


def test_a_readers_cancel_is_forbidden(api, fleet):
    config, _, _ = services.save_configuration(fleet["ro1"].resource_group, "ro", body())
    response = api.put(run_path(config, "20300604220000"), {"properties": {"status": "Cancel"}})
    assert response.status_code == 403 and error_of(response)["code"] == "AuthorizationFailed"


def test_vm_tags_are_kept_and_shown(api, fleet):
    vm = fleet["web1"]
    response = api.patch(vm_path(vm), {"tags": {"env": "prod"}})
    assert response.status_code == 200 and response.json()["tags"] == {"env": "prod"}
    assert api.get(vm_path(vm)).json()["tags"] == {"env": "prod"}
    bad = api.patch(vm_path(vm), {"tags": {"env": 3}})
    assert bad.status_code == 400 and error_of(bad)["target"] == "tags"


@pytest.mark.parametrize(
    "payload",
    [
        {"location": "westeurope", "properties": {"maintenanceWindow": "Day"}},
        {"location": ["westeurope"], "properties": {"maintenanceScope": "InGuestPatch"}},
        {
            "location": "westeurope",
            "properties": {"maintenanceScope": "InGuestPatch", "installPatches": {"rebootSetting": ["x"]}},
        },
        {"location": "westeurope", "properties": {"maintenanceScope": "InGuestPatch", "preEventMinutes": 99}},
    ],
)
def test_malformed_configurations_are_400s(api, fleet, payload):
    path = f"subscriptions/{fleet['contoso'].pk}/resourceGroups/rg-web/providers/Microsoft.Maintenance/maintenanceConfigurations/x"
    response = api.put(path, payload)
    assert response.status_code == 400 and error_of(response)["code"] == "InvalidParameter"


def test_a_dynamic_scope_in_another_users_subscription_is_not_found(api, config, fleet):
    path = f"subscriptions/{fleet['bobs'].pk}/providers/Microsoft.Maintenance/configurationAssignments/x"
    response = api.put(
        path, {"properties": {"maintenanceConfigurationId": config.arm_id, "filter": {"osTypes": ["Windows"]}}}
    )
    assert response.status_code == 404 and error_of(response)["code"] == "SubscriptionNotFound"
