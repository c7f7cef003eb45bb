"""ARM error shapes: the envelope everywhere, never an HTML page, never a 500 for a malformed request."""

import base64
import json
from datetime import timedelta

import isodate
import pytest
from django.test import Client

from patching.models import Operation, OperationKind
from portal.arm.routes import router
from tests.arm_client import error_of, vm_path

pytestmark = pytest.mark.usefixtures("arm_settings")

INSTALL = "/installPatches"


def install_body(**changes):
    body = {
        "maximumDuration": "PT2H",
        "rebootSetting": "IfRequired",
        "windowsParameters": {"classificationsToInclude": ["Critical", "Security"]},
    }
    body.update(changes)
    return body


def test_a_missing_api_version_is_400(api, fleet):
    response = api.get(vm_path(fleet["web1"]), api_version=None)
    assert response.status_code == 400 and error_of(response)["code"] == "MissingApiVersionParameter"
    assert api.get(vm_path(fleet["web1"]), api_version="").status_code == 400


@pytest.mark.parametrize("version", ["2015-12-01", "2024-11-01", "2026-04-01", "2099-01-01-preview", "whatever"])
def test_any_api_version_is_accepted(api, fleet, version):
    assert api.get(vm_path(fleet["web1"]), api_version=version).status_code == 200


def test_paths_match_case_insensitively_with_or_without_a_trailing_slash(api, fleet):
    vm = fleet["web1"]
    path = (
        f"SUBSCRIPTIONS/{vm.subscription_id}/RESOURCEGROUPS/RG-WEB/PROVIDERS/microsoft.compute/VIRTUALMACHINES/WEB-01"
    )
    response = api.get(path)
    assert response.status_code == 200 and response.json()["name"] == "web-01"
    assert api.get(vm_path(vm) + "/").status_code == 200
    assert api.post(vm_path(vm, "/ASSESSPATCHES")).status_code == 202


def test_not_found_codes(api, fleet):
    sub = fleet["contoso"].pk
    cases = {
        f"subscriptions/{sub}/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/nope": "ResourceNotFound",
        f"subscriptions/{sub}/resourceGroups/nope/providers/Microsoft.Compute/virtualMachines/web-01": "ResourceGroupNotFound",
        f"subscriptions/{sub}/resourceGroups/nope/providers/Microsoft.Compute/virtualMachines": "ResourceGroupNotFound",
        "subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.Compute/virtualMachines": "SubscriptionNotFound",
        "subscriptions/not-a-guid": "SubscriptionNotFound",
        f"subscriptions/{sub}/providers/Microsoft.Network/virtualNetworks": "NotFound",
        "no/such/thing": "NotFound",
    }
    for path, code in cases.items():
        response = api.get(path)
        assert response.status_code == 404, path
        assert error_of(response)["code"] == code, path


def test_an_unsupported_method_is_405_with_allow(api, fleet):
    response = api.request("PUT", vm_path(fleet["web1"], "/assessPatches"), {})
    assert response.status_code == 405 and error_of(response)["code"] == "MethodNotAllowed"
    assert response["Allow"] == "POST"


@pytest.mark.parametrize(
    "raw",
    [b"{", b"not json", b'{"rebootSetting": NaN}', b"\xff\xfe\x00", b"[" * 100_000 + b"]" * 100_000, b'{"a": 1,}'],
)
def test_unparseable_json_is_invalid_request_format(api, fleet, raw):
    response = api.request("POST", vm_path(fleet["web1"], INSTALL), raw=raw)
    assert response.status_code == 400 and error_of(response)["code"] == "InvalidRequestFormat"


@pytest.mark.parametrize("raw", [b"[]", b'"text"', b"42", b"null"])
def test_json_that_is_not_an_object_is_invalid_request_content(api, fleet, raw):
    response = api.request("POST", vm_path(fleet["web1"], INSTALL), raw=raw)
    assert response.status_code == 400 and error_of(response)["code"] == "InvalidRequestContent"


