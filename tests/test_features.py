"""Preview features and provider registration (SPEC §3.6): the seed's onboarding and its gate."""

from datetime import timedelta

import pytest
from django.utils import timezone

from patching import services
from tests.factories import load_catalog, make_resource_group, make_subscription, make_vm
from vms import features
from vms.models import FeatureRegistration, ProviderRegistration
from vms.patch_settings import PatchSettings

pytestmark = pytest.mark.django_db
HOTPATCH = "InGuestHotPatchVMPreview"


def test_register_goes_registering_then_registered_after_the_delay(settings, django_capture_on_commit_callbacks):
    settings.PORTAL_REGISTRATION_SECONDS = 60
    subscription = make_subscription(onboarded=False)
    with django_capture_on_commit_callbacks() as callbacks:
        row = features.register_feature(subscription, HOTPATCH)
        again = features.register_feature(subscription, HOTPATCH.lower())  # case-insensitive, and idempotent
    assert row.state == again.state == "Registering" and row.pk == again.pk
    assert len(callbacks) == 1  # one delayed task, not two

    assert not features.settle(FeatureRegistration, row.pk)  # too early
    assert features.settle(FeatureRegistration, row.pk, now=timezone.now() + timedelta(seconds=61))
    row.refresh_from_db()
    assert row.state == "Registered"
    assert features.register_feature(subscription, HOTPATCH).state == "Registered"  # nothing to do


def test_unregister_goes_unregistering_then_unregistered(settings):
    settings.PORTAL_REGISTRATION_SECONDS = 0
    subscription = make_subscription()
    row = features.unregister_feature(subscription, HOTPATCH)
    assert row.state == "Unregistering"
    assert features.settle_due() >= 1
    row.refresh_from_db()
    assert row.state == "Unregistered"


def test_unknown_features_read_as_not_registered_and_the_hotpatch_ones_are_always_listed():
    subscription = make_subscription(onboarded=False)
    assert features.feature(subscription, "SomethingElse").state == "NotRegistered"
    assert [f.name for f in features.features(subscription, "Microsoft.Compute")] == sorted(
        FeatureRegistration.HOTPATCH_FEATURES, key=str.lower
    )
    assert features.provider(subscription).state == "NotRegistered"


def test_provider_registration(settings):
    settings.PORTAL_REGISTRATION_SECONDS = 0
    subscription = make_subscription(onboarded=False)
    row = features.register_provider(subscription, "microsoft.compute")
    assert row.state == "Registering" and row.namespace == "Microsoft.Compute"
    features.settle(ProviderRegistration, row.pk)
    row.refresh_from_db()
    assert row.state == "Registered"


def test_the_preview_gate_says_what_is_missing_before_hotpatch_can_be_turned_on(settings):
    load_catalog()
    subscription = make_subscription(onboarded=False)
    vm = make_vm(resource_group=make_resource_group(subscription), hotpatch=False)
    on = vm.patch_settings.with_changes(enable_hotpatching=True)
    problems = services.change_patch_settings(vm, on)
    assert len(problems) == 2
    assert all(name in problems[0].message for name in FeatureRegistration.HOTPATCH_FEATURES)
    assert "resource provider Microsoft.Compute" in problems[1].message

    settings.PORTAL_REGISTRATION_SECONDS = 0
    for name in FeatureRegistration.HOTPATCH_FEATURES:
        features.register_feature(subscription, name)
    features.register_provider(subscription)
    features.settle_due()
    assert services.change_patch_settings(vm, on) == []

    settings.PORTAL_PREVIEW_GATE = False
    other = make_vm(resource_group=make_resource_group(make_subscription(onboarded=False)), hotpatch=False)
    assert services.change_patch_settings(other, other.patch_settings.with_changes(enable_hotpatching=True)) == []


def test_the_gate_does_not_touch_vms_already_enrolled():
    load_catalog()
    vm = make_vm(resource_group=make_resource_group(make_subscription(onboarded=False)))
    assert vm.enable_hotpatching
    assert services.change_patch_settings(vm, vm.patch_settings.with_changes(reboot_setting="Never")) == []
    assert PatchSettings().patch_mode == "AutomaticByOS"
