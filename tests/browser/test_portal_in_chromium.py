"""The portal in a real browser: Chromium, the live server, and the real Celery worker over Redis.

Every operation here is queued by a click, run by the worker process on the PostgreSQL test
database, and watched finishing through the page's own htmx polling: no reloads, no shortcuts.
"""

import os
import re

from playwright.sync_api import Page, expect

from patching.models import Operation, OperationKind, OperationStatus
from tests.browser.conftest import DOCS, sign_in
from tests.browser.data import make_user, run_now
from tests.factories import load_catalog, make_resource_group, make_subscription, make_vm

# A click on Assess now / Install updates now shows the queued operation at once.
QUEUED_OR_RUNNING = re.compile("Queued|In progress")
FINISHED = re.compile("Succeeded|Completed with warnings")


def contoso_fleet(user, role: str = "Contributor"):
    """Two resource groups in two regions, hotpatch-enrolled and legacy VMs."""
    load_catalog()
    contoso = make_subscription("Contoso Production", user=user, role=role)
    web = make_resource_group(contoso, "rg-web-prod", "westeurope")
    sql = make_resource_group(contoso, "rg-sql-prod", "northeurope")
    vms = {
        "web-01": make_vm(resource_group=web, name="web-01"),
        "web-02": make_vm(resource_group=web, name="web-02"),
        "sql-01": make_vm(resource_group=sql, name="sql-01"),
        "dc-01": make_vm(resource_group=sql, name="dc-01", product="ws2019"),
    }
    return contoso, vms


def test_sign_in_and_filter_the_fleet(page: Page, live_server, transactional_db):
    user = make_user("olivia")
    contoso_fleet(user)
    sign_in(page, live_server.url, "olivia")
    rows = page.locator("#vm-table tbody tr")
    expect(rows).to_have_count(4)

    page.get_by_label("Location").select_option(label="North Europe")  # htmx swaps the list in place
    expect(page).to_have_url(re.compile(r"location=northeurope"))
    expect(rows).to_have_count(2)
    expect(page.locator("#vm-table")).to_contain_text("sql-01")
    expect(page.locator("#vm-table")).not_to_contain_text("web-01")
    page.get_by_label("Operating system").select_option(label="Windows Server 2019 Datacenter")
    expect(rows).to_have_count(1)
    expect(page.locator(".filter-pills")).to_contain_text("Operating system: Windows Server 2019 Datacenter")

    page.go_back()  # the filters live in the URL: back undoes one
    expect(page).not_to_have_url(re.compile(r"os="))
    expect(rows).to_have_count(2)

    page.goto(f"{live_server.url}/vms/?location=atlantis")
    expect(page.locator(".notice")).to_contain_text("“atlantis”")
    expect(rows).to_have_count(4)


def test_assess_now_runs_on_the_worker_and_the_compliance_tab_updates_live(
    page: Page, live_server, live_worker, tmp_path
):
    user = make_user("olivia")
    _, vms = contoso_fleet(user)
    sign_in(page, live_server.url, "olivia")
    page.get_by_role("link", name="web-01").click()
    page.get_by_role("link", name="Hotpatch", exact=True).click()
    expect(page.get_by_role("heading", name=re.compile(r"web-01\s*\|\s*Hotpatch"))).to_be_visible()
    expect(page.locator("#compliance-empty")).to_contain_text("No assessment yet")
    expect(page.locator("#card-hotpatch-status")).to_contain_text("Pending evaluation")
    page.evaluate("window.notReloaded = true")

    page.locator("#assess-now").click()
    status = page.locator("#operation-assessment")
    expect(status).to_contain_text(QUEUED_OR_RUNNING)
    expect(status).to_contain_text("Assessment: Succeeded", timeout=45_000)

    # The finished poll's event re-fetched the compliance tab and the status cards: no reload.
    expect(page.locator("#compliance-table")).to_be_visible()
    expect(page.locator("#compliance-table")).to_contain_text("KB890830")
    expect(page.locator("#card-hotpatch-status")).to_contain_text("Enabled")
    expect(page.locator("#card-last-assessed")).to_contain_text("just now")
    assert page.evaluate("window.notReloaded") is True
    operation = Operation.objects.get(vm=vms["web-01"], kind=OperationKind.ASSESSMENT)
    assert operation.status == OperationStatus.SUCCEEDED and operation.user == user

    # The README's picture: refreshed only when asked (UPDATE_SCREENSHOT=1), so a test run leaves the tree clean.
    target = DOCS / "hotpatch-blade.png" if os.environ.get("UPDATE_SCREENSHOT") else tmp_path / "hotpatch-blade.png"
    page.mouse.move(700, 880)  # no hover highlight in the picture
    page.screenshot(path=str(target))
    assert target.stat().st_size > 10_000


