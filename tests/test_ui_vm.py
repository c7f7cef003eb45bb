"""A VM's pages: Overview, Guest + host updates (settings through the services' rules), create, delete."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse

from patching.models import GuestState, Operation, OperationKind, PatchDecision, RolloutHalt
from tests.factories import make_resource_group, make_subscription, make_vm
from vms.models import ResourceGroup, VirtualMachine

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("catalog")]


@pytest.fixture
def contoso(user):
    return make_subscription("Contoso", user=user, role="Contributor")


@pytest.fixture
def vm(contoso):
    return make_vm(resource_group=make_resource_group(contoso, "rg-web"), name="web-01")  # hotpatch on


def settings_url(vm) -> str:
    return reverse("vms:guest-updates", args=[vm.pk])


def test_overview_shows_essentials_the_patch_decision_and_an_active_halt(client, vm):
    GuestState.objects.filter(pk=vm.pk).update(
        patch_decision=PatchDecision.OUTSIDE_WINDOW, patch_decision_detail="Off-peak starts at 22:00 local time."
    )
    RolloutHalt.objects.create(
        release_month="2026-11", product=vm.product, reason="Too many failures", failed=3, attempted=10
    )
    text = client.get(reverse("vms:overview", args=[vm.pk])).text
    assert "Essentials" in text and "rg-web" in text and "Windows Server 2022 Datacenter: Azure Edition" in text
    assert "Outside its off-peak window" in text and "Off-peak starts at 22:00" in text
    assert "Automatic patching halted" in text and "3 of 10 VMs failed" in text
    assert reverse("patching:hotpatch", args=[vm.pk]) in text  # Go to Hotpatch


def test_overview_shows_a_running_operation_live(client, vm):
    Operation.objects.create(
        vm=vm, subscription_id=vm.resource_group.subscription_id, vm_name=vm.name, location=vm.location,
        kind=OperationKind.ASSESSMENT, started_by="Platform",
    )  # fmt: skip
    text = client.get(reverse("vms:overview", args=[vm.pk])).text
    assert 'id="operation-assessment"' in text and 'Assessment</span>: <span class="op-state">Queued' in text
    assert "Started by the platform" in text and 'hx-trigger="every 1s"' in text


def test_guest_updates_page_has_the_hotpatch_card_and_go_to_hotpatch(client, vm):
    text = client.get(settings_url(vm)).text
    assert (
        "Guest OS updates" in text and "Go to Hotpatch" in text and reverse("patching:hotpatch", args=[vm.pk]) in text
    )
    assert 'name="enable_hotpatching"' in text and "checked" in text


def test_settings_change_goes_through_the_services_and_redirects(client, vm):
    data = {
        "patch_mode": "AutomaticByPlatform",
        "enable_hotpatching": "on",
        "reboot_setting": "Never",
        "assessment_mode": "ImageDefault",
    }
    response = client.post(settings_url(vm), data, follow=True)
    assert response.redirect_chain[-1][0] == settings_url(vm) and "Saved the guest OS update settings" in response.text
    vm.refresh_from_db()
    assert vm.reboot_setting == "Never" and vm.assessment_mode == "ImageDefault" and vm.enable_hotpatching


def test_rule_breaking_settings_get_errors_next_to_their_fields(client, vm):
    data = {
        "patch_mode": "AutomaticByOS",
        "enable_hotpatching": "on",
        "reboot_setting": "IfRequired",
        "assessment_mode": "AutomaticByPlatform",
    }
    response = client.post(settings_url(vm), data)
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert "requires patchMode AutomaticByPlatform" in " ".join(errors["enable_hotpatching"])
    vm.refresh_from_db()
    assert vm.patch_mode == "AutomaticByPlatform"  # nothing was saved
    # A VM outside the hotpatch program is never offered the switch; a forged POST is refused by the rules.
    legacy = make_vm(resource_group=vm.resource_group, name="legacy", product="ws2019")
    assert "Not available: the image 2019-datacenter does not support hotpatch" in client.get(settings_url(legacy)).text
    data = {
        "patch_mode": "AutomaticByPlatform",
        "enable_hotpatching": "on",
        "reboot_setting": "IfRequired",
        "assessment_mode": "ImageDefault",
    }
    errors = client.post(settings_url(legacy), data).context["form"].errors
    assert "Hotpatch is not supported on image" in " ".join(errors["enable_hotpatching"])


def test_turning_hotpatch_off_then_on_again_says_when_re_enrolment_opens(client, vm):
    off = {
        "patch_mode": "AutomaticByPlatform",
        "reboot_setting": "IfRequired",
        "assessment_mode": "AutomaticByPlatform",
    }
    client.post(settings_url(vm), off)
    vm.refresh_from_db()
    assert not vm.enable_hotpatching and vm.hotpatch_disabled_at
    page = client.get(settings_url(vm)).text
    assert (
        "Hotpatch can't be turned on for this VM right now" in page
        and "once the next baseline has been released, on 20" in page
    )
    response = client.post(settings_url(vm), {**off, "enable_hotpatching": "on"})
    message = " ".join(response.context["form"].errors["enable_hotpatching"])
    assert "It can be turned on again once the next baseline has been released, on" in message


def test_the_preview_gate_is_explained_with_a_link_to_preview_features(client, user):
    sandbox = make_subscription("Sandbox", user=user, role="Contributor", onboarded=False)
    vm = make_vm(resource_group=make_resource_group(sandbox), name="sb-1", hotpatch=False)
    text = client.get(settings_url(vm)).text
    assert "Register the preview features InGuestHotPatchVMPreview" in text
    assert reverse("vms:preview-features", args=[sandbox.pk]) in text
    data = {
        "patch_mode": "AutomaticByPlatform",
        "enable_hotpatching": "on",
        "reboot_setting": "IfRequired",
        "assessment_mode": "AutomaticByPlatform",
    }
    errors = client.post(settings_url(vm), data).context["form"].errors
    assert "Register the resource provider Microsoft.Compute" in " ".join(errors["enable_hotpatching"])


def test_create_form_defaults_to_hotpatch_on_and_azure_orchestrated_for_capable_images(client, contoso):
    make_resource_group(contoso, "rg-new", "westeurope")
    form = client.get(reverse("vms:create")).context["form"]
    assert form.initial["enable_hotpatching"] is True and form.initial["patch_mode"] == "AutomaticByPlatform"
    # Refreshing Guest OS updates for another image (what htmx does on change) drops the offer.
    query = {"image_sku": "2019-datacenter", "location": "westeurope"}
    section = client.get(reverse("vms:create"), query, headers={"HX-Request": "true", "HX-Target": "guest-os-updates"})
    assert section.text.lstrip().startswith('<div id="guest-os-updates"')
    assert "Not available for this image" in section.text and 'name="enable_hotpatching"' not in section.text
    gov = client.get(
        reverse("vms:create"), {"image_sku": "2022-datacenter-azure-edition-hotpatch", "location": "usgovvirginia"}
    )
    assert (
        "Not available in Azure Government regions" in gov.text
        and gov.context["form"].initial["enable_hotpatching"] is False
    )


def test_create_vm_provisions_it_and_starts_its_first_assessment(client, contoso, django_capture_on_commit_callbacks):
    rg = make_resource_group(contoso, "rg-new", "westeurope")
    data = {
        "subscription": str(contoso.pk),
        "resource_group": str(rg.pk),
        "name": "app-07",
        "location": "westeurope",
        "zone": "2",
        "availability_set": "",
        "image_sku": "2025-datacenter-azure-edition",
        "size": "Standard_D4s_v5",
        "time_zone": "Europe/Stockholm",
        "patch_mode": "AutomaticByPlatform",
        "enable_hotpatching": "on",
        "reboot_setting": "IfRequired",
        "assessment_mode": "AutomaticByPlatform",
    }
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(reverse("vms:create"), data)
    vm = VirtualMachine.objects.get(name="app-07")
    assert response.status_code == 302 and response["Location"] == reverse("vms:overview", args=[vm.pk])
    assert vm.enable_hotpatching and vm.zone == "2" and vm.guest.build and vm.time_zone == "Europe/Stockholm"
    assert Operation.objects.filter(vm=vm, kind=OperationKind.ASSESSMENT).count() == 1 and len(callbacks) == 1


def test_create_vm_shows_the_services_problems_next_to_the_fields(client, user, contoso):
    sandbox = make_subscription("Sandbox", user=user, role="Owner", onboarded=False)
    rg = ResourceGroup.objects.create(subscription=sandbox, name="rg-sandbox", location="westeurope")
    other_rg = make_resource_group(contoso, "rg-elsewhere")
    base = {
        "subscription": str(sandbox.pk), "resource_group": str(rg.pk), "name": "sb-1", "location": "westeurope",
        "image_sku": "2025-datacenter-azure-edition", "size": "Standard_D2s_v5", "time_zone": "UTC",
        "patch_mode": "AutomaticByPlatform", "enable_hotpatching": "on", "reboot_setting": "IfRequired",
        "assessment_mode": "AutomaticByPlatform",
    }  # fmt: skip
    response = client.post(reverse("vms:create"), base)
    assert "Register the preview features" in " ".join(response.context["form"].errors["enable_hotpatching"])
    assert reverse("vms:preview-features", args=[sandbox.pk]) in response.text  # the notice links to them
    cases = [
        ({"name": "bad name!"}, "name", "is not a valid VM name"),
        ({"time_zone": "Mars/Olympus"}, "time_zone", "Unknown time zone"),
        ({"zone": "2", "availability_set": "avset-1"}, "zone", "not both"),
        ({"resource_group": str(other_rg.pk)}, "resource_group", "is not in subscription"),
        ({"image_sku": "2019-datacenter"}, "enable_hotpatching", "not supported on image"),
    ]
    for change, field, message in cases:
        data = {**base, "enable_hotpatching": "", **change}
        if field == "enable_hotpatching":
            data["enable_hotpatching"] = "on"
        form = client.post(reverse("vms:create"), data).context["form"]
        assert message in " ".join(form.errors.get(field, [])), (change, form.errors)
    assert not VirtualMachine.objects.filter(resource_group=rg).exists()


def test_delete_asks_for_the_name_then_deletes_and_keeps_history(client, vm):
    url = reverse("vms:delete", args=[vm.pk])
    assert "Type the virtual machine name to confirm" in client.get(url).text
    response = client.post(url, {"confirm_name": "wrong"})
    assert "Type &#x27;web-01&#x27; to delete" in response.text and VirtualMachine.objects.filter(pk=vm.pk).exists()
    Operation.objects.create(
        vm=vm,
        subscription_id=vm.resource_group.subscription_id,
        vm_name=vm.name,
        location=vm.location,
        kind="assessment",
    )
    response = client.post(url, {"confirm_name": "WEB-01"}, follow=True)
    assert (
        response.redirect_chain[-1][0] == reverse("vms:list") and "Deleted the virtual machine web-01" in response.text
    )
    assert not VirtualMachine.objects.filter(pk=vm.pk).exists()
    assert Operation.objects.get(vm_name="web-01").error_code == "VMDeleted"


def test_time_zone_preference_changes_how_times_are_shown(client, vm):
    response = client.post(reverse("vms:preferences"), {"time_zone": "Asia/Tokyo"}, follow=True)
    assert "Times are now shown in Asia/Tokyo" in response.text
    assert "JST" in client.get(reverse("vms:overview", args=[vm.pk])).text
    client.post(reverse("vms:preferences"), {"time_zone": ""})
    client.cookies["portal_tz"] = "Europe%2FStockholm"  # what portal.js sets from the browser
    text = client.get(reverse("vms:overview", args=[vm.pk])).text
    assert " CET" in text or " CEST" in text
    # The VM was created just now: its times read in Stockholm's abbreviation of today.
    assert f" {datetime.now(ZoneInfo('Europe/Stockholm')).tzname()}" in text
    client.cookies["portal_tz"] = "Not/AZone"
    assert " UTC" in client.get(reverse("vms:overview", args=[vm.pk])).text
