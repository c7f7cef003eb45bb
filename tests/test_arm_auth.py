"""ARM API authentication (bearer API tokens) and authorisation (the portal's per-subscription roles)."""

import hashlib
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from tests.arm_client import ArmClient, error_of, vm_path
from vms.models import ApiToken

pytestmark = pytest.mark.usefixtures("arm_settings")


def assert_unauthenticated(response):
    assert response.status_code == 401
    assert error_of(response)["code"] == "InvalidAuthenticationToken"
    # A challenge would make the SDK's ARMChallengeAuthenticationPolicy try a claims challenge.
    assert "WWW-Authenticate" not in response
    assert response["x-ms-request-id"]


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Basic YWxpY2U6cHc=", "Token abc", "Bearer hpp_wrong", "Bearer  "],
)
def test_requests_without_a_valid_token_are_401(db, header):
    client = Client()
    headers = {"Authorization": header} if header is not None else {}
    assert_unauthenticated(client.get("/arm/subscriptions?api-version=2022-12-01", headers=headers))


def test_a_valid_token_authenticates_and_records_its_use(api, alice_token):
    token = ApiToken.objects.get()
    assert token.last_used_at is None
    before = timezone.now()
    response = api.get("subscriptions")
    assert response.status_code == 200
    token.refresh_from_db()
    assert before <= token.last_used_at <= timezone.now()


def test_tokens_are_stored_as_sha256_hashes_only(alice):
    token, secret = ApiToken.issue(alice, "ci")
    assert secret.startswith("hpp_") and len(secret) > 40
    assert token.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    stored = ApiToken.objects.filter(pk=token.pk).values().get()
    assert secret not in {str(v) for v in stored.values()}
    assert token.hint == secret[:10]


def test_revoked_and_expired_tokens_and_inactive_users_are_refused(db, alice):
    revoked, revoked_secret = ApiToken.issue(alice, "revoked")
    revoked.revoke()
    _, expired_secret = ApiToken.issue(alice, "expired", expires_at=timezone.now() - timedelta(seconds=1))
    _, future_secret = ApiToken.issue(alice, "future", expires_at=timezone.now() + timedelta(days=1))
    assert ArmClient(Client(), future_secret).get("subscriptions").status_code == 200
    assert_unauthenticated(ArmClient(Client(), revoked_secret).get("subscriptions"))
    assert_unauthenticated(ArmClient(Client(), expired_secret).get("subscriptions"))
    alice.is_active = False
    alice.save()
    assert_unauthenticated(ArmClient(Client(), future_secret).get("subscriptions"))


def test_a_session_login_is_not_enough(db, alice):
    client = Client()
    client.force_login(alice)
    assert_unauthenticated(client.get("/arm/subscriptions?api-version=2022-12-01"))


def test_a_token_never_reaches_another_users_subscription(api, fleet):
    assert [s["displayName"] for s in api.get("subscriptions").json()["value"]] == ["Contoso", "Fabrikam"]
    for path in (
        f"subscriptions/{fleet['bobs'].pk}",
        vm_path(fleet["bob1"]),
        f"subscriptions/{fleet['bobs'].pk}/providers/Microsoft.Compute/virtualMachines",
        f"subscriptions/{fleet['bobs'].pk}/providers/Microsoft.Features/features",
    ):
        response = api.get(path)
        assert response.status_code == 404, path
        assert error_of(response)["code"] == "SubscriptionNotFound"
    response = api.post(vm_path(fleet["bob1"], "/assessPatches"))
    assert response.status_code == 404 and error_of(response)["code"] == "SubscriptionNotFound"


def test_a_reader_reads_but_does_not_act(api, fleet):
    vm = fleet["ro1"]
    assert api.get(vm_path(vm), **{"$expand": "instanceView"}).status_code == 200
    for response in (
        api.post(vm_path(vm, "/assessPatches")),
        api.post(
            vm_path(vm, "/installPatches"),
            {"rebootSetting": "Never", "windowsParameters": {"classificationsToInclude": ["Security"]}},
        ),
        api.patch(vm_path(vm), {"properties": {}}),
        api.delete(vm_path(vm)),
        api.post(f"subscriptions/{fleet['fabrikam'].pk}/providers/Microsoft.Compute/register"),
        api.post(
            f"subscriptions/{fleet['fabrikam'].pk}/providers/Microsoft.Features/providers/Microsoft.Compute"
            "/features/InGuestHotPatchVMPreview/register"
        ),
    ):
        assert response.status_code == 403
        assert error_of(response)["code"] == "AuthorizationFailed"
        assert "Reader" in error_of(response)["message"]
    assert not vm.operations.exists()


def test_a_superuser_sees_every_subscription(fleet, django_user_model):
    root = django_user_model.objects.create_superuser("root", password="pw-root-123")
    secret = ApiToken.issue(root, "admin")[1]
    names = {s["displayName"] for s in ArmClient(Client(), secret).get("subscriptions").json()["value"]}
    assert names == {"Contoso", "Fabrikam", "Bob's"}


def test_csrf_does_not_apply_to_token_authenticated_api_calls(api, fleet):
    # api's client enforces CSRF checks like a browser-facing view would: the API is exempt.
    assert api.client.handler.enforce_csrf_checks
    assert api.post(vm_path(fleet["web1"], "/assessPatches")).status_code == 202


def test_create_api_token_command_prints_a_working_token(alice):
    out = StringIO()
    call_command("create_api_token", "alice", "--name", "ci", "--expires-in-days", "7", stdout=out)
    secret = out.getvalue().strip()
    token = ApiToken.objects.get(name="ci")
    assert token.user == alice and token.expires_at > timezone.now() + timedelta(days=6)
    assert ArmClient(Client(), secret).get("subscriptions").status_code == 200


def test_create_api_token_command_refuses_unknown_users(db):
    with pytest.raises(CommandError, match="no user 'nobody'"):
        call_command("create_api_token", "nobody")
