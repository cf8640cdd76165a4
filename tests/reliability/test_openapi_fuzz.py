"""schemathesis against the OpenAPI specs of the router service and of the gateway: no 5xx.

The router runs as ``tierwise serve`` (a subprocess); the gateway in-process on loopback, with
the fake upstreams. Each operation gets ``MAX_EXAMPLES`` generated requests, valid and invalid.
Generation is derandomized, so CI runs the same requests every time; to explore further, run
with more examples or without ``derandomize`` (that is how the NUL-byte reload path was found).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from gateway_support import CLIENT_KEY, STRONG, WEAK
from hypothesis import HealthCheck, given, settings
from reliability_servers import ROUTER_ADMIN_KEY, ServerProcess
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from service.gateway.requests import ChatBody, FeedbackIn

MAX_EXAMPLES = 25
MODELS = ["tierwise-auto", "tierwise-auto", WEAK, STRONG, "weak"]
FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


def bodies_documented(spec: dict[str, Any]) -> dict[str, Any]:
    """The gateway's spec with the JSON bodies its routes read themselves added.

    Why: the gateway reads raw bodies (it forwards members it does not know), so FastAPI
    documents no request body and schemathesis would send none; the pydantic models that
    validate those bodies give the schemas.
    """
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for path, model in (("/v1/chat/completions", ChatBody), ("/v1/feedback", FeedbackIn)):
        doc = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(doc.pop("$defs", {}))
        if model is ChatBody:  # known models, so that valid requests get routed and answered
            doc["properties"]["model"] = {"type": "string", "enum": MODELS}
        spec["paths"][path]["post"]["requestBody"] = {
            "required": True, "content": {"application/json": {"schema": doc}}}
    return spec


def fuzz(schema: Any, base_url: str, key: str, session: requests.Session) -> str:
    """``MAX_EXAMPLES`` valid and as many invalid requests per operation; returns a summary.

    Raises:
        AssertionError (schemathesis' failure): on any 5xx answer.
    """
    lines = []
    headers = {"authorization": f"Bearer {key}"}
    for result in schema.get_all_operations():
        operation = result.ok()
        statuses: Counter[int] = Counter()
        modes = [GenerationMode.POSITIVE]
        if _has_inputs(operation):  # otherwise there is nothing to make invalid
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            _fuzz_one(operation.as_strategy(generation_mode=mode), base_url, headers, session,
                      statuses)
        lines.append(f"{operation.label} {dict(sorted(statuses.items()))}")
    return "; ".join(lines)


def _fuzz_one(
    strategy: Any, base_url: str, headers: dict[str, str], session: requests.Session,
    statuses: Counter[int],
) -> None:
    @FUZZ
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call_and_validate(
            base_url=base_url, session=session, headers=headers,
            checks=[not_a_server_error], timeout=30)
        statuses[response.status_code] += 1

    run()


def _has_inputs(operation: Any) -> bool:
    definition = operation.definition.raw
    return bool(definition.get("requestBody") or definition.get("parameters"))


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


@pytest.mark.slow
@pytest.mark.reliability(
    scenario="Router HTTP API fuzzed (schemathesis)",
    action=f"every operation of tierwise serve's OpenAPI spec: {MAX_EXAMPLES} valid and "
           f"{MAX_EXAMPLES} invalid generated requests each, admin key sent",
    expected="no 5xx, no crash")
def test_router_openapi(
    router_process: ServerProcess, session: requests.Session, observed: Any
) -> None:
    schema = schemathesis.openapi.from_url(router_process.http_url + "/openapi.json")
    observed(fuzz(schema, router_process.http_url, ROUTER_ADMIN_KEY, session))
    assert router_process.alive()


@pytest.mark.slow
@pytest.mark.reliability(
    scenario="Gateway HTTP API fuzzed (schemathesis)",
    action=f"every gateway operation: {MAX_EXAMPLES} valid and {MAX_EXAMPLES} invalid "
           "generated requests each; chat and feedback bodies from the validating models; "
           "fake upstreams answer",
    expected="no 5xx, no crash")
def test_gateway_openapi(
    make_gateway: Any, fast_bundle: Path, session: requests.Session, observed: Any
) -> None:
    gw = make_gateway(fast_bundle)
    spec = requests.get(gw.url + "/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(bodies_documented(spec))
    observed(fuzz(schema, gw.url, CLIENT_KEY, session))
    with gw.http() as http:
        assert http.get("/healthz").status_code == 200
