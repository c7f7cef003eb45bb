"""The fleet at a glance: the Overview's charts, the By-update view and its install action, and the
history across the fleet with its filters, keyset pages and exports. Real PostgreSQL, real runs of the
simulated guest (services.execute_operations on a simulated clock)."""

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from patching import fleet as figures
from patching import services
from patching.models import (
    ComplianceSnapshot,
    GuestState,
    MissingUpdate,
    Operation,
    OperationKind,
    OperationStatus,
    PatchResult,
    PatchState,
    RebootStatus,
)
from patching.parameters import from_arm
from patching.vocabulary import UpdateKind
from tests.browser.data import make_fleet, make_user, run_now
from tests.factories import load_catalog, make_resource_group, make_subscription, make_vm

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("catalog")]

OVERVIEW = reverse("patching:fleet-overview")
UPDATES = reverse("patching:updates")
HISTORY = reverse("patching:history")


@pytest.fixture
def contoso(user):
    return make_subscription("Contoso", user=user, role="Contributor")


def assessed_vm(resource_group, name, **fields):
    """A VM two months behind, assessed: it misses the updates since."""
    vm = make_vm(resource_group=resource_group, name=name, behind_by_months=2, **fields)
    run_now(vm, OperationKind.ASSESSMENT)
    return vm


# --- The overview ----------------------------------------------------------------------------------


def test_the_overview_counts_what_the_fleet_list_counts(client, contoso):
    rg = make_resource_group(contoso, "rg-web", "westeurope")
    make_fleet(12, rg)
    assessed_vm(rg, "behind-1")
    fleet_tiles = client.get(reverse("vms:list")).context["tiles"]
    response = client.get(OVERVIEW)
    assert response.status_code == 200
    tiles = response.context["tiles"]
    assert tiles["total"] == fleet_tiles["total"] == 13
    assert [(s["key"], s["count"]) for s in tiles["statuses"]] == [
        (s["key"], s["count"]) for s in fleet_tiles["statuses"]
    ]
    assert [(m["key"], m["count"]) for m in tiles["modes"]] == [(m["key"], m["count"]) for m in fleet_tiles["modes"]]
    # The chart's text alternative and its numbers table say the same counts.
    page = response.text
    for s in fleet_tiles["statuses"]:
        assert f"{s['label']}: {s['count']} machine" in page
    assert 'role="img"' in page and "<desc" in page and "Numbers</summary>" in page
    # Each status row opens the fleet list with that status.
    assert f'href="{reverse("vms:list")}?update_status=reboot"' in page


def test_the_overview_is_scoped_by_the_fleet_filters(client, contoso):
    web = make_resource_group(contoso, "rg-web", "westeurope")
    sql = make_resource_group(contoso, "rg-sql", "northeurope")
    make_fleet(4, web, prefix="web")
    make_fleet(3, sql, prefix="sql", product="ws2019")
    assert client.get(OVERVIEW, {"location": "northeurope"}).context["tiles"]["total"] == 3
    assert client.get(OVERVIEW, {"os": "ws2022-azure"}).context["tiles"]["total"] == 4
    response = client.get(OVERVIEW, {"location": "atlantis", "update_status": "reboot", "q": "web"})
    # An unknown value is ignored with a notice; filters the overview does not offer are not read.
    assert response.status_code == 200 and response.context["tiles"]["total"] == 7
    assert "“atlantis”" in response.text


def test_missing_updates_by_classification_come_from_the_last_assessment(client, contoso):
    rg = make_resource_group(contoso)
    vm = assessed_vm(rg, "behind-1")
    make_vm(resource_group=rg, name="fresh")  # never assessed: misses nothing we know of
    guest = GuestState.objects.get(pk=vm.pk)
    still = list(PatchResult.objects.still_available(guest).values_list("update__classification", flat=True))
    assert still and sum(guest.missing_by_classification.values()) == len(still)
    assert set(MissingUpdate.objects.filter(guest=guest).values_list("update_id", flat=True)) == set(
        PatchResult.objects.still_available(guest).values_list("update_id", flat=True)
    )
    rows = {r["key"]: r["count"] for r in client.get(OVERVIEW).context["classes"]["rows"]}
    assert rows["Security"] == 1 and sum(rows.values()) == len(set(still))
    assert guest.oldest_critical_security_at is not None


