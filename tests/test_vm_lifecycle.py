"""Creating and deleting VMs: the seed's getting-started path, shared by the portal and the API."""

import pytest

from patching import services
from patching.models import Operation, OperationKind, OperationStatus
from tests.factories import make_resource_group, make_subscription
from vms.patch_settings import PatchSettings

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("catalog")]


def create(rg, **fields):
    fields = {"name": "web-01", "location": rg.location, "image_sku": "2022-datacenter-azure-edition-core", **fields}
    return services.create_virtual_machine(resource_group=rg, **fields)


def test_a_new_azure_edition_vm_gets_hotpatch_on_its_baseline_and_a_first_assessment(
    django_capture_on_commit_callbacks,
):
    rg = make_resource_group()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        vm, problems = create(rg, image_sku="2022-Datacenter-Azure-Edition-Hotpatch", time_zone="Europe/Stockholm")
    assert problems == []
    assert vm.enable_hotpatching and vm.patch_mode == "AutomaticByPlatform" and vm.product == "ws2022-azure"
    assert vm.guest.baseline is not None and vm.guest.build == vm.guest.baseline.build
    assert vm.guest.hotpatch_status == "PendingEvaluation"
    assessment = Operation.objects.get(vm=vm)
    assert assessment.kind == OperationKind.ASSESSMENT and assessment.started_by == "Platform"
    assert len(callbacks) == 1


def test_other_images_get_windows_default_patching():
    vm, problems = create(make_resource_group(), image_sku="2019-datacenter")
    assert not problems and not vm.enable_hotpatching and vm.patch_mode == "AutomaticByOS"
    assert vm.guest.hotpatch_status == "Disabled"


def test_hotpatch_is_off_by_default_and_refused_in_azure_government():
    rg = make_resource_group(location="usgovvirginia")
    vm, problems = create(rg)
    assert not problems and not vm.enable_hotpatching
    _, problems = create(rg, name="web-02", patch_settings=PatchSettings("AutomaticByPlatform", True))
    assert problems and "Azure Government" in problems[0].message


def test_the_preview_gate_applies_to_new_vms():
    rg = make_resource_group(make_subscription(onboarded=False))
    _, problems = create(rg)
    assert problems and "InGuestHotPatchVMPreview" in problems[0].message
    vm, problems = create(rg, patch_settings=PatchSettings("AutomaticByPlatform", False))
    assert not problems and not vm.enable_hotpatching


@pytest.mark.parametrize(
    "fields, target",
    [
        ({"name": "bad name!"}, "name"),
        ({"location": "atlantis"}, "location"),
        ({"image_sku": "2016-datacenter"}, "properties.storageProfile.imageReference"),
        ({"zone": "7"}, "zones"),
        ({"zone": "1", "availability_set": "avset"}, "zones"),
        ({"time_zone": "Mars/Olympus_Mons"}, "properties.osProfile.windowsConfiguration.timeZone"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(fields, target):
    rg = make_resource_group()
    vm, problems = create(rg, **fields)
    assert vm is None and any(p.target == target for p in problems), problems
    assert not rg.virtual_machines.exists()


def test_names_are_unique_in_a_resource_group_whatever_the_case():
    rg = make_resource_group()
    create(rg)
    _, problems = create(rg, name="WEB-01")
    assert problems and "already exists" in problems[0].message


def test_deleting_a_vm_fails_its_operations_in_flight_and_keeps_its_history():
    vm, _ = create(make_resource_group())
    operation = Operation.objects.get(vm=vm)
    services.delete_virtual_machine(vm)
    operation.refresh_from_db()
    assert operation.vm is None and operation.status == OperationStatus.FAILED and operation.error_code == "VMDeleted"
    assert operation.vm_name == "web-01"
