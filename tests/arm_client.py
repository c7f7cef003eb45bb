"""A small client for the ARM API tests (their fixtures, `api`, `fleet` and the rest, are in conftest.py)."""

import json
from dataclasses import dataclass

from django.test import Client

API_VERSION = "2026-04-01"


@dataclass
class ArmClient:
    """The Django test client speaking ARM: bearer token, api-version, JSON bodies."""

    client: Client
    token: str | None

    def request(
        self,
        method: str,
        path: str,
        body=None,
        *,
        api_version: str | None = API_VERSION,
        raw=None,
        headers: dict | None = None,
        **params,
    ):
        query = {**params}
        if api_version is not None:
            query["api-version"] = api_version
        headers = {**({"Authorization": f"Bearer {self.token}"} if self.token else {}), **(headers or {})}
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


def vm_path(vm, suffix: str = "") -> str:
    return vm.arm_id.lstrip("/") + suffix
