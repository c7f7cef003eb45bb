"""A VM's etag: returned by GET/PUT/PATCH, bumped by every settings change, honoured in If-Match and
If-None-Match as ARM does; the settings form refuses a save made on a page older than the last change."""

import pytest
from django.urls import reverse

from tests.arm_client import error_of, vm_path
from tests.factories import make_resource_group, make_subscription, make_vm
from tests.test_vm_races import settings_body

pytestmark = pytest.mark.usefixtures("arm_settings")


def etag_of(response) -> str:
    assert response.status_code in (200, 201), response.content[:300]
    assert response["ETag"] == response.json()["etag"]
    return response["ETag"]


def other_assessment_mode(vm) -> str:
    return "ImageDefault" if vm.assessment_mode == "AutomaticByPlatform" else "AutomaticByPlatform"


def test_get_returns_the_etag_and_every_settings_change_bumps_it(api, fleet):
    path, original, changed = (
        vm_path(fleet["web1"]),
        fleet["web1"].assessment_mode,
        other_assessment_mode(fleet["web1"]),
    )
    first = etag_of(api.get(path))
    assert first == '"1"'  # quoted, as Azure Compute writes it
    second = etag_of(api.patch(path, settings_body(assessmentMode=changed)))
    assert second != first and etag_of(api.get(path)) == second
    assert etag_of(api.patch(path, settings_body(assessmentMode=changed))) == second  # no change, same etag
    resized = api.patch(path, {"properties": {"hardwareProfile": {"vmSize": "Standard_D4s_v5"}}})
    third = etag_of(resized)
    assert third not in (first, second)
    put = api.put(path, {"location": "westeurope", **settings_body(assessmentMode=original)})
    assert etag_of(put) not in (first, second, third)


def test_if_match_refuses_a_stale_etag_with_412_and_accepts_the_current_one_or_a_star(api, fleet):
    vm = fleet["web1"]
    path, original, changed = vm_path(vm), vm.assessment_mode, other_assessment_mode(vm)
    old = etag_of(api.get(path))
    etag_of(api.patch(path, settings_body(assessmentMode=changed)))
    stale = api.patch(path, settings_body(assessmentMode=original), headers={"If-Match": old})
    assert stale.status_code == 412 and error_of(stale)["code"] == "PreconditionFailed"
    vm.refresh_from_db()
    assert vm.assessment_mode == changed  # nothing written
    current = etag_of(api.get(path))
    assert api.patch(path, settings_body(assessmentMode=original), headers={"If-Match": current}).status_code == 200
    assert api.patch(path, settings_body(assessmentMode=changed), headers={"If-Match": "*"}).status_code == 200
    bogus = api.put(path, {"location": "westeurope"}, headers={"If-Match": '"banana"'})
    assert bogus.status_code == 412 and error_of(bogus)["code"] == "PreconditionFailed"


def test_put_with_if_none_match_star_creates_but_never_overwrites(api, fleet):
    sub = fleet["contoso"].pk
    path = f"subscriptions/{sub}/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/new-01"
    body = {
        "location": "westeurope",
        "properties": {
            "storageProfile": {
                "imageReference": {
                    "publisher": "MicrosoftWindowsServer",
                    "offer": "WindowsServer",
                    "sku": "2022-datacenter-azure-edition",
                }
            }
        },
    }
    missing = api.put(path, body, headers={"If-Match": "*"})
    assert missing.status_code == 412 and error_of(missing)["code"] == "PreconditionFailed"
    assert etag_of(api.put(path, body, headers={"If-None-Match": "*"})) == '"1"'
    again = api.put(path, body, headers={"If-None-Match": "*"})
    assert again.status_code == 412 and error_of(again)["code"] == "PreconditionFailed"
    assert "already exists" in error_of(again)["message"]


@pytest.mark.django_db
def test_the_settings_form_refuses_a_save_made_on_a_stale_page(client, user, catalog):
    vm = make_vm(resource_group=make_resource_group(make_subscription("Contoso", user=user, role="Contributor")))
    url = reverse("vms:guest-updates", args=[vm.pk])
    page = client.get(url)
    assert f'name="version" value="{vm.version}"' in page.text
    mine = {
        "patch_mode": vm.patch_mode,
        "enable_hotpatching": "on" if vm.enable_hotpatching else "",
        "reboot_setting": "Never",
        "assessment_mode": vm.assessment_mode,
        "version": vm.version,
    }
    # Someone else saves first (another tab, another person, the API).
    theirs = client.post(url, {**mine, "reboot_setting": "Always"})
    assert theirs.status_code == 302
    refused = client.post(url, mine)
    assert refused.status_code == 200 and "someone else changed these settings" in refused.text
    vm.refresh_from_db()
    assert vm.reboot_setting == "Always" and vm.version == 2
    assert 'name="version" value="2"' in refused.text  # the page now shows their change, to start over
    assert client.post(url, {**mine, "version": 2}).status_code == 302
    vm.refresh_from_db()
    assert vm.reboot_setting == "Never"


@pytest.mark.parametrize("header", ['"²"', '"' + "9" * 5000 + '"', '"1.0"', "W/", '""'])
def test_an_if_match_no_etag_could_be_is_412_not_500(api, fleet, header):
    vm = fleet["web1"]
    response = api.patch(
        vm_path(vm), settings_body(assessmentMode=other_assessment_mode(vm)), headers={"If-Match": header}
    )
    assert response.status_code == 412 and error_of(response)["code"] == "PreconditionFailed"
