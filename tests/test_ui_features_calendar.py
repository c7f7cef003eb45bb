"""Subscription › Preview features (register, live state) and the hotpatch calendar."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.factories import load_catalog, make_subscription
from vms import features
from vms.models import FeatureRegistration, ProviderRegistration

pytestmark = pytest.mark.django_db
HX = {"HX-Request": "true"}


def test_preview_features_register_and_the_poll_stops_once_settled(
    client, user, settings, django_capture_on_commit_callbacks
):
    sandbox = make_subscription("Sandbox", user=user, role="Owner", onboarded=False)
    page_url = reverse("vms:preview-features", args=[sandbox.pk])
    page = client.get(page_url).text
    assert page.count(">Register<") == 4 and "Hotpatch is not available in this subscription yet" in page
    assert "InGuestHotPatchVMPreview" in page and "Not registered" in page

    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(reverse("vms:feature-action", args=[sandbox.pk, "all", "register"]), headers=HX)
    assert len(callbacks) == 3  # one settle task per feature
    assert response.text.lstrip().startswith('<section id="features"') and 'hx-trigger="every 2s"' in response.text
    assert response.text.count(">Registering<") == 3
    poll = client.get(page_url, headers={**HX, "HX-Target": "features"})
    assert poll.status_code == 200 and "every 2s" in poll.text

    # The worker settles them after the delay (here: by hand, as its task would).
    later = timezone.now() + timedelta(seconds=settings.PORTAL_REGISTRATION_SECONDS + 1)
    for row in sandbox.features.all():
        features.settle(FeatureRegistration, row.pk, now=later)
    with django_capture_on_commit_callbacks():
        client.post(reverse("vms:provider-action", args=[sandbox.pk, "register"]))
    features.settle(ProviderRegistration, features.provider(sandbox).pk, now=later)
    poll = client.get(page_url, headers={**HX, "HX-Target": "features"})
    assert poll.status_code == 286 and "hx-trigger" not in poll.text.split(">", 1)[0]
    assert "Hotpatch is available in this subscription" in poll.text
    assert not features.preview_gate_problems(sandbox)


def test_preview_features_without_javascript_redirect_back(client, user, django_capture_on_commit_callbacks):
    sandbox = make_subscription("Sandbox", user=user, role="Contributor", onboarded=False)
    with django_capture_on_commit_callbacks():
        response = client.post(
            reverse("vms:feature-action", args=[sandbox.pk, "InGuestPatchVMPreview", "register"]), follow=True
        )
    assert response.redirect_chain[-1][0] == reverse("vms:preview-features", args=[sandbox.pk])
    assert "InGuestPatchVMPreview: Registering." in response.text
    assert client.post(reverse("vms:feature-action", args=[sandbox.pk, "SomethingElse", "register"])).status_code == 404
    assert client.post(reverse("vms:feature-action", args=[sandbox.pk, "all", "explode"])).status_code == 404


def test_subscriptions_page_shows_role_vms_and_onboarding(client, user):
    make_subscription("Ready", user=user, role="Owner")
    make_subscription("New", user=user, role="Reader", onboarded=False)
    make_subscription("Hidden")
    text = client.get(reverse("vms:subscriptions")).text
    assert "Ready" in text and "New" in text and "Hidden" not in text
    assert "0 of 3 features, provider not registered" in text and "Owner" in text and "Reader" in text


def test_calendar_marks_each_months_patch_tuesday(client, user):
    load_catalog()
    response = client.get(reverse("patching:calendar"), {"product": "ws2022-azure", "year": 2024})
    months = response.context["months"]
    assert [m.kind for m in months][:4] == ["baseline", "hotpatch", "hotpatch", "baseline"]
    assert months[7].kind == "unplanned_baseline"  # Microsoft's real unplanned baseline of August 2024
    assert months[0].kb and months[0].build and months[0].patch_tuesday.isoformat() == "2024-01-09"
    assert 'data-kind="unplanned_baseline"' in response.text and "KB" in response.text
    assert (
        "?product=ws2022-azure&amp;year=2023" in response.text
        and "?product=ws2022-azure&amp;year=2025" in response.text
    )

    future = client.get(reverse("patching:calendar"), {"product": "ws2025-azure", "year": 2031})
    assert {m.source for m in future.context["months"]} == {"forecast"} and "Forecast" in future.text
    assert [m.kind for m in future.context["months"]].count("baseline") == 4
    monthly = client.get(reverse("patching:calendar"), {"product": "ws2019", "year": 2025}).context["months"]
    assert {m.kind for m in monthly} == {"monthly"}

    bad = client.get(reverse("patching:calendar"), {"product": "ws1995", "year": "soon"})
    assert (
        bad.status_code == 200 and "Ignored the product “ws1995”" in bad.text and "Ignored the year “soon”" in bad.text
    )


@pytest.mark.parametrize("year", ["\u00b2", "20x6", "99999999999999999999", "1850"])
def test_a_bad_calendar_year_is_ignored_with_a_notice(client, user, year):
    response = client.get(reverse("patching:calendar"), {"year": year})
    assert response.status_code == 200
    assert "Ignored the year" in response.text
