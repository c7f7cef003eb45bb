"""Maintenance configuration pages: list, create/edit form with its preview, detail, runs, the VM's
pages; roles (Reader reads, others see nothing), bad input never a 500, constant queries on the list."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from patching.maintenance import services
from patching.maintenance.models import ConfigurationAssignment, MaintenanceConfiguration, WebhookSubscription
from patching.models import StartedBy
from tests.factories import make_resource_group, make_subscription
from tests.test_maintenance_runs import START, body, scheduled_vm


@pytest.fixture
def world(catalog, user, django_user_model):
    contoso = make_subscription("Contoso", user=user, role="Contributor")
    fabrikam = make_subscription("Fabrikam", user=user, role="Reader")
    bob = django_user_model.objects.create_user("bob", password="pw-bob-123")
    bobs = make_subscription("Bob's", user=bob, role="Owner")
    rg = make_resource_group(contoso, "rg-web")
    ro = make_resource_group(fabrikam, "rg-ro")
    brg = make_resource_group(bobs, "rg-bob")
    return {
        "user": user,
        "rg": rg,
        "ro": ro,
        "web1": scheduled_vm(rg, "web-01", tags={"env": "prod"}),
        "web2": scheduled_vm(rg, "web-02", bypass=False),
        "ro_config": services.save_configuration(ro, "ro-nightly", body())[0],
        "bob_config": services.save_configuration(brg, "bob-nightly", body())[0],
    }


def form_data(world, **changes) -> dict:
    data = {
        "resource_group": world["rg"].pk,
        "name": "patch-tuesday",
        "location": "westeurope",
        "start_date_time": "2030-01-14 22:00",
        "time_zone": "Pacific Standard Time",
        "duration": "03:55",
        "recur_every": "Month Second Tuesday Offset3",
        "expiration_date_time": "",
        "scope_resource_groups": "",
        "scope_tags": "env=prod",
        "scope_operator": "Any",
        "machines": "web-02",
        "reboot_setting": "IfRequired",
        "classifications": ["Critical", "Security"],
        "kbs_to_include": "",
        "kbs_to_exclude": "KB5034439",
        "webhook_url": "https://hooks.example.com/maintenance",
        "pre_event_minutes": "15",
    }
    data.update(changes)
    return data


def test_create_a_configuration_with_scope_machines_and_webhook(client, world):
    page = client.get(reverse("maintenance:create"))
    assert page.status_code == 200
    assert b"Basics" in page.content and b"Dynamic scopes" in page.content and b'id="preview"' in page.content

    response = client.post(reverse("maintenance:create"), form_data(world))
    config = MaintenanceConfiguration.objects.get(name="patch-tuesday")
    assert response.status_code == 302 and response["Location"] == reverse("maintenance:detail", args=[config.pk])
    assert config.time_zone == "Pacific Standard Time" and config.pre_event_minutes == 15
    assert config.windows_parameters["kbNumbersToExclude"] == ["5034439"]
    assert set(config.assignments.values_list("vm__name", flat=True)) == {"web-02", None}
    assert config.assignments.get(vm__isnull=True).filter["tagSettings"] == {
        "tags": {"env": ["prod"]},
        "filterOperator": "Any",
    }
    assert WebhookSubscription.objects.get().url == "https://hooks.example.com/maintenance"

    detail = client.get(reverse("maintenance:detail", args=[config.pk]))
    assert detail.status_code == 200
    assert b"web-02" in detail.content and b"Inert" in detail.content  # web-02 lacks the bypass flag
    assert b"Cancel this run" in detail.content

    edit = client.post(
        reverse("maintenance:edit", args=[config.pk]), form_data(world, duration="02:00", machines="", scope_tags="")
    )
    assert edit.status_code == 302
    config.refresh_from_db()
    assert config.duration == timedelta(hours=2) and not config.assignments.exists()


@pytest.mark.parametrize(
    "changes, field, text",
    [
        ({"recur_every": "Month Second Tuesday Offset9"}, "recur_every", "between -6 and 6"),
        ({"start_date_time": "tomorrow"}, "start_date_time", "yyyy-MM-dd HH:mm"),
        ({"expiration_date_time": "2029-01-01 00:00"}, "expiration_date_time", "after startDateTime"),
        ({"machines": "nope-01"}, "machines", "No VM named nope-01"),
        ({"webhook_url": "http://hooks.example.com/x"}, "webhook_url", "https"),
        ({"resource_group": "99999999999999999999"}, "resource_group", "Select a valid choice"),
        ({"scope_tags": "", "scope_locations": ["mars"]}, "scope_locations", "Select a valid choice"),
    ],
)
def test_bad_input_is_refused_on_its_field_and_nothing_is_written(client, world, changes, field, text):
    response = client.post(reverse("maintenance:create"), form_data(world, **changes))
    assert response.status_code == 200
    assert text in str(response.context["form"].errors.get(field, ""))
    assert not MaintenanceConfiguration.objects.filter(name="patch-tuesday").exists()
    assert not ConfigurationAssignment.objects.exists() and not WebhookSubscription.objects.exists()


def test_the_preview_lists_the_next_ten_windows_in_the_chosen_zone_and_the_scope_matches(client, world):
    response = client.get(reverse("maintenance:preview"), form_data(world), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count("<li><time") == 10
    # January's Patch Tuesday + 3 (Jan 11) is before the start: February's (Feb 12) + 3, Pacific time.
    assert "Fri 2030-02-15 22:00–01:55" in html and "Fri 2030-03-15 22:00–01:55" in html
    assert 'id="preview-scope"' in html and "<b>1</b> machine in Contoso: web-01" in html

    bad = client.get(reverse("maintenance:preview"), {"recur_every": "Sometimes", "time_zone": "Nowhere"})
    assert bad.status_code == 200 and "is not a Windows time zone" in bad.content.decode()
    assert client.get(reverse("maintenance:preview"), {"resource_group": "9" * 40}).status_code == 200


def test_a_reader_reads_but_cannot_change(client, world):
    config = world["ro_config"]
    detail = client.get(reverse("maintenance:detail", args=[config.pk]))
    assert (
        detail.status_code == 200
        and b"read-only for you" in detail.content
        and b"Cancel this run" not in detail.content
    )
    for url in ("maintenance:edit", "maintenance:delete", "maintenance:cancel"):
        assert client.post(reverse(url, args=[config.pk]), {}).status_code == 403
    assert MaintenanceConfiguration.objects.filter(pk=config.pk).exists()


def test_other_users_configurations_are_invisible(client, world):
    config = world["bob_config"]
    assert b"bob-nightly" not in client.get(reverse("maintenance:list")).content
    assert client.get(reverse("maintenance:detail", args=[config.pk])).status_code == 404
    assert client.post(reverse("maintenance:delete", args=[config.pk])).status_code == 404


def test_the_list_runs_a_constant_number_of_queries(client, world):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(reverse("maintenance:list")).status_code == 200
        return len(captured)

    few = queries()
    for i in range(5):
        config, _, _ = services.save_configuration(world["rg"], f"extra-{i}", body())
        services.assign_scope(config, world["rg"].subscription, f"scope-{i}", {"osTypes": ["Windows"]})
    assert queries() == few


def test_the_vm_page_shows_its_assignment_and_says_when_it_is_inert(client, world):
    url = reverse("vms:guest-updates", args=[world["web2"].pk])
    assert b"No maintenance configuration is assigned" in client.get(url).content
    config, _, _ = services.save_configuration(world["rg"], "nightly", body())
    response = client.post(reverse("maintenance:vm-assignment", args=[world["web2"].pk]), {"configuration": config.pk})
    assert response.status_code == 302
    page = client.get(url).content.decode()
    assert "Assigned to" in page and "nightly" in page and 'id="maintenance-inert"' in page

    services.assign_vm(config, world["web1"], "a")
    page = client.get(reverse("vms:guest-updates", args=[world["web1"].pk])).content.decode()
    assert "Assigned to" in page and 'id="maintenance-inert"' not in page
    assert (
        client.post(
            reverse("maintenance:vm-assignment", args=[world["web1"].pk]), {"configuration": "9" * 30}
        ).status_code
        == 302
    )


def test_the_vm_history_says_which_configuration_started_an_installation(client, world, no_random_failures):
    config, _, _ = services.save_configuration(world["rg"], "nightly", body())
    services.assign_vm(config, world["web1"], "a")
    services.run_due(START + timedelta(seconds=1), execute=True)
    op = world["web1"].operations.get(started_by=StartedBy.SCHEDULE)
    page = client.get(
        reverse("patching:hotpatch", args=[world["web1"].pk]), {"tab": "history", "range": "all"}
    ).content.decode()
    assert "Maintenance configuration nightly" in page
    opened = client.get(
        reverse("patching:hotpatch", args=[world["web1"].pk]), {"tab": "history", "operation": op.pk}
    ).content.decode()
    assert "Maintenance configuration nightly" in opened
    run = config.runs.get()
    assert client.get(reverse("maintenance:run", args=[run.pk])).status_code == 200


def test_the_configuration_and_run_pages_run_a_constant_number_of_queries(client, world, no_random_failures):
    config, _, _ = services.save_configuration(world["rg"], "nightly", body())
    services.add_webhook(config, "https://hooks.example.com/a")
    services.assign_vm(config, world["web1"], "a")
    services.run_due(START + timedelta(seconds=1), execute=True)
    services.run_due(START + timedelta(hours=3))

    def queries(url) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        return len(captured)

    detail, run = (
        reverse("maintenance:detail", args=[config.pk]),
        reverse("maintenance:run", args=[config.runs.get().pk]),
    )
    few = queries(detail), queries(run)
    for i in range(4):
        vm = scheduled_vm(world["rg"], f"more-{i}")
        services.assign_vm(config, vm, f"more-{i}")
    services.run_due(START + timedelta(days=1, seconds=1), execute=True)
    services.run_due(START + timedelta(days=1, hours=3))
    run = reverse("maintenance:run", args=[config.runs.order_by("-scheduled_start").first().pk])
    assert (queries(detail), queries(run)) == few
