"""The OpenAPI 3.0 description of the ARM API, served at /arm/openapi.json.

Built from the route table (routes.ENDPOINTS: paths, operations, their parameters, request bodies and
responses) and the shared components (schemas.py); nothing else lists the paths. schemathesis checks
real responses against it (tests/test_arm_fuzz.py).
"""

from django.http import HttpRequest, JsonResponse
from django.urls import reverse

from .core import Endpoint
from .routes import ENDPOINTS
from .schemas import ERRORS, PARAMETERS, SCHEMAS

# The component parameter that describes each `{name}` of a path template.
PATH_PARAMETERS = {param["name"]: key for key, param in PARAMETERS.items() if param["in"] == "path"}


def parameter(name: str) -> dict:
    return {"$ref": f"#/components/parameters/{name}"}


def operation(endpoint: Endpoint) -> dict:
    names = [PATH_PARAMETERS[name] for name in endpoint.path_params] + [*endpoint.query, "ApiVersion"]
    described = {
        "operationId": endpoint.operation_id,
        "summary": endpoint.summary,
        "tags": list(endpoint.tags),
        "parameters": [parameter(name) for name in names],
        "responses": {**endpoint.responses, **ERRORS},
    }
    if endpoint.request:
        described["requestBody"] = endpoint.request
    if not endpoint.authenticated:
        described["security"] = []
    return described


def paths(endpoints=ENDPOINTS) -> dict:
    described: dict[str, dict] = {}
    for endpoint in endpoints:
        described.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation(endpoint)
    return described


def document(server_url: str) -> dict:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Hotpatch Portal ARM-compatible API",
            "version": "2026-04-01",
            "description": (
                "The subset of Azure Resource Manager that the Azure SDK for Python (azure-mgmt-compute, "
                "azure-mgmt-resource, azure-mgmt-resource-features, azure-mgmt-resource-subscriptions) uses for "
                "VM patching, served over the portal's simulated fleet. Paths match case-insensitively; any "
                "api-version is accepted; errors use the ARM envelope; null means absent in request bodies, and a "
                "body with a NUL character anywhere is refused. Authenticate with a personal API token "
                "from the portal's API tokens page: Authorization: Bearer <token>."
            ),
        },
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}],
        "paths": paths(),
        "components": {
            "schemas": SCHEMAS,
            "parameters": PARAMETERS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "A portal API token."}},
        },
    }


def openapi_json(request: HttpRequest) -> JsonResponse:
    """GET /arm/openapi.json: no authentication, so tools can read it before they have a token."""
    server = request.build_absolute_uri(reverse("arm", kwargs={"path": ""})).rstrip("/")
    return JsonResponse(document(server), json_dumps_params={"indent": 1})
