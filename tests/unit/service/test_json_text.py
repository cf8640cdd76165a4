"""Lone UTF-16 surrogates in upstream JSON: found cheaply, replaced with U+FFFD, pairs kept."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.gateway.json_text import (
    holds_lone_surrogate,
    may_spell_surrogate,
    replace_lone_surrogates,
)
from service.gateway.upstream.sse import valid_event


@pytest.mark.parametrize(("raw", "may"), [
    (b'{"a": "plain \\u00e9 text"}', False),
    ('{"a": "caf\u00e9"}'.encode(), False),
    (b'{"a": "\\ud800"}', True),
    (b'{"a": "\\uDFFF"}', True),
    (b'{"a": "\\ud83d\\ude00"}', True),  # a pair: a check of the parsed document decides
    ('{"a": "\ud800"}'.encode("utf-8", "surrogatepass"), True),  # CESU-8 bytes
    ('{"a": 1}'.encode("utf-16"), True),  # json.loads reads UTF-16 with lone surrogates too
    ('{"a": 1}'.encode("utf-16-le"), True),
])
def test_may_spell_surrogate(raw: bytes, may: bool) -> None:
    assert may_spell_surrogate(raw) is may
    assert may_spell_surrogate(raw.decode("utf-8", "replace")) is (may and b"\\u" in raw)


def test_lone_surrogates_are_replaced_in_strings_and_keys_pairs_kept() -> None:
    doc: dict[str, Any] = json.loads(
        b'{"k\\ud800": ["x\\udc00y", {"pair": "\\ud83d\\ude00", "n": 1, "\\udfff": null}],'
        b' "ok": "\\u00e9"}')
    assert replace_lone_surrogates(doc) is True
    assert doc == {"k\ufffd": ["x\ufffdy", {"pair": "\U0001f600", "n": 1, "\ufffd": None}],
                   "ok": "\u00e9"}
    assert list(doc) == ["k\ufffd", "ok"]  # key order kept
    json.dumps(doc, ensure_ascii=False).encode("utf-8")  # now valid text
    assert replace_lone_surrogates(doc) is False


def test_deep_documents_do_not_recurse() -> None:
    doc: list[Any] = ["\ud800"]
    for _ in range(5000):  # deeper than the recursion limit
        doc = [doc]
    assert replace_lone_surrogates(doc) is True
    inner = doc
    while isinstance(inner[0], list):
        inner = inner[0]
    assert inner == ["\ufffd"]


def test_holds_lone_surrogate() -> None:
    assert holds_lone_surrogate("a\ud800") and not holds_lone_surrogate("a\U0001f600")


def test_valid_event_rewrites_only_events_with_a_lone_surrogate() -> None:
    plain = b'data: {"choices": [{"delta": {"content": "\\ud83d\\ude00"}}]}\n\n'
    assert valid_event(plain) is plain  # a pair, or no escape at all: the bytes pass unchanged
    assert valid_event(b"data: [DONE]\n\n") == b"data: [DONE]\n\n"
    assert valid_event(b'data: {"a": "\\ud800\n\n') == b'data: {"a": "\\ud800\n\n'  # no JSON
    fixed = valid_event(b'data: {"choices": [{"delta": {"content": "a\\ud800"}}]}\n\n')
    assert fixed == b'data: {"choices":[{"delta":{"content":"a\\ufffd"}}]}\n\n'
