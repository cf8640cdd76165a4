"""The error table: complete, as specified, and problem documents that leak nothing."""

from __future__ import annotations

import grpc
import pytest

import router_model.errors as domain
from router_model.errors import RouterError
from service.shared import errors as service_errors
from service.shared.errors import ERROR_MAP, INTERNAL_DETAIL, problem_for, spec_for


def all_subclasses(cls: type[RouterError]) -> set[type[RouterError]]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | all_subclasses(sub)
    return out


def test_every_error_has_its_own_entry() -> None:
    # the errors the route transports can meet: the domain's and this table's own (the gateway's
    # errors travel in the OpenAI envelope and are mapped there)
    modules = {domain.__name__, service_errors.__name__}
    known = {c for c in all_subclasses(RouterError) if c.__module__ in modules}
    assert len(known) >= 10
    assert known <= ERROR_MAP.keys()
    assert RouterError in ERROR_MAP
    codes = [c.code for c in ERROR_MAP]
    assert len(codes) == len(set(codes)), "error codes must be unique"


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (domain.InvalidPrompt, 422, grpc.StatusCode.INVALID_ARGUMENT),
        (domain.PromptTooLarge, 413, grpc.StatusCode.INVALID_ARGUMENT),
        (domain.ModelNotReady, 503, grpc.StatusCode.UNAVAILABLE),
        (domain.Overloaded, 429, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (service_errors.DeadlineExceeded, 504, grpc.StatusCode.DEADLINE_EXCEEDED),
        (domain.UpstreamError, 502, grpc.StatusCode.UNAVAILABLE),
        (domain.NotFound, 404, grpc.StatusCode.NOT_FOUND),
        (domain.ArtifactMismatch, 409, grpc.StatusCode.FAILED_PRECONDITION),
        (service_errors.TiersChanged, 409, grpc.StatusCode.FAILED_PRECONDITION),
        (service_errors.Unauthorized, 401, grpc.StatusCode.UNAUTHENTICATED),
        (RouterError, 500, grpc.StatusCode.INTERNAL),
    ],
)
def test_table_matches_the_spec(
    error: type[RouterError], status: int, code: grpc.StatusCode
) -> None:
    spec = spec_for(error("x"))
    assert (spec.http_status, spec.grpc_code) == (status, code)


def test_unlisted_subclass_uses_its_nearest_listed_base() -> None:
    class TooManyTiers(domain.InvalidPrompt):
        code = "too_many_tiers"

    assert spec_for(TooManyTiers("x")) is ERROR_MAP[domain.InvalidPrompt]


def test_problem_document_shape() -> None:
    doc = problem_for(domain.PromptTooLarge("prompt has 9 characters, limit 8"), "/v1/route")
    assert doc == {
        "type": "urn:tierwise:problem:prompt_too_large",
        "title": "Request too large",
        "status": 413,
        "detail": "prompt has 9 characters, limit 8",
        "instance": "/v1/route",
        "code": "prompt_too_large",
    }


@pytest.mark.parametrize("exc", [KeyError("secret-path"), RouterError("db password=hunter2")])
def test_bugs_get_a_generic_500(exc: Exception) -> None:
    doc = problem_for(exc, "/v1/route")
    assert (doc["status"], doc["code"], doc["detail"]) == (500, "internal", INTERNAL_DETAIL)
    assert spec_for(exc).grpc_code is grpc.StatusCode.INTERNAL
