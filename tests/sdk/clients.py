"""The official Azure SDK clients, unmodified, pointed at a portal over plain http.

azure-api.md §8 lists the verified ways round the SDK's https-only bearer policy; these use way B: a
policy that puts the API token in the Authorization header, in place of the challenge policy, so a
plain-http live server works. Nothing else about the clients changes.
"""

import time

from azure.core.credentials import AccessToken
from azure.core.pipeline.policies import SansIOHTTPPolicy


class StaticBearerPolicy(SansIOHTTPPolicy):
    def __init__(self, token: str):
        super().__init__()
        self.token = token

    def on_request(self, request):
        request.http_request.headers["Authorization"] = f"Bearer {self.token}"


class TokenCredential:
    """A credential that hands out a portal API token (what the clients ask for, unused with the policy)."""

    def __init__(self, token: str):
        self.token = token

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


def client_kwargs(token: str, base_url: str) -> dict:
    return {
        "base_url": base_url,
        "authentication_policy": StaticBearerPolicy(token),
        "retry_total": 0,  # fail fast: a retried error only hides what happened
    }


def clients(token: str, base_url: str, subscription_id: str):
    """compute, features, maintenance, resources and subscriptions clients for one subscription."""
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.maintenance import MaintenanceManagementClient
    from azure.mgmt.resource.features import FeatureClient
    from azure.mgmt.resource.resources import ResourceManagementClient
    from azure.mgmt.resource.subscriptions import SubscriptionClient

    credential = TokenCredential(token)
    kw = client_kwargs(token, base_url)
    return {
        "compute": ComputeManagementClient(credential, subscription_id, polling_interval=0, **kw),
        "features": FeatureClient(credential, subscription_id, polling_interval=0, **kw),
        "maintenance": MaintenanceManagementClient(credential, subscription_id, **kw),
        "resources": ResourceManagementClient(credential, subscription_id, polling_interval=0, **kw),
        "subscriptions": SubscriptionClient(credential, **kw),
    }
