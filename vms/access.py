"""Who may see and do what: per-subscription roles, shared by the portal, the API and the CLI.

Reader sees; Contributor also assesses, installs and changes settings; Owner also manages access.
Superusers are Owner everywhere. A subscription without a role is invisible (404, never 403).
"""

from django.db.models import QuerySet

from .models import Role, RoleAssignment, Subscription, VirtualMachine

RANK = {Role.READER: 1, Role.CONTRIBUTOR: 2, Role.OWNER: 3}


def subscriptions_for(user) -> QuerySet[Subscription]:
    if user.is_superuser:
        return Subscription.objects.all()
    return Subscription.objects.filter(role_assignments__user=user)


def vms_for(user) -> QuerySet[VirtualMachine]:
    return VirtualMachine.objects.visible_to(user)


def role_on(user, subscription_id) -> str | None:
    """The user's role on a subscription, or None if it is not theirs to see."""
    if not user.is_authenticated:
        return None
    if user.is_superuser:
        return Role.OWNER
    return (
        RoleAssignment.objects.filter(user=user, subscription_id=subscription_id).values_list("role", flat=True).first()
    )


def has_role(user, subscription_id, at_least: str) -> bool:
    role = role_on(user, subscription_id)
    return role is not None and RANK[Role(role)] >= RANK[Role(at_least)]


def can_act(user, subscription_id) -> bool:
    """Contributor or Owner: may assess, install, change settings, register features."""
    return has_role(user, subscription_id, Role.CONTRIBUTOR)


def can_manage_installation(user) -> bool:
    """Installation-wide actions (the sandbox clock, faults everywhere, reset, loading a snapshot):
    a superuser, or the Owner of every subscription there is (at least one). They change every
    subscription's world, so a role on some of them is not enough."""
    if not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser:
        return True
    total = Subscription.objects.count()
    owned = RoleAssignment.objects.filter(user=user, role=Role.OWNER).values("subscription").distinct().count()
    return total > 0 and owned == total
