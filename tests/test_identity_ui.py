"""Service principals in the portal and on the command line, and the "Use the Azure CLI" page."""

import re
import shlex
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from tests.factories import make_resource_group, make_subscription, make_vm
from vms import principals
from vms.models import RoleAssignment, ServicePrincipal

TENANT = "6f1c1e1a-1111-4222-8333-944455556666"


@pytest.fixture(autouse=True)
def cli_settings(settings, tmp_path):
    settings.PORTAL_TENANT_ID = TENANT
    settings.PORTAL_TLS_PORT = 18443
    settings.PORTAL_CLI_BASE_URL = ""
    cert = tmp_path / "cert.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    settings.PORTAL_TLS_CERT = str(cert)
    return settings


@pytest.fixture
def world(db, django_user_model):
    """Olga owns Contoso and is Contributor on Fabrikam; Carl is Contributor on Contoso; Nora has nothing."""
    users = {
        name: django_user_model.objects.create_user(name, password=f"pw-{name}-123")
        for name in ("olga", "carl", "nora")
    }
    contoso = make_subscription("Contoso", user=users["olga"], role="Owner")
    RoleAssignment.objects.create(user=users["carl"], subscription=contoso, role="Contributor")
    fabrikam = make_subscription("Fabrikam", user=users["olga"], role="Contributor")
    web = make_resource_group(contoso, "rg-web")
    make_vm(resource_group=web, name="web-01")
    return {**users, "contoso": contoso, "fabrikam": fabrikam}


def page_url(subscription) -> str:
    return f"/subscriptions/{subscription.pk}/service-principals/"


def assert_csp_ready(html: str) -> None:
    assert " style=" not in html and "<script>" not in html and " onclick=" not in html


# --- A subscription's service principals ----------------------------------------------------------


def test_only_owners_see_the_service_principals_page(client, world):
    client.force_login(world["olga"])
    assert client.get(page_url(world["contoso"])).status_code == 200
    assert client.get(page_url(world["fabrikam"])).status_code == 403  # Contributor there
    client.force_login(world["carl"])
    assert client.get(page_url(world["contoso"])).status_code == 403
    assert client.post(page_url(world["contoso"]), {"name": "x", "role": "Contributor"}).status_code == 403
    client.force_login(world["nora"])
    assert client.get(page_url(world["contoso"])).status_code == 404
    assert not ServicePrincipal.objects.exists()


def test_an_owner_creates_one_and_sees_the_secret_once(client, world):
    client.force_login(world["olga"])
    before = timezone.now()
    response = client.post(page_url(world["contoso"]), {"name": "ci", "role": "Contributor", "expires_in": "90"})
    assert response.status_code == 200
    html = response.content.decode()
    assert_csp_ready(html)
    sp = ServicePrincipal.objects.get()
    secret = re.search(r'id="new-secret">([^<]+)<', html).group(1)
    assert ServicePrincipal.authenticate(str(sp.client_id), secret) == sp
    assert str(sp.client_id) in html and TENANT in html
    assert sp.created_by == world["olga"]
    assert before + timedelta(days=90) <= sp.expires_at <= timezone.now() + timedelta(days=90)
    assert RoleAssignment.objects.get(user=sp.user).role == "Contributor"
    assert "no-store" in response["Cache-Control"]

    again = client.get(page_url(world["contoso"])).content.decode()
    assert secret not in again and sp.secret_hint in again and "ci" in again


def test_revoke_remove_and_grant(client, world, django_user_model):
    client.force_login(world["olga"])
    sp, _ = principals.create(world["olga"], "ci", world["contoso"], "Contributor")
    other_sub = make_subscription("Olga's lab", user=world["olga"], role="Owner")

    # Grant it a role on another subscription she owns, from that subscription's page.
    form = client.get(page_url(other_sub)).content.decode()
    assert f'value="{sp.pk}"' in form
    response = client.post(page_url(other_sub), {"action": "grant", "principal": sp.pk, "role": "Reader"})
    assert response.status_code == 302
    assert RoleAssignment.objects.get(user=sp.user, subscription=other_sub).role == "Reader"

    # Remove it there; revoke it here.
    client.post(f"{page_url(other_sub)}{sp.pk}/remove/")
    assert not RoleAssignment.objects.filter(user=sp.user, subscription=other_sub).exists()
    before = timezone.now()
    client.post(f"{page_url(world['contoso'])}{sp.pk}/revoke/")
    sp.refresh_from_db()
    assert before <= sp.revoked_at <= timezone.now() and not sp.is_active

    # A principal of someone else's subscription is not found from hers.
    stranger = django_user_model.objects.create_user("stan")
    strangers = make_subscription("Stan's", user=stranger, role="Owner")
    theirs, _ = principals.create(stranger, "theirs", strangers, "Reader")
    assert client.post(f"{page_url(world['contoso'])}{theirs.pk}/revoke/").status_code == 404
    # ... and she cannot grant it a role on hers.
    refused = client.post(page_url(world["contoso"]), {"action": "grant", "principal": theirs.pk, "role": "Owner"})
    assert (
        refused.status_code == 200
        and not RoleAssignment.objects.filter(user=theirs.user, subscription=world["contoso"]).exists()
    )


def test_revoking_needs_ownership_of_every_subscription_it_holds(world):
    sp, _ = principals.create(world["olga"], "ci", world["contoso"], "Contributor")
    RoleAssignment.objects.create(
        user=sp.user, subscription=world["fabrikam"], role="Reader"
    )  # she only contributes there
    assert not principals.can_revoke(world["olga"], sp)
    with pytest.raises(principals.NotAllowed):
        principals.revoke(world["olga"], sp)
    with pytest.raises(principals.NotAllowed):
        principals.create(world["olga"], "x", world["fabrikam"], "Reader")