@pytest.mark.parametrize(
    "body, target",
    [
        (
            install_body(windowsParameters={"classificationsToInclude": ["Critical", "Bogus"]}),
            "windowsParameters.classificationsToInclude",
        ),
        (
            install_body(windowsParameters={"classificationsToInclude": ["Security"], "kbNumbersToInclude": ["KBxyz"]}),
            "windowsParameters.kbNumbersToInclude",
        ),
        (
            install_body(windowsParameters={"classificationsToInclude": ["Security"], "kbNumbersToExclude": ["12"]}),
            "windowsParameters.kbNumbersToExclude",
        ),
        (install_body(maximumDuration="four hours"), "maximumDuration"),
        (install_body(maximumDuration="PT9H"), "maximumDuration"),
        (install_body(rebootSetting="Sometimes"), "rebootSetting"),
        (install_body(rebootSetting=None), "rebootSetting"),
        (install_body(windowsParameters="Security"), "windowsParameters"),
        (
            install_body(windowsParameters={"classificationsToInclude": "Security"}),
            "windowsParameters.classificationsToInclude",
        ),
        (
            install_body(windowsParameters={"classificationsToInclude": ["Security"], "maxPatchPublishDate": "soon"}),
            "windowsParameters.maxPatchPublishDate",
        ),
    ],
)
def test_bad_install_parameters_are_invalid_parameter_with_a_target(api, fleet, body, target):
    response = api.post(vm_path(fleet["web1"], INSTALL), body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "InvalidParameter" and error["target"] == target, error
    assert not fleet["web1"].operations.exists()


def test_every_problem_is_in_details(api, fleet):
    body = {
        "rebootSetting": "Sometimes",
        "maximumDuration": "PT1M",
        "windowsParameters": {"classificationsToInclude": ["X"]},
    }
    error = error_of(api.post(vm_path(fleet["web1"], INSTALL), body))
    assert {d["target"] for d in error["details"]} == {
        "rebootSetting",
        "maximumDuration",
        "windowsParameters.classificationsToInclude",
    }


@pytest.mark.parametrize(
    "duration, minutes", [("PT4H", 240), ("PT04H00M00S", 240), ("PT90M", 90), ("PT01H30M00S", 90), ("PT1H30M", 90)]
)
def test_both_sdk_duration_spellings_parse(api, fleet, duration, minutes):
    """PT90M (track-2 SDKs) and PT01H30M00S (AutoRest SDKs): exactly 90 minutes on the stored operation."""
    response = api.post(vm_path(fleet["web1"], INSTALL), install_body(maximumDuration=duration))
    assert response.status_code == 202, response.content
    operation = Operation.objects.get(vm=fleet["web1"], kind=OperationKind.INSTALLATION)
    assert isodate.parse_duration(operation.parameters["maximumDuration"]) == timedelta(minutes=minutes)


def test_the_azure_cli_empty_linux_parameters_are_accepted(api, fleet):
    response = api.post(vm_path(fleet["web1"], INSTALL), install_body(linuxParameters={}))
    assert response.status_code == 202


@pytest.mark.parametrize(
    "raw",
    [
        '{"location": "westeurope\\u0000"}',
        '{"location": "\\ud800"}',
        '{"location": "westeurope", "properties": {"hardwareProfile": {"vmSize": "Standard\\u0000"}}}',
    ],
)
def test_strings_postgresql_cannot_store_are_refused_not_500(api, fleet, raw):
    response = api.request("PUT", vm_path(fleet["web1"]).replace("web-01", "new-vm"), raw=raw.encode())
    assert response.status_code == 400, response.content
    assert error_of(response)["code"] == "InvalidRequestContent"
    assert not fleet["web"].virtual_machines.filter(name="new-vm").exists()


@pytest.mark.parametrize(
    "name, status, code",
    [
        ("web\x00", 400, "InvalidParameter"),
        ("a" * 3000, 404, "ResourceNotFound"),
        ("%00", 400, "InvalidParameter"),
        ("..", 404, "ResourceNotFound"),
        ("web-01\x7f", 400, "InvalidParameter"),
    ],
)
def test_odd_names_in_the_path_are_not_500(api, fleet, name, status, code):
    response = api.get(vm_path(fleet["web1"]).replace("web-01", name))
    assert response.status_code in (400, 404)
    assert response["Content-Type"].startswith("application/json")
    # Control characters are a bad vmName; any other name is a VM that is not there.
    assert response.status_code == status and error_of(response)["code"] == code, response.content[:200]
    if code == "InvalidParameter":
        assert error_of(response)["target"] == "vmName"


def _token(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        "x",
        "-1",
        "²",
        "9" * 30,
        _token({"a": 1}),
        _token([1, "web-01"]),  # one key short
        _token(["rg", "web-01", 1]),  # a resource group id that is not a number
        _token([1, "web\u000001", 1]),
        _token([2**70, "web-01", 1]),
        _token([True, "web-01", 1]),
        _token(["rg", "web-01", 1]) + "A" * 2000,  # longer than any nextLink's
        base64.urlsafe_b64encode(b"[" * 3000).decode(),  # nested too deeply to decode
    ],
)
def test_bad_skip_tokens_are_400(api, fleet, token):
    path = f"subscriptions/{fleet['contoso'].pk}/providers/Microsoft.Compute/virtualMachines"
    response = api.get(path, **{"$skiptoken": token})
    assert response.status_code == 400 and error_of(response)["target"] == "$skiptoken"


def test_a_request_id_is_on_every_response_and_the_client_id_echoed(api, fleet, db):
    client = Client()
    for response in (
        api.get("subscriptions"),
        api.get("nowhere"),
        client.get("/arm/subscriptions"),
        client.get("/arm/openapi.json"),
        api.client.get("/arm/subscriptions?api-version=1", headers={"x-ms-client-request-id": "abc-123"}),
    ):
        assert len(response["x-ms-request-id"]) == 36
    assert response["x-ms-client-request-id"] == "abc-123"


def test_a_disallowed_host_gets_an_envelope_not_an_html_page(api, fleet):
    response = api.client.get("/arm/subscriptions?api-version=1", headers={"Host": "evil.example"})
    assert response.status_code == 400
    assert error_of(response)["code"] == "BadRequest"


def test_a_too_large_body_is_413(api, fleet, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api.request("POST", vm_path(fleet["web1"], INSTALL), raw=b'{"x": "' + b"a" * 5000 + b'"}')
    assert response.status_code == 413 and error_of(response)["code"] == "RequestEntityTooLarge"


def test_a_bug_is_a_json_500_not_an_html_page(api, fleet, monkeypatch):
    def broken(arm_request, **kwargs):
        raise RuntimeError("boom")

    route, _ = router.match(f"subscriptions/{fleet['contoso'].pk}")
    monkeypatch.setitem(route.handlers, "GET", broken)
    response = api.get(f"subscriptions/{fleet['contoso'].pk}")
    assert response.status_code == 500
    assert error_of(response)["code"] == "InternalServerError" and "boom" not in response.content.decode()
