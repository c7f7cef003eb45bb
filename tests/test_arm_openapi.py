"""The OpenAPI description at /arm/openapi.json describes exactly what the API serves."""

from django.test import Client

from portal.arm.openapi import PATHS
from portal.arm.routes import router

HTTP_METHODS = {"get", "put", "post", "patch", "delete", "head"}


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


def test_every_route_is_described_with_its_methods_and_nothing_else():
    served = {route.template: {m.lower() for m in route.handlers} for route in router.routes}
    described = {path: set(item) & HTTP_METHODS for path, item in PATHS.items()}
    assert served == described


def test_operation_ids_are_unique_and_every_operation_requires_an_api_version():
    ids = [op["operationId"] for item in PATHS.values() for op in item.values()]
    assert len(ids) == len(set(ids))
    for item in PATHS.values():
        for operation in item.values():
            assert {"$ref": "#/components/parameters/ApiVersion"} in operation["parameters"]
            assert {"400", "401", "404"} <= set(operation["responses"])


def test_every_path_parameter_is_declared():
    import re

    for path, item in PATHS.items():
        names = set(re.findall(r"{(\w+)}", path))
        for operation in item.values():
            declared = {p["$ref"].rsplit("/", 1)[-1] for p in operation["parameters"]}
            from portal.arm.openapi import PARAMETERS

            in_path = {PARAMETERS[name]["name"] for name in declared if PARAMETERS[name]["in"] == "path"}
            assert in_path == names, (path, operation["operationId"])