def test_each_installation_bar_opens_the_matching_operations(client, contoso):
    rg = make_resource_group(contoso)
    make_fleet(6, rg)  # one installation each three days ago: three succeeded, three failed
    response = client.get(OVERVIEW)
    day = timezone.localdate() - timedelta(days=3)
    bar = next(b for b in response.context["bars"] if b.day == day)
    counts = {s.key: s.count for s in bar.segments}
    assert counts == {"Succeeded": 3, "CompletedWithWarnings": 0, "Failed": 3}
    fleet_list = client.get(reverse("vms:list")).context["tiles"]["installs"]
    assert response.context["installs_total"] == 6 == fleet_list["runs"]
    assert [t["total"] for t in response.context["series_totals"]] == [
        fleet_list["succeeded"],
        fleet_list["warnings"],
        fleet_list["failed"],
    ]
    failed = next(s for s in bar.segments if s.key == "Failed")
    assert f'href="{failed.url}"'.replace("&", "&amp;") in response.text
    history = client.get(failed.url)
    rows = history.context["rows"]
    assert len(rows) == 3 and {(op.kind, op.status) for op in rows} == {("installation", "Failed")}
    assert {op.created_at.date() for op in rows} == {day}


def test_it_polls_only_while_operations_are_in_flight(client, contoso):
    vm = make_vm(resource_group=make_resource_group(contoso))
    response = client.get(OVERVIEW)
    assert 'hx-trigger="every' not in response.text and 'data-polling="false"' in response.text
    services.start_operation(vm, OperationKind.ASSESSMENT, enqueue=False)
    response = client.get(OVERVIEW)
    assert 'hx-trigger="every 5s"' in response.text
    partial = client.get(OVERVIEW, headers={"HX-Request": "true", "HX-Target": "overview"})
    assert partial.text.lstrip().startswith('<div id="overview"') and "<html" not in partial.text


def test_compliance_is_recorded_daily_and_survives_pruning(client, contoso, settings):
    rg = make_resource_group(contoso)
    vm = assessed_vm(rg, "behind-1")
    now = timezone.now()
    # Today the VM's oldest missing security update is older than 30 days: not compliant.
    assert figures.record_compliance_snapshots(now) == 1
    # A week ago, its outstanding updates were younger.
    GuestState.objects.filter(pk=vm.pk).update(oldest_critical_security_at=now - timedelta(days=2))
    figures.record_compliance_snapshots(now - timedelta(days=7))
    figures.record_compliance_snapshots(now)  # re-recorded today: one row per day
    assert ComplianceSnapshot.objects.count() == 2
    settings.PORTAL_HISTORY_RETENTION_DAYS = 1
    Operation.objects.update(created_at=now - timedelta(days=5))
    services.prune_history(now=now)
    assert not Operation.objects.exists()
    response = client.get(OVERVIEW, {"trend": "90"})
    trend = [p for p in response.context["trend"] if p["assessed"] is not None]
    assert len(response.context["trend"]) == 90 and len(trend) == 2
    assert [p["share"] for p in trend] == [100.0, 100.0]
    assert "100.0%" in response.text


