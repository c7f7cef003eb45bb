"""The Hotpatch blade: status cards, Assess now, Install updates now, live status, compliance, history."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from patching.models import Operation, OperationKind, OperationStatus
from patching.parameters import from_arm
from tests.browser.data import make_fleet, run_now
from tests.factories import make_resource_group, make_subscription, make_vm

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("catalog")]
HX = {"HX-Request": "true"}


@pytest.fixture
def vm(user):
    rg = make_resource_group(make_subscription("Contoso", user=user, role="Contributor"), "rg-web")
    return make_vm(resource_group=rg, name="web-01", product="ws2022")  # monthly LCU, .NET, MSRT, ...


def blade(vm, **query) -> str:
    url = reverse("patching:hotpatch", args=[vm.pk])
    return url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def test_the_blade_shows_the_status_cards_and_commands(client, vm):
    response = client.get(blade(vm))
    text = response.text
    for label in ("Hotpatch status", "Current baseline", "Next baseline", "Next expected reboot", "Last assessed"):
        assert label in text
    assert 'id="assess-now"' in text and 'id="install-now"' in text
    assert "No assessment yet" in text  # compliance before the first assessment
    assert "Not planned by Azure (patch orchestration: Windows automatic updates)" in text

    enrolled = make_vm(resource_group=vm.resource_group, name="hot-01")  # the seed's defaults: hotpatch on
    context = client.get(blade(enrolled)).context
    assert context["next_reboot"]["date"] == context["next_baseline"]  # an enrolled VM reboots for baselines only
    assert context["next_baseline"].month in (1, 4, 7, 10)


def test_assess_now_queues_once_and_a_second_click_joins(client, vm, django_capture_on_commit_callbacks):
    url = reverse("patching:assess", args=[vm.pk])
    with django_capture_on_commit_callbacks() as callbacks:
        first = client.post(url, headers=HX)
        second = client.post(url, headers=HX)
    assert vm.operations.count() == 1 and len(callbacks) == 1
    assert 'id="operation-assessment"' in first.text and "Queued" in first.text
    assert 'hx-trigger="every 1s"' in first.text  # the chip polls while the operation runs
    assert "you joined it" in second.text


def test_assess_now_without_javascript_redirects_back_to_the_blade(client, vm, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        response = client.post(reverse("patching:assess", args=[vm.pk]), follow=True)
    assert response.redirect_chain[-1][0] == blade(vm)
    assert "Assessment of web-01 queued." in response.text
    assert 'data-status="NotStarted"' in response.text  # the blade shows the operation in flight
    assert client.get(reverse("patching:assess", args=[vm.pk])).status_code == 405  # never on GET


def test_operation_status_polls_until_finished_then_stops_with_286_and_an_event(client, vm):
    operation = run_now(vm, OperationKind.ASSESSMENT)
    running = Operation.objects.create(
        vm=vm, subscription_id=vm.resource_group.subscription_id, vm_name=vm.name, location=vm.location,
        kind=OperationKind.INSTALLATION,
    )  # fmt: skip
    status = reverse("patching:operation-status", args=[running.pk])
    response = client.get(status, headers=HX)
    assert response.status_code == 200 and "Queued" in response.text and "every 1s" in response.text

    response = client.get(reverse("patching:operation-status", args=[operation.pk]), headers=HX)
    assert response.status_code == 286
    assert "operation-finished" in response["HX-Trigger-After-Swap"]
    assert "Succeeded" in response.text and "hx-trigger" not in response.text
    assert "available (" in response.text and "View details" in response.text


def test_a_finished_installation_hands_over_to_the_follow_up_assessment(client, vm):
    run_now(vm, OperationKind.ASSESSMENT, minutes_ago=30)
    installation = run_now(vm, OperationKind.INSTALLATION, minutes_ago=20)
    follow_up = Operation.objects.create(
        vm=vm, subscription_id=vm.resource_group.subscription_id, vm_name=vm.name, location=vm.location,
        kind=OperationKind.ASSESSMENT, started_by="Platform",
    )  # fmt: skip
    response = client.get(reverse("patching:operation-status", args=[installation.pk]), headers=HX)
    assert response.status_code == 286
    # The follow-up assessment lands in the assessment slot, out of band, and polls on its own.
    assert 'id="operation-assessment"' in response.text and 'hx-swap-oob="outerHTML"' in response.text
    assert reverse("patching:operation-status", args=[follow_up.pk]) in response.text


def test_compliance_lists_available_updates_grouped_and_filtered_by_classification(client, vm):
    assessment = run_now(vm, OperationKind.ASSESSMENT)
    response = client.get(blade(vm))
    groups = response.context["compliance_groups"]
    assert sum(len(g["results"]) for g in groups) == assessment.results.count() >= 2
    assert [g["classification"] for g in groups][0] in ("Critical", "Security")  # what auto-patching installs first
    assert "KB890830" in response.text  # the Malicious Software Removal Tool, an Update Rollup

    only = client.get(blade(vm, classification="UpdateRollUp"), headers={**HX, "HX-Target": "tab-panel"})
    assert only.text.lstrip().startswith('<section id="tab-panel"')
    assert "Update Rollups (1)</td>" in only.text and "Security Updates (" not in only.text.split("</nav>")[-1]
    bad = client.get(blade(vm, classification="Spam"))
    assert "Ignored the classification filter “Spam”" in bad.text


def test_history_filters_by_time_range_and_status_and_opens_an_operation(client, vm, user, no_random_failures):
    assessment = run_now(vm, OperationKind.ASSESSMENT, minutes_ago=60)
    body = {
        "rebootSetting": "Never",
        "maximumDuration": "PT4H",
        "windowsParameters": {"classificationsToInclude": ["Critical", "Security"], "kbNumbersToExclude": ["890830"]},
    }
    installation = run_now(vm, OperationKind.INSTALLATION, user=user, parameters=from_arm(body), minutes_ago=50)
    Operation.objects.filter(kind=OperationKind.ASSESSMENT).update(created_at=timezone.now() - timedelta(days=10))

    page = client.get(blade(vm, tab="history")).context["history_page"]
    assert [op.kind for op in page.object_list] == ["installation", "assessment"]
    week = client.get(blade(vm, tab="history", range="7d")).context["history_page"]
    assert [op.pk for op in week.object_list] == [installation.pk]
    assert not client.get(blade(vm, tab="history", status="Failed")).context["history_page"].object_list
    # Not vacuous: with a failed operation in the history, the filter shows it and only it.
    Operation.objects.filter(pk=assessment.pk).update(status=OperationStatus.FAILED)
    failed = client.get(blade(vm, tab="history", status="Failed")).context["history_page"]
    assert [op.pk for op in failed.object_list] == [assessment.pk]
    installation.refresh_from_db()
    finished = client.get(blade(vm, tab="history", status=installation.status)).context["history_page"]
    assert [op.pk for op in finished.object_list] == [installation.pk]
    assert "Ignored the time range “1y”" in client.get(blade(vm, tab="history", range="1y")).text

    opened = client.get(blade(vm, tab="history", operation=installation.pk))
    assert opened.context["opened"] == installation
    results = {r.update.kb: r.state for r in opened.context["opened_results"]}
    assert results["890830"] == "Excluded" and installation.excluded_count == 1
    assert 'id="operation-results"' in opened.text and "KB890830" in opened.text and "olivia" in opened.text
    for junk in ("\u00b2", "99999999999999999999999", "abc"):
        unknown = client.get(blade(vm, tab="history", operation=junk))
        assert unknown.status_code == 200 and "is not in this VM" in unknown.text


def test_install_dialog_refuses_bad_input_next_to_each_field_and_starts_nothing(client, vm):
    url = reverse("patching:install", args=[vm.pk])
    dialog = client.get(url, headers={**HX, "HX-Target": "install-pane"})
    assert dialog.text.lstrip().startswith('<dialog id="install-pane"')
    cases = [
        ({"kbs_to_include": "KB12 hello"}, "kbs_to_include", "is not a KB number"),
        ({"kbs_to_include": "KB5012345", "kbs_to_exclude": "5012345"}, "kbs_to_exclude", "both included and excluded"),
        ({"classifications": []}, "classifications", "at least one classification or KB"),
        ({"maximum_duration": "5"}, "maximum_duration", "between 10 minutes and 4 hours"),
        ({"maximum_duration": "300"}, "maximum_duration", "between 10 minutes and 4 hours"),
        ({"maximum_duration": "two hours"}, "maximum_duration", "whole number"),
        ({"max_patch_publish_date": "13/45/2026"}, "max_patch_publish_date", "is not a date"),
        ({"reboot_setting": "Sometimes"}, "reboot_setting", "valid choice"),
    ]
    for change, field, message in cases:
        data = {"classifications": ["Critical", "Security"], "reboot_setting": "IfRequired", "maximum_duration": "120"}
        data.update(change)
        response = client.post(url, data, headers={**HX, "HX-Target": "install-pane"})
        assert response.status_code == 200, change
        errors = response.context["form"].errors
        assert field in errors and message in " ".join(errors[field]), (change, errors)
        assert f'id="field-{field}"' in response.text and "has-error" in response.text
        # The dialog keeps what was typed.
        for key, value in change.items():
            if isinstance(value, str) and value:
                assert value in response.text, (key, value)
    assert not Operation.objects.filter(kind=OperationKind.INSTALLATION).exists()


def test_install_reports_every_problem_at_once(client, vm):
    data = {
        "classifications": ["Critical"],
        "kbs_to_include": "KB1",
        "maximum_duration": "abc",
        "reboot_setting": "Never",
    }
    form = client.post(reverse("patching:install", args=[vm.pk]), data).context["form"]
    assert set(form.errors) == {"kbs_to_include", "maximum_duration"}


def test_install_starts_an_operation_closes_the_dialog_and_shows_its_status(
    client, vm, user, django_capture_on_commit_callbacks
):
    data = {
        "classifications": ["Critical", "Security", "UpdateRollUp"],
        "kbs_to_exclude": "KB890830,\n 5012345",
        "reboot_setting": "Never",
        "maximum_duration": "90",
        "max_patch_publish_date": "2030-01-01",
    }
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(reverse("patching:install", args=[vm.pk]), data, headers=HX)
    assert len(callbacks) == 1
    operation = Operation.objects.get(kind=OperationKind.INSTALLATION)
    assert operation.user == user and operation.status == OperationStatus.NOT_STARTED
    windows = operation.parameters["windowsParameters"]
    assert (
        windows["kbNumbersToExclude"] == ["5012345", "890830"] and operation.parameters["maximumDuration"] == "PT1H30M"
    )
    assert windows["maxPatchPublishDate"].startswith("2030-01-01")
    assert '<div id="install-pane"></div>' in response.text  # the dialog is gone
    assert 'id="operation-installation"' in response.text and 'hx-swap-oob="outerHTML"' in response.text
    assert "operation-started" in response["HX-Trigger"]


def test_install_without_javascript_is_a_page_and_redirects_to_history(client, vm, django_capture_on_commit_callbacks):
    url = reverse("patching:install", args=[vm.pk])
    page = client.get(url)
    assert "<html" in page.text and "Install updates now" in page.text and "<dialog" not in page.text
    with django_capture_on_commit_callbacks():
        response = client.post(
            url, {"classifications": ["Security"], "reboot_setting": "IfRequired", "maximum_duration": "60"}
        )
    assert response.status_code == 302 and response["Location"].endswith("?tab=history")


def test_blade_query_count_does_not_grow_with_the_fleet_or_the_history(client, user, django_assert_max_num_queries):
    subscription = make_subscription("Big", user=user)
    counts = {}
    for size, prefix in ((10, "small"), (490, "large")):
        vms = make_fleet(size, make_resource_group(subscription), prefix=prefix)
        vm = vms[0]
        run_now(vm, OperationKind.ASSESSMENT)
        for tab in ("compliance", "history"):
            with django_assert_max_num_queries(16) as captured:
                assert client.get(blade(vm, tab=tab)).status_code == 200
            counts[size, tab] = len(captured.captured_queries)
    assert counts[10, "compliance"] == counts[490, "compliance"], counts
    assert counts[10, "history"] == counts[490, "history"], counts
    print(f"blade queries: {counts}")


def test_assess_now_on_a_vm_deleted_meanwhile_is_a_404_not_a_500(client, vm, monkeypatch):
    """The VM goes between the page's lookup and the start (a DELETE racing the click)."""
    from portal.web.views import hotpatch
    from vms.models import VirtualMachine

    looked_up = hotpatch.get_vm

    def get_then_delete(request, pk, **kwargs):
        found = looked_up(request, pk, **kwargs)
        VirtualMachine.objects.filter(pk=pk).delete()
        return found

    monkeypatch.setattr(hotpatch, "get_vm", get_then_delete)
    response = client.post(reverse("patching:assess", args=[vm.pk]))
    assert response.status_code == 404
    assert not Operation.objects.filter(vm_name=vm.name).exists()
