"""Identity for the Azure CLI: an ADFS-style authority, client-credential tokens, and their check.

The unmodified `az` (through MSAL) signs a service principal in against an authority whose first
path segment is `adfs` (MSAL then skips Microsoft's instance discovery, as for Azure Stack Hub;
az-cli.md §1, §3):

    GET  /adfs/.well-known/openid-configuration   where the token endpoint is
    POST /adfs/oauth2/token/                       client_id + client_secret -> access token
    GET  /arm/metadata/endpoints                   (ARM route, no token) for `az cloud register`

Access tokens are signed (django.core.signing, HMAC with SECRET_KEY and a salt of their own) and carry
the principal, the tenant, the audience and the expiry, so a restart forgets nothing; every ARM
request checks the signature, expiry, tenant and audience, and that the principal still exists and is
neither revoked nor expired. Failed secrets are counted per client id (the GUID it names, however it
is spelled) and per client address in the cache (shared by every web worker) and answered 429 past a
limit. Every refusal of a credential says the same thing, whichever part was wrong.
"""

import hashlib
import logging
import uuid

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from portal.security import client_address
from vms.models import ServicePrincipal

from .auth import audience, issue_access_token, same_resource
from .core import ArmRequest, oauth_error, ok

log = logging.getLogger(__name__)

GRANT = "client_credentials"
# The same words for an unknown client id, a wrong secret, a revoked or an expired principal.
BAD_CLIENT = (
    "Invalid client credentials: the client id or secret is wrong, or the service principal is revoked or "
    "expired. Check the values shown when it was created, or ask an Owner for a new one."
)
# AADSTS codes a client may recognise: 7000215 invalid secret, 70011 invalid scope, 900144 missing
# parameter, 70003 unsupported grant type, 50196 too many requests.
CODE_BAD_CLIENT, CODE_BAD_SCOPE, CODE_MISSING, CODE_BAD_GRANT, CODE_THROTTLED = 7000215, 70011, 900144, 70003, 50196


# --- Discovery ------------------------------------------------------------------------------------


def authority(request: HttpRequest) -> str:
    return request.build_absolute_uri(reverse("adfs-openid-configuration")).removesuffix(
        "/.well-known/openid-configuration"
    )


@require_GET
def openid_configuration(request: HttpRequest) -> JsonResponse:
    """The OpenID configuration MSAL reads for an ADFS authority (az-cli.md §3.2)."""
    issuer = authority(request)
    token_endpoint = request.build_absolute_uri(reverse("adfs-token"))  # byte for byte the route
    return JsonResponse(
        {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/oauth2/authorize/",
            "token_endpoint": token_endpoint,
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
            "grant_types_supported": [GRANT],
            "response_types_supported": ["token"],
            "scopes_supported": [f"{audience()}/.default"],
            "tenant_id": settings.PORTAL_TENANT_ID,
        }
    )


def metadata_endpoints(arm: ArmRequest):
    """GET /arm/metadata/endpoints: what `az cloud register --endpoint-resource-manager <arm>` reads (§3.1)."""
    request = arm.request
    login = authority(request)
    return ok(
        {
            "name": "HotpatchPortal",
            "portal": request.build_absolute_uri("/"),
            "resourceManager": arm.absolute("").split("?")[0],
            "authentication": {
                "loginEndpoint": login,
                "audiences": [audience()],
                "tenant": settings.PORTAL_TENANT_ID,
                "identityProvider": "ADFS",
            },
            "suffixes": {},
        }
    )


# --- The token endpoint ---------------------------------------------------------------------------


# Every client id that is not a GUID shares one counter: they can never match a principal anyway.
NOT_A_GUID = "not-a-guid"


def canonical_client_id(client_id: str) -> str:
    """The GUID a client id names, in one spelling. ServicePrincipal.authenticate accepts whatever
    uuid.UUID() parses ({braces}, upper case, no dashes, urn:uuid:...), so the failures must be counted
    per parsed value: counting per spelling would give a guesser a fresh allowance for each one."""
    try:
        return str(uuid.UUID(client_id))
    except ValueError:
        return NOT_A_GUID


def _failure_keys(client_id: str, address: str) -> list[tuple[str, int]]:
    # Hashed: an address of any length or content makes a short, safe cache key.
    def key(kind: str, value: str) -> str:
        return f"identity:failures:{kind}:{hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()}"

    return [
        (key("client", canonical_client_id(client_id)), settings.PORTAL_TOKEN_FAILURES_PER_CLIENT),
        (key("ip", address), settings.PORTAL_TOKEN_FAILURES_PER_IP),
    ]


def _throttled(keys: list[tuple[str, int]]) -> bool:
    counts = cache.get_many([key for key, _ in keys])
    return any(counts.get(key, 0) >= limit for key, limit in keys)


def _count_failure(keys: list[tuple[str, int]]) -> None:
    window = settings.PORTAL_TOKEN_FAILURE_WINDOW_SECONDS
    for key, _ in keys:
        cache.add(key, 0, timeout=window)  # the window starts at the first failure
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=window)


@csrf_exempt
@never_cache
@require_http_methods(["POST"])
def token(request: HttpRequest) -> JsonResponse:
    """POST /adfs/oauth2/token/: the client-credentials grant (client_secret_post) for service principals."""
    if not request.is_secure() and settings.PORTAL_IDENTITY_REQUIRE_HTTPS:
        return oauth_error(400, "invalid_request", "The token endpoint only answers over https.", CODE_MISSING)
    form = request.POST
    grant_type = form.get("grant_type", "")
    client_id = form.get("client_id", "")
    secret = form.get("client_secret", "")
    if grant_type != GRANT:
        return oauth_error(
            400,
            "unsupported_grant_type",
            "Only the client_credentials grant is supported: sign in with az login --service-principal.",
            CODE_BAD_GRANT,
        )
    if not client_id or not secret:
        return oauth_error(400, "invalid_request", "client_id and client_secret are required.", CODE_MISSING)
    keys = _failure_keys(client_id, client_address(request))
    try:
        throttled = _throttled(keys)
    except Exception:  # the cache (Redis) is down: without the counters, refuse rather than allow guessing
        log.exception("The token endpoint cannot read its failure counters")
        return oauth_error(
            503,
            "temporarily_unavailable",
            "Sign-in is briefly unavailable. Try again in a minute.",
            CODE_THROTTLED,
            headers={"Retry-After": "60"},
        )
    if throttled:
        window = settings.PORTAL_TOKEN_FAILURE_WINDOW_SECONDS
        return oauth_error(
            429,
            "temporarily_unavailable",
            f"Too many failed sign-in attempts. Try again in {window // 60 or 1} minutes.",
            CODE_THROTTLED,
            headers={"Retry-After": str(window)},
        )
    principal = ServicePrincipal.authenticate(client_id, secret)
    if principal is None:
        try:
            _count_failure(keys)
        except Exception:  # the cache went away since the read: the answer is a refusal anyway
            log.exception("The token endpoint cannot count a failure")
        return oauth_error(401, "invalid_client", BAD_CLIENT, CODE_BAD_CLIENT)
    scopes = form.get("scope", "").split()
    resources = [s.removesuffix(".default") for s in scopes if s.endswith("/.default")]
    if scopes and not any(same_resource(r, audience()) for r in resources):
        return oauth_error(
            400,
            "invalid_scope",
            f"The scope must be '{audience()}/.default'. Register the cloud again from this portal's "
            "'Use the Azure CLI' page.",
            CODE_BAD_SCOPE,
        )
    access_token, lifetime = issue_access_token(principal)
    response = JsonResponse(
        {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "resource": audience(),
        }
    )
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response