def test_hotpatch_counts_installations_without_reboot_as_they_are_recorded(client, contoso, no_random_failures):
    rg = make_resource_group(contoso)
    november = datetime(2026, 11, 2, tzinfo=UTC)
    vm = make_vm(resource_group=rg, hotpatch=True, now=november)
    no_reboot = from_arm(
        {
            "rebootSetting": "IfRequired",
            "windowsParameters": {
                "classificationsToInclude": ["Critical", "Security"],
                "excludeKbsRequiringReboot": True,
            },
        }
    )
    after_patch_tuesday = november + timedelta(days=18)
    for hours in (0, 1):  # the second run finds nothing left to install: not counted
        op, _ = services.start_operation(
            vm, OperationKind.INSTALLATION, parameters=no_reboot, now=after_patch_tuesday, enqueue=False
        )
        services.execute_operations([op.pk], now=after_patch_tuesday + timedelta(hours=hours))
    first, second = Operation.objects.filter(kind=OperationKind.INSTALLATION).order_by("pk")
    assert first.installed_count >= 1 and first.reboot_status == RebootStatus.NOT_NEEDED
    assert PatchResult.objects.filter(
        operation=first, state=PatchState.INSTALLED, update__kind=UpdateKind.HOTPATCH
    ).exists()
    assert second.installed_count == 0
    response = client.get(OVERVIEW)
    assert response.context["hotpatch"]["without_reboot"] == 1
    assert response.context["hotpatch"]["reboots_avoided"] == 1
    assert "Counted from recorded history" in response.text
    # Pruned history does not take the count with it.
    Operation.objects.all().delete()
    assert client.get(OVERVIEW).context["hotpatch"]["reboots_avoided"] == 1


# --- By update -------------------------------------------------------------------------------------


def test_by_update_lists_what_is_missing_and_installs_it_on_those_machines(client, contoso, no_random_failures):
    rg = make_resource_group(contoso)
    vms = [assessed_vm(rg, f"behind-{n}") for n in range(3)]
    response = client.get(UPDATES)
    rows = {row.update.kb: row for row in response.context["rows"]}
    assert rows and all(row.missing == 3 for row in rows.values())
    kb, row = next(iter(rows.items()))
    machines = client.get(reverse("patching:update-machines", args=[row.update.pk]))
    assert machines.context["page"].paginator.count == 3 and f"Install KB{kb} on 3 machines" in machines.text

    response = client.post(
        reverse("patching:update-install", args=[row.update.pk]),
        {"kbs_to_include": f"KB{kb}", "reboot_setting": "IfRequired", "maximum_duration": "120"},
    )
    assert response.status_code == 302 and response.url.startswith(HISTORY)
    queued = Operation.objects.filter(kind=OperationKind.INSTALLATION, status=OperationStatus.NOT_STARTED)
    assert sorted(queued.values_list("vm_id", flat=True)) == sorted(vm.pk for vm in vms)
    assert all(op.parameters["windowsParameters"]["kbNumbersToInclude"] == [kb] and op.user_id for op in queued)
    history = client.get(response.url)
    assert len(history.context["rows"]) == 3 and 'hx-trigger="every 5s"' in history.text

    services.execute_operations(list(queued.values_list("pk", flat=True)), now=timezone.now())
    assert not MissingUpdate.objects.filter(update=row.update).exists()
    after = {r.update.kb: r for r in client.get(UPDATES).context["rows"]}
    assert kb not in after or after[kb].missing == 0
    assert client.get(reverse("patching:update-machines", args=[row.update.pk])).context["page"].paginator.count == 0


def test_by_update_filters_sorts_and_refuses_nothing_with_a_500(client, contoso):
    assessed_vm(make_resource_group(contoso), "behind-1")
    all_rows = client.get(UPDATES).context["rows"]
    security = client.get(UPDATES, {"classification": "security"}).context["rows"]
    assert security and all(r.update.classification == "Security" for r in security)
    assert len(security) < len(all_rows) or all(r.update.classification == "Security" for r in all_rows)
    by_kb = client.get(UPDATES, {"sort": "kb"}).context["rows"]
    assert [r.update.kb for r in by_kb] == sorted(r.update.kb for r in all_rows)
    kb = all_rows[0].update.kb
    assert [r.update.kb for r in client.get(UPDATES, {"q": f"KB{kb}"}).context["rows"]] == [kb]
    response = client.get(UPDATES, {"classification": "Nope", "sort": "drop table", "reboot": "x"})
    assert response.status_code == 200 and "“Nope”" in response.text and "“drop table”" in response.text
    assert client.get(reverse("patching:update-machines", args=[999999])).status_code == 404


