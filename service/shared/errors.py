"""The one table from domain errors to HTTP statuses and gRPC codes, and RFC 9457 problem bodies.

Transports catch at their boundary and look the error up here; nothing else maps errors. Errors
that are not ``RouterError`` (bugs) become 500 / INTERNAL with a generic text: their message may
hold internals and is only logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import grpc

from router_model.errors import (
    ArtifactMismatch,
    InvalidData,
    InvalidPrompt,
    ModelNotReady,
    NotFound,
    Overloaded,
    PromptTooLarge,
    RouterError,
    UpstreamError,
)

PROBLEM_CONTENT_TYPE = "application/problem+json"
#: ``type`` of every problem is this prefix plus the error's stable code.
PROBLEM_TYPE_PREFIX = "urn:tierwise:problem:"
INTERNAL_DETAIL = "internal error; the server log has the details"


class DeadlineExceeded(RouterError):
    """The request's deadline passed before its decision was ready."""

    code: ClassVar[str] = "deadline_exceeded"


class TiersChanged(ArtifactMismatch):
    """A reload offered a bundle whose tier names (in order) differ from the served ones.

    Clients (gateways using this router remotely) learned the ladder at start-up and would meet
    unknown tier names; changing tiers therefore needs a restart.
    """

    code: ClassVar[str] = "tiers_changed"


class BundleNotAllowed(RouterError):
    """An admin reload named a path outside the configured bundle roots (or one whose files
    lead out of them through a symlink)."""

    code: ClassVar[str] = "bundle_not_allowed"


class Unauthorized(RouterError):
    """An admin request without the right bearer key."""

    code: ClassVar[str] = "unauthorized"


@dataclass(frozen=True)
class ErrorSpec:
    """How one kind of error travels: HTTP status, gRPC status code, problem title."""

    http_status: int
    grpc_code: grpc.StatusCode
    title: str


ERROR_MAP: dict[type[RouterError], ErrorSpec] = {
    InvalidPrompt: ErrorSpec(422, grpc.StatusCode.INVALID_ARGUMENT, "Invalid request"),
    PromptTooLarge: ErrorSpec(413, grpc.StatusCode.INVALID_ARGUMENT, "Request too large"),
    ModelNotReady: ErrorSpec(503, grpc.StatusCode.UNAVAILABLE, "Model not ready"),
    # only a reload can meet a bad bundle (startup refuses to serve one): the request conflicts
    # with what the service can load, and the old bundle keeps serving
    ArtifactMismatch: ErrorSpec(409, grpc.StatusCode.FAILED_PRECONDITION, "Model bundle refused"),
    TiersChanged: ErrorSpec(409, grpc.StatusCode.FAILED_PRECONDITION, "Tier ladder changed"),
    Overloaded: ErrorSpec(429, grpc.StatusCode.RESOURCE_EXHAUSTED, "Overloaded"),
    DeadlineExceeded: ErrorSpec(504, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline exceeded"),
    NotFound: ErrorSpec(404, grpc.StatusCode.NOT_FOUND, "Not found"),
    Unauthorized: ErrorSpec(401, grpc.StatusCode.UNAUTHENTICATED, "Unauthorized"),
    BundleNotAllowed: ErrorSpec(403, grpc.StatusCode.PERMISSION_DENIED, "Bundle path not allowed"),
    UpstreamError: ErrorSpec(502, grpc.StatusCode.UNAVAILABLE, "Upstream error"),
    InvalidData: ErrorSpec(422, grpc.StatusCode.INVALID_ARGUMENT, "Invalid data"),
    RouterError: ErrorSpec(500, grpc.StatusCode.INTERNAL, "Internal error"),
}
INTERNAL = ERROR_MAP[RouterError]


def spec_for(exc: BaseException) -> ErrorSpec:
    """The table entry of an error: its own class's, else its nearest listed base's, else 500."""
    for cls in type(exc).__mro__:
        spec = ERROR_MAP.get(cls)
        if spec is not None:
            return spec
    return INTERNAL


def public_detail(exc: BaseException) -> str:
    """What a client may read about an error: the message of a known error, never of a bug."""
    spec = spec_for(exc)
    if spec is INTERNAL or not str(exc):
        return INTERNAL_DETAIL if spec is INTERNAL else spec.title
    return str(exc)


def error_code(exc: BaseException) -> str:
    """The stable code of an error (``internal`` for anything that is not a ``RouterError``)."""
    if isinstance(exc, RouterError) and spec_for(exc) is not INTERNAL:
        return exc.code
    return "internal"


def problem_body(
    *, status: int, title: str, detail: str, instance: str, code: str, **extra: Any
) -> dict[str, Any]:
    """An RFC 9457 problem document with tierwise's ``code`` extension member."""
    return {
        "type": PROBLEM_TYPE_PREFIX + code,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        "code": code,
        **extra,
    }


def problem_for(exc: BaseException, instance: str) -> dict[str, Any]:
    """The problem document of an error raised while serving ``instance`` (a request path)."""
    spec = spec_for(exc)
    return problem_body(
        status=spec.http_status,
        title=spec.title,
        detail=public_detail(exc),
        instance=instance,
        code=error_code(exc),
    )
