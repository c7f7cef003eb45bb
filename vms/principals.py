"""Service principals (app registrations) for the Azure CLI: who may create, grant and revoke them.

An Owner of a subscription creates a principal with a role on that subscription, grants principals
they created a role on other subscriptions they own, removes a principal's role from a subscription
they own, and revokes a principal outright when they own every subscription it holds a role on (or
created it and it holds none). Superusers may do all of it everywhere. The principal acts through
its own backing user, so everything else (vms.access, the API's 404s and 403s) is unchanged.
"""

from datetime import timedelta

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from .models import Role, RoleAssignment, ServicePrincipal, Subscription

EXPIRY_CHOICES = [("30", "30 days"), ("90", "90 days"), ("365", "1 year"), ("", "Never")]
GRANTABLE_ROLES = [(Role.READER.value, "Reader"), (Role.CONTRIBUTOR.value, "Contributor")]


class NotAllowed(Exception):
    """The acting user may not do this (the view answers 403, the command an error)."""


def owned_subscriptions(user) -> QuerySet[Subscription]:
    if user.is_superuser:
        return Subscription.objects.all()
    return Subscription.objects.filter(role_assignments__user=user, role_assignments__role=Role.OWNER)


def owns(user, subscription: Subscription) -> bool:
    return owned_subscriptions(user).filter(pk=subscription.pk).exists()


def expires_at(days: str | int | None):
    return timezone.now() + timedelta(days=int(days)) if days else None


def create(owner, name: str, subscription: Subscription, role: str, *, expires_at=None) -> tuple[ServicePrincipal, str]:
    """A new principal with `role` on `subscription`, created by one of its Owners: (principal, secret)."""
    if not owns(owner, subscription):
        raise NotAllowed(f"Only an Owner of '{subscription}' can give a service principal a role on it.")
    if role not in Role.values:
        raise ValueError(f"'{role}' is not a role (Reader, Contributor, Owner).")
    with transaction.atomic():
        return ServicePrincipal.create(name, created_by=owner, expires_at=expires_at, roles={subscription: role})


def manageable(user) -> QuerySet[ServicePrincipal]:
    """Principals the user may grant roles to: the active ones they created (every one, for a superuser)."""
    principals = ServicePrincipal.objects.active().select_related("user")
    return principals if user.is_superuser else principals.filter(created_by=user)


def grant(owner, principal: ServicePrincipal, subscription: Subscription, role: str) -> None:
    if not owns(owner, subscription):
        raise NotAllowed(f"Only an Owner of '{subscription}' can give a service principal a role on it.")
    if not manageable(owner).filter(pk=principal.pk).exists():
        raise NotAllowed("You can only grant roles to service principals you created.")
    RoleAssignment.objects.update_or_create(user=principal.user, subscription=subscription, defaults={"role": role})


def remove(owner, principal: ServicePrincipal, subscription: Subscription) -> None:
    if not owns(owner, subscription):
        raise NotAllowed(f"Only an Owner of '{subscription}' can remove a role on it.")
    RoleAssignment.objects.filter(user=principal.user, subscription=subscription).delete()


def can_revoke(user, principal: ServicePrincipal) -> bool:
    if user.is_superuser:
        return True
    held = set(RoleAssignment.objects.filter(user=principal.user).values_list("subscription_id", flat=True))
    if not held:
        return principal.created_by_id == user.pk
    return held <= set(owned_subscriptions(user).filter(pk__in=held).values_list("pk", flat=True))


def revoke(user, principal: ServicePrincipal) -> None:
    if not can_revoke(user, principal):
        raise NotAllowed("Revoking needs the Owner role on every subscription this service principal has a role on.")
    principal.revoke()


def roles_of(principal: ServicePrincipal) -> list[RoleAssignment]:
    return list(
        RoleAssignment.objects.filter(user=principal.user)
        .select_related("subscription")
        .order_by("subscription__display_name", "subscription_id")
    )
