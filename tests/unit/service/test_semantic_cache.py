"""The response cache's bounds: scopes, TTL (on a test clock), LRU size, the semantic layer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from router_model.encoder import SentenceEncoder
from service.gateway.levers.cache.response import ResponseCache, replay
from service.gateway.levers.cache.store import CacheSettings
from service.gateway.tenants import tenant_of

QUESTION = "What is the capital of France?"


def body(text: str, **params: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}], **params}


def answer(text: str) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def look(cache: ResponseCache, doc: dict[str, Any], tenant: str = "t", tier: str = "weak") -> Any:
    key = cache.key(doc, tenant, tier)
    return key, asyncio.run(cache.lookup(key))


def test_exact_layer_scopes_and_replay() -> None:
    cache = ResponseCache(CacheSettings(), encoder=None)
    key, hit = look(cache, body(QUESTION))
    assert hit is None
    cache.store(key, {**answer("Paris."), "tierwise": {"x": 1}}, 0.002, "weak")
    _, hit = look(cache, body("\r\nWhat is the capital of France?  \r\n\n"))
    assert hit is not None and hit.layer == "exact" and hit.cost_usd == 0.002
    assert "tierwise" not in hit.doc
    again = replay(hit)
    assert again["id"] != "chatcmpl-1" and again["choices"] == answer("Paris.")["choices"]
    assert look(cache, body(QUESTION), tenant="u")[1] is None
    assert look(cache, body(QUESTION), tier="strong")[1] is None
    assert look(cache, body(QUESTION, temperature=0.0))[1] is None
    assert look(cache, body("What is the capital of Italy?"))[1] is None
    assert tenant_of({"authorization": "Bearer a"}) != tenant_of({"authorization": "Bearer b"})


def test_an_answer_is_kept_and_served_under_the_tier_that_gave_it() -> None:
    cache = ResponseCache(CacheSettings(), encoder=None)
    strong = cache.key(body(QUESTION), "t", "strong")
    cache.store(strong, answer("Paris (weak)."), 0.001, "weak")  # e.g. a cascade's draft
    assert asyncio.run(cache.lookup(strong)) is None
    hit = look(cache, body(QUESTION), tier="weak")[1]
    assert hit is not None and hit.tier == "weak"
    assert strong.on_tier("weak").exact == cache.key(body(QUESTION), "t", "weak").exact
    assert strong.on_tier("strong") is strong


def test_ttl_and_lru_bounds() -> None:
    clock = Clock()
    cache = ResponseCache(CacheSettings(ttl_s=10, max_entries=2), encoder=None, clock=clock)
    for text in ("one", "two"):
        cache.store(cache.key(body(text), "t", "weak"), answer(text), 0.0, "weak")
    assert look(cache, body("one"))[1] is not None  # "one" is now the most recently used
    cache.store(cache.key(body("three"), "t", "weak"), answer("three"), 0.0, "weak")
    assert len(cache) == 2
    assert look(cache, body("two"))[1] is None
    assert look(cache, body("one"))[1] is not None
    clock.now += 10
    assert look(cache, body("one"))[1] is None
    assert len(cache) == 1


PROGRAM = "What does this print?\n\nx = 0\nfor i in range(3):\n    x += 1\n    print(x)\n"


def test_the_exact_key_keeps_meaningful_whitespace() -> None:
    cache = ResponseCache(CacheSettings(), encoder=None)
    key, _ = look(cache, body(PROGRAM))
    cache.store(key, answer("1 2 3"), 0.0, "weak")
    # line endings, blanks at line ends and blank lines around the text mean nothing
    same = "\r\n" + PROGRAM.replace("\n", "  \r\n") + "\r\n"
    assert look(cache, body(same))[1] is not None
    # a one-line text has no other line to be indented against: blanks before it mean nothing
    one_line = cache.key(body("What is 2 + 2?"), "t", "weak")
    assert cache.key(body("  What is 2 + 2? \n"), "t", "weak").exact == one_line.exact
    # indentation and spacing inside a line do: another program, another question
    dedented = PROGRAM.replace("    print(x)", "print(x)")
    assert look(cache, body(dedented))[1] is None
    assert look(cache, body(PROGRAM.replace("x = 0", "x  =  0")))[1] is None
    assert look(cache, body(PROGRAM.replace("    ", "\t")))[1] is None


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder.load()


def test_semantic_layer_within_scope(encoder: SentenceEncoder) -> None:
    cache = ResponseCache(CacheSettings(similarity=0.95, max_entries=3, semantic=True), encoder)
    key, _ = look(cache, body(QUESTION))
    cache.store(key, answer("Paris."), 0.01, "weak")
    _, hit = look(cache, body("What's the capital of France?"))
    assert hit is not None and hit.layer == "semantic" and hit.similarity >= 0.95
    assert look(cache, body("What's the capital of France?"), tenant="u")[1] is None
    assert look(cache, body("What is the population of France?"))[1] is None
    for i in range(3):  # evicts the first entry, and its row in the matrix
        k, _ = look(cache, body(f"Name {i} rivers in Germany."))
        cache.store(k, answer("Rhine."), 0.0, "weak")
    assert look(cache, body("What's the capital of France?"))[1] is None


def test_indented_chats_get_the_exact_layer_only(encoder: SentenceEncoder) -> None:
    # the encoder's tokenizer drops whitespace: it cannot tell two indentations apart
    cache = ResponseCache(CacheSettings(similarity=0.95, semantic=True), encoder)
    key, _ = look(cache, body(PROGRAM))
    assert key.text is None
    cache.store(key, answer("1 2 3"), 0.0, "weak")
    assert look(cache, body(PROGRAM.replace("    print(x)", "print(x)")))[1] is None
    assert look(cache, body(PROGRAM))[1] is not None
    assert look(cache, body("What does this print?\n\nprint(1)"))[0].text is not None
