"""The ARM-compatible API under /arm/, its OpenAPI description, and the API-token pages.

Included from portal/urls.py. The route table itself lives in portal.arm.router, filled by vms.api
and patching.api; one catch-all URL hands every /arm/ path to it (case-insensitive matching, ARM
error envelopes for anything unknown).
"""

from django.urls import path, re_path

import patching.api  # noqa: F401 (registers its routes)
import vms.api  # noqa: F401 (registers its routes)
from vms import token_views

from . import arm, identity, openapi  # identity registers GET /arm/metadata/endpoints

urlpatterns = [
    path("arm/openapi.json", openapi.openapi_json, name="arm-openapi"),
    re_path(r"^arm/(?P<path>.*)$", arm.dispatch, name="arm"),
    # The Azure CLI's sign-in (ADFS-style authority; the token URL is byte for byte the OIDC document's).
    path("adfs/.well-known/openid-configuration", identity.openid_configuration, name="adfs-openid-configuration"),
    path("adfs/oauth2/token/", identity.token, name="adfs-token"),
    path("account/api-tokens/", token_views.api_tokens, name="api-tokens"),
    path("account/api-tokens/<int:pk>/revoke/", token_views.revoke_api_token, name="api-token-revoke"),
]
