"""The edges of every request: control characters in query parameters, the CSV export that never
dies half-way, HSTS and Secure cookies on https only, the Content-Security-Policy header, and JSON
under /arm/ in any letter case. (The CSP is checked in Chromium by tests/browser/test_csp_in_chromium.py;
/adfs/ in tests/test_identity.py.)"""

import csv
import io

import pytest
from django.test import Client
from django.urls import reverse

from portal.web.views import fleet as fleet_views
from tests.browser.data import PASSWORD, make_user
from tests.factories import make_resource_group, make_subscription, make_vm

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("catalog")]

FLEET = reverse("vms:list")
EXPORT = reverse("vms:export")
PARAMETERS = ["q", "subscription", "resource_group", "location", "os", "orchestration", "hotpatch",
              "update_status", "sort", "page", "anything"]  # fmt: skip
CONTROLS = ["\x00", "web\x00", "\x01", "\t", "\n", "\x1b[31m", "\x7f"]


@pytest.fixture
def contoso(user):
    contoso = make_subscription("Contoso", user=user, role="Contributor")
    web = make_resource_group(contoso, "rg-web", "westeurope")
    for name in ("web-1", "web-2", "sql-1"):
        make_vm(resource_group=web, name=name)
    return contoso


@pytest.mark.parametrize("url", [FLEET, EXPORT])
@pytest.mark.parametrize("parameter", PARAMETERS)
def test_a_control_character_in_any_query_parameter_is_refused_not_a_500(client, contoso, url, parameter):
    for value in CONTROLS:
        response = client.get(url, {parameter: value})
        assert response.status_code == 400, (parameter, repr(value))
        assert not response.streaming and b"control character" in response.content
    # In the parameter's name too, and for htmx requests.
    assert client.get(url + "?q%00=web").status_code == 400
    assert client.get(url, {parameter: "a\x00"}, headers={"HX-Request": "true"}).status_code == 400


def test_the_same_parameters_without_control_characters_work(client, contoso):
    assert client.get(FLEET, {"q": "web"}).status_code == 200
    response = client.get(EXPORT, {"q": "web", "sort": "-name"})
    assert response.status_code == 200 and response.streaming
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [row[0] for row in rows] == ["Name", "web-2", "web-1"]


def test_the_export_fails_before_streaming_never_half_way(client, contoso, monkeypatch):
    """Whatever makes the export's query fail, it fails while the view runs: an ordinary error page,
    never a 200 whose CSV stops in the middle. (A NUL reaching PostgreSQL is such a failure.)"""
    real = fleet_views.fleet_for

    def failing(request):
        found = real(request)
        found.vms = found.vms.filter(name="\x00")  # PostgreSQL refuses the query
        return found

    monkeypatch.setattr(fleet_views, "fleet_for", failing)
    client.raise_request_exception = False
    response = client.get(EXPORT)
    assert response.status_code == 500 and not response.streaming


def test_an_empty_export_is_just_the_header(client, contoso):
    response = client.get(EXPORT, {"q": "nothing-matches"})
    assert b"".join(response.streaming_content).decode().splitlines() == [",".join(fleet_views.CSV_HEADER)]


# --- https: HSTS and Secure cookies ----------------------------------------------------------------


def test_https_gets_hsts_and_secure_session_and_csrf_cookies(db):
    make_user("sam")
    client = Client()
    page = client.get(reverse("login"), secure=True)
    assert page["Strict-Transport-Security"] == "max-age=31536000"
    assert page.cookies["csrftoken"]["secure"] is True
    signed_in = client.post(reverse("login"), {"username": "sam", "password": PASSWORD}, secure=True)
    assert signed_in.status_code == 302
    assert signed_in.cookies["sessionid"]["secure"] is True and signed_in.cookies["csrftoken"]["secure"] is True


def test_plain_http_gets_neither_hsts_nor_secure_cookies(db):
    make_user("sam")
    client = Client()
    page = client.get(reverse("login"))
    assert "Strict-Transport-Security" not in page
    assert not page.cookies["csrftoken"]["secure"]
    signed_in = client.post(reverse("login"), {"username": "sam", "password": PASSWORD})
    assert signed_in.status_code == 302 and not signed_in.cookies["sessionid"]["secure"]


# --- Content-Security-Policy -----------------------------------------------------------------------


def test_every_page_has_a_strict_content_security_policy(client, contoso):
    for url in [FLEET, reverse("login"), reverse("vms:azure-cli"), reverse("patching:calendar")]:
        policy = client.get(url)["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'", policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"


def test_the_pages_turn_off_htmx_inline_indicator_style(client, contoso):
    assert b'<meta name="htmx-config" content=\'{"includeIndicatorStyles": false}\'>' in client.get(FLEET).content


# --- /arm/ in any letter case --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/ARM/subscriptions", "/Arm/subscriptions?api-version=2026-04-01", "/aRM/", "/ARM", "/arm/no/such/thing",
     "/ARM/openapi.json", "/arM/metadata/endpoints"],
)  # fmt: skip
@pytest.mark.parametrize("method", ["get", "post", "delete"])
def test_everything_under_arm_answers_json_in_any_letter_case(db, path, method):
    response = getattr(Client(), method)(path)
    assert response.status_code in (400, 401, 404, 405), response.status_code
    assert response["Content-Type"].startswith("application/json"), (path, response["Content-Type"])
    assert response.json()["error"]["code"] and response["x-ms-request-id"]


def test_arm_without_its_slash_is_sent_to_arm_slash(db):
    response = Client().get("/arm")  # APPEND_SLASH: /arm/ itself answers JSON (above)
    assert response.status_code == 301 and response["Location"] == "/arm/"


def test_a_control_character_under_arm_is_a_json_400(db):
    response = Client().get("/arm/subscriptions", {"api-version": "2026-04-01", "$filter": "\x00"})
    assert response.status_code == 400 and response.json()["error"]["code"]
