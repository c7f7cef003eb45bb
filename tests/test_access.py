"""Per-subscription roles: a user sees only what is granted, and acts only as Contributor or Owner."""

import pytest
from django.contrib.auth import get_user_model

from tests.factories import load_catalog, make_resource_group, make_subscription, make_vm
from vms import access

pytestmark = pytest.mark.django_db


def test_roles_decide_what_a_user_sees_and_may_do():
    load_catalog()
    users = get_user_model().objects
    alice, bob, root = (
        users.create(username="alice"),
        users.create(username="bob"),
        users.create(username="root", is_superuser=True),
    )
    ours = make_subscription("Ours", user=alice, role="Reader")
    theirs = make_subscription("Theirs", user=bob, role="Contributor")
    mine = make_vm(resource_group=make_resource_group(ours))
    make_vm(resource_group=make_resource_group(theirs))

    assert list(access.vms_for(alice)) == [mine]
    assert list(access.subscriptions_for(alice)) == [ours]
    assert access.role_on(alice, ours.pk) == "Reader" and access.role_on(alice, theirs.pk) is None
    assert not access.can_act(alice, ours.pk) and access.can_act(bob, theirs.pk) and not access.can_act(bob, ours.pk)
    assert access.vms_for(root).count() == 2 and access.can_act(root, ours.pk)
