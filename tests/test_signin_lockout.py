"""Guessing is slow: django-axes locks sign-in (the portal's page and the admin's) per user name and per
address after PORTAL_LOGIN_FAILURE_LIMIT failures; an administrator unlocks in the admin. The ARM API's
bearer tokens and the CLI's service principals never go through Django's authenticate(), so a lockout
does not touch them."""

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.test import Client
from django.urls import reverse

from tests.arm_client import ArmClient
from tests.browser.data import PASSWORD, make_user
from vms.models import ApiToken

pytestmark = pytest.mark.django_db

LOGIN = reverse("login")
ADMIN_LOGIN = reverse("admin:login")
LOCKED = "Too many failed sign-in attempts"


def sign_in(client: Client, username: str, password: str, url: str = LOGIN, address: str = "203.0.113.7"):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=address)


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_the_limit_comes_from_the_environment_with_a_sane_default():
    assert settings.AXES_FAILURE_LIMIT == 5
    assert settings.AXES_LOCKOUT_PARAMETERS == ["username", "ip_address"]
    assert settings.AUTHENTICATION_BACKENDS[0] == "axes.backends.AxesStandaloneBackend"


@pytest.mark.parametrize("url", [LOGIN, ADMIN_LOGIN], ids=["portal", "admin"])
def test_thirty_wrong_passwords_then_the_right_one_is_refused_with_a_clear_message(url):
    make_user("sam", superuser=True)  # staff, so the admin would let the right password in
    client = Client()
    statuses = [sign_in(client, "sam", f"guess-{n}", url).status_code for n in range(30)]
    # The first four are the ordinary "wrong password" form; from the fifth on, the lockout page.
    assert statuses[:4] == [200] * 4 and set(statuses[4:]) == {429}, statuses

    response = sign_in(client, "sam", PASSWORD, url)
    assert response.status_code == 429 and not signed_in(client)
    page = response.content.decode()
    assert LOCKED in page and "Even the right password is refused" in page and "15 minutes" in page


def test_a_locked_user_name_stays_locked_from_another_address():
    make_user("sam")
    for n in range(5):
        sign_in(Client(), "sam", f"guess-{n}", address=f"198.51.100.{n}")
    client = Client()
    assert sign_in(client, "sam", PASSWORD, address="192.0.2.200").status_code == 429 and not signed_in(client)


def test_one_address_guessing_many_users_is_locked_for_every_user():
    make_user("kim")
    for n in range(5):
        sign_in(Client(), f"nobody-{n}", "guess")
    client = Client()
    assert sign_in(client, "kim", PASSWORD).status_code == 429 and not signed_in(client)
    other = Client()  # another address is not affected
    assert sign_in(other, "kim", PASSWORD, address="192.0.2.9").status_code == 302 and signed_in(other)


def test_fewer_failures_than_the_limit_then_the_right_password_signs_in_and_the_failures_still_count():
    make_user("sam")
    client = Client()
    for n in range(4):
        sign_in(client, "sam", f"guess-{n}")
    assert sign_in(client, "sam", PASSWORD).status_code == 302 and signed_in(client)
    assert AccessAttempt.objects.filter(username="sam").exists()  # they expire after the cool-off


def test_signing_in_to_ones_own_account_does_not_wipe_the_guesses_at_another():
    make_user("victim")
    make_user("attacker")
    for round_ in range(6):
        for n in range(4):
            sign_in(Client(), "victim", f"guess-{round_}-{n}")
        sign_in(Client(), "attacker", PASSWORD)  # from the same address
    assert sign_in(Client(), "victim", PASSWORD).status_code == 429


def test_an_administrator_unlocks_in_the_admin():
    make_user("sam")
    admin = Client()
    admin.force_login(make_user("root", superuser=True))
    for n in range(6):
        sign_in(Client(), "sam", f"guess-{n}")
    assert sign_in(Client(), "sam", PASSWORD).status_code == 429

    changelist = admin.get(reverse("admin:axes_accessattempt_changelist"))
    assert changelist.status_code == 200 and b"sam" in changelist.content
    attempts = list(AccessAttempt.objects.values_list("pk", flat=True))
    response = admin.post(
        reverse("admin:axes_accessattempt_changelist"),
        {"action": "delete_selected", "_selected_action": attempts, "post": "yes"},
    )
    assert response.status_code == 302 and not AccessAttempt.objects.exists()

    client = Client()
    assert sign_in(client, "sam", PASSWORD).status_code == 302 and signed_in(client)


def test_a_locked_out_address_still_uses_api_tokens_and_service_principals(alice):
    for n in range(6):
        sign_in(Client(), "alice", f"guess-{n}", address="127.0.0.1")
    assert sign_in(Client(), "alice", "pw-alice-123", address="127.0.0.1").status_code == 429
    # The ARM API from the same address (the test client's 127.0.0.1), with alice's own bearer token.
    api = ArmClient(Client(enforce_csrf_checks=True), ApiToken.issue(alice, "tests")[1])
    assert api.get("/subscriptions").status_code == 200


def test_behind_the_tls_proxy_the_address_is_the_proxys_last_forwarded_hop(settings):
    """Every request comes from the proxy (REMOTE_ADDR); each caller is the hop the proxy appended."""
    settings.BEHIND_TLS_PROXY = True
    make_user("kim")

    def attempt(hop: str, username: str, password: str) -> Client:
        client = Client()
        client.post(
            LOGIN,
            {"username": username, "password": password},
            REMOTE_ADDR="10.0.0.1",
            HTTP_X_FORWARDED_FOR=f"6.6.6.6, {hop}",  # the first hop is whatever the client claimed
        )
        return client

    for n in range(5):
        attempt("198.51.100.1", f"nobody-{n}", "guess")
    assert not signed_in(attempt("198.51.100.1", "kim", PASSWORD))  # that caller is locked out
    assert signed_in(attempt("198.51.100.2", "kim", PASSWORD))  # another caller behind the same proxy is not
