"""Subscriptions and their preview features (the seed's Microsoft.Compute features and provider)."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from vms import access, features
from vms.models import (
    FeatureRegistration,
    ProviderRegistration,
    RegistrationState,
    Role,
    RoleAssignment,
    Subscription,
    VirtualMachine,
)

from .common import HtmxHttpRequest, partial_for, portal_view

# --- Subscriptions and preview features -----------------------------------------------------------


@require_GET
@portal_view
def subscriptions(request: HttpRequest) -> HttpResponse:
    """Subscriptions the user holds a role on, with their VMs and hotpatch onboarding."""
    rows = list(
        access.subscriptions_for(request.user)
        .annotate(
            vm_count=Coalesce(
                Subquery(
                    VirtualMachine.objects.filter(resource_group__subscription=OuterRef("pk"))
                    .order_by()
                    .values("resource_group__subscription")
                    .annotate(n=Count("pk"))
                    .values("n")
                ),
                0,
            )
        )
        .order_by("display_name")
    )
    ids = [s.pk for s in rows]
    registered: dict = {}
    for sub_id, name in FeatureRegistration.objects.filter(
        subscription__in=ids, namespace=FeatureRegistration.NAMESPACE, state=RegistrationState.REGISTERED
    ).values_list("subscription_id", "name"):
        if name in FeatureRegistration.HOTPATCH_FEATURES:
            registered[sub_id] = registered.get(sub_id, 0) + 1
    providers = dict(
        ProviderRegistration.objects.filter(subscription__in=ids, namespace=features.PROVIDER).values_list(
            "subscription_id", "state"
        )
    )
    roles = dict(RoleAssignment.objects.filter(user=request.user).values_list("subscription_id", "role"))
    for s in rows:
        s.features_registered = registered.get(s.pk, 0)
        s.provider_state = providers.get(s.pk, RegistrationState.NOT_REGISTERED)
        s.role = Role.OWNER if request.user.is_superuser else roles.get(s.pk)
        s.is_owner = s.role == Role.OWNER
        s.onboarded = s.features_registered == len(FeatureRegistration.HOTPATCH_FEATURES) and (
            s.provider_state == RegistrationState.REGISTERED
        )
    context = {"rows": rows, "feature_total": len(FeatureRegistration.HOTPATCH_FEATURES), "nav": "subscriptions"}
    return render(request, "vms/subscriptions.html", context)


def get_subscription(request: HttpRequest, subscription_id, *, act: bool = False) -> tuple[Subscription, bool]:
    subscription = get_object_or_404(access.subscriptions_for(request.user), pk=subscription_id)
    can_act = access.can_act(request.user, subscription.pk)
    if act and not can_act:
        raise PermissionDenied("Registering preview features needs the Contributor or Owner role.")
    return subscription, can_act


FEATURES_PAGE = "vms/preview_features.html"


def features_context(subscription: Subscription, can_act: bool) -> dict:
    order = {name: i for i, name in enumerate(FeatureRegistration.HOTPATCH_FEATURES)}
    # The seed's three features first, in its order; any other Microsoft.Compute feature after them.
    rows = sorted(
        features.features(subscription, FeatureRegistration.NAMESPACE),
        key=lambda f: (order.get(f.name, len(order)), f.name),
    )
    provider = features.provider(subscription)
    return {
        "subscription": subscription,
        "features": rows,
        "provider": provider,
        "can_act": can_act,
        "transitioning": any(f.is_transitioning for f in rows) or provider.is_transitioning,
        "all_registered": all(f.state == RegistrationState.REGISTERED for f in rows),
        "gate_problems": features.preview_gate_problems(subscription),
        "nav": "subscriptions",
        "poll_every": "2s",
    }


@require_GET
@portal_view
def preview_features(request: HtmxHttpRequest, subscription_id) -> HttpResponse:
    """Subscription › Preview features: the seed's three features and the provider, live."""
    subscription, can_act = get_subscription(request, subscription_id)
    context = features_context(subscription, can_act)
    if partial_for(request, ("features",)):
        response = render(request, f"{FEATURES_PAGE}#features", context)
        if not context["transitioning"]:
            # Settled: stop the poll (htmx swaps this last fragment, then stops).
            response.status_code = HttpResponseStopPolling.status_code
        return response
    return render(request, FEATURES_PAGE, context)


def _after_registration(request: HtmxHttpRequest, subscription: Subscription, message: str) -> HttpResponse:
    if request.htmx:
        return render(request, f"{FEATURES_PAGE}#features", features_context(subscription, True))
    messages.info(request, message)
    return redirect("vms:preview-features", subscription.pk)


@require_POST
@portal_view
def feature_action(request: HtmxHttpRequest, subscription_id, name: str, action: str) -> HttpResponse:
    """Register or unregister one Microsoft.Compute preview feature (a Celery task settles it)."""
    subscription, _ = get_subscription(request, subscription_id, act=True)
    if action not in ("register", "unregister"):
        raise Http404("No such action.")
    if name == "all":  # "Register all": the seed's three commands in one click
        names = list(FeatureRegistration.HOTPATCH_FEATURES)
    elif name in FeatureRegistration.HOTPATCH_FEATURES:
        names = [name]
    else:
        raise Http404("Only the hotpatch preview features are managed here.")
    change = features.register_feature if action == "register" else features.unregister_feature
    rows = [change(subscription, n) for n in names]
    return _after_registration(request, subscription, "; ".join(f"{row.name}: {row.state}" for row in rows) + ".")


@require_POST
@portal_view
def provider_action(request: HtmxHttpRequest, subscription_id, action: str) -> HttpResponse:
    """Register (or unregister) the Microsoft.Compute resource provider: the seed's last onboarding step."""
    subscription, _ = get_subscription(request, subscription_id, act=True)
    if action not in ("register", "unregister"):
        raise Http404("No such action.")
    if action == "register":
        row = features.register_provider(subscription)
    else:
        row = features.unregister_provider(subscription)
    return _after_registration(request, subscription, f"Microsoft.Compute: {row.state}.")
