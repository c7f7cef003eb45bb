"""The plumbing of the ARM-compatible API (azure-api.md §5, §8): the request as a handler sees it,
typed body reads, the Router, responses, long-running-operation headers, and the middleware.

Handlers are plain functions `handler(arm: ArmRequest, **path_params) -> HttpResponse` in
resources.py, compute.py, patches.py, operations.py, providers.py and identity.py; routes.py is the
table of `Endpoint`s that maps each path and method to one and describes it; views.dispatch serves
them all through the `Router` built from that table. `ArmMiddleware` makes sure that nothing under
/arm/, not even an error raised by Django before the view runs, reaches a client as an HTML page,
and stamps x-ms-request-id.
"""

import base64
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode

from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse

from vms import access, clock
from vms.models import ApiToken, ResourceGroup, Role, Subscription, VirtualMachine
from vms.patch_settings import Problem

from .errors import GENERIC_CODES, ArmError, bad_request, invalid_parameters

log = logging.getLogger(__name__)

PREFIX = "/arm/"
API_VERSION = "api-version"
ASCII_SPACE = " \t\r\n\f\v"  # what a blank api-version may consist of (the OpenAPI pattern says the same)


# --- The request as a handler sees it -------------------------------------------------------------


@dataclass
class ArmRequest:
    request: HttpRequest
    user: object
    token: ApiToken | None
    api_version: str
    query: dict[str, str] = field(default_factory=dict)  # lower-cased names, first value

    @property
    def method(self) -> str:
        return self.request.method

    def param(self, name: str, default: str | None = None) -> str | None:
        return self.query.get(name.lower(), default)

    def json(self, *, required: bool = False):
        """The request body parsed as JSON; None for an empty body (unless required)."""
        raw = self.request.body  # RequestDataTooBig surfaces in dispatch as 413
        if not raw.strip():
            if required:
                raise ArmError(400, "InvalidRequestContent", "The request content is empty: a JSON object is needed.")
            return None
        try:
            text = raw.decode("utf-8-sig")
            body = json.loads(text, parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise ArmError(
                400,
                "InvalidRequestFormat",
                f"The request content was invalid and could not be deserialized: {short_reason(e)}",
            ) from None
        _refuse_unstorable_strings(body)
        return body

    def json_object(self, *, required: bool = False) -> dict:
        body = self.json(required=required)
        if body is None and not self.request.body.strip():
            return {}
        if not isinstance(body, dict):
            raise ArmError(400, "InvalidRequestContent", "The request content must be a JSON object.")
        return body

    def absolute(self, arm_path: str, **params: str) -> str:
        """An absolute URL of an ARM path as this client reaches us (scheme, host and any prefix)."""
        url = self.request.build_absolute_uri(reverse("arm", kwargs={"path": arm_path.lstrip("/")}))
        query = {**params, API_VERSION: self.api_version}
        return f"{url}?{urlencode(query)}"

    # --- access ---

    def subscription(self, subscription_id: str, *, act: bool = False) -> Subscription:
        """The subscription if this caller holds a role on it (404 otherwise); `act` needs Contributor."""
        try:
            pk = uuid.UUID(subscription_id)
        except ValueError:
            pk = None
        role = access.role_on(self.user, pk) if pk else None
        subscription = Subscription.objects.filter(pk=pk).first() if role else None
        if subscription is None:
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{subscription_id}' could not be found.")
        if act and access.RANK[Role(role)] < access.RANK[Role.CONTRIBUTOR]:
            raise ArmError(
                403,
                "AuthorizationFailed",
                f"The client '{self.user.get_username()}' does not have authorization to perform action "
                f"'{self.method} {self.request.path}' over scope '/subscriptions/{subscription.pk}': "
                f"the role '{role}' may read but not act. Ask an Owner for the Contributor role.",
            )
        return subscription

    def resource_group(self, subscription: Subscription, name: str) -> ResourceGroup:
        rg = ResourceGroup.objects.filter(subscription=subscription, name__iexact=name).first()
        if rg is None:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found.")
        return rg

    def virtual_machine(self, rg: ResourceGroup, name: str, queryset=None) -> VirtualMachine:
        queryset = VirtualMachine.objects.all() if queryset is None else queryset  # (never `or`: that runs it)
        vm = queryset.filter(resource_group=rg, name__iexact=name).first()
        if vm is None:
            raise vm_not_found(rg, name)
        vm.resource_group = rg  # spare a query: the caller already holds it
        return vm


def vm_not_found(rg: ResourceGroup, name: str) -> ArmError:
    return ArmError(
        404,
        "ResourceNotFound",
        f"The Resource 'Microsoft.Compute/virtualMachines/{name}' under resource group '{rg.name}' was not found.",
    )


# NUL and unpaired surrogates are valid JSON escapes that no PostgreSQL text column can hold.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
CONTROL = re.compile("[\x00-\x1f\x7f]")


def _refuse_unstorable_strings(body) -> None:
    """400 for strings (or keys) with NUL or unpaired surrogates anywhere in the body: iterative, any depth."""
    stack = [body]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and UNSTORABLE.search(node):
            raise ArmError(
                400,
                "InvalidRequestContent",
                "The request content has a string with a NUL character or an unpaired surrogate.",
            )


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def short_reason(e: Exception) -> str:
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


# --- Typed reads of a request body ---------------------------------------------------------------

MISSING = object()


class Body:
    """Typed reads of a JSON body by property path; every type problem is kept with its path."""

    def __init__(self, data: dict):
        self.data = data
        self.problems: list[Problem] = []

    def get(self, path: str, kind: type, default=MISSING):
        node = self.data
        for key in path.split("."):
            if node is None:
                return default
            if not isinstance(node, dict):
                self.problems.append(Problem(path, f"'{path}' must be inside a JSON object."))
                return default
            # ARM reads property names case-insensitively.
            node = node.get(key, next((v for k, v in node.items() if k.lower() == key.lower()), MISSING))
            if node is MISSING:
                return default
        if node is None:
            return default
        if kind is bool and not isinstance(node, bool) or kind is not bool and not isinstance(node, kind):
            names = {bool: "true or false", str: "a string", list: "an array", dict: "an object"}
            self.problems.append(Problem(path, f"'{path}' must be {names.get(kind, kind.__name__)}."))
            return default
        return node


def raise_problems(problems: list[Problem]):
    if problems:
        raise invalid_parameters(problems)


def check_tags(body: Body) -> None:
    """Tags must be what ARM accepts: an object of strings."""
    tags = body.get("tags", dict, None)
    if tags is not None and not all(isinstance(v, str) for v in tags.values()):
        body.problems.append(Problem("tags", "Tag values must be strings."))


# --- Routing --------------------------------------------------------------------------------------


Handler = Callable[..., HttpResponse]
METHODS = ("GET", "HEAD", "PUT", "PATCH", "DELETE", "POST")  # the order routes.py lists a path's methods in


@dataclass(frozen=True)
class Endpoint:
    """One ARM operation: what serves it, and everything /arm/openapi.json says about it.

    `path` is an OpenAPI-style template (`{name}` matches one segment); its parameters are described
    by the component parameter of that name. `query` names the other component parameters (api-version
    is on every operation), `request` is the OpenAPI requestBody and `responses` the successful answers
    (the error responses are on every operation). `authenticated=False`: no bearer token is needed.
    """

    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tags: tuple[str, ...]
    responses: dict
    query: tuple[str, ...] = ()
    request: dict | None = None
    authenticated: bool = True

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"\{([A-Za-z]+)\}", self.path)


