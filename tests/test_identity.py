"""The Azure CLI's identity endpoints and its access tokens, with the Django test client.

ADFS-style OpenID configuration, the client-credentials token endpoint (OAuth error shape, the same
words for every bad credential, rate limits per client id and per address), GET /arm/metadata/endpoints,
and the bearer check on the ARM API (signature, expiry, tenant, audience, revoked or expired principal,
another's subscription). tests/test_azure_cli.py drives the same with the real `az`.
"""

import hashlib
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core import signing
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from portal.arm import auth, identity
from tests.arm_client import ArmClient, error_of
from tests.factories import make_resource_group, make_subscription, make_vm
from vms import principals
from vms.models import RoleAssignment, ServicePrincipal

ROOT = Path(__file__).resolve().parent.parent
AUDIENCE = "https://management.hotpatch-portal.local/"
TENANT = "6f1c1e1a-1111-4222-8333-944455556666"


@pytest.fixture(autouse=True)
def identity_settings(settings):
    settings.PORTAL_TENANT_ID = settings.PORTAL_ARM_TENANT_ID = TENANT
    settings.PORTAL_ARM_AUDIENCE = AUDIENCE
    settings.PORTAL_TOKEN_FAILURES_PER_CLIENT = 3
    settings.PORTAL_TOKEN_FAILURES_PER_IP = 6
    # A cache of this test's own: failure counters never leak between tests (or into Redis).
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": f"identity-{time.time()}"}
    }
    return settings


@pytest.fixture
def world(db, django_user_model):
    """Olga owns Contoso (her principal 'ci' is Contributor there); Bob owns his own subscription."""
    olga = django_user_model.objects.create_user("olga", password="pw-olga-123")
    bob = django_user_model.objects.create_user("bob", password="pw-bob-123")
    contoso = make_subscription("Contoso", user=olga, role="Owner", onboarded=False)
    bobs = make_subscription("Bob's", user=bob, role="Owner")
    web = make_resource_group(contoso, "rg-web")
    make_vm(resource_group=web, name="web-01")
    make_vm(resource_group=make_resource_group(bobs, "rg-bob"), name="bob-01")
    principal, secret = principals.create(olga, "ci", contoso, "Contributor")
    return {"olga": olga, "bob": bob, "contoso": contoso, "bobs": bobs, "sp": principal, "secret": secret}


def token_request(client_id, secret, *, scope=AUDIENCE + "/.default", grant="client_credentials", secure=True, **extra):
    data = {"client_id": client_id, "client_secret": secret, "grant_type": grant, "client_info": "1", **extra}
    if scope is not None:
        data["scope"] = scope
    return Client().post("/adfs/oauth2/token/", data, secure=secure)


def sign_in(world) -> str:
    response = token_request(str(world["sp"].client_id), world["secret"])
    assert response.status_code == 200, response.content
    return response.json()["access_token"]


def arm(token: str) -> ArmClient:
    return ArmClient(Client(enforce_csrf_checks=True), token)


# --- Discovery ------------------------------------------------------------------------------------


def test_the_openid_configuration_names_the_token_route_byte_for_byte(db):
    response = Client().get("/adfs/.well-known/openid-configuration", secure=True)
    assert response.status_code == 200
    doc = response.json()
    assert doc["issuer"] == "https://testserver/adfs"
    assert doc["token_endpoint"] == "https://testserver/adfs/oauth2/token/"
    assert doc["authorization_endpoint"] == "https://testserver/adfs/oauth2/authorize/"


def test_cloud_metadata_needs_no_token_and_points_at_the_adfs_authority(db):
    response = Client().get("/arm/metadata/endpoints?api-version=2022-09-01", secure=True)
    assert response.status_code == 200
    body = response.json()
    assert body["authentication"]["loginEndpoint"] == "https://testserver/adfs"
    assert body["authentication"]["audiences"] == [AUDIENCE]
    assert body["resourceManager"] == "https://testserver/arm/"
    assert body["suffixes"] == {} and body["name"]
    # The CLI appends the path to --endpoint-resource-manager .../arm/: a double slash.
    assert Client().get("/arm//metadata/endpoints?api-version=2022-09-01", secure=True).status_code == 200