# --- The management command -----------------------------------------------------------------------


def test_create_service_principal_prints_client_id_secret_and_tenant(world):
    out = StringIO()
    call_command(
        "create_service_principal",
        "--name",
        "ci",
        "--subscription",
        str(world["contoso"].pk),
        "--role",
        "Contributor",
        "--owner",
        "olga",
        stdout=out,
        stderr=StringIO(),
    )
    text = out.getvalue()
    client_id = re.search(r"client id: (\S+)", text).group(1)
    secret = re.search(r"secret:\s+(\S+)", text).group(1)
    assert f"tenant:    {TENANT}" in text
    sp = ServicePrincipal.authenticate(client_id, secret)
    assert sp is not None and RoleAssignment.objects.get(user=sp.user).subscription == world["contoso"]
    assert f"az login --service-principal -u {client_id} -p {secret} --tenant {TENANT}" in text


def test_create_service_principal_refuses_a_subscription_the_owner_does_not_own(world):
    with pytest.raises(CommandError, match="not an Owner"):
        call_command("create_service_principal", "--name", "ci", "--subscription", "Fabrikam", "--owner", "olga")
    with pytest.raises(CommandError, match="no user"):
        call_command("create_service_principal", "--name", "ci", "--subscription", "Contoso", "--owner", "nobody")
    assert not ServicePrincipal.objects.exists()


# --- Use the Azure CLI ----------------------------------------------------------------------------


def commands(html: str) -> str:
    import html as html_lib

    blocks = re.findall(r'<pre class="mono code-block cli-code" id="[^"]+">(.*?)</pre>', html, re.S)
    return html_lib.unescape("\n".join(blocks))


def test_the_cli_page_writes_out_the_commands_with_a_new_principal(client, world, cli_settings):
    client.force_login(world["olga"])
    page = client.get("/azure-cli/")
    assert page.status_code == 200 and "no service principal yet" in page.content.decode()
    response = client.post(
        "/azure-cli/",
        {"name": "laptop", "subscription": world["contoso"].pk, "role": "Contributor", "expires_in": "30"},
    )
    html = response.content.decode()
    assert_csp_ready(html)
    sp = ServicePrincipal.objects.get()
    secret = re.search(r'id="new-secret">([^<]+)<', html).group(1)
    text = commands(html)
    cert = cli_settings.PORTAL_TLS_CERT
    assert text.splitlines() == [
        'export AZURE_CONFIG_DIR="$HOME/.azure-hotpatch-portal"',
        f"export REQUESTS_CA_BUNDLE={shlex.quote(cert)}",
        "export AZURE_CORE_COLLECT_TELEMETRY=false",
        "az cloud register -n HotpatchPortal --endpoint-resource-manager https://testserver:18443/arm/",
        "az cloud set -n HotpatchPortal",
        f"az login --service-principal -u {sp.client_id} -p {secret} --tenant {TENANT}",
        f"az account set --subscription {world['contoso'].pk}",
        "az feature register --namespace Microsoft.Compute --name InGuestHotPatchVMPreview",
        "az feature register --namespace Microsoft.Compute --name InGuestAutoPatchVMPreview",
        "az feature register --namespace Microsoft.Compute --name InGuestPatchVMPreview",
        "az feature show --namespace Microsoft.Compute --name InGuestHotPatchVMPreview",
        "az provider register --namespace Microsoft.Compute",
        "az vm assess-patches -g rg-web -n web-01",
        "az vm install-patches -g rg-web -n web-01 --maximum-duration PT2H --reboot-setting IfRequired "
        "--classifications-to-include-win Critical Security",
    ]
    assert 'data-copy="cli-login"' in html and "portal/copy.js" in html

    # Later the secret is gone from the page; a quoted placeholder stands in.
    later = commands(client.get("/azure-cli/").content.decode())
    assert secret not in later and f"-u {sp.client_id} -p '<secret>' --tenant {TENANT}" in later


def test_the_cli_page_over_https_uses_its_own_address_and_a_configured_one_wins(client, world, cli_settings):
    client.force_login(world["olga"])
    assert "https://testserver/arm/" in commands(client.get("/azure-cli/", secure=True).content.decode())
    cli_settings.PORTAL_CLI_BASE_URL = "https://portal.example.com"
    assert "--endpoint-resource-manager https://portal.example.com/arm/" in commands(
        client.get("/azure-cli/").content.decode()
    )


def test_a_user_who_owns_nothing_is_told_to_ask_an_owner(client, world):
    client.force_login(world["carl"])
    html = client.get("/azure-cli/").content.decode()
    assert "Ask an Owner" in html and 'id="create-principal"' not in html
    assert "-u '<client id>' -p '<secret>'" in commands(html)
    assert client.post("/azure-cli/", {"name": "x", "subscription": world["contoso"].pk}).status_code == 403
    assert not ServicePrincipal.objects.exists()


def test_the_certificate_downloads_and_the_page_needs_sign_in(client, world):
    assert client.get("/azure-cli/").status_code == 302
    client.force_login(world["carl"])
    response = client.get("/azure-cli/hotpatch-portal-cert.pem")
    assert response.status_code == 200 and b"BEGIN CERTIFICATE" in b"".join(response.streaming_content)


def test_the_cli_page_is_linked_from_the_menu_and_owners_see_service_principals(client, world):
    client.force_login(world["olga"])
    html = client.get("/subscriptions/").content.decode()
    assert 'href="/azure-cli/"' in html
    assert f'href="{page_url(world["contoso"])}"' in html and f'href="{page_url(world["fabrikam"])}"' not in html
