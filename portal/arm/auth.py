"""Who is calling the ARM API: personal API tokens and the Azure CLI's signed access tokens.

`authenticate` reads the bearer secret and asks each authenticator in turn. Access tokens are signed
(django.core.signing, HMAC with SECRET_KEY and a salt of their own) and carry the principal, the
tenant, the audience and the expiry, so a restart forgets nothing; every request checks the
signature, expiry, tenant and audience, and that the principal still exists and is neither revoked
nor expired. The token endpoint that issues them is portal/arm/identity.py.
"""

import time
import uuid
from collections.abc import Callable

from django.conf import settings
from django.core import signing
from django.http import HttpRequest

from vms.models import ApiToken, ServicePrincipal

from .errors import ArmError

TOKEN_SALT = "portal.identity.access-token"  # unchanged since tokens were first issued: they stay valid
TOKEN_PREFIX = "hpat."  # tells a signed access token from a personal API token (hpp_...) at a glance


def audience() -> str:
    return settings.PORTAL_ARM_AUDIENCE


def same_resource(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()


def issue_access_token(principal: ServicePrincipal, *, now: float | None = None) -> tuple[str, int]:
    """A signed token for the principal: (token, lifetime in seconds). Never longer than the principal lives."""
    now = int(now if now is not None else time.time())
    lifetime = settings.PORTAL_ACCESS_TOKEN_SECONDS
    if principal.expires_at is not None:
        lifetime = max(1, min(lifetime, int(principal.expires_at.timestamp()) - now))
    claims = {
        "sp": principal.pk,
        "appid": str(principal.client_id),
        "tid": settings.PORTAL_TENANT_ID,
        "aud": audience(),
        "iat": now,
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
    }
    return TOKEN_PREFIX + signing.dumps(claims, salt=TOKEN_SALT, compress=True), lifetime


def invalid_token(code: str, message: str) -> ArmError:
    return ArmError(401, code, message)


def service_principal_user(secret: str):
    """The authenticator for the CLI's access tokens: (user, None), None if not one of ours.

    A token that is ours but no longer good raises the 401 itself, naming why.
    """
    if not secret.startswith(TOKEN_PREFIX):
        return None
    try:
        claims = signing.loads(secret.removeprefix(TOKEN_PREFIX), salt=TOKEN_SALT)
    except signing.BadSignature:
        return None  # tampered, or signed with another key: the generic 401
    if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int):
        return None
    if claims["exp"] <= time.time():
        raise invalid_token(
            "InvalidAuthenticationToken",
            "The access token has expired. Sign in again: az account clear, then az login --service-principal.",
        )
    if claims.get("tid") != settings.PORTAL_TENANT_ID:
        raise invalid_token(
            "InvalidAuthenticationTokenTenant",
            "The access token is from the wrong issuer: it was not issued for this installation's tenant.",
        )
    if not isinstance(claims.get("aud"), str) or not same_resource(claims["aud"], audience()):
        raise invalid_token(
            "InvalidAuthenticationTokenAudience",
            "The access token has an invalid audience for this API.",
        )
    principal = (
        ServicePrincipal.objects.active()
        .select_related("user")
        .filter(pk=claims.get("sp"), client_id=_uuid(claims.get("appid")))
        .first()
    )
    if principal is None:
        raise invalid_token(
            "InvalidAuthenticationToken",
            "The access token is invalid, expired or revoked: the service principal is revoked or expired.",
        )
    principal.touch()
    return principal.user, None


def _uuid(value) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


# --- The bearer header ------------------------------------------------------------------------


def api_token_user(secret: str):
    """A personal API token (vms.ApiToken): (user, token) or None."""
    token = ApiToken.authenticate(secret)
    return (token.user, token) if token else None


# Each takes the bearer secret and returns (user, token-or-None) or None (or raises an ArmError 401 for
# a credential it recognises but refuses). The cheap signature check of the CLI's tokens goes first.
AUTHENTICATORS: list[Callable[[str], tuple | None]] = [service_principal_user, api_token_user]


def authenticate(request: HttpRequest):
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.strip().partition(" ")
    secret = secret.strip()
    if not header:
        raise ArmError(
            401,
            "InvalidAuthenticationToken",
            "The request has no 'Authorization' header: send 'Authorization: Bearer <token>' with an API token.",
        )
    if scheme.lower() != "bearer" or not secret:
        raise ArmError(401, "InvalidAuthenticationToken", "The 'Authorization' header must be 'Bearer <token>'.")
    for authenticator in AUTHENTICATORS:
        found = authenticator(secret)
        if found:
            return found
    # Deliberately no WWW-Authenticate challenge: the SDK's ARMChallengeAuthenticationPolicy would
    # treat one as a claims challenge (azure-api.md §5).
    raise ArmError(
        401,
        "InvalidAuthenticationToken",
        "The access token is invalid, expired or revoked. Create a new API token in the portal, or sign the "
        "Azure CLI in again (az account clear, then az login --service-principal).",
    )
