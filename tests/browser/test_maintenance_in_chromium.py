"""A person creates a maintenance configuration in Chromium: the form's live preview follows what they
type (next ten windows in the chosen zone, the dynamic scope's matches), a bad recurrence is explained
before saving, and the saved configuration's page offers to cancel its next run. No CSP violation."""

import re

from playwright.sync_api import Page, expect

from patching.maintenance.models import MaintenanceConfiguration
from tests.browser.conftest import sign_in
from tests.browser.data import make_user
from tests.browser.test_csp_in_chromium import Violations
from tests.factories import load_catalog, make_resource_group, make_subscription
from tests.test_maintenance_runs import scheduled_vm


def test_create_a_configuration_with_its_occurrence_preview(page: Page, live_server, transactional_db):
    load_catalog()
    olivia = make_user("olivia")
    contoso = make_subscription("Contoso", user=olivia, role="Contributor")
    rg = make_resource_group(contoso, "rg-web")
    scheduled_vm(rg, "web-01", tags={"env": "prod"})
    scheduled_vm(rg, "web-02", tags={"env": "test"})
    csp = Violations(page)

    sign_in(page, live_server.url, "olivia")
    page.get_by_role("link", name="Maintenance configurations").first.click()
    expect(page.get_by_role("heading", name="Maintenance configurations")).to_be_visible()
    page.get_by_role("link", name="Create", exact=True).click()
    expect(page.get_by_role("heading", name="Create a maintenance configuration")).to_be_visible()

    page.get_by_label("Configuration name").fill("patch-tuesday")
    page.get_by_label("Starts on").fill("2030-01-14 22:00")
    page.get_by_label("Time zone").select_option("Pacific Standard Time")
    page.get_by_label("Maintenance window").select_option("03:55")
    repeats = page.get_by_label("Repeats")
    repeats.fill("Month Second Tuesday Offset9")
    expect(page.locator("#preview-problems")).to_contain_text("between -6 and 6")

    repeats.fill("Month Second Tuesday Offset3")
    occurrences = page.locator("#preview-occurrences li")
    expect(occurrences).to_have_count(10)
    expect(occurrences.first).to_contain_text("Fri 2030-02-15 22:00–01:55")
    expect(page.locator("#preview")).to_contain_text("Pacific Standard Time")

    page.get_by_role("textbox", name="Tags").fill("env=prod")
    expect(page.locator("#preview-scope")).to_contain_text("1 machine in Contoso: web-01")

    page.get_by_role("button", name="Create", exact=True).click()
    expect(page.get_by_role("heading", name="patch-tuesday")).to_be_visible()
    expect(page.locator("#upcoming li").first).to_contain_text("Fri 2030-02-15 22:00")
    config = MaintenanceConfiguration.objects.get()
    assert config.recur_every == "Month Second Tuesday Offset3" and config.assignments.get().filter

    page.locator("#upcoming li").first.get_by_role("button", name="Cancel this run").click()
    expect(page.get_by_role("status")).to_contain_text(re.compile("Cancelled the run of patch-tuesday"))
    expect(page.locator("#upcoming li").first).to_contain_text("Cancelled")
    csp.check("maintenance configuration")