def test_a_bad_install_form_starts_nothing_and_says_why(client, contoso):
    vm = assessed_vm(make_resource_group(contoso), "behind-1")
    update = MissingUpdate.objects.filter(guest_id=vm.pk).first().update
    response = client.post(
        reverse("patching:update-install", args=[update.pk]),
        {"kbs_to_include": "", "reboot_setting": "IfRequired", "maximum_duration": "5"},
    )
    assert response.status_code == 400 and "Nothing was started" in response.text
    assert not Operation.objects.filter(kind=OperationKind.INSTALLATION).exists()
    response = client.post(
        reverse("patching:update-install", args=[update.pk]),
        {"kbs_to_include": f"KB{update.kb}", "reboot_setting": "IfRequired", "maximum_duration": "60", "vm": "x"},
    )
    assert response.status_code == 404


# --- Access ----------------------------------------------------------------------------------------


def test_a_user_sees_only_their_subscriptions_and_may_install_only_where_they_may_act(client, fleet, alice):
    client.force_login(alice)
    for vm in (fleet["web1"], fleet["ro1"], fleet["bob1"]):
        run_now(vm, OperationKind.ASSESSMENT)
    assert client.get(OVERVIEW).context["tiles"]["total"] == 3  # web-01, web-02, ro-01; not bob-01
    names = {op.vm_name for op in client.get(HISTORY).context["rows"]}
    assert names == {"web-01", "ro-01"}
    export = b"".join(client.get(reverse("patching:history-export-csv")).streaming_content).decode()
    assert "bob-01" not in export and "web-01" in export

    update = MissingUpdate.objects.filter(guest_id=fleet["ro1"].pk).first().update
    install = reverse("patching:update-install", args=[update.pk])
    body = {"kbs_to_include": f"KB{update.kb}", "reboot_setting": "IfRequired", "maximum_duration": "60"}
    # Fabrikam, where Alice is Reader: refused, whether named or in scope.
    assert client.post(install, {**body, "vm": fleet["ro1"].pk}).status_code == 403
    page = client.get(reverse("patching:update-machines", args=[update.pk]))
    assert "is Reader" in page.text
    assert client.post(install, body).status_code == 403
    # Bob's VM is not hers to see: not found.
    assert client.post(install, {**body, "vm": fleet["bob1"].pk}).status_code == 404
    assert not Operation.objects.filter(kind=OperationKind.INSTALLATION).exists()
    # In Contoso's scope she may.
    response = client.post(f"{install}?subscription={fleet['contoso'].pk}", body)
    assert response.status_code == 302
    assert list(Operation.objects.filter(kind=OperationKind.INSTALLATION).values_list("vm_name", flat=True)) == [
        "web-01"
    ]
    assert client.get(install).status_code == 405  # a GET changes nothing


# --- History across the fleet ------------------------------------------------------------------------


def test_history_filters_by_kind_status_started_by_dates_and_update(client, contoso, user):
    rg = make_resource_group(contoso)
    make_fleet(4, rg)  # per VM: an assessment 2 days ago, an installation 3 days ago (platform)
    vm = assessed_vm(rg, "behind-1")  # an assessment by the platform, now
    kb = MissingUpdate.objects.filter(guest_id=vm.pk).first().update.kb
    run_now(vm, OperationKind.ASSESSMENT, user=user)

    def names(**params):
        return [op.vm_name for op in client.get(HISTORY, params).context["rows"]]

    assert len(names()) == 10
    assert len(names(kind="installation")) == 4
    assert len(names(kind="installation", status="Failed")) == 2
    assert names(started_by="User") == ["behind-1"]
    day = (timezone.localdate() - timedelta(days=3)).isoformat()
    assert len(names(**{"from": day, "to": day})) == 4
    assert sorted(names(kb=f"KB{kb}")) == ["behind-1", "behind-1"]
    response = client.get(
        HISTORY, {"kind": "reboot", "from": "yesterday", "to": "2026-13-45", "kb": "hello", "after": "x.y"}
    )
    assert response.status_code == 200 and len(response.context["rows"]) == 10
    assert len(response.context["history"].notices) == 5
    # Days at the calendar's ends, digits that are not ASCII: ignored with a notice, never a 500.
    for params in ({"to": "9999-12-31"}, {"from": "0001-01-01"}, {"kb": "KB١٢٣٤٥٦٧"}, {"after": "²³.1"}):
        for url in (HISTORY, reverse("patching:history-export-csv")):
            assert client.get(url, params).status_code == 200, (url, params)
        assert client.get(HISTORY, params).context["history"].notices, params
    later, earlier = timezone.localdate().isoformat(), (timezone.localdate() - timedelta(days=5)).isoformat()
    assert "“from” is after “to”" in client.get(HISTORY, {"from": later, "to": earlier}).text