def test_install_updates_now_with_a_kb_excluded_shows_in_history(page: Page, live_server, live_worker):
    user = make_user("olivia")
    _, vms = contoso_fleet(user)
    vm = vms["web-02"]
    run_now(vm, OperationKind.ASSESSMENT)  # so the dialog lists what is available
    sign_in(page, live_server.url, "olivia")
    page.goto(f"{live_server.url}/vms/{vm.pk}/hotpatch/")

    page.get_by_role("link", name="Install updates now").click()
    dialog = page.get_by_role("dialog", name="Install updates now")
    expect(dialog).to_be_visible()
    expect(dialog.locator(".available-list")).to_contain_text("KB890830")

    # Bad input first: the error sits next to its field, what was typed stays, nothing starts.
    dialog.get_by_label("Include KB IDs").fill("KB12")
    dialog.get_by_label("Exclude KB IDs").fill("KB890830")
    dialog.get_by_role("button", name="Install").click()
    expect(dialog.locator("#field-kbs_to_include .errorlist")).to_contain_text("'KB12' is not a KB number")
    expect(dialog.get_by_label("Exclude KB IDs")).to_have_value("KB890830")
    assert not Operation.objects.filter(kind=OperationKind.INSTALLATION).exists()

    dialog.get_by_label("Include KB IDs").fill("")
    dialog.get_by_label("Never reboot").check()
    dialog.get_by_role("button", name="Install").click()
    expect(dialog).to_be_hidden()
    status = page.locator("#operation-installation")
    expect(status).to_contain_text(QUEUED_OR_RUNNING)
    expect(status).to_contain_text(re.compile(r"Installation: (Succeeded|Completed with warnings)"), timeout=60_000)
    expect(status).to_contain_text("1 excluded")

    page.get_by_role("tab", name="Update history").click()
    row = page.locator("#history-table tbody tr", has_text="Installation").first
    expect(row).to_contain_text("olivia")
    cells = row.locator("td")
    expect(cells.nth(7)).to_have_text("1")  # Excluded
    cells.nth(0).get_by_role("link").click()
    results = page.locator("#operation-results")
    expect(results).to_be_visible()
    expect(results.locator("tr", has_text="KB890830")).to_contain_text("Excluded")
    expect(results).to_contain_text(re.compile("Installed|Failed"))
    expect(page.locator("#operation-detail")).to_contain_text("KB890830")  # KBs to exclude
    expect(page).to_have_url(re.compile(r"tab=history.*operation="))


def test_a_reader_sees_no_buttons(page: Page, live_server, transactional_db):
    reader = make_user("rita")
    _, vms = contoso_fleet(reader, role="Reader")
    sign_in(page, live_server.url, "rita")
    expect(page.get_by_role("link", name="Create")).to_have_count(0)
    page.goto(f"{live_server.url}/vms/{vms['web-01'].pk}/hotpatch/")
    expect(page.locator("#card-hotpatch-status")).to_be_visible()
    expect(page.get_by_role("button", name="Assess now")).to_have_count(0)
    expect(page.get_by_role("link", name="Install updates now")).to_have_count(0)
    page.goto(f"{live_server.url}/vms/{vms['web-01'].pk}/guest-updates/")
    expect(page.get_by_text("read-only for you")).to_be_visible()
    expect(page.get_by_role("button", name="Save")).to_have_count(0)
    expect(page.get_by_label("Enable hotpatch")).to_be_disabled()


def test_everything_works_without_javascript(browser, live_server, live_worker):
    """Forms POST and redirect: the same flows with JavaScript switched off (htmx only enhances)."""
    user = make_user("olivia")
    _, vms = contoso_fleet(user)
    context = browser.new_context(viewport={"width": 1280, "height": 800}, java_script_enabled=False)
    page = context.new_page()
    try:
        sign_in(page, live_server.url, "olivia")
        page.get_by_label("Location").select_option("northeurope")
        page.get_by_role("button", name="Apply").click()
        expect(page).to_have_url(re.compile(r"/vms/\?location=northeurope$"))  # empty fields dropped
        expect(page.locator("#vm-table tbody tr")).to_have_count(2)

        page.goto(f"{live_server.url}/vms/{vms['sql-01'].pk}/hotpatch/")
        page.get_by_role("button", name="Assess now").click()
        expect(page.locator(".messages")).to_contain_text("Assessment of sql-01 queued.")
        expect(page.locator("#operation-assessment")).to_contain_text(QUEUED_OR_RUNNING)

        page.get_by_role("link", name="Install updates now").click()  # a page of its own
        expect(page).to_have_url(re.compile(r"/hotpatch/install/$"))
        page.get_by_label("Maximum duration (minutes)").fill("500")
        page.get_by_role("button", name="Install").click()
        expect(page.locator("#field-maximum_duration .errorlist")).to_contain_text("between 10 minutes and 4 hours")
        page.get_by_label("Maximum duration (minutes)").fill("60")
        page.get_by_role("button", name="Install").click()
        expect(page).to_have_url(re.compile(r"\?tab=history$"))
        expect(page.locator("#operation-installation")).to_contain_text("Installation")

        page.get_by_role("tab", name="Update compliance").click()
        expect(page).to_have_url(re.compile(r"\?tab=compliance$"))
    finally:
        context.close()
