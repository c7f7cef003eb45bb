"""The sandbox pages in Chromium: import a fleet file (upload, preview, confirm), then run a what-if year
on the real worker and watch its progress bar give way to the charts; no CSP violation on the way."""

import json

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import sign_in
from tests.browser.data import make_user
from tests.browser.test_csp_in_chromium import Violations
from tests.factories import load_catalog, make_resource_group, make_subscription, make_vm
from tests.test_fleet_import import sample

pytestmark = pytest.mark.live


def test_import_a_fleet_then_run_a_what_if_year(page: Page, live_server, live_worker, tmp_path):
    load_catalog()
    olivia = make_user("olivia")
    make_vm(resource_group=make_resource_group(make_subscription("Olivia's", user=olivia, role="Owner")), name="own-1")
    path = tmp_path / "vms.json"
    path.write_text(json.dumps(sample()))
    csp = Violations(page)
    sign_in(page, live_server.url, "olivia")

    page.get_by_role("link", name="Import your fleet").click()
    page.get_by_label("Fleet file").set_input_files(str(path))
    page.get_by_role("button", name="Preview the import").click()
    expect(page.locator("#refused-rows")).to_contain_text("Linux VM")
    expect(page.locator("#unknown-images")).to_contain_text("galleries/corp")
    csp.check("import preview")
    page.get_by_role("button", name="Import 6 VMs").click()
    expect(page.locator("#import-result")).to_contain_text("6 VMs imported")
    csp.check("import result")

    page.get_by_role("link", name="What-if year").first.click()
    expect(page.locator("#what-if-estimate")).to_contain_text("for 7 VMs")
    page.get_by_role("button", name="Run a what-if year").click()
    expect(page.locator("#what-if-run progress")).to_be_visible()
    expect(page.locator("#what-if-run")).to_have_attribute("data-status", "Succeeded", timeout=240_000)
    expect(page.get_by_role("img", name="Reboots per machine-year")).to_be_visible()
    expect(page.locator("#table-summary")).to_contain_text("Every capable machine enrolled in hotpatch")
    expect(page.get_by_role("link", name="CSV")).to_be_visible()
    expect(page.get_by_role("button", name="Run a what-if year")).to_be_visible()  # the poll brought it back
    csp.check("what-if result")
