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
    assert "Showing 1 to 50 of 60 records." in response.text
    page2 = client.get(FLEET + response.context["page"].links["next"])
    assert names(page2) == [f"node-{n:04d}" for n in range(9, -1, -1)]
    assert "Showing 51 to 60 of 60 records." in page2.text
    last = client.get(FLEET, {"sort": "-name", "page": "last"})  # the last 50, as a keyset counts back
    assert names(last) == [f"node-{n:04d}" for n in range(49, -1, -1)]
    assert "Showing 11 to 60 of 60 records." in last.text
    back = client.get(FLEET + page2.context["page"].links["previous"])
    assert names(back) == names(response) and "Showing 1 to 50 of 60 records." in back.text
    critical_first = names(client.get(FLEET, {"sort": "-critical"}))
    # 2 critical/security pending (every fourth VM); a descending sort reverses the name tie-break too
    assert critical_first[:2] == ["node-0056", "node-0052"]
    assert 'aria-sort="descending"' in client.get(FLEET, {"sort": "-assessed"}).text


def walk(client, params: dict, link: str) -> list[list[int]]:
    """Follow the `link` ("next" or "previous") links from the page `params` opens: each page's VM ids."""
    response = client.get(FLEET, params)
    pages = []
    while True:
        assert response.status_code == 200 and not response.context["fleet"].notices
        pages.append([vm.pk for vm in response.context["page"].object_list])
        following = response.context["page"].links.get(link)
        if following is None:
            return pages
        assert len(pages) < 20
        response = client.get(FLEET + following)


@pytest.mark.parametrize("params", [{}, {"update_status": "available"}, {"os": "ws2022-azure"}], ids=str)
def test_keyset_pages_cover_every_sort_once_each_way(client, contoso, params):
    """Every sort, each way: the next links visit each VM exactly once in the sort's order (ties on the
    column, on the name across resource groups, and NULLs included), the previous links the same back."""
    from portal.web.views.fleet import SORTS
    from vms.models import VirtualMachine

    make_fleet(70, make_resource_group(contoso, "rg-a"), history=False)
    make_fleet(45, make_resource_group(contoso, "rg-b", "northeurope"), history=False, product="ws2019")
    for sort in [*SORTS, *(f"-{s}" for s in SORTS)]:
        query = {**params, "sort": sort}
        expected = client.get(FLEET, query).context["fleet"].vms
        expected = list(expected.values_list("pk", flat=True))
        assert len(expected) >= 50, sort
        forward = walk(client, query, "next")
        assert [pk for page in forward for pk in page] == expected, sort
        assert all(len(page) == 50 for page in forward[:-1])
        # Back from the last page (the last 50): each page a run of the order, 50 long; the first page
        # is whole, so it may share rows with the one after it, and nothing is skipped.
        backward = walk(client, {**query, "page": "last"}, "previous")
        assert list(dict.fromkeys(pk for page in reversed(backward) for pk in page)) == expected, sort
        for page in backward:
            start = expected.index(page[0])
            assert page == expected[start : start + 50], sort
    # The walk's order is the one the sort names: a guest column, then name and id.
    vms = VirtualMachine.objects.filter(pk__in=expected).select_related("guest")
    rows = sorted(vms, key=lambda vm: (vm.guest.assessed_at is not None, vm.guest.assessed_at or 0, vm.name, vm.pk))
    assert [vm.pk for vm in rows] == walk_flat(client, {**params, "sort": "assessed"})
    # Descending is the exact reverse (ties on the name too): one index serves both ways.
    assert walk_flat(client, {**params, "sort": "-assessed"}) == [vm.pk for vm in reversed(rows)]


def walk_flat(client, params) -> list[int]:
    return [pk for page in walk(client, params, "next") for pk in page]


def test_keyset_pages_are_stable_under_inserts_and_deletes(client, contoso):
    rg = make_resource_group(contoso)
    make_fleet(120, rg, history=False)
    first = client.get(FLEET)
    seen = [vm.name for vm in first.context["page"].object_list]
    # A VM sorting before the position, one after it, and a deleted one on the next page.
    make_fleet(1, rg, prefix="aaa", history=False)
    make_fleet(1, rg, prefix="node-0077x", history=False)
    from vms.models import VirtualMachine

    VirtualMachine.objects.filter(name="node-0060").delete()
    second = client.get(FLEET + first.context["page"].links["next"])
    names_2 = [vm.name for vm in second.context["page"].object_list]
    assert names_2[0] == "node-0050" and "node-0060" not in names_2 and "node-0077x-0000" in names_2
    assert not set(seen) & set(names_2) and len(names_2) == 50
    assert "Showing 51 to 100 of 121 records." in second.text


@pytest.mark.parametrize(
    "cursor",
    ["garbage", "eyJhIjoxfQ:1tVXYZ:abc", "", "x" * 5000],
)
def test_a_forged_or_foreign_page_position_is_a_notice_not_a_500(client, contoso, cursor):
    make_fleet(60, make_resource_group(contoso), history=False)
    for direction in ("after", "before"):
        response = client.get(FLEET, {direction: cursor or "?", "sort": "critical"})
        assert response.status_code == 200
        assert names(response)[:2] == ["node-0001", "node-0002"]  # the first page (critical 0, by name)
        assert "Ignored the page position" in response.text
    # A real cursor of another sort order, or with its signature altered, is not taken either.
    other = client.get(FLEET, {"sort": "-name"}).context["page"].links["next"]
    token = other.split("after=")[1].split("&")[0]
    for raw in (token, token[:-2] + ("AA" if not token.endswith("AA") else "BB")):
        response = client.get(FLEET, {"after": raw, "sort": "critical"})
        assert response.status_code == 200 and "Ignored the page position" in response.text


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
    # The next page (after a keyset cursor: up to two index ranges more) and the last page.
    for link in (response.context["page"].links["next"], response.context["page"].links["last"]):
        with django_assert_max_num_queries(counts[490] + 2):
            assert client.get(FLEET + link).status_code == 200
    print(f"fleet page queries (10 VMs, 500 VMs): {counts[10]}, {counts[490]}")


def test_many_resource_groups_are_typed_not_listed(client, contoso, monkeypatch):
    """A list of every resource group grows with the fleet: past a few hundred it is a text field,
    matched case-insensitively like the list's values, and a name that is none is a notice."""
    monkeypatch.setattr("portal.web.views.fleet.GROUP_CHOICES_MAX", 3)
    for n in range(4):
        make_vm(resource_group=make_resource_group(contoso, f"rg-{n}"), name=f"vm-{n}")
    response = client.get(FLEET)
    assert '<input type="search" name="resource_group"' in response.text and '<option value="rg-2"' not in response.text
    response = client.get(FLEET, {"resource_group": "RG-2"})
    assert names(response) == ["vm-2"] and "Resource group: <b>rg-2</b>" in response.text
    response = client.get(FLEET, {"resource_group": "rg-nope"})
    assert response.status_code == 200 and "“rg-nope”" in response.text and len(names(response)) == 4
    monkeypatch.setattr("portal.web.views.fleet.GROUP_CHOICES_MAX", 300)
    assert '<option value="rg-2">' in client.get(FLEET).text