@dataclass
class Route:
    template: str  # OpenAPI-style, e.g. /subscriptions/{subscriptionId}
    regex: re.Pattern
    handlers: dict[str, Handler]
    authenticated: bool = True


def _segments_overlap(a: str, b: str) -> bool:
    """Whether some path matches both templates (a `{name}` segment matches any one segment)."""
    sa, sb = a.strip("/").lower().split("/"), b.strip("/").lower().split("/")
    if len(sa) != len(sb):
        return False
    return all(x == y or x.startswith("{") or y.startswith("{") for x, y in zip(sa, sb, strict=True))


class Router:
    """The routes of a table of endpoints, one per path template with its handlers by method.

    Refuses a table a request could not be routed by unambiguously: a method twice on one path,
    two templates one path could match, or a path that is authenticated for one method and not another.
    """

    def __init__(self, endpoints: Iterable[Endpoint]):
        self.routes: list[Route] = []
        by_path: dict[str, Route] = {}
        for endpoint in endpoints:
            route = by_path.get(endpoint.path)
            if route is None:
                clash = next((r.template for r in self.routes if _segments_overlap(r.template, endpoint.path)), None)
                if clash:
                    raise ValueError(f"{endpoint.path} and {clash} can match the same path")
                route = Route(endpoint.path, _regex(endpoint.path), {}, endpoint.authenticated)
                by_path[endpoint.path] = route
                self.routes.append(route)
            if endpoint.method in route.handlers:
                raise ValueError(f"{endpoint.method} {endpoint.path} is in the table twice")
            if endpoint.authenticated != route.authenticated:
                raise ValueError(f"{endpoint.path} must be authenticated for every method or for none")
            route.handlers[endpoint.method] = endpoint.handler

    def match(self, path: str) -> tuple[Route | None, dict]:
        path = path.strip("/")
        for route in self.routes:
            found = route.regex.match(path)
            if found:
                return route, found.groupdict()
        return None, {}


