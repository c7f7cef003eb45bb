"""Fixtures and a small client for the ARM API tests (tests/test_arm_*.py import what they use)."""

import json
from dataclasses import dataclass

import pytest
from django.test import Client

from tests.factories import load_catalog, make_resource_group, make_subscription, make_vm
from vms.models import ApiToken

API_VERSION = "2026-04-01"


@dataclass
class ArmClient:
    """The Django test client speaking ARM: bearer token, api-version, JSON bodies."""

    client: Client
    token: str | None

    def request(self, method: str, path: str, body=None, *, api_version: str | None = API_VERSION, raw=None, **params):
        query = {**params}
        if api_version is not None:
            query["api-version"] = api_version
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        data = raw if raw is not None else (json.dumps(body) if body is not None else "")
        url = "/arm/" + path.lstrip("/")
        if query:
            from urllib.parse import urlencode

            url += ("&" if "?" in url else "?") + urlencode(query)
        return self.client.generic(method, url, data, content_type="application/json", headers=headers)

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)

    def post(self, path: str, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def put(self, path: str, body=None, **kw):
        return self.request("PUT", path, body, **kw)

    def patch(self, path: str, body=None, **kw):
        return self.request("PATCH", path, body, **kw)

    def delete(self, path: str, **kw):
        return self.request("DELETE", path, **kw)


def error_of(response) -> dict:
    assert response["Content-Type"].startswith("application/json"), response.content[:200]
    return response.json()["error"]


@pytest.fixture(autouse=True)
def arm_settings(settings):
    settings.PORTAL_ARM_RETRY_AFTER = 0
    settings.PORTAL_SIM_SPEED = 0
    return settings


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password="pw-alice-123")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", password="pw-bob-123")


@pytest.fixture
def alice_token(alice) -> str:
    return ApiToken.issue(alice, "tests")[1]


@pytest.fixture
def api(alice_token) -> ArmClient:
    return ArmClient(Client(enforce_csrf_checks=True), alice_token)


@pytest.fixture
def fleet(db, alice, bob):
    """Alice: Contributor on Contoso (two VMs in rg-web), Reader on Fabrikam (one VM). Bob: his own subscription."""
    load_catalog()
    contoso = make_subscription("Contoso", user=alice, role="Contributor")
    fabrikam = make_subscription("Fabrikam", user=alice, role="Reader")
    bobs = make_subscription("Bob's", user=bob, role="Owner")
    web = make_resource_group(contoso, "rg-web")
    ro = make_resource_group(fabrikam, "rg-ro")
    other = make_resource_group(bobs, "rg-bob")
    return {
        "contoso": contoso,
        "fabrikam": fabrikam,
        "bobs": bobs,
        "web": web,
        "web1": make_vm(resource_group=web, name="web-01"),
        "web2": make_vm(resource_group=web, name="web-02", product="ws2022"),
        "ro1": make_vm(resource_group=ro, name="ro-01"),
        "bob1": make_vm(resource_group=other, name="bob-01"),
    }


def vm_path(vm, suffix: str = "") -> str:
    return vm.arm_id.lstrip("/") + suffix
