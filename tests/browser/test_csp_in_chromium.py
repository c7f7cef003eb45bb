"""The Content-Security-Policy in Chromium: the main pages, htmx included, break none of it.

Every `securitypolicyviolation` event (collected by a script of Playwright's, which the policy does not
govern) and every console message about the policy is a failure, named with the page it happened on.
"""

import re

import pytest
from playwright.sync_api import Page, expect

from patching.models import OperationKind
from tests.browser.conftest import sign_in
from tests.browser.data import make_user, run_now
from tests.browser.test_portal_in_chromium import FINISHED, QUEUED_OR_RUNNING, contoso_fleet

pytestmark = pytest.mark.live

WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__cspViolations.push(e.violatedDirective + " blocked " + (e.blockedURI || "inline") +
    " at " + (e.sourceFile || document.location.pathname) + ":" + e.lineNumber);
});
"""


class Violations:
    def __init__(self, page: Page):
        self.page = page
        self.found: list[str] = []
        page.add_init_script(WATCH)
        page.on(
            "console",
            lambda msg: self.found.append(f"console: {msg.text}") if "Content Security Policy" in msg.text else None,
        )

    def check(self, where: str) -> None:
        """Collect this document's violations (before it is navigated away from) and fail on any."""
        self.found += [f"{where}: {v}" for v in self.page.evaluate("window.__cspViolations || []")]
        assert not self.found, "Content-Security-Policy violations:\n" + "\n".join(self.found)


def test_the_main_pages_satisfy_the_content_security_policy(page: Page, live_server, live_worker):
    user = make_user("olivia")
    contoso, vms = contoso_fleet(user, role="Owner")
    vm = vms["web-01"]
    run_now(vms["web-02"], OperationKind.ASSESSMENT)
    csp = Violations(page)

    response = page.goto(f"{live_server.url}/accounts/login/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    csp.check("sign-in")
    sign_in(page, live_server.url, "olivia")

    # The fleet, with an htmx filter swap.
    expect(page.locator("#vm-table tbody tr")).to_have_count(4)
    page.get_by_label("Location").select_option(label="North Europe")
    expect(page.locator("#vm-table tbody tr")).to_have_count(2)
    csp.check("fleet")

    pages = {
        "VM overview": f"/vms/{vm.pk}/",
        "guest updates": f"/vms/{vm.pk}/guest-updates/",
        "calendar": "/calendar/",
        "preview features": f"/subscriptions/{contoso.pk}/preview-features/",
        "API tokens": "/account/api-tokens/",
        "Azure CLI": "/azure-cli/",
        "subscriptions": "/subscriptions/",
        "preferences": "/preferences/",
        "sandbox": "/sandbox/",
    }
    for name, path in pages.items():
        response = page.goto(live_server.url + path)
        assert response.status == 200, (name, response.status)
        expect(page.locator("main h1").first).to_be_visible()
        csp.check(name)

    # The hotpatch blade: Assess now, its htmx polling to the end, the refreshed tabs; then the
    # install dialog (an htmx-loaded modal).
    page.goto(f"{live_server.url}/vms/{vm.pk}/hotpatch/")
    page.locator("#assess-now").click()
    status = page.locator("#operation-assessment")
    expect(status).to_contain_text(QUEUED_OR_RUNNING)
    expect(status).to_contain_text(FINISHED, timeout=45_000)
    expect(page.locator("#compliance-table")).to_be_visible()
    page.get_by_role("link", name="Install updates now").click()
    expect(page.get_by_role("dialog", name="Install updates now")).to_be_visible()
    csp.check("hotpatch blade")

    page.goto(f"{live_server.url}/vms/{vms['web-02'].pk}/hotpatch/?tab=history")
    expect(page).to_have_url(re.compile(r"tab=history"))
    csp.check("hotpatch history")