def _regex(template: str) -> re.Pattern:
    parts = re.split(r"(\{[A-Za-z]+\})", template.strip("/"))
    pattern = "".join(f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") and p.endswith("}") else re.escape(p) for p in parts)
    return re.compile(f"^{pattern}$", re.IGNORECASE)


# --- Responses ------------------------------------------------------------------------------------


def ok(body, status: int = 200, headers: dict | None = None) -> JsonResponse:
    response = JsonResponse(body, status=status, safe=False)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def empty(status: int, headers: dict | None = None) -> HttpResponse:
    response = HttpResponse(status=status, content_type="application/json")
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def page(
    arm: ArmRequest,
    items: QuerySet,
    to_arm: Callable | None = None,
    *,
    many: Callable | None = None,
    keys: tuple[str, ...] = ("pk",),
) -> JsonResponse:
    """`{"value": [...], "nextLink"}` paging over a queryset, ordered by `keys` (the last one unique).

    The skip token is a keyset position (the last item's keys, encoded): each page is one index range
    scan whatever its depth, and items created or deleted meanwhile neither repeat nor shift the rest.
    `to_arm` serialises one item; `many` serialises a whole page at once (to load related rows in bulk).
    """
    size = settings.PORTAL_ARM_PAGE_SIZE
    top = arm.param("$top")
    if top is not None:
        if not re.fullmatch("[0-9]{1,6}", top) or int(top) < 1:
            raise bad_request(f"$top must be a positive integer, not '{top}'.", "$top")
        size = min(size, int(top))
    items = items.order_by(*keys)
    token = arm.param("$skiptoken")
    if token is not None:
        try:
            items = items.filter(_after(keys, _position(token, len(keys))))
        except (ValueError, TypeError, ValidationError):  # a value that does not fit its column
            raise _bad_token(token) from None
    chunk = list(items[: size + 1])
    more, chunk = len(chunk) > size, chunk[:size]
    body = {"value": many(chunk) if many else [to_arm(item) for item in chunk]}
    if more:
        params = {k: v for k, v in arm.query.items() if k not in (API_VERSION, "$skiptoken")}
        last = [_jsonable(getattr(chunk[-1], key)) for key in keys]
        params["$skiptoken"] = base64.urlsafe_b64encode(json.dumps(last).encode()).decode().rstrip("=")
        body["nextLink"] = arm.absolute(arm.request.path_info.removeprefix(PREFIX), **params)
    return ok(body)


def _jsonable(value):
    return value if isinstance(value, int) else str(value)


def _position(token: str, length: int) -> list:
    """The keys a skip token carries, or a 400: a client can only follow nextLink, not compose one."""
    try:
        # nextLink's tokens are short; a long one (deeply nested JSON) is refused before it is decoded.
        position = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) if len(token) <= 1024 else None
    except (ValueError, RecursionError):
        position = None
    if not (isinstance(position, list) and len(position) == length and all(map(_fits, position))):
        raise _bad_token(token)
    return position


def _fits(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) < 2**63
    return isinstance(value, str) and len(value) <= 200 and value.isprintable()


def _bad_token(token: str) -> ArmError:
    return bad_request(f"The skip token '{token[:100]}' is not valid; follow nextLink as returned.", "$skiptoken")


def _after(keys: tuple[str, ...], position: list) -> Q:
    """Rows after `position` in `keys` order: (a > x) or (a = x and (b > y or …)), with `a >= x` in
    front so that the database starts its index range scan there."""
    after = Q(**{f"{keys[-1]}__gt": position[-1]})
    for key, value in zip(keys[-2::-1], position[-2::-1], strict=True):
        after = Q(**{f"{key}__gt": value}) | (Q(**{key: value}) & after)
    return Q(**{f"{keys[0]}__gte": position[0]}) & after


