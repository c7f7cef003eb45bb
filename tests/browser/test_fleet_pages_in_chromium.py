"""The fleet pages in a real browser: the Overview's charts and a bar into the fleet history (filters,
export), and the By-update view installing one KB on the machines missing it, run by the real Celery
worker, until they stop missing it. Also takes the README's overview picture (UPDATE_SCREENSHOT=1)."""

import csv
import os
import random
import re
from collections import Counter
from datetime import timedelta

from django.utils import timezone
from playwright.sync_api import Page, expect

from patching import fleet as figures
from patching.models import (
    ComplianceSnapshot,
    GuestState,
    HotpatchStatus,
    Operation,
    OperationKind,
    OperationStatus,
    RebootStatus,
    StartedBy,
)
from tests.browser.conftest import DOCS, sign_in
from tests.browser.data import make_fleet, make_user, run_now
from tests.factories import load_catalog, make_resource_group, make_subscription, make_vm


def a_month_of_history(vms, subscription) -> None:
    """Installations on most days of the last month, a few failing, and a daily compliance figure."""
    rng = random.Random(13)
    now = timezone.now()
    rows = []
    for days_ago in range(1, 30):
        for vm in rng.sample(vms, rng.randint(0, 12)):
            status = rng.choices(
                [OperationStatus.SUCCEEDED, OperationStatus.COMPLETED_WITH_WARNINGS, OperationStatus.FAILED],
                [8, 1, 1],
            )[0]
            at = now - timedelta(days=days_ago, hours=rng.randint(0, 3))
            rows.append(
                Operation(
                    vm=vm,
                    subscription=subscription,
                    vm_name=vm.name,
                    location=vm.location,
                    kind=OperationKind.INSTALLATION,
                    status=status,
                    started_by=StartedBy.PLATFORM,
                    created_at=at,
                    started_at=at,
                    finished_at=at + timedelta(minutes=9),
                    installed_count=2,
                    reboot_status=RebootStatus.NOT_NEEDED if rng.random() < 0.7 else RebootStatus.COMPLETED,
                )
            )
    Operation.objects.bulk_create(rows)
    # What record_findings counts as these runs are recorded: hotpatch on, installations without a reboot.
    GuestState.objects.filter(pk__in=[vm.pk for vm in vms[:30]]).update(hotpatch_status=HotpatchStatus.ENABLED)
    without_reboot = Counter(
        op.vm_id for op in rows if op.reboot_status == RebootStatus.NOT_NEEDED and op.status != OperationStatus.FAILED
    )
    for vm in vms:
        GuestState.objects.filter(pk=vm.pk).update(
            counted_year=now.year,
            installs_without_reboot=without_reboot[vm.pk],
            reboots_avoided=without_reboot[vm.pk] if vm in vms[:30] else 0,
        )
    ComplianceSnapshot.objects.bulk_create(
        ComplianceSnapshot(
            subscription=subscription,
            day=(now - timedelta(days=days_ago)).date(),
            machines=len(vms),
            assessed=len(vms) - 4,
            compliant=min(len(vms) - 4, int(len(vms) * (0.55 + 0.012 * (30 - days_ago)))),
        )
        for days_ago in range(1, 30)
    )
    figures.record_compliance_snapshots()


def tile_numbers(page: Page, title: str) -> list[str]:
    tile = page.locator(".tile", has=page.get_by_role("heading", name=re.compile(title)))
    return tile.locator(".legend li .n").all_inner_texts()


