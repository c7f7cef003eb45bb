"""The Django admin: lists that stay cheap, and actions that go through the same services."""

import pytest
from django.urls import reverse

from patching import services
from patching.models import Operation, OperationKind
from tests.factories import make_resource_group, make_vm

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("catalog")]


def test_assess_now_action_starts_one_assessment_per_vm_through_the_service(
    admin_client, admin_user, django_capture_on_commit_callbacks
):
    rg = make_resource_group()
    vms = [make_vm(resource_group=rg) for _ in range(3)]
    url = reverse("admin:vms_virtualmachine_changelist")
    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(
            url, {"action": "assess_now", "_selected_action": [vm.pk for vm in vms]}, follow=True
        )
    assert "Started 3 assessment(s)." in response.text
    assert len(callbacks) == 1  # one bulk hand-off to Celery after the commit
    operations = Operation.objects.filter(kind=OperationKind.ASSESSMENT)
    assert {op.vm_id for op in operations} == {vm.pk for vm in vms}
    assert all(op.user == admin_user and op.started_by == "User" for op in operations)

    # Pressing it again while they run joins them.
    response = admin_client.post(url, {"action": "assess_now", "_selected_action": [vms[0].pk]}, follow=True)
    assert "already had one in progress" in response.text
    assert operations.count() == 3


def test_install_action_installs_critical_and_security(admin_client):
    vm = make_vm()
    admin_client.post(
        reverse("admin:vms_virtualmachine_changelist"),
        {"action": "install_critical_and_security_now", "_selected_action": [vm.pk]},
    )
    operation = Operation.objects.get(kind=OperationKind.INSTALLATION)
    assert operation.parameters["windowsParameters"]["classificationsToInclude"] == ["Critical", "Security"]


@pytest.mark.parametrize("count", [3, 30])
def test_vm_changelist_query_count_does_not_grow_with_the_fleet(admin_client, count, django_assert_max_num_queries):
    rg = make_resource_group()
    for _ in range(count):
        make_vm(resource_group=rg)
    with django_assert_max_num_queries(12):
        assert admin_client.get(reverse("admin:vms_virtualmachine_changelist")).status_code == 200


def test_operation_page_shows_per_patch_results(admin_client):
    vm = make_vm()
    operation, _ = services.start_operation(vm, OperationKind.ASSESSMENT, enqueue=False)
    services.execute_operation(operation.pk, now=vm.created_at)
    response = admin_client.get(reverse("admin:patching_operation_change", args=[operation.pk]))
    assert response.status_code == 200
    first = operation.results.select_related("update").first().update
    assert f"KB{first.kb}" in response.text and first.title in response.text


def test_admin_refuses_hotpatch_on_an_image_without_it(admin_client):
    vm = make_vm(product="ws2019")
    url = reverse("admin:vms_virtualmachine_change", args=[vm.pk])
    page = admin_client.get(url)
    form = page.context["adminform"].form
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    data.pop("created_at")  # a split date/time widget
    data.update({"created_at_0": f"{vm.created_at:%Y-%m-%d}", "created_at_1": f"{vm.created_at:%H:%M:%S}"})
    data.update(
        {
            "patch_mode": "AutomaticByPlatform",
            "enable_hotpatching": "on",
            "guest-TOTAL_FORMS": "1",
            "guest-INITIAL_FORMS": "1",
            "guest-MIN_NUM_FORMS": "0",
            "guest-MAX_NUM_FORMS": "1",
            "guest-0-vm": vm.pk,
        }
    )
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert "not supported on image" in response.text
    vm.refresh_from_db()
    assert not vm.enable_hotpatching