def arm_time(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, as ARM writes times."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- Long-running operations ----------------------------------------------------------------------


def operation_path(subscription_id, location: str, name: str) -> str:
    return f"subscriptions/{subscription_id}/providers/Microsoft.Compute/locations/{location}/operations/{name}"


def lro_headers(arm: ArmRequest, subscription_id, location: str, name: str) -> dict[str, str]:
    """Azure-AsyncOperation (status), Location (result) and Retry-After: always all three (§8.2)."""
    path = operation_path(subscription_id, location, name)
    return {
        "Azure-AsyncOperation": arm.absolute(path),
        "Location": arm.absolute(path, monitor="true"),
        "Retry-After": str(settings.PORTAL_ARM_RETRY_AFTER),
    }


# Create, update, delete and power actions on a VM finish inside the request; their operation name
# is a signed record of what was done, so the status URL answers without storing anything.
_SIGNING_SALT = "portal.arm.operation"


def completed_operation_name(subscription_id, kind: str, resource_id: str, started: datetime) -> str:
    payload = {
        "s": str(subscription_id),
        "k": kind,
        "r": resource_id,
        "t": arm_time(started),
        "e": arm_time(clock.now()),
    }
    return signing.dumps(payload, salt=_SIGNING_SALT, compress=True)


def read_completed_operation(name: str) -> dict | None:
    try:
        return signing.loads(name, salt=_SIGNING_SALT)
    except signing.BadSignature:
        return None


# --- OAuth errors (the /adfs/ token endpoint) ------------------------------------------------------


def oauth_error(status: int, error: str, description: str, code: int, headers: dict | None = None) -> JsonResponse:
    """The OAuth 2 error shape Entra ID and ADFS answer with; az prints `error_description`."""
    response = JsonResponse({"error": error, "error_description": description, "error_codes": [code]}, status=status)
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    for name, value in (headers or {}).items():
        response[name] = value
    return response


# The OAuth error for a status Django answered itself under /adfs/ (unknown path, wrong method, a body
# too large, a crash). 900144 is AADSTS' "missing or malformed parameter", 50000 its generic server error.
OAUTH_ERRORS = {404: "invalid_request", 405: "invalid_request", 429: "temporarily_unavailable"}


def _oauth_replacement(response: HttpResponse) -> JsonResponse:
    status = response.status_code
    error = OAUTH_ERRORS.get(status, "invalid_request" if status < 500 else "server_error")
    if status >= 503:
        error = "temporarily_unavailable"
    description = f"The request failed with HTTP status {status} ({response.reason_phrase})."
    return oauth_error(status, error, description, 900144 if status < 500 else 50000)


# --- Middleware -----------------------------------------------------------------------------------


def api_family(path: str) -> str | None:
    """'arm' or 'adfs' for a path under either, in any letter case (/ARM/..., /Adfs); else None."""
    first = path.lstrip("/").split("/", 1)[0].lower()
    return first if first in ("arm", "adfs") else None


class ArmMiddleware:
    """Under /arm/ and /adfs/, in any letter case: never an HTML error page. x-ms-request-id on /arm/.

    Outermost in MIDDLEWARE, so it also sees the responses Django makes for errors raised before the
    view (a disallowed Host header, for one) and rewrites them as ARM error envelopes (/arm/) or OAuth
    errors (/adfs/). The routes are lower case; `/ARM/...` is not routed, but answers a JSON 404.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        family = api_family(request.path_info)
        if family is None:
            return self.get_response(request)
        if family == "adfs":
            response = self.get_response(request)
            if response.status_code >= 400 and not response.get("Content-Type", "").startswith("application/json"):
                replacement = _oauth_replacement(response)
                if response.has_header("Allow"):
                    replacement["Allow"] = response["Allow"]
                response = replacement
            return response
        request_id = str(uuid.uuid4())
        response = self.get_response(request)
        if response.status_code >= 400 and not response.get("Content-Type", "").startswith("application/json"):
            status = response.status_code
            code = GENERIC_CODES.get(status, "BadRequest" if status < 500 else "InternalServerError")
            message = f"The request failed with HTTP status {status} ({response.reason_phrase})."
            replacement = ArmError(status, code, message).response()
            if response.has_header("Allow"):
                replacement["Allow"] = response["Allow"]
            response = replacement
        response["x-ms-request-id"] = request_id
        correlation = request.headers.get("x-ms-correlation-request-id", "")[:100]
        response["x-ms-correlation-request-id"] = correlation or request_id
        client_id = request.headers.get("x-ms-client-request-id", "")[:100]
        if client_id:
            response["x-ms-client-request-id"] = client_id
        return response