def test_history_pages_by_keyset_and_exports_everything_streamed(client, contoso):
    rg = make_resource_group(contoso)
    make_fleet(60, rg)  # 120 operations
    seen, query = [], {}
    while True:
        response = client.get(HISTORY, query)
        seen += [op.pk for op in response.context["rows"]]
        if not response.context["next_query"]:
            break
        query = dict(pair.split("=", 1) for pair in response.context["next_query"].split("&"))
    assert len(seen) == len(set(seen)) == 120
    assert seen == list(Operation.objects.order_by("-created_at", "-pk").values_list("pk", flat=True))

    response = client.get(reverse("patching:history-export-csv"), {"kind": "installation"})
    assert response.streaming and response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][:3] == ["Activity ID", "Machine", "Subscription ID"] and len(rows) == 61
    response = client.get(reverse("patching:history-export-json"), {"status": "Failed"})
    assert response.streaming and response["Content-Type"] == "application/json"
    records = json.loads(b"".join(response.streaming_content))
    assert len(records) == 30 and {r["status"] for r in records} == {"Failed"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", records[0]["created_at"])
    empty = client.get(reverse("patching:history-export-json"), {"kb": "KB1234567"})
    assert json.loads(b"".join(empty.streaming_content)) == []


def test_history_pages_through_a_round_created_at_one_moment(client, contoso, django_assert_max_num_queries):
    """A platform round creates its operations at one created_at: the keyset still pages through them
    (by id within the moment) without repeating or skipping one, filtered or not, in a flat query count."""
    vms = make_fleet(70, make_resource_group(contoso), history=False)
    moment = timezone.now() - timedelta(hours=1)
    services.queue_operations(vms, OperationKind.ASSESSMENT, enqueue=False, now=moment)
    services.queue_operations(vms[:55], OperationKind.INSTALLATION, enqueue=False, now=moment)
    services.queue_operations(vms[:3], OperationKind.ASSESSMENT, enqueue=False, now=moment - timedelta(days=1))
    for params in ({}, {"kind": "assessment"}, {"status": "NotStarted", "started_by": "platform"}):
        expected = Operation.objects.order_by("-created_at", "-pk")
        if "kind" in params:
            expected = expected.filter(kind=params["kind"])
        expected = list(expected.values_list("pk", flat=True))
        seen, query, counts = [], dict(params), []
        while True:
            with django_assert_max_num_queries(20) as captured:
                response = client.get(HISTORY, query)
            counts.append(len(captured.captured_queries))
            seen += [op.pk for op in response.context["rows"]]
            if not response.context["next_query"]:
                break
            query = dict(pair.split("=", 1) for pair in response.context["next_query"].split("&"))
        assert seen == expected, params
        assert max(counts) <= min(counts) + 1, counts  # a page after a cursor reads at most one range more


def test_pruning_is_set_based_in_batches_and_keeps_operations_in_flight(contoso, settings):
    settings.PORTAL_HISTORY_RETENTION_DAYS = 1
    rg = make_resource_group(contoso)
    vms = make_fleet(5, rg)
    services.start_operation(vms[0], OperationKind.ASSESSMENT, enqueue=False, now=timezone.now() - timedelta(days=9))
    assert services.prune_history(batch=3) == 10
    assert Operation.objects.count() == 1 and Operation.objects.get().status == OperationStatus.NOT_STARTED


# --- Scale -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("superuser", [False, True])
def test_every_fleet_page_answers_in_the_same_number_of_queries_for_10_and_400_vms(
    client, django_assert_max_num_queries, superuser
):
    load_catalog()
    user = make_user("root" if superuser else "olivia", superuser=superuser)
    client.force_login(user)
    subscription = make_subscription("Big", user=None if superuser else user)
    counts: dict[str, list[int]] = {}
    for size, prefix in ((10, "small"), (390, "large")):
        rg = make_resource_group(subscription)
        vms = make_fleet(size, rg, prefix=prefix)
        ops = services.queue_operations(vms, OperationKind.ASSESSMENT, enqueue=False, now=timezone.now())
        services.execute_operations(ops, now=timezone.now())
        figures.record_compliance_snapshots()
        update = MissingUpdate.objects.order_by("update_id").first().update
        pages = {
            "overview": (OVERVIEW, {"trend": "90"}),
            "overview scoped": (OVERVIEW, {"os": "ws2022-azure", "location": "westeurope"}),
            "updates": (UPDATES, {"sort": "title"}),
            "update machines": (reverse("patching:update-machines", args=[update.pk]), {}),
            "history": (HISTORY, {"kind": "assessment"}),
            "history page 2": (HISTORY, {"after": f"{10**18}.1"}),
        }
        for name, (url, params) in pages.items():
            with django_assert_max_num_queries(16) as captured:
                assert client.get(url, params).status_code == 200
            counts.setdefault(name, []).append(len(captured.captured_queries))
    assert all(small == large for small, large in counts.values()), counts
    print(f"queries per page (10 VMs, 400 VMs): {counts}")


def test_a_failed_installation_shows_as_failed_until_the_update_is_installed(client, contoso, settings):
    vm = assessed_vm(make_resource_group(contoso), "behind-1")
    update = MissingUpdate.objects.filter(guest_id=vm.pk).order_by("update_id").first().update
    settings.PORTAL_PATCH_FAILURE_RATE = 1.0
    only_it = from_arm({"rebootSetting": "IfRequired", "windowsParameters": {"kbNumbersToInclude": [update.kb]}})
    installation = run_now(vm, OperationKind.INSTALLATION, parameters=only_it, minutes_ago=8)
    assert installation.failed_count == 1
    run_now(vm, OperationKind.ASSESSMENT, minutes_ago=6)  # the follow-up assessment keeps what failed
    row = next(r for r in client.get(UPDATES).context["rows"] if r.update == update)
    assert (row.missing, row.failed) == (1, 1)
    page = client.get(reverse("patching:update-machines", args=[update.pk]))
    assert [vm.failed for vm in page.context["page"].object_list] == [True]
    assert "Failed in last installation" in page.text
    settings.PORTAL_PATCH_FAILURE_RATE = 0.0
    run_now(vm, OperationKind.INSTALLATION, parameters=only_it, minutes_ago=4)
    assert not MissingUpdate.objects.filter(guest_id=vm.pk, update=update).exists()


def test_an_updates_machines_are_keyset_paged_with_the_count_from_the_rollups(client, contoso):
    vms = make_fleet(60, make_resource_group(contoso, "rg-many", "westeurope"), history=False)
    update = load_catalog_update()
    MissingUpdate.objects.bulk_create(MissingUpdate(guest_id=vm.pk, update=update) for vm in vms)
    url = reverse("patching:update-machines", args=[update.pk])
    first = client.get(url).context["page"]
    assert first.paginator.count == 60
    assert [vm.pk for vm in first.object_list] == sorted(vm.pk for vm in vms)[:50]
    assert first.has_next and not first.has_previous
    second = client.get(url + first.next_url).context["page"]
    assert [vm.pk for vm in second.object_list] == sorted(vm.pk for vm in vms)[50:]
    assert second.has_previous and not second.has_next
    back = client.get(url + second.previous_url).context["page"]
    assert [vm.pk for vm in back.object_list] == [vm.pk for vm in first.object_list]


def load_catalog_update():
    from patching.models import Update

    return Update.objects.filter(product="ws2022-azure").order_by("-published_at").first()