def test_the_tenant_defaults_to_a_stable_guid_derived_from_the_secret_key():
    import subprocess
    import sys
    import uuid

    code = "from django.conf import settings; print(settings.PORTAL_TENANT_ID)"

    def tenant(key: str) -> str:
        env = {"SECRET_KEY": key, "DJANGO_SETTINGS_MODULE": "portal.settings", "PATH": "/usr/bin:/bin"}
        out = subprocess.run(
            [sys.executable, "-c", f"import django; django.setup(); {code}"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    first, again, other = tenant("key-one"), tenant("key-one"), tenant("key-two")
    assert uuid.UUID(first) and first == again and first != other


# --- The token endpoint ---------------------------------------------------------------------------


def test_client_credentials_give_a_signed_bearer_token_for_the_audience(world):
    before = timezone.now()
    response = token_request(str(world["sp"].client_id), world["secret"])
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    claims = signing.loads(body["access_token"].removeprefix(auth.TOKEN_PREFIX), salt=auth.TOKEN_SALT)
    assert claims["tid"] == TENANT and claims["aud"] == AUDIENCE and claims["appid"] == str(world["sp"].client_id)
    assert claims["exp"] - claims["iat"] == 3600
    world["sp"].refresh_from_db()
    assert before <= world["sp"].last_used_at <= timezone.now()


def test_the_secret_is_stored_only_as_a_hash_and_the_principal_cannot_sign_in_to_the_pages(world):
    sp = ServicePrincipal.objects.get(pk=world["sp"].pk)
    assert sp.secret_hash == hashlib.sha256(world["secret"].encode()).hexdigest()
    assert world["secret"] not in repr(sp.__dict__) and sp.secret_hint == world["secret"][:9]
    assert not sp.user.is_active and not sp.user.has_usable_password()
    client = Client()  # through the sign-in page: django-axes wants the request (Client.login passes none)
    response = client.post(reverse("login"), {"username": sp.user.username, "password": world["secret"]})
    assert response.status_code == 200 and "_auth_user_id" not in client.session


def test_unknown_client_and_wrong_secret_get_the_same_oauth_error(world):
    wrong_secret = token_request(str(world["sp"].client_id), world["secret"] + "x")
    unknown = token_request("00000000-0000-4000-8000-000000000000", world["secret"])
    not_a_guid = token_request("ci", world["secret"])
    for response in (wrong_secret, unknown, not_a_guid):
        assert response.status_code == 401
        assert "no-store" in response["Cache-Control"]
        body = response.json()
        assert body == {"error": "invalid_client", "error_description": identity.BAD_CLIENT, "error_codes": [7000215]}
    # Nothing about the principal leaks: the name, the hint and the owner appear nowhere.
    for leak in (world["sp"].secret_hint, "olga", "Contoso", str(world["contoso"].pk), str(world["sp"].client_id)):
        assert leak not in wrong_secret.content.decode()


def test_revoked_and_expired_principals_get_the_same_oauth_error(world):
    sp = world["sp"]
    ServicePrincipal.objects.filter(pk=sp.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    expired = token_request(str(sp.client_id), world["secret"])
    ServicePrincipal.objects.filter(pk=sp.pk).update(expires_at=None, revoked_at=timezone.now())
    revoked = token_request(str(sp.client_id), world["secret"])
    for response in (expired, revoked):
        assert response.status_code == 401 and response.json()["error_description"] == identity.BAD_CLIENT


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"grant": "password"}, 400, "unsupported_grant_type"),
        ({"scope": "https://management.core.windows.net//.default"}, 400, "invalid_scope"),
        ({"secure": False}, 400, "invalid_request"),
    ],
)
def test_other_requests_are_refused_in_oauth_shape(world, change, status, error):
    response = token_request(str(world["sp"].client_id), world["secret"], **change)
    assert response.status_code == status
    assert response.json()["error"] == error and response.json()["error_codes"]


def test_missing_credentials_and_get_are_refused(world):
    response = Client().post("/adfs/oauth2/token/", {"grant_type": "client_credentials"}, secure=True)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    assert Client().get("/adfs/oauth2/token/", secure=True).status_code == 405


def test_a_client_id_is_locked_after_too_many_bad_secrets_even_for_the_right_one(world, identity_settings):
    client_id = str(world["sp"].client_id)
    for _ in range(3):
        assert token_request(client_id, "hpsp_wrong").status_code == 401
    locked = token_request(client_id, world["secret"])
    assert locked.status_code == 429 and locked["Retry-After"] == str(
        identity_settings.PORTAL_TOKEN_FAILURE_WINDOW_SECONDS
    )
    assert locked.json()["error"] == "temporarily_unavailable" and "Too many" in locked.json()["error_description"]
    # Another principal from the same address is not locked by it (the address allows 6).
    other, secret = principals.create(world["olga"], "other", world["contoso"], "Reader")
    assert token_request(str(other.client_id), secret).status_code == 200


def test_an_address_is_locked_after_too_many_failures_across_client_ids(world):
    for n in range(6):
        assert token_request(f"00000000-0000-4000-8000-00000000000{n}", "nope").status_code == 401
    assert token_request(str(world["sp"].client_id), world["secret"]).status_code == 429


