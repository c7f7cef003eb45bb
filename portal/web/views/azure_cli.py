"""Pages for the Azure CLI: a subscription's service principals (Owner only) and "Use the Azure CLI".

A new principal's secret is shown once, in the response to the POST that created it (never stored,
never in a URL, not cached). The CLI page writes out the exact commands for this installation: its
https address, its tenant, the certificate to trust, the user's own service principal and one of
their real VMs.
"""

import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from vms import access, principals
from vms.models import FeatureRegistration, Role, RoleAssignment, ServicePrincipal, Subscription, VirtualMachine

from .common import portal_view

CLOUD_NAME = "HotpatchPortal"
CONFIG_DIR = '"$HOME/.azure-hotpatch-portal"'


class ServicePrincipalForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What it is for, e.g. 'ci' or 'patch pipeline'.")
    role = forms.ChoiceField(
        choices=principals.GRANTABLE_ROLES,
        initial=Role.CONTRIBUTOR.value,
        help_text="Contributor registers features and assesses and installs updates; Reader only reads.",
    )
    expires_in = forms.ChoiceField(label="Expires", choices=principals.EXPIRY_CHOICES, initial="90", required=False)


class CliServicePrincipalForm(ServicePrincipalForm):
    subscription = forms.ModelChoiceField(queryset=Subscription.objects.none(), empty_label=None)

    field_order = ["name", "subscription", "role", "expires_in"]

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["subscription"].queryset = principals.owned_subscriptions(user).order_by("display_name", "pk")
        self.fields["subscription"].help_text = "Subscriptions you own; the principal gets its role there."


class GrantForm(forms.Form):
    principal = forms.ModelChoiceField(
        label="Service principal", queryset=ServicePrincipal.objects.none(), empty_label=None
    )
    role = forms.ChoiceField(choices=principals.GRANTABLE_ROLES, initial=Role.CONTRIBUTOR.value)

    def __init__(self, *args, user, subscription, **kwargs):
        super().__init__(*args, **kwargs)
        holders = RoleAssignment.objects.filter(subscription=subscription).values("user")
        self.fields["principal"].queryset = principals.manageable(user).exclude(user__in=holders)


# --- A subscription's service principals ----------------------------------------------------------


def owned_subscription(request: HttpRequest, subscription_id) -> Subscription:
    """The subscription if the user owns it: 404 without any role on it, 403 with a lesser one."""
    subscription = get_object_or_404(access.subscriptions_for(request.user), pk=subscription_id)
    if not principals.owns(request.user, subscription):
        raise PermissionDenied("Service principals of a subscription are managed by its Owners.")
    return subscription


@never_cache
@portal_view
@require_http_methods(["GET", "POST"])
def service_principals(request: HttpRequest, subscription_id) -> HttpResponse:
    subscription = owned_subscription(request, subscription_id)
    form = ServicePrincipalForm()
    grant_form = GrantForm(user=request.user, subscription=subscription)
    created = secret = None
    if request.method == "POST" and request.POST.get("action") == "grant":
        grant_form = GrantForm(request.POST, user=request.user, subscription=subscription)
        if grant_form.is_valid():
            principal = grant_form.cleaned_data["principal"]
            principals.grant(request.user, principal, subscription, grant_form.cleaned_data["role"])
            messages.success(request, f"'{principal.display_name}' is {grant_form.cleaned_data['role']} here now.")
            return redirect("vms:service-principals", subscription.pk)
    elif request.method == "POST":
        form = ServicePrincipalForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            created, secret = principals.create(
                request.user,
                data["name"],
                subscription,
                data["role"],
                expires_at=principals.expires_at(data["expires_in"]),
            )
            form = ServicePrincipalForm()
            grant_form = GrantForm(user=request.user, subscription=subscription)
    rows = (
        RoleAssignment.objects.filter(subscription=subscription, user__service_principal__isnull=False)
        .select_related("user__service_principal", "user__service_principal__created_by")
        .order_by("user__service_principal__display_name", "user__service_principal__created_at")
    )
    context = {
        "subscription": subscription,
        "rows": [(a.role, a.user.service_principal) for a in rows],
        "form": form,
        "grant_form": grant_form,
        "created": created,
        "secret": secret,
        "tenant_id": settings.PORTAL_TENANT_ID,
        "cli_url": reverse("vms:azure-cli"),
        "nav": "subscriptions",
    }
    return render(request, "vms/service_principals.html", context)


