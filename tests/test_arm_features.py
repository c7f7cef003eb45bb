"""Microsoft.Features and provider registration through the ARM API: the portal's state machine."""

import pytest

from tests.arm_client import error_of
from tests.factories import make_subscription
from vms import features
from vms.models import FeatureRegistration, ProviderRegistration

pytestmark = pytest.mark.usefixtures("arm_settings")

NS = "providers/Microsoft.Features/providers/Microsoft.Compute/features"


def test_register_get_list_and_unregister_a_feature(api, alice, django_capture_on_commit_callbacks):
    sub = make_subscription("New", user=alice, onboarded=False).pk
    base = f"subscriptions/{sub}/{NS}"
    feature = api.get(f"{base}/InGuestHotPatchVMPreview", api_version="2015-12-01").json()
    assert feature == {
        "id": f"/subscriptions/{sub}/providers/Microsoft.Features/providers/Microsoft.Compute/features/InGuestHotPatchVMPreview",
        "name": "Microsoft.Compute/InGuestHotPatchVMPreview",
        "type": "Microsoft.Features/providers/features",
        "properties": {"state": "NotRegistered"},
    }
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        registered = api.post(f"{base}/inguesthotpatchvmpreview/register", api_version="2015-12-01")
    assert registered.status_code == 200
    assert registered.json()["properties"]["state"] == "Registering"
    assert registered.json()["name"] == "Microsoft.Compute/InGuestHotPatchVMPreview"
    assert len(callbacks) == 1  # the settle task, scheduled after commit
    # Registering twice changes nothing (and schedules nothing).
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert api.post(f"{base}/InGuestHotPatchVMPreview/register").json()["properties"]["state"] == "Registering"
    assert callbacks == []

    row = FeatureRegistration.objects.get(subscription_id=sub, name="InGuestHotPatchVMPreview")
    features.settle(FeatureRegistration, row.pk, now=row.changed_at + features._registration_delay())
    assert api.get(f"{base}/InGuestHotPatchVMPreview").json()["properties"]["state"] == "Registered"

    listed = {f["name"]: f["properties"]["state"] for f in api.get(base).json()["value"]}
    assert listed == {
        "Microsoft.Compute/InGuestAutoPatchVMPreview": "NotRegistered",
        "Microsoft.Compute/InGuestHotPatchVMPreview": "Registered",
        "Microsoft.Compute/InGuestPatchVMPreview": "NotRegistered",
    }
    everything = api.get(f"subscriptions/{sub}/providers/Microsoft.Features/features").json()["value"]
    assert {f["name"] for f in everything} == set(listed)

    unregistered = api.post(f"{base}/InGuestHotPatchVMPreview/unregister")
    assert unregistered.json()["properties"]["state"] == "Unregistering"


def test_an_unknown_feature_is_not_found_and_not_stored(api, fleet):
    sub = fleet["contoso"].pk
    for response in (
        api.get(f"subscriptions/{sub}/{NS}/NoSuchFeature"),
        api.post(f"subscriptions/{sub}/{NS}/NoSuchFeature/register"),
        api.post(f"subscriptions/{sub}/providers/Microsoft.Features/providers/Contoso.Widgets/features/X/register"),
    ):
        assert response.status_code == 404 and error_of(response)["code"] == "FeatureNotFound"
    assert not FeatureRegistration.objects.filter(name__in=["NoSuchFeature", "X"]).exists()


def test_feature_operations_are_listed(api, db):
    names = [op["name"] for op in api.get("providers/Microsoft.Features/operations").json()["value"]]
    assert "Microsoft.Features/providers/features/register/action" in names


def test_register_and_get_a_provider(api, alice):
    sub = make_subscription("New", user=alice, onboarded=False).pk
    provider = api.get(f"subscriptions/{sub}/providers/microsoft.compute").json()
    assert provider["namespace"] == "Microsoft.Compute" and provider["registrationState"] == "NotRegistered"
    assert provider["resourceTypes"][0]["resourceType"] == "virtualMachines"

    # The Azure CLI sends Content-Type: application/json with no body; the SDK's auto-registration
    # policy uses api-version 2016-02-01.
    registered = api.post(f"subscriptions/{sub}/providers/Microsoft.Compute/register", api_version="2016-02-01")
    assert registered.status_code == 200 and registered.json()["registrationState"] == "Registering"
    assert ProviderRegistration.objects.get(subscription_id=sub).state == "Registering"
    consent = {"thirdPartyProviderConsent": {"consentToAuthorization": True}}
    assert api.post(f"subscriptions/{sub}/providers/Microsoft.Compute/register", consent).status_code == 200

    listed = api.get(f"subscriptions/{sub}/providers").json()["value"]
    assert {p["namespace"]: p["registrationState"] for p in listed} == {
        "Microsoft.Compute": "Registering",
        "Microsoft.Features": "NotRegistered",
    }
    assert api.post(f"subscriptions/{sub}/providers/Microsoft.Compute/unregister").json()["registrationState"] == (
        "Unregistering"
    )


def test_an_unknown_provider_is_not_found(api, fleet):
    response = api.post(f"subscriptions/{fleet['contoso'].pk}/providers/Contoso.Widgets/register")
    assert response.status_code == 404 and error_of(response)["code"] == "InvalidResourceNamespace"
    assert not ProviderRegistration.objects.filter(namespace="Contoso.Widgets").exists()