def spellings(client_id: str) -> list[str]:
    """Eight more ways to write one GUID that uuid.UUID() (and so ServicePrincipal.authenticate) accepts."""
    bare = client_id.replace("-", "")
    return [
        client_id.upper(),
        "{" + client_id + "}",
        "{" + client_id.upper() + "}",
        bare,
        bare.upper(),
        "urn:uuid:" + client_id,
        "urn:uuid:" + bare.upper(),
        client_id[:8].upper() + client_id[8:],
    ]


def test_every_spelling_of_a_client_id_shares_one_failure_counter(world, identity_settings):
    identity_settings.PORTAL_TOKEN_FAILURES_PER_IP = 100  # only the client counter is under test here
    client_id = str(world["sp"].client_id)
    variants = spellings(client_id)
    assert len(set(variants)) == 8 and {identity.canonical_client_id(v) for v in variants} == {client_id}
    # Each spelling is accepted: with the right secret, any of them signs in.
    assert token_request(variants[3], world["secret"]).status_code == 200
    # Wrong secrets under 8 spellings: the limit (3) is reached after 3, whichever spellings were used.
    statuses = [token_request(v, "hpsp_wrong").status_code for v in variants]
    assert statuses == [401, 401, 401] + [429] * 5, statuses
    for spelling in [client_id, *variants]:
        assert token_request(spelling, world["secret"]).status_code == 429, spelling


def test_client_ids_that_are_not_guids_share_one_counter_and_the_address_counts_too(world, identity_settings):
    identity_settings.PORTAL_TOKEN_FAILURES_PER_IP = 100
    assert identity.canonical_client_id("ci") == identity.canonical_client_id("{not-a-guid}") == identity.NOT_A_GUID
    statuses = [token_request(name, "nope").status_code for name in ("ci", "admin", "ci ", "x" * 40, "ci")]
    assert statuses == [401, 401, 401, 429, 429]
    # A real client id is not held back by the not-a-GUID bucket.
    assert token_request(str(world["sp"].client_id), world["secret"]).status_code == 200
    # ...and the address counted the three that reached the secret check (the 429s never did).
    assert cache_count_for_address("127.0.0.1") == 3


def cache_count_for_address(address: str) -> int:
    from django.core.cache import cache

    key = identity._failure_keys("x", address)[1][0]
    return cache.get(key, 0)


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("get", "/adfs/oauth2/token/", 405),
        ("put", "/adfs/oauth2/token/", 405),
        ("get", "/adfs/nothing-here", 404),
        ("post", "/ADFS/oauth2/token/", 404),
        ("get", "/Adfs/.well-known/openid-configuration", 404),
        ("get", "/adfs", 404),
    ],
)
def test_everything_under_adfs_answers_the_oauth_error_shape(db, method, path, status):
    response = getattr(Client(), method)(path, secure=True)
    assert response.status_code == status and response["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"] == "invalid_request" and body["error_description"] and body["error_codes"]