def _principal_here(request: HttpRequest, subscription: Subscription, pk: int) -> ServicePrincipal:
    holders = RoleAssignment.objects.filter(subscription=subscription).values("user")
    return get_object_or_404(ServicePrincipal.objects.filter(user__in=holders), pk=pk)


@portal_view
@require_POST
def remove_service_principal(request: HttpRequest, subscription_id, pk: int) -> HttpResponse:
    subscription = owned_subscription(request, subscription_id)
    principal = _principal_here(request, subscription, pk)
    principals.remove(request.user, principal, subscription)
    messages.success(request, f"'{principal.display_name}' has no role on this subscription any more.")
    return redirect("vms:service-principals", subscription.pk)


@portal_view
@require_POST
def revoke_service_principal(request: HttpRequest, subscription_id, pk: int) -> HttpResponse:
    subscription = owned_subscription(request, subscription_id)
    principal = _principal_here(request, subscription, pk)
    try:
        principals.revoke(request.user, principal)
    except principals.NotAllowed as e:
        raise PermissionDenied(str(e)) from None
    messages.success(
        request,
        f"'{principal.display_name}' is revoked: its secret and every access token issued to it are refused from now on.",
    )
    return redirect("vms:service-principals", subscription.pk)


# --- Use the Azure CLI ----------------------------------------------------------------------------


@dataclass
class Step:
    id: str
    title: str
    commands: list[str]
    note: str = ""

    @property
    def text(self) -> str:
        return "\n".join(self.commands)


def cli_base_url(request: HttpRequest) -> str:
    """The https origin the CLI should use: configured, else this page's own if https, else PORTAL_TLS_PORT."""
    if settings.PORTAL_CLI_BASE_URL:
        return settings.PORTAL_CLI_BASE_URL
    if request.is_secure():
        return f"https://{request.get_host()}"
    host = urlsplit(f"//{request.get_host()}").hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    port = settings.PORTAL_TLS_PORT
    return f"https://{host}" if port == 443 else f"https://{host}:{port}"


def trusted_certificate() -> Path | None:
    path = Path(settings.PORTAL_TLS_CERT)
    return path.resolve() if path.is_file() else None


def example_vm(principal: ServicePrincipal | None, user) -> VirtualMachine | None:
    """The VM the commands name: one the principal can reach (else the user), running, and preferably
    with Critical or Security updates waiting, so that install-patches has something to install."""
    queryset = access.vms_for(principal.user if principal else user).select_related("resource_group")
    ordered = queryset.order_by("resource_group__name", "name")
    running = ordered.filter(power_state=VirtualMachine.PowerState.RUNNING)
    return running.filter(guest__critical_security_count__gt=0).first() or running.first() or ordered.first()


