"""Access in the portal: a Reader sees but gets no buttons and 403 on every POST; others' things are 404."""

import re

import pytest
from django.urls import reverse

from patching.models import Operation, OperationKind
from tests.browser.data import make_user, run_now
from tests.factories import load_catalog, make_resource_group, make_subscription, make_vm
from vms.models import FeatureRegistration, VirtualMachine

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    """Rita reads Contoso; Carl contributes to Fabrikam; Root is a superuser."""
    load_catalog()
    rita, carl, root = make_user("rita"), make_user("carl"), make_user("root", superuser=True)
    contoso = make_subscription("Contoso", user=rita, role="Reader")
    fabrikam = make_subscription("Fabrikam", user=carl, role="Contributor", onboarded=False)
    ours = make_vm(resource_group=make_resource_group(contoso, "rg-ours"), name="ours-1")
    theirs = make_vm(resource_group=make_resource_group(fabrikam, "rg-theirs"), name="theirs-1")
    return {
        "rita": rita,
        "carl": carl,
        "root": root,
        "contoso": contoso,
        "fabrikam": fabrikam,
        "ours": ours,
        "theirs": theirs,
    }


def vm_pages(vm) -> list[str]:
    return [
        reverse("vms:overview", args=[vm.pk]),
        reverse("vms:guest-updates", args=[vm.pk]),
        reverse("patching:hotpatch", args=[vm.pk]),
    ]


def test_a_reader_sees_everything_but_no_action_buttons(client, world):
    client.force_login(world["rita"])
    fleet = client.get(reverse("vms:list")).text
    assert "ours-1" in fleet and "theirs-1" not in fleet
    assert reverse("vms:create") not in fleet
    vm = world["ours"]
    blade = client.get(reverse("patching:hotpatch", args=[vm.pk])).text
    assert 'id="assess-now"' not in blade and 'id="install-now"' not in blade and "Install updates now" not in blade
    overview = client.get(reverse("vms:overview", args=[vm.pk])).text
    assert reverse("vms:delete", args=[vm.pk]) not in overview
    settings = client.get(reverse("vms:guest-updates", args=[vm.pk])).text
    assert "read-only for you" in settings and ">Save</button>" not in settings
    patch_mode_inputs = re.findall(r'<input[^>]*name="patch_mode"[^>]*>', settings)
    assert patch_mode_inputs and all("disabled" in tag for tag in patch_mode_inputs)
    features = client.get(reverse("vms:preview-features", args=[world["contoso"].pk])).text
    assert ">Register<" not in features and ">Unregister<" not in features


def test_the_server_refuses_a_readers_posts_with_403_and_changes_nothing(client, world):
    client.force_login(world["rita"])
    vm, contoso = world["ours"], world["contoso"]
    name = FeatureRegistration.HOTPATCH_FEATURES[0]
    posts = {
        reverse("patching:assess", args=[vm.pk]): {},
        reverse("patching:install", args=[vm.pk]): {
            "classifications": ["Security"],
            "reboot_setting": "IfRequired",
            "maximum_duration": "60",
        },
        reverse("vms:guest-updates", args=[vm.pk]): {
            "patch_mode": "AutomaticByOS",
            "reboot_setting": "Never",
            "assessment_mode": "ImageDefault",
        },
        reverse("vms:delete", args=[vm.pk]): {"confirm_name": vm.name},
        reverse("vms:feature-action", args=[contoso.pk, name, "unregister"]): {},
        reverse("vms:provider-action", args=[contoso.pk, "unregister"]): {},
        reverse("vms:create"): {},
    }
    for url, data in posts.items():
        assert client.post(url, data).status_code == 403, url
        assert client.post(url, data, headers={"HX-Request": "true"}).status_code == 403, url
    # The pages behind the buttons are closed too.
    assert client.get(reverse("patching:install", args=[vm.pk])).status_code == 403
    assert client.get(reverse("vms:delete", args=[vm.pk])).status_code == 403
    assert client.get(reverse("vms:create")).status_code == 403
    assert (
        not Operation.objects.exists() and VirtualMachine.objects.filter(pk=vm.pk, reboot_setting="IfRequired").exists()
    )
    assert contoso.features.filter(state="Registered").count() == 3


def test_other_peoples_vms_and_subscriptions_answer_404(client, world):
    client.force_login(world["rita"])
    theirs, fabrikam = world["theirs"], world["fabrikam"]
    operation = run_now(theirs, OperationKind.ASSESSMENT)
    for url in [
        *vm_pages(theirs),
        reverse("vms:delete", args=[theirs.pk]),
        reverse("patching:install", args=[theirs.pk]),
        reverse("patching:operation-status", args=[operation.pk]),
        reverse("vms:preview-features", args=[fabrikam.pk]),
    ]:
        assert client.get(url).status_code == 404, url
    for url in [
        reverse("patching:assess", args=[theirs.pk]),
        reverse("vms:provider-action", args=[fabrikam.pk, "register"]),
    ]:
        assert client.post(url).status_code == 404, url
    # Their own VM's operation status is theirs to see.
    mine = client.get(reverse("patching:operation-status", args=[run_now(world["ours"], "assessment").pk]))
    assert mine.status_code in (200, 286) and "Assessment" in mine.text
    assert mine.status_code == 286  # finished: htmx stops polling


def test_a_contributor_acts_and_a_superuser_sees_every_subscription(client, world, django_capture_on_commit_callbacks):
    client.force_login(world["carl"])
    with django_capture_on_commit_callbacks():
        assert client.post(reverse("patching:assess", args=[world["theirs"].pk])).status_code == 302
    assert client.get(reverse("patching:hotpatch", args=[world["ours"].pk])).status_code == 404
    client.force_login(world["root"])
    fleet = client.get(reverse("vms:list")).text
    assert "ours-1" in fleet and "theirs-1" in fleet
    for vm in (world["ours"], world["theirs"]):
        assert 'id="assess-now"' in client.get(reverse("patching:hotpatch", args=[vm.pk])).text
