"""Preview features and resource providers per subscription (SPEC §3.6): the seed's onboarding.

register -> Registering -> (after PORTAL_REGISTRATION_SECONDS, by a Celery task) -> Registered;
unregister -> Unregistering -> Unregistered. Every transition is a compare-and-swap on the row, so a
repeated click, a repeated API call or a redelivered task changes nothing twice.
"""

import logging
from datetime import datetime, timedelta

from celery import current_app
from django.conf import settings
from django.db import transaction

from . import clock
from .models import FeatureRegistration, ProviderRegistration, RegistrationState, Subscription

S = RegistrationState
PROVIDER = "Microsoft.Compute"
# The Celery task (vms/tasks.py) that finishes a transition once its delay has passed, sent by name.
SETTLE_TASK = "vms.tasks.settle_registration"
log = logging.getLogger(__name__)


def _registration_delay() -> timedelta:
    return timedelta(seconds=settings.PORTAL_REGISTRATION_SECONDS)


def feature(subscription: Subscription, name: str, namespace: str = FeatureRegistration.NAMESPACE):
    """The feature's row; an unknown feature reads as NotRegistered without being stored."""
    row = FeatureRegistration.objects.filter(
        subscription=subscription, namespace__iexact=namespace, name__iexact=name
    ).first()
    if row is None and namespace.lower() == FeatureRegistration.NAMESPACE.lower():
        name = next((n for n in FeatureRegistration.HOTPATCH_FEATURES if n.lower() == name.lower()), name)
    return row or FeatureRegistration(subscription=subscription, namespace=_canonical(namespace), name=name)


def features(subscription: Subscription, namespace: str | None = None) -> list[FeatureRegistration]:
    """The hotpatch preview features (always listed) and any other feature this subscription touched."""
    rows = {(f.namespace.lower(), f.name.lower()): f for f in subscription.features.all()}
    for name in FeatureRegistration.HOTPATCH_FEATURES:
        rows.setdefault(
            (FeatureRegistration.NAMESPACE.lower(), name.lower()),
            FeatureRegistration(subscription=subscription, namespace=FeatureRegistration.NAMESPACE, name=name),
        )
    found = [f for (ns, _), f in sorted(rows.items()) if namespace is None or ns == namespace.lower()]
    return found


def _canonical(namespace: str) -> str:
    """ARM names are case-insensitive; store the ones we know in their usual spelling."""
    known = {n.lower(): n for n in (PROVIDER, "Microsoft.Features", "Microsoft.Resources")}
    return known.get(namespace.lower(), namespace)


def provider(subscription: Subscription, namespace: str = PROVIDER) -> ProviderRegistration:
    row = ProviderRegistration.objects.filter(subscription=subscription, namespace__iexact=namespace).first()
    return row or ProviderRegistration(subscription=subscription, namespace=_canonical(namespace))


def _transition(model, lookup: dict, start: str, *, now: datetime | None = None):
    """Move a row into `start` (Registering/Unregistering) unless it is there or already done."""
    now = now or clock.now()
    done = S.REGISTERED if start == S.REGISTERING else S.UNREGISTERED
    with transaction.atomic():
        row, _ = model.objects.get_or_create(**lookup, defaults={"changed_at": now})
        moved = model.objects.filter(pk=row.pk).exclude(state__in=(start, done)).update(state=start, changed_at=now)
        row.refresh_from_db()
        if moved:
            delay = settings.PORTAL_REGISTRATION_SECONDS
            kind = "feature" if model is FeatureRegistration else "provider"
            transaction.on_commit(lambda: _send_settle(kind, row.pk, delay))
    return row


def _send_settle(kind: str, pk: int, delay: int) -> None:
    """Ask a worker to settle the transition when its delay is over. The change is committed: a broker
    that is down must not fail the request, and settle_due (beat) settles it anyway."""
    try:
        current_app.send_task(SETTLE_TASK, (kind, pk), countdown=delay)
    except Exception as exc:  # kombu's OperationalError, a socket error, a timeout
        log.warning("Could not schedule settling %s registration %s (%s); the beat settles it", kind, pk, exc)


def register_feature(subscription: Subscription, name: str, namespace: str = FeatureRegistration.NAMESPACE, **kw):
    existing = feature(subscription, name, namespace)
    lookup = {"subscription": subscription, "namespace": existing.namespace, "name": existing.name}
    return _transition(FeatureRegistration, lookup, S.REGISTERING, **kw)


def unregister_feature(subscription: Subscription, name: str, namespace: str = FeatureRegistration.NAMESPACE, **kw):
    existing = feature(subscription, name, namespace)
    lookup = {"subscription": subscription, "namespace": existing.namespace, "name": existing.name}
    return _transition(FeatureRegistration, lookup, S.UNREGISTERING, **kw)


def register_provider(subscription: Subscription, namespace: str = PROVIDER, **kw) -> ProviderRegistration:
    existing = provider(subscription, namespace)
    return _transition(
        ProviderRegistration, {"subscription": subscription, "namespace": existing.namespace}, S.REGISTERING, **kw
    )


def unregister_provider(subscription: Subscription, namespace: str = PROVIDER, **kw) -> ProviderRegistration:
    existing = provider(subscription, namespace)
    return _transition(
        ProviderRegistration, {"subscription": subscription, "namespace": existing.namespace}, S.UNREGISTERING, **kw
    )


def settle(model, pk: int, now: datetime | None = None) -> bool:
    """Finish one transition whose delay has passed (compare-and-swap). True if it moved."""
    now = now or clock.now()
    due = now - _registration_delay()
    moved = 0
    for start, done in ((S.REGISTERING, S.REGISTERED), (S.UNREGISTERING, S.UNREGISTERED)):
        moved += model.objects.filter(pk=pk, state=start, changed_at__lte=due).update(state=done, changed_at=now)
    return bool(moved)


def settle_due(now: datetime | None = None) -> int:
    """Finish every transition whose delay has passed: the safety net if a delayed task was lost."""
    now = now or clock.now()
    due = now - _registration_delay()
    moved = 0
    for model in (FeatureRegistration, ProviderRegistration):
        for start, done in ((S.REGISTERING, S.REGISTERED), (S.UNREGISTERING, S.UNREGISTERED)):
            moved += model.objects.filter(state=start, changed_at__lte=due).update(state=done, changed_at=now)
    return moved


def preview_gate_problems(subscription: Subscription) -> list[str]:
    """What keeps hotpatch from being turned on in this subscription while the preview gate is on."""
    if not settings.PORTAL_PREVIEW_GATE:
        return []
    registered = {
        f.name.lower()
        for f in subscription.features.filter(namespace__iexact=FeatureRegistration.NAMESPACE, state=S.REGISTERED)
    }
    missing = [name for name in FeatureRegistration.HOTPATCH_FEATURES if name.lower() not in registered]
    problems = []
    if missing:
        problems.append(
            f"Register the preview feature{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(namespace Microsoft.Compute) on subscription '{subscription}'."
        )
    if provider(subscription).state != S.REGISTERED:
        problems.append(
            f"Register the resource provider Microsoft.Compute on subscription '{subscription}' "
            "after the features are registered."
        )
    return problems