def cli_steps(
    *, base_url: str, tenant: str, cert: Path | None, principal, secret: str | None, subscription, vm
) -> list[Step]:
    arm = f"{base_url}/arm/"
    env = [f"export AZURE_CONFIG_DIR={CONFIG_DIR}"]
    if cert:
        env.append(f"export REQUESTS_CA_BUNDLE={shlex.quote(str(cert))}")
    env.append("export AZURE_CORE_COLLECT_TELEMETRY=false")
    client_id = shlex.quote(str(principal.client_id) if principal else "<client id>")
    password = shlex.quote(secret if secret else "<secret>")  # quoted: pasted as is, it is only a wrong secret
    login = [f"az login --service-principal -u {client_id} -p {password} --tenant {tenant}"]
    if subscription:
        login.append(f"az account set --subscription {subscription.pk}")
    rg, name = map(shlex.quote, (vm.resource_group.name, vm.name) if vm else ("<resource group>", "<vm>"))
    features = [
        f"az feature register --namespace Microsoft.Compute --name {feature}"
        for feature in FeatureRegistration.HOTPATCH_FEATURES
    ]
    return [
        Step(
            "cli-env",
            "1. A profile of its own, and trust in the portal's certificate",
            env,
            "Keeps this portal's sign-in apart from your real Azure profile (~/.azure). "
            "REQUESTS_CA_BUNDLE replaces the trusted certificates for this shell only.",
        ),
        Step(
            "cli-cloud",
            "2. Register the portal as a cloud (its endpoints come from one URL)",
            [f"az cloud register -n {CLOUD_NAME} --endpoint-resource-manager {arm}", f"az cloud set -n {CLOUD_NAME}"],
            "Back to Azure later: az cloud set -n AzureCloud (or another AZURE_CONFIG_DIR).",
        ),
        Step("cli-login", "3. Sign in as your service principal", login),
        Step(
            "cli-features",
            "4. The preview's commands: register the three features, then the provider",
            [
                *features,
                f"az feature show --namespace Microsoft.Compute --name {FeatureRegistration.HOTPATCH_FEATURES[0]}",
            ],
            f"Registration takes about {settings.PORTAL_REGISTRATION_SECONDS} seconds here: repeat az feature show "
            'until it says "state": "Registered", then register the provider.',
        ),
        Step(
            "cli-provider", "5. Register the resource provider", ["az provider register --namespace Microsoft.Compute"]
        ),
        Step(
            "cli-patch",
            "6. Assess and install updates on a VM",
            [
                f"az vm assess-patches -g {rg} -n {name}",
                f"az vm install-patches -g {rg} -n {name} --maximum-duration PT2H --reboot-setting IfRequired "
                "--classifications-to-include-win Critical Security",
            ],
        ),
    ]


@never_cache
@portal_view
@require_http_methods(["GET", "POST"])
def azure_cli(request: HttpRequest) -> HttpResponse:
    """Use the Azure CLI: the exact commands for this installation and the user's service principal."""
    user = request.user
    can_create = principals.owned_subscriptions(user).exists()
    form = CliServicePrincipalForm(user=user) if can_create else None
    mine = list(
        ServicePrincipal.objects.active().filter(created_by=user).order_by("-created_at").select_related("user")
    )
    principal = secret = None
    if request.method == "POST":
        if not can_create:
            raise PermissionDenied("Creating a service principal needs the Owner role on a subscription.")
        form = CliServicePrincipalForm(request.POST, user=user)
        if form.is_valid():
            data = form.cleaned_data
            principal, secret = principals.create(
                user,
                data["name"],
                data["subscription"],
                data["role"],
                expires_at=principals.expires_at(data["expires_in"]),
            )
            mine.insert(0, principal)
            form = CliServicePrincipalForm(user=user)
    else:
        wanted = request.GET.get("app", "")
        principal = next((p for p in mine if str(p.client_id) == wanted), mine[0] if mine else None)
    subscription = None
    if principal is not None:
        role = principals.roles_of(principal)[:1]
        subscription = role[0].subscription if role else None
    vm = example_vm(principal, user)
    base_url = cli_base_url(request)
    cert = trusted_certificate()
    context = {
        "steps": cli_steps(
            base_url=base_url,
            tenant=settings.PORTAL_TENANT_ID,
            cert=cert,
            principal=principal,
            secret=secret,
            subscription=subscription,
            vm=vm,
        ),
        "base_url": base_url,
        "tenant_id": settings.PORTAL_TENANT_ID,
        "cert": cert,
        "principal": principal,
        "principal_subscription": subscription,
        "mine": mine,
        "secret": secret,
        "vm": vm,
        "form": form,
        "can_create": can_create,
        "nav": "azure-cli",
    }
    return render(request, "vms/azure_cli.html", context)


@require_GET
@portal_view
def certificate(request: HttpRequest) -> FileResponse:
    """The portal's certificate (public), to trust on another machine with REQUESTS_CA_BUNDLE."""
    cert = trusted_certificate()
    if cert is None:
        raise Http404("This installation has no certificate of its own to trust.")
    return FileResponse(cert.open("rb"), as_attachment=True, filename="hotpatch-portal-cert.pem",
                        content_type="application/x-pem-file")  # fmt: skip
