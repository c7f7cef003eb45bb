"""The ARM error envelope (azure-api.md §8): every refusal under /arm/ is one of these."""

from django.http import HttpResponse, JsonResponse


class ArmError(Exception):
    """An ARM error response: `{"error": {"code", "message", "target"?, "details"?}}` with a status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        target: str | None = None,
        details: list[dict] | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.target, self.details, self.headers = target, details, headers or {}

    def body(self) -> dict:
        error = {"code": self.code, "message": self.message}
        if self.target is not None:
            error["target"] = self.target
        if self.details:
            error["details"] = self.details
        return {"error": error}

    def response(self) -> HttpResponse:
        response = JsonResponse(self.body(), status=self.status)
        for name, value in self.headers.items():
            response[name] = value
        return response


def invalid_parameters(problems, code: str = "InvalidParameter") -> ArmError:
    """400 with the first problem as the error and every problem in `details` (targets are property paths)."""
    details = [{"code": code, "target": p.target, "message": p.message} for p in problems]
    first = problems[0]
    return ArmError(400, code, first.message, target=first.target, details=details if len(details) > 1 else None)


def bad_request(message: str, target: str | None = None, code: str = "InvalidParameter") -> ArmError:
    return ArmError(400, code, message, target=target)


# Status codes Django (or a middleware) may answer with before our view runs, as ARM codes.
GENERIC_CODES = {
    400: "BadRequest",
    401: "InvalidAuthenticationToken",
    403: "AuthorizationFailed",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "RequestEntityTooLarge",
    500: "InternalServerError",
}
