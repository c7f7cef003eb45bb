"""Fuzzing the ARM API from its own OpenAPI description (schemathesis, on hypothesis).

Every operation of /arm/openapi.json gets generated requests, valid and invalid (positive and
negative modes), sent in-process to the WSGI application on the test database. The checks: no 5xx,
status codes, content types, headers and bodies as documented, and invalid data rejected.

Path parameters are pinned to Alice's fleet part of the time, or nearly every request would stop
at a 404 for an unknown subscription. No Celery is needed: the test's transaction never commits,
so the operations the fuzzer starts are never enqueued.

`PORTAL_FUZZ_EXAMPLES` sets the number of examples per operation (default 40; a longer run:
`PORTAL_FUZZ_EXAMPLES=300 make test PYTEST_ARGS=tests/test_arm_fuzz.py`).
"""

import copy
import os
import uuid

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from portal.arm.openapi import document
from portal.wsgi import application
from tests.factories import load_catalog, make_resource_group, make_vm
from vms.models import FeatureRegistration, RoleAssignment, Subscription

pytestmark = pytest.mark.usefixtures("arm_settings")

EXAMPLES = int(os.environ.get("PORTAL_FUZZ_EXAMPLES", "40"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


# Fixed ids, so that the schema (built at import: schemathesis' lazy fixture loader does not work with
# this pytest) can name them.
CONTOSO, FABRIKAM, OTHER = (uuid.UUID(f"00000000-0000-4000-8000-0000000000{n:02d}") for n in (1, 2, 3))


def build_schema():
    doc = copy.deepcopy(document("http://localhost/arm"))
    real = {
        "SubscriptionId": [str(CONTOSO), str(FABRIKAM), str(OTHER)],
        "ResourceGroupName": ["rg-web", "RG-WEB", "rg-ro"],
        "VmName": ["web-01", "web-02", "ro-01"],
        "ProviderNamespace": ["Microsoft.Compute", "microsoft.features"],
        "FeatureName": list(FeatureRegistration.HOTPATCH_FEATURES),
        "Location": ["westeurope", "West Europe"],
    }
    for name, values in real.items():
        schema = doc["components"]["parameters"][name]["schema"]
        doc["components"]["parameters"][name]["schema"] = {"anyOf": [{"enum": values}, schema]}
    # Authentication has its own tests (test_arm_auth.py): here every request carries Alice's token.
    del doc["security"]
    loaded = schemathesis.openapi.from_dict(doc)
    loaded.app = application
    # ARM ignores query parameters it does not know, as real ARM does: don't count them as invalid.
    loaded.config.generation.update(allow_extra_parameters=False, with_security_parameters=False)
    return loaded


schema = build_schema()


@pytest.fixture
def fuzz_fleet(db, alice, bob):
    """Alice: Contributor on Contoso (rg-web: web-01, web-02), Reader on Fabrikam (rg-ro: ro-01); Bob's own."""
    load_catalog()
    for pk, name, user, role in (
        (CONTOSO, "Contoso", alice, "Contributor"),
        (FABRIKAM, "Fabrikam", alice, "Reader"),
        (OTHER, "Bob's", bob, "Owner"),
    ):
        subscription = Subscription.objects.create(id=pk, display_name=name)
        RoleAssignment.objects.create(user=user, subscription=subscription, role=role)
        for feature in FeatureRegistration.HOTPATCH_FEATURES:
            FeatureRegistration.objects.create(subscription=subscription, name=feature, state="Registered")
    web = make_resource_group(Subscription.objects.get(pk=CONTOSO), "rg-web")
    make_vm(resource_group=web, name="web-01")
    make_vm(resource_group=web, name="web-02", product="ws2022")
    make_vm(resource_group=make_resource_group(Subscription.objects.get(pk=FABRIKAM), "rg-ro"), name="ro-01")
    # The raw WSGI application would close the test's database connection at the end of each request
    # (Django's test client avoids that the same way).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_the_api_honours_its_openapi_description(case, fuzz_fleet, alice_token):
    case.call_and_validate(headers={"Authorization": f"Bearer {alice_token}"}, checks=CHECKS)
