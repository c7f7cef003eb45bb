"""Browser tests: Playwright driving Chromium against pytest-django's live server.

The operations the browser starts run on the real Celery worker (`live_worker`, tests/conftest.py)
over Redis, on the PostgreSQL test database. Chromium comes from PORTAL_CHROMIUM if set, else the
system's (/usr/bin/chromium, chromium on the PATH, Chromium.app), else Playwright's own download
(`.venv/bin/playwright install chromium`). Without one the tests fail, never skip, saying how to get
one: CI installs Debian's (`.ci/run`), and a browser test that quietly skips proves nothing.
"""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from tests.browser.data import PASSWORD

SYSTEM_CHROMIUMS = (
    "/usr/bin/chromium",
    "chromium",
    "chromium-browser",
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
DOCS = Path(__file__).resolve().parents[2] / "docs"
# What a laptop shows; the README's screenshot is taken at this size.
VIEWPORT = {"width": 1440, "height": 900}
expect.set_options(timeout=15_000)


def find_chromium(playwright: Playwright) -> str:
    if os.environ.get("PORTAL_CHROMIUM"):
        candidates = [os.environ["PORTAL_CHROMIUM"]]
    else:
        candidates = [shutil.which(name) or name for name in SYSTEM_CHROMIUMS] + [playwright.chromium.executable_path]
    found = next((path for path in candidates if path and Path(path).is_file()), None)
    if found is None:
        pytest.fail(
            f"No Chromium for the browser tests (looked for {', '.join(candidates)}): install one with "
            "`apt-get install chromium` (Debian, as .ci/run does) or `.venv/bin/playwright install chromium`, "
            "or set PORTAL_CHROMIUM to its path.",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    # Playwright's sync API keeps an event loop in this thread; the tests' own ORM calls are still
    # synchronous, so Django's async-safety check is told so for the duration of the module.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as p:
            yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=find_chromium(playwright), headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT, timezone_id="Europe/Stockholm", locale="en-US")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def sign_in(page: Page, base_url: str, username: str, password: str = PASSWORD) -> None:
    """Through the sign-in form, as a person would."""
    page.goto(f"{base_url}/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Virtual machines")).to_be_visible()