def test_overview_charts_match_the_fleet_list_and_a_bar_opens_its_operations(
    page: Page, live_server, transactional_db, tmp_path
):
    load_catalog()
    user = make_user("olivia")
    contoso = make_subscription("Contoso Production", user=user)
    web = make_resource_group(contoso, "rg-web-prod", "westeurope")
    vms = make_fleet(40, web, prefix="web", history=False)
    for n in range(3):
        run_now(make_vm(resource_group=web, name=f"app-{n}", behind_by_months=2), OperationKind.ASSESSMENT)
    a_month_of_history(vms, contoso)

    sign_in(page, live_server.url, "olivia")
    statuses = tile_numbers(page, "Update status")
    modes, hotpatch_enabled = (
        tile_numbers(page, "Patch orchestration")[:3],
        tile_numbers(page, "Patch orchestration")[3],
    )
    page.get_by_role("link", name="Overview", exact=True).click()
    expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()
    for chart in ("#chart-status", "#chart-orchestration", "#chart-classification", "#chart-installs",
                  "#chart-compliance", "#chart-hotpatch"):  # fmt: skip
        expect(page.locator(chart)).to_be_visible()
    # Same numbers as the fleet list's tiles, in the chart and in its numbers table.
    assert page.locator("#chart-status .n").all_text_contents() == statuses
    assert page.locator("#chart-orchestration .n").all_text_contents() == modes
    page.locator("#h-status ~ details summary").click()
    expect(page.locator("#h-status ~ details table tbody tr").first).to_be_visible()
    expect(page.locator("#chart-compliance polyline").first).to_be_attached()
    expect(page.locator("#hotpatch-method")).to_contain_text("Counted from recorded history")
    assert page.locator("#chart-hotpatch .n").all_text_contents()[0] == hotpatch_enabled == "30"

    # The README's picture: refreshed only when asked (UPDATE_SCREENSHOT=1).
    target = DOCS / "overview.png" if os.environ.get("UPDATE_SCREENSHOT") else tmp_path / "overview.png"
    page.mouse.move(700, 880)
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000

    # A bar's part opens the fleet history with exactly those operations.
    segment = page.locator("#chart-installs rect[data-status='Failed']").first
    day, count = segment.get_attribute("data-day"), int(segment.get_attribute("data-count"))
    segment.click()
    expect(page).to_have_url(re.compile(rf"/history/\?.*status=Failed.*from={day}"))
    rows = page.locator("#history-table tbody tr")
    expect(rows).to_have_count(count)
    for text in rows.all_inner_texts():
        assert "Installation" in text and "Failed" in text

    # The history filters (htmx, in the URL) and exports what it shows.
    page.goto(f"{live_server.url}/history/")
    page.get_by_label("Status").select_option(label="Failed")
    expect(page).to_have_url(re.compile(r"status=Failed"))
    failed = Operation.objects.filter(status=OperationStatus.FAILED).count()
    expect(rows).to_have_count(min(failed, 50))
    with page.expect_download() as download:
        page.locator("#export-csv").click()
    path = tmp_path / "history.csv"
    download.value.save_as(path)
    exported = list(csv.reader(path.open()))
    assert len(exported) == failed + 1 and {r[5] for r in exported[1:]} == {"Failed"}
    page.goto(f"{live_server.url}/history/?from=someday")
    expect(page.locator(".notice")).to_contain_text("“someday”")


def test_by_update_installs_one_kb_on_the_machines_missing_it(page: Page, live_server, live_worker):
    load_catalog()
    user = make_user("olivia")
    contoso = make_subscription("Contoso Production", user=user)
    web = make_resource_group(contoso, "rg-web-prod", "westeurope")
    for name in ("web-01", "web-02"):
        run_now(make_vm(resource_group=web, name=name, behind_by_months=2), OperationKind.ASSESSMENT)

    sign_in(page, live_server.url, "olivia")
    page.get_by_role("link", name="Updates", exact=True).click()
    row = page.locator("#update-table tbody tr").first
    kb = row.get_attribute("data-kb")
    expect(row.locator("td").nth(5)).to_have_text("2")
    row.get_by_role("link", name=f"KB{kb}").click()
    expect(page.get_by_role("heading", name=f"KB{kb}")).to_be_visible()
    expect(page.locator("#machine-table tbody tr")).to_have_count(2)
    expect(page.get_by_label("Include KB IDs")).to_have_value(f"KB{kb}")
    page.get_by_role("button", name=f"Install KB{kb} on 2 machines").click()

    # One installation per VM, queued by one POST; the history polls until they finish.
    expect(page.locator(".messages")).to_contain_text(f"Installation of KB{kb} queued on 2 machines")
    rows = page.locator("#history-table tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator("#history")).to_have_attribute("data-polling", "false", timeout=90_000)
    for text in rows.all_inner_texts():
        assert re.search("Succeeded|Completed with warnings|Failed", text) and "olivia" in text

    # They no longer miss it (a machine whose installation failed would say so, not "Missing").
    page.goto(f"{live_server.url}/updates/")
    page.get_by_label("KB or title").fill(kb)
    page.get_by_label("KB or title").press("Enter")
    expect(page).to_have_url(re.compile(rf"q={kb}"))
    remaining = page.locator("#update-table tbody tr[data-kb]")
    if remaining.count():
        failed = Operation.objects.filter(kind=OperationKind.INSTALLATION, failed_count__gt=0).count()
        expect(remaining.locator("td").nth(5)).to_have_text(str(failed))
    assert all(op.status != OperationStatus.NOT_STARTED for op in Operation.objects.all())
