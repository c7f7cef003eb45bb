"""/arm/openapi.json is built from the route table (portal.arm.routes), so it cannot list a path the
API does not serve or miss one it does. What is left to check: the table is well formed (one
unambiguous route per path, each operation identified and answering something), the document is
valid OpenAPI 3.0 whose every reference resolves, and each route does what the table says.
"""

import copy
import re

import pytest
import schemathesis
from django.test import Client

from patching.models import Operation, OperationStatus, PatchState
from portal.arm.core import METHODS, Endpoint, Router
from portal.arm.openapi import PATH_PARAMETERS, document
from portal.arm.patches import WIRE_STATUS, wire_status
from portal.arm.routes import ENDPOINTS, router
from portal.arm.schemas import INSTALLATION_STATE, PARAMETERS, PATCH_STATUS, SCHEMAS

DOC = document("http://testserver/arm")
# Declared in schemas.py but used by no operation: PUT on a VM names VirtualMachine as its request body.
UNUSED_SCHEMAS = {"VirtualMachineCreateOrUpdate"}


def concrete(template: str) -> str:
    """A request path the template matches."""
    return re.sub(r"\{(\w+)\}", lambda m: f"some-{m[1]}", template)


def refs(node):
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_it_is_served_without_authentication(db):
    response = Client().get("/arm/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"] == "3.0.3"
    assert doc["servers"] == [{"url": "http://testserver/arm"}]
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A portal API token.",
    }
    assert len(doc["paths"]) == len({e.path for e in ENDPOINTS})


def test_the_document_is_valid_openapi_3_0():
    schemathesis.openapi.from_dict(copy.deepcopy(DOC)).validate()
    # ...and the validator does catch a broken one.
    broken = copy.deepcopy(DOC)
    del broken["paths"]["/subscriptions"]["get"]["responses"]["200"]["description"]
    with pytest.raises(ValueError):
        schemathesis.openapi.from_dict(broken).validate()


def test_every_reference_resolves_and_every_component_is_used():
    used = set()
    for reference in refs(DOC):
        assert reference.startswith("#/"), reference
        node = DOC
        for key in reference[2:].split("/"):
            assert key in node, f"{reference} does not resolve"
            node = node[key]
        used.add(reference)
    assert {f"#/components/parameters/{name}" for name in PARAMETERS} <= used
    unused = {name for name in SCHEMAS if f"#/components/schemas/{name}" not in used}
    assert unused == UNUSED_SCHEMAS


def test_the_enums_name_every_stored_value_as_the_wire_shows_it():
    assert WIRE_STATUS
    for status in OperationStatus:
        assert wire_status(Operation(status=status)) in PATCH_STATUS["enum"], status
    assert set(PatchState) - {PatchState.AVAILABLE} <= set(INSTALLATION_STATE["enum"])
    assert PATCH_STATUS["enum"][0] == INSTALLATION_STATE["enum"][0] == "Unknown"
    assert all(type(value) is str for value in PATCH_STATUS["enum"])  # plain strings, not enum members


def test_every_operation_is_identified_once_and_answers_something():
    ids = [e.operation_id for e in ENDPOINTS]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
    for endpoint in ENDPOINTS:
        assert re.fullmatch(r"[A-Z][A-Za-z]+_[A-Z][A-Za-z]+", endpoint.operation_id), endpoint.operation_id
        assert endpoint.summary and endpoint.tags, endpoint.operation_id
        assert endpoint.method in METHODS, endpoint.operation_id
        assert any(status.startswith("2") for status in endpoint.responses), endpoint.operation_id
        assert all(re.fullmatch("[2][0-9][0-9]", status) for status in endpoint.responses), endpoint.operation_id
        assert all(PARAMETERS[name]["in"] == "query" for name in endpoint.query), endpoint.operation_id


def test_every_operation_describes_its_path_parameters_api_version_and_errors():
    for path, item in DOC["paths"].items():
        in_path = set(re.findall(r"{(\w+)}", path))
        assert in_path <= set(PATH_PARAMETERS), path
        for operation in item.values():
            declared = [PARAMETERS[ref.rsplit("/", 1)[-1]] for ref in refs(operation["parameters"])]
            assert {p["name"] for p in declared if p["in"] == "path"} == in_path, operation["operationId"]
            assert "api-version" in {p["name"] for p in declared}
            assert {"400", "401", "404"} <= set(operation["responses"])


def test_only_the_unauthenticated_operations_say_so():
    for endpoint in ENDPOINTS:
        operation = DOC["paths"][endpoint.path][endpoint.method.lower()]
        assert ("security" in operation) == (not endpoint.authenticated), endpoint.operation_id
    assert [e.path for e in ENDPOINTS if not e.authenticated] == ["/metadata/endpoints"]
    assert DOC["paths"]["/metadata/endpoints"]["get"]["security"] == []


def test_the_table_is_in_path_order():
    def position(e: Endpoint):
        return e.path.lower(), METHODS.index(e.method)

    assert list(ENDPOINTS) == sorted(ENDPOINTS, key=position)


def test_every_route_reaches_its_handler_whatever_the_case():
    for endpoint in ENDPOINTS:
        for path in (concrete(endpoint.path), concrete(endpoint.path).upper()):
            route, params = router.match(path)
            assert route is not None and route.template == endpoint.path, path
            assert route.handlers[endpoint.method] is endpoint.handler
            assert set(params) == set(endpoint.path_params)


def test_every_route_needs_a_token_unless_the_table_says_otherwise(db):
    client = Client()
    for endpoint in ENDPOINTS:
        response = client.generic(endpoint.method, f"/arm{concrete(endpoint.path)}?api-version=2024-01-01")
        if endpoint.authenticated:
            assert response.status_code == 401, endpoint.operation_id
        else:
            assert response.status_code == 200, endpoint.operation_id


def endpoint(method: str, path: str, *, authenticated: bool = True) -> Endpoint:
    return Endpoint(method, path, lambda arm: None, "X_Y", "x", ("X",), {"200": {}}, authenticated=authenticated)


@pytest.mark.parametrize(
    "table, problem",
    [
        ([endpoint("GET", "/a/{b}"), endpoint("GET", "/a/{b}")], "twice"),
        ([endpoint("GET", "/a/{b}"), endpoint("POST", "/A/c")], "can match the same path"),
        ([endpoint("GET", "/a/{b}/c"), endpoint("GET", "/a/d/{e}")], "can match the same path"),
        ([endpoint("GET", "/a"), endpoint("PUT", "/a", authenticated=False)], "every method or for none"),
    ],
)
def test_the_router_refuses_a_table_it_could_not_route_by(table, problem):
    with pytest.raises(ValueError, match=problem):
        Router(table)
    assert Router([endpoint("GET", "/a/{b}"), endpoint("PUT", "/a/{b}"), endpoint("GET", "/a/{b}/c")])
