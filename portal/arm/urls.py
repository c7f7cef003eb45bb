"""The ARM-compatible API under /arm/, its OpenAPI description, and the Azure CLI's sign-in.

Included from portal/urls.py. One catch-all URL hands every /arm/ path to `views.dispatch`, which
looks it up in the route table (routes.py): case-insensitive matching, ARM error envelopes for
anything unknown.
"""

from django.urls import path, re_path

from . import identity, openapi, views

urlpatterns = [
    path("arm/openapi.json", openapi.openapi_json, name="arm-openapi"),
    re_path(r"^arm/(?P<path>.*)$", views.dispatch, name="arm"),
    # The Azure CLI's sign-in (ADFS-style authority; the token URL is byte for byte the OIDC document's).
    path("adfs/.well-known/openid-configuration", identity.openid_configuration, name="adfs-openid-configuration"),
    path("adfs/oauth2/token/", identity.token, name="adfs-token"),
]