def test_bad_requests_django_refuses_before_the_view_are_oauth_400s(db, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    too_big = Client().post("/adfs/oauth2/token/", {"client_id": "x" * 2000}, secure=True)
    nul = Client().get("/adfs/.well-known/openid-configuration", {"x": "\x00"}, secure=True)
    for response in (too_big, nul):
        assert response.status_code == 400 and response.json()["error"] == "invalid_request"


def test_a_crash_in_the_token_endpoint_is_an_oauth_500(world, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(ServicePrincipal, "authenticate", crash)
    client = Client(raise_request_exception=False)
    response = client.post(
        "/adfs/oauth2/token/",
        {"client_id": str(world["sp"].client_id), "client_secret": "x", "grant_type": "client_credentials"},
        secure=True,
    )
    assert response.status_code == 500 and response.json()["error"] == "server_error"


def test_with_the_cache_down_the_token_endpoint_answers_503_in_oauth_shape(world, settings):
    # Nothing listens on port 1: every cache call fails at once, as with Redis stopped.
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    }
    response = token_request(str(world["sp"].client_id), world["secret"])
    assert response.status_code == 503 and response["Retry-After"] == "60"
    assert response.json()["error"] == "temporarily_unavailable"


# --- The token on the ARM API ---------------------------------------------------------------------


def test_the_token_reaches_exactly_the_principals_subscriptions(world):
    api = arm(sign_in(world))
    subscriptions = api.get("subscriptions", api_version="2022-12-01")
    assert subscriptions.status_code == 200
    assert subscriptions.json()["value"] == [
        {
            "id": f"/subscriptions/{world['contoso'].pk}",
            "subscriptionId": str(world["contoso"].pk),
            "displayName": "Contoso",
            "state": "Enabled",
            "tenantId": TENANT,
            "authorizationSource": "RoleBased",
            "managedByTenants": [],
            "subscriptionPolicies": {
                "locationPlacementId": "Public_2014-09-01",
                "quotaId": "Internal_2014-09-01",
                "spendingLimit": "Off",
            },
        }
    ]
    tenants = api.get("tenants", api_version="2022-12-01").json()["value"]
    assert [t["tenantId"] for t in tenants] == [TENANT]
    # Contributor: registers a feature.
    feature = f"subscriptions/{world['contoso'].pk}/providers/Microsoft.Features/providers/Microsoft.Compute/features"
    registered = api.post(f"{feature}/InGuestHotPatchVMPreview/register", api_version="2021-07-01")
    assert registered.status_code == 200 and registered.json()["properties"]["state"] == "Registering"


def test_another_subscription_is_not_found(world):
    api = arm(sign_in(world))
    response = api.get(f"subscriptions/{world['bobs'].pk}/providers/Microsoft.Compute/virtualMachines")
    assert response.status_code == 404 and error_of(response)["code"] == "SubscriptionNotFound"


def test_a_reader_principal_may_read_but_not_act(world):
    RoleAssignment.objects.filter(user=world["sp"].user).update(role="Reader")
    api = arm(sign_in(world))
    vm = f"subscriptions/{world['contoso'].pk}/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/web-01"
    assert api.get(vm).status_code == 200
    refused = api.post(f"{vm}/assessPatches")
    assert refused.status_code == 403 and error_of(refused)["code"] == "AuthorizationFailed"


def test_revoking_the_principal_refuses_its_tokens_at_once(world):
    token = sign_in(world)
    assert arm(token).get("subscriptions").status_code == 200
    principals.revoke(world["olga"], world["sp"])
    response = arm(token).get("subscriptions")
    assert response.status_code == 401 and error_of(response)["code"] == "InvalidAuthenticationToken"
    assert "revoked" in error_of(response)["message"]


def test_a_principal_past_its_expiry_is_refused_and_tokens_never_outlive_it(world):
    sp = world["sp"]
    ServicePrincipal.objects.filter(pk=sp.pk).update(expires_at=timezone.now() + timedelta(seconds=100))
    response = token_request(str(sp.client_id), world["secret"])
    assert 90 <= response.json()["expires_in"] <= 100
    token = response.json()["access_token"]
    ServicePrincipal.objects.filter(pk=sp.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    refused = arm(token).get("subscriptions")
    assert refused.status_code == 401 and error_of(refused)["code"] == "InvalidAuthenticationToken"


def test_an_expired_token_is_refused(world):
    token, _ = auth.issue_access_token(world["sp"], now=time.time() - 7200)
    response = arm(token).get("subscriptions")
    assert response.status_code == 401 and error_of(response)["code"] == "InvalidAuthenticationToken"
    assert "expired" in error_of(response)["message"]


def test_a_token_of_another_tenant_or_audience_is_refused(world, settings):
    settings.PORTAL_TENANT_ID = "00000000-1111-4222-8333-444455556666"
    foreign_tenant, _ = auth.issue_access_token(world["sp"])
    settings.PORTAL_TENANT_ID = TENANT
    settings.PORTAL_ARM_AUDIENCE = "https://management.elsewhere.test/"
    foreign_audience, _ = auth.issue_access_token(world["sp"])
    settings.PORTAL_ARM_AUDIENCE = AUDIENCE

    tenant = arm(foreign_tenant).get("subscriptions")
    assert tenant.status_code == 401 and error_of(tenant)["code"] == "InvalidAuthenticationTokenTenant"
    audience = arm(foreign_audience).get("subscriptions")
    assert audience.status_code == 401 and error_of(audience)["code"] == "InvalidAuthenticationTokenAudience"


def test_a_tampered_or_foreign_signed_token_is_refused(world, settings):
    token = sign_in(world)
    payload, _, signature = token.rpartition(":")
    tampered = payload + ":" + ("A" if signature[0] != "A" else "B") + signature[1:]
    claims = signing.loads(token.removeprefix(auth.TOKEN_PREFIX), salt=auth.TOKEN_SALT)
    other_sp = {**claims, "sp": claims["sp"] + 1}
    forged = auth.TOKEN_PREFIX + signing.dumps(other_sp, salt=auth.TOKEN_SALT, key="not the server's key")
    for bad in (tampered, forged, auth.TOKEN_PREFIX + "garbage", token[:-3]):
        response = arm(bad).get("subscriptions")
        assert response.status_code == 401 and error_of(response)["code"] == "InvalidAuthenticationToken", bad
