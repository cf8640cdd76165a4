"""Hostile input: the feature extractor on any text, and gRPC frames that are not protobuf."""

from __future__ import annotations

import math
import time
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_servers import ServerProcess

from protos.tierwise.v1 import router_pb2 as pb
from protos.tierwise.v1 import router_pb2_grpc
from router_model.encoder import load_tokenizer
from router_model.features import HAND_FEATURE_NAMES, Featurizer, extract_features

# every code point; lone surrogates (category Cs, invalid in UTF-8) drawn often on purpose
ANY_CHAR = st.one_of(st.characters(exclude_categories=()), st.integers(0xD800, 0xDFFF).map(chr))
ANY_TEXT = st.text(ANY_CHAR, max_size=400)
ROUTE = "/tierwise.v1.Router/Route"
HOSTILE = settings(max_examples=60, deadline=None, database=None, derandomize=True,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def featurizer() -> Featurizer:
    return Featurizer("hand", load_tokenizer())


def assert_rows(matrix: Any, n: int) -> None:
    assert isinstance(matrix, np.ndarray) and matrix.dtype == np.float32
    assert matrix.shape == (n, len(HAND_FEATURE_NAMES))
    assert np.isfinite(matrix).all()


@pytest.mark.reliability(
    scenario="Feature extractor: arbitrary unicode",
    action="hypothesis: 60 batches of 1-4 texts of any code point (lone surrogates, control "
           "characters, astral planes, empty strings)",
    expected="finite float32 rows of the right width, deterministic")
def test_features_of_any_text_are_finite_rows(
    featurizer: Featurizer, observed: Any
) -> None:
    seen = {"texts": 0, "surrogates": 0, "empty": 0}

    @HOSTILE
    @given(st.lists(ANY_TEXT, min_size=1, max_size=4))
    def check(texts: list[str]) -> None:
        matrix = extract_features(texts, featurizer)
        assert_rows(matrix, len(texts))
        assert np.array_equal(matrix, extract_features(texts, featurizer))
        seen["texts"] += len(texts)
        seen["surrogates"] += sum(any(0xD800 <= ord(c) <= 0xDFFF for c in t) for t in texts)
        seen["empty"] += texts.count("")

    check()
    observed(f"{seen['texts']} texts ({seen['surrogates']} with lone surrogates, "
             f"{seen['empty']} empty): all rows finite float32 x {len(HAND_FEATURE_NAMES)}")


@pytest.mark.reliability(
    scenario="Feature extractor: huge and empty input",
    action="one 1.2 MB prompt (mixed words, digits, code, emoji, a lone surrogate) and '' in "
           "one batch",
    expected="finite float32 rows of the right width")
def test_features_of_a_huge_and_an_empty_prompt(featurizer: Featurizer, observed: Any) -> None:
    unit = "Solve 3x + 7 = 22, then def f(x): return x ** 2 \U0001f600 caf\u00e9 \ud800?\n"
    huge = unit * (1_200_000 // len(unit) + 1)
    start = time.perf_counter()
    matrix = extract_features([huge, ""], featurizer)
    took = time.perf_counter() - start
    assert_rows(matrix, 2)
    assert matrix[1].tolist() == extract_features([""], featurizer)[0].tolist()
    observed(f"{len(huge) / 1e6:.1f}M chars featurised in {took:.1f} s; empty prompt: "
             f"{int(np.count_nonzero(matrix[1]))} non-zero features")


def raw_route(channel: grpc.Channel) -> Any:
    """``Route`` with identity (de)serializers: the request is sent as the bytes given."""
    return channel.unary_unary(ROUTE, request_serializer=None, response_deserializer=None)


MALFORMED = [
    ("truncated length-delimited field", b"\x0a\xff\xff\xff\x0f"),
    ("truncated varint tag", b"\xff"),
    ("invalid utf-8 in the prompt string", b"\x0a\x02\xc3\x28"),
    ("wire type 7 (does not exist)", b"\x0f\x00"),
    ("end-group without start", b"\x0c"),
]


@pytest.mark.reliability(
    scenario="gRPC: malformed protobuf",
    action="raw bytes that are not a valid RouteRequest (5 hand-made + 40 random from "
           "hypothesis) sent to tierwise serve with a generic channel",
    expected="INVALID_ARGUMENT or INTERNAL (OK if the bytes happen to parse), the process "
             "lives, a good call works after")
def test_malformed_grpc_frames(router_process: ServerProcess, observed: Any) -> None:
    codes: dict[str, int] = {}
    allowed = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL}
    with grpc.insecure_channel(router_process.grpc_target) as channel:
        call = raw_route(channel)

        def send(data: bytes) -> grpc.StatusCode:
            try:
                reply = call(data, timeout=10)
            except grpc.RpcError as err:
                code: grpc.StatusCode = err.code()  # type: ignore[attr-defined]
            else:
                pb.RouteResponse.FromString(reply)
                code = grpc.StatusCode.OK
            codes[code.name] = codes.get(code.name, 0) + 1
            return code

        for _, data in MALFORMED:
            assert send(data) in allowed
        send_random = settings(max_examples=40, deadline=None, database=None, derandomize=True)(
            given(st.binary(max_size=200))(
                lambda data: _assert_in(send(data), allowed | {grpc.StatusCode.OK})))
        send_random()
        stub = router_pb2_grpc.RouterStub(channel)
        assert stub.Route(pb.RouteRequest(prompt="What is 2 + 2?"), timeout=10).tier
    assert router_process.alive()
    observed(f"status codes {dict(sorted(codes.items()))}; server alive, then a good Route "
             "answered")


def _assert_in(code: grpc.StatusCode, allowed: set[grpc.StatusCode]) -> None:
    assert code in allowed, code


@pytest.mark.reliability(
    scenario="gRPC: oversized and unknown calls",
    action="a 5 MB frame (over the server's 1 MiB receive limit, max_body_bytes) and a call "
           "of a method that does not exist",
    expected="RESOURCE_EXHAUSTED and UNIMPLEMENTED; the server keeps serving")
def test_oversized_frame_and_unknown_method(
    router_process: ServerProcess, observed: Any
) -> None:
    with grpc.insecure_channel(router_process.grpc_target) as channel:
        with pytest.raises(grpc.RpcError) as big:
            raw_route(channel)(b"\x0a" + b"\x80" * 5 * 2**20, timeout=10)
        unknown = channel.unary_unary("/tierwise.v1.Router/Nope", request_serializer=None,
                                      response_deserializer=None)
        with pytest.raises(grpc.RpcError) as missing:
            unknown(b"", timeout=10)
        reply = router_pb2_grpc.RouterStub(channel).Route(
            pb.RouteRequest(prompt="Name three prime numbers."), timeout=10)
    assert big.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert missing.value.code() is grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
    assert math.isclose(sum(reply.probabilities.values()), 1.0, abs_tol=1e-5)
    observed("RESOURCE_EXHAUSTED, UNIMPLEMENTED; next Route answered")
