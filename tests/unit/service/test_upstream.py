"""What ``service.gateway.upstream.pool`` accepts as a chat completion from a 200 upstream
answer."""

from __future__ import annotations

from typing import Any

import pytest

from service.gateway.upstream.pool import completion_problem

MESSAGE = {"role": "assistant", "content": "Paris."}


@pytest.mark.parametrize("doc", [
    {"choices": [{"index": 0, "message": MESSAGE, "finish_reason": "stop"}]},
    {"choices": [{"index": 0, "message": {**MESSAGE, "content": None}}]},
    {"choices": []},
    {"choices": [{"index": 0, "text": "legacy completions have no message"}]},
    {"id": "x"},  # the members the gateway does not read are the client's business
])
def test_completions_the_gateway_can_read(doc: dict[str, Any]) -> None:
    assert completion_problem(doc) is None


@pytest.mark.parametrize(("doc", "problem"), [
    ({"choices": {"0": MESSAGE}}, "choices is not a list"),
    ({"choices": None}, "choices is not a list"),
    ({"choices": ["Paris."]}, "a choice is not an object"),
    ({"choices": [{"message": "Paris."}]}, "a choice's message is not an object"),
    ({"choices": [{"message": None}]}, "a choice's message is not an object"),
    ({"choices": [{"message": MESSAGE}, {"message": ["Paris."]}]},
     "a choice's message is not an object"),
])
def test_shapes_that_are_no_completion(doc: dict[str, Any], problem: str) -> None:
    assert completion_problem(doc) == problem
