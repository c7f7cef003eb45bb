"""The API-token page: list, create (the secret shown once), revoke."""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from vms.models import ApiToken


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("dana", password="pw-dana-123")


@pytest.fixture
def browser(user) -> Client:
    client = Client(enforce_csrf_checks=False)
    client.force_login(user)
    return client


def test_the_page_needs_a_login(db):
    response = Client().get("/account/api-tokens/")
    assert response.status_code == 302 and "next=/account/api-tokens/" in response["Location"]


def test_creating_a_token_shows_its_secret_once(browser, user):
    before = timezone.now()
    response = browser.post("/account/api-tokens/", {"name": "laptop", "expires_in": "30"})
    assert response.status_code == 200
    secret = re.search(r'<code class="mono" id="new-token">(hpp_[^<]+)</code>', response.content.decode()).group(1)
    assert "no-store" in response["Cache-Control"]  # the page with the secret is never stored by a cache
    token = ApiToken.objects.get(user=user)
    assert token.name == "laptop" and token.token_hash == ApiToken.hash(secret)
    assert before + timedelta(days=30) <= token.expires_at <= timezone.now() + timedelta(days=30)

    listing = browser.get("/account/api-tokens/").content.decode()
    assert "laptop" in listing and token.hint in listing and secret not in listing
    assert ApiToken.authenticate(secret) == token


def test_a_name_is_required(browser, user):
    response = browser.post("/account/api-tokens/", {"name": "", "expires_in": ""})
    assert response.status_code == 200 and not ApiToken.objects.exists()
    assert 'id="new-token"' not in response.content.decode()


def test_revoking_a_token_refuses_it_from_then_on(browser, user):
    token, secret = ApiToken.issue(user, "ci")
    before = timezone.now()
    response = browser.post(f"/account/api-tokens/{token.pk}/revoke/")
    assert response.status_code == 302
    token.refresh_from_db()
    assert before <= token.revoked_at <= timezone.now() and ApiToken.authenticate(secret) is None
    assert "Revoked" in browser.get("/account/api-tokens/").content.decode()


def test_another_users_token_cannot_be_revoked(browser, django_user_model):
    other = django_user_model.objects.create_user("eve", password="pw-eve-12345")
    token, _ = ApiToken.issue(other, "theirs")
    assert browser.post(f"/account/api-tokens/{token.pk}/revoke/").status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_the_page_posts_need_csrf(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post("/account/api-tokens/", {"name": "x"}).status_code == 403
    assert not ApiToken.objects.exists()
