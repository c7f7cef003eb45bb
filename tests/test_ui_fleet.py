"""The fleet page: filters in the URL, sorting, paging, summary tiles, CSV export, a flat query count."""

import csv
import io

import pytest
from django.urls import reverse

from tests.browser.data import make_fleet, make_user
from tests.factories import load_catalog, make_resource_group, make_subscription, make_vm

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("catalog")]

FLEET = reverse("vms:list")


@pytest.fixture
def contoso(user):
    return make_subscription("Contoso", user=user, role="Contributor")


def names(response) -> list[str]:
    return [vm.name for vm in response.context["page"].object_list]


def test_every_portal_page_asks_to_sign_in_first(client):
    for url in [FLEET, reverse("vms:export"), reverse("vms:create"), reverse("patching:calendar"), "/"]:
        response = client.get(url, follow=True)
        assert response.redirect_chain[-1][0].startswith(reverse("login")), url
    assert b"Sign in" in client.get(reverse("login")).content


def test_it_signs_in_and_out_with_its_own_pages(client):
    make_user("sam")
    response = client.post(reverse("login"), {"username": "sam", "password": "correct horse battery"}, follow=True)
    assert response.redirect_chain[-1][0] == FLEET and b"Virtual machines" in response.content
    assert client.get(reverse("logout")).status_code == 405  # signing out is a POST (CSRF-protected)
    response = client.post(reverse("logout"), follow=True)
    assert response.redirect_chain[-1][0] == reverse("login")
    assert client.get(FLEET).status_code == 302


def test_filters_live_in_the_url_and_combine(client, contoso):
    web = make_resource_group(contoso, "rg-web", "westeurope")
    sql = make_resource_group(contoso, "rg-sql", "northeurope")
    make_vm(resource_group=web, name="web-1")
    make_vm(resource_group=web, name="web-2", product="ws2019")
    make_vm(resource_group=sql, name="sql-1")

    assert sorted(names(client.get(FLEET))) == ["sql-1", "web-1", "web-2"]
    assert names(client.get(FLEET, {"resource_group": "rg-web", "os": "ws2019"})) == ["web-2"]
    assert names(client.get(FLEET, {"location": "North Europe"})) == ["sql-1"]  # display names work too
    assert names(client.get(FLEET, {"q": "WEB-1"})) == ["web-1"]
    assert names(client.get(FLEET, {"orchestration": "Manual"})) == []
    response = client.get(FLEET, {"hotpatch": "PendingEvaluation", "update_status": "nodata"})
    assert sorted(names(response)) == ["sql-1", "web-1"]  # 2019 has no hotpatch: Disabled
    # The active filters are shown, each with a link that removes it.
    assert "Operating system: <b>Windows Server 2019 Datacenter</b>" in client.get(FLEET, {"os": "ws2019"}).text


def test_unknown_filter_values_are_ignored_with_a_notice_not_a_500(client, contoso):
    make_vm(resource_group=make_resource_group(contoso), name="only-one")
    response = client.get(FLEET, {"location": "mars", "hotpatch": "Maybe", "sort": "shoe-size", "page": "x"})
    assert response.status_code == 200
    assert names(response) == ["only-one"]
    notices = response.context["fleet"].notices
    assert len(notices) == 3
    assert "“mars”" in response.text and "“Maybe”" in response.text and "“shoe-size”" in response.text
    # Another user's subscription is as unknown as a made-up one.
    stranger = make_subscription("Stranger")
    response = client.get(FLEET, {"subscription": str(stranger.pk)})
    assert names(response) == ["only-one"] and "subscription filter" in response.text


def test_sorting_and_paging(client, contoso):
    make_fleet(60, make_resource_group(contoso), history=False)
    response = client.get(FLEET, {"sort": "-name"})
    assert names(response)[0] == "node-0059" and len(names(response)) == 50
    page2 = client.get(FLEET, {"sort": "-name", "page": 2})
    assert names(page2) == [f"node-{n:04d}" for n in range(9, -1, -1)]
    assert "Showing 51 to 60 of 60 records." in page2.text
    critical_first = names(client.get(FLEET, {"sort": "-critical"}))
    assert critical_first[0] == "node-0000"  # 2 critical/security pending (every fourth VM)
    assert 'aria-sort="descending"' in client.get(FLEET, {"sort": "-assessed"}).text


def test_tiles_count_the_filtered_fleet(client, contoso):
    make_fleet(8, make_resource_group(contoso))
    tiles = client.get(FLEET).context["tiles"]
    by_key = {s["key"]: s["count"] for s in tiles["statuses"]}
    assert by_key == {"reboot": 2, "available": 4, "none": 0, "nodata": 2}
    assert tiles["total"] == 8 and sum(by_key.values()) == 8
    assert {m["key"]: m["count"] for m in tiles["modes"]}["AutomaticByPlatform"] == 8
    assert tiles["installs"]["succeeded"] == 4 and tiles["installs"]["failed"] == 4
    assert tiles["installs"]["patches_installed"] == 8
    tiles = client.get(FLEET, {"update_status": "reboot"}).context["tiles"]
    assert tiles["total"] == 2 and tiles["installs"]["runs"] == 2


def test_htmx_asks_for_the_fleet_partial_only(client, contoso):
    make_vm(resource_group=make_resource_group(contoso), name="solo")
    response = client.get(FLEET, {"q": "solo"}, headers={"HX-Request": "true", "HX-Target": "fleet"})
    assert response.text.lstrip().startswith('<div id="fleet"') and "<html" not in response.text
    boosted = client.get(FLEET, headers={"HX-Request": "true", "HX-Boosted": "true", "HX-Target": "fleet"})
    assert "<html" in boosted.text


def test_csv_export_streams_the_filtered_list(client, contoso):
    rg = make_resource_group(contoso, "rg-export")
    make_vm(resource_group=rg, name="keep-1")
    make_vm(resource_group=rg, name="drop-1", product="ws2019")
    response = client.get(reverse("vms:export"), {"os": "ws2022-azure"})
    assert response.streaming and response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][:3] == ["Name", "Subscription", "Resource group"]
    assert [r[0] for r in rows[1:]] == ["keep-1"]
    assert rows[1][-1].endswith("/resourceGroups/rg-export/providers/Microsoft.Compute/virtualMachines/keep-1")


@pytest.mark.parametrize("superuser", [False, True])
def test_fleet_query_count_is_the_same_for_10_and_500_vms(client, django_assert_max_num_queries, superuser):
    """No query per VM: the table is one query, the tiles are aggregates."""
    load_catalog()
    user = make_user("root" if superuser else "olivia", superuser=superuser)
    client.force_login(user)
    subscription = make_subscription("Big", user=None if superuser else user)
    counts = {}
    for size, prefix in ((10, "small"), (490, "large")):
        make_fleet(size, make_resource_group(subscription), prefix=prefix)
        with django_assert_max_num_queries(14) as captured:
            response = client.get(FLEET, {"sort": "-critical"})
        assert response.status_code == 200
        counts[size] = len(captured.captured_queries)
    assert response.context["tiles"]["total"] == 500
    assert counts[10] == counts[490], counts
    print(f"fleet page queries (10 VMs, 500 VMs): {counts[10]}, {counts[490]}")
