"""The gateway's errors in the OpenAI envelope ``{"error": {"message", "type", "param", "code"}}``.

SDK clients parse this shape (and raise ``BadRequestError``, ``AuthenticationError``, …, by the
status). Statuses come from ``service.shared.errors.ERROR_MAP`` except where OpenAI's own API
answers
differently: a request it cannot use is a 400 there, not a 422.
"""

from __future__ import annotations

from typing import Any, ClassVar

from router_model.errors import InvalidPrompt, NotFound, PromptTooLarge, RouterError, UpstreamError
from service.shared.errors import INTERNAL, INTERNAL_DETAIL, Unauthorized, spec_for


class BadRequest(InvalidPrompt):
    """A request the gateway cannot use: not JSON, a missing or mistyped field, a bad knob."""

    code: ClassVar[str] = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.error_code = code


class ModelNotFound(NotFound):
    """The request names a model that is neither ``tierwise-auto`` nor a configured tier's."""

    code: ClassVar[str] = "model_not_found"


#: Where OpenAI's status differs from the router service's table (checked first, by MRO).
_STATUS: dict[type[RouterError], int] = {
    PromptTooLarge: 413,
    InvalidPrompt: 400,
    NotFound: 404,
    Unauthorized: 401,
    UpstreamError: 502,
}


def _error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "api_error"
    return "invalid_request_error"


def status_for(exc: BaseException) -> int:
    """The HTTP status of an error raised while handling a gateway request."""
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return spec_for(exc).http_status


def envelope(
    message: str, status: int, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """An OpenAI error body."""
    return {
        "error": {"message": message, "type": _error_type(status), "param": param, "code": code}
    }


def envelope_for(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The status and OpenAI error body of an error (bugs get a generic message)."""
    status = status_for(exc)
    if not isinstance(exc, RouterError) or spec_for(exc) is INTERNAL and status >= 500:
        return 500, envelope(INTERNAL_DETAIL, 500, code="internal_error")
    param = exc.param if isinstance(exc, BadRequest) else None
    code = exc.error_code if isinstance(exc, BadRequest) and exc.error_code else exc.code
    if isinstance(exc, Unauthorized):
        code = "invalid_api_key"
    return status, envelope(str(exc) or code, status, param=param, code=code)
