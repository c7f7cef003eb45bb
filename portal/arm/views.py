"""The ARM API's Django view: `dispatch` serves every path under /arm/ from the route table
(routes.py); openapi.openapi_json describes it.

`dispatch` matches the path case-insensitively (ARM path segments are), authenticates the bearer
token, requires an api-version (any value), calls the handler and turns every failure into the ARM
error envelope.
"""

import logging

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from .auth import authenticate
from .core import API_VERSION, ASCII_SPACE, CONTROL, ArmRequest, short_reason
from .errors import ArmError
from .routes import router

log = logging.getLogger(__name__)


def _first_values(request: HttpRequest) -> dict[str, str]:
    query = {}
    for name, values in request.GET.lists():
        query.setdefault(name.lower(), values[0] if values else "")
    return query


@csrf_exempt
def dispatch(request: HttpRequest, path: str) -> HttpResponse:
    """The one view under /arm/: route, authenticate, check api-version, handle; errors as ARM envelopes."""
    try:
        response = _dispatch(request, path)
    except ArmError as e:
        response = e.response()
    except RequestDataTooBig:
        response = ArmError(413, "RequestEntityTooLarge", "The request content is too large.").response()
    except SuspiciousOperation as e:
        response = ArmError(400, "BadRequest", f"The request was rejected: {short_reason(e)}").response()
    except Exception:
        log.exception("ARM request %s %s failed", request.method, request.path)
        response = ArmError(
            500, "InternalServerError", "The server encountered an internal error; please retry the request."
        ).response()
    return response


def _dispatch(request: HttpRequest, path: str) -> HttpResponse:
    route, params = router.match(path)
    user, token = authenticate(request) if route is None or route.authenticated else (None, None)
    query = _first_values(request)
    api_version = query.get(API_VERSION, "").strip(ASCII_SPACE)
    if not api_version:
        raise ArmError(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    if route is None:
        raise ArmError(404, "NotFound", f"No ARM operation matches '{request.method} /{path.strip('/')}'.")
    for name, value in params.items():
        if CONTROL.search(value):
            raise ArmError(400, "InvalidParameter", f"The {name} has control characters.", target=name)
    method = request.method.upper()
    handler = route.handlers.get(method)
    if handler is None and method == "HEAD" and "GET" in route.handlers:
        handler = route.handlers["GET"]
    if handler is None:
        allowed = ", ".join(sorted(route.handlers))
        raise ArmError(
            405,
            "MethodNotAllowed",
            f"The method '{method}' is not allowed on '/{path.strip('/')}'; use {allowed}.",
            headers={"Allow": allowed},
        )
    arm = ArmRequest(request=request, user=user, token=token, api_version=api_version, query=query)
    response = handler(arm, **params)
    if method == "HEAD":
        response.content = b""
    return response
