"""The response cache's layers in memory: canonical repeats, the semantic layer's equivalence
check and scope, modes, feedback eviction and corrupt entries (real encoder, no mocks)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from router_model.encoder import SentenceEncoder
from service.gateway.levers.cache.response import ResponseCache
from service.gateway.levers.cache.store import CacheKey, CacheSettings, Stored

MCQ = "Find the order of the group Z_3 x Z_3.\nA. 3\nB. 6\nC. 9\nD. 12\nAnswer:"
SYSTEM = "You translate business English into formal French. Answer with the translation only."


def chat(text: str, system: str | None = None, earlier: str | None = None) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system else []
    if earlier:
        messages += [{"role": "user", "content": earlier}, {"role": "assistant", "content": "ok"}]
    return {"model": "m", "messages": [*messages, {"role": "user", "content": text}]}


def answer(text: str) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, kind: str, reason: str) -> None:
        self.seen.append((kind, reason))


def ask(cache: ResponseCache, doc: dict[str, Any], mode: Any = "auto") -> tuple[CacheKey, Any]:
    key = cache.key(doc, "t", "weak")
    return key, asyncio.run(cache.lookup(key, mode))


def keep(cache: ResponseCache, doc: dict[str, Any], text: str) -> tuple[str, ...]:
    key, _ = ask(cache, doc)
    return cache.store(key, answer(text), 0.01, "weak")


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder.load()


def test_reformatted_repeats_hit_the_canonical_layer() -> None:
    cache = ResponseCache(CacheSettings(), encoder=None)
    keep(cache, chat(MCQ), "C")
    reformatted = MCQ.removesuffix("Answer:").lower()
    for letter in "abcd":
        reformatted = reformatted.replace(f"\n{letter}. ", f"\n({letter}) ")
    _, hit = ask(cache, chat(reformatted))
    assert hit is not None and hit.layer == "canonical" and hit.similarity == 1.0
    assert "tierwise" not in hit.doc  # the entry's own bookkeeping never reaches a client
    assert ask(cache, chat(reformatted), mode="exact")[1] is None
    assert ask(cache, chat(MCQ.replace("A. 3\nB. 6", "A. 6\nB. 3")))[1] is None
    off = ResponseCache(CacheSettings(canonical=False), encoder=None)
    keep(off, chat(MCQ), "C")
    assert ask(off, chat(reformatted))[1] is None
    assert len(cache) == 1  # one entry per answer, whatever its keys


def test_a_semantic_candidate_must_ask_the_same_thing(encoder: SentenceEncoder) -> None:
    events = Events()
    cache = ResponseCache(CacheSettings(semantic=True, similarity=0.4), encoder,
                          on_event=events)
    keep(cache, chat("Thank you for your patience.", SYSTEM), "Merci de votre patience.")
    keep(cache, chat("What is the capital of France?"), "Paris.")
    _, hit = ask(cache, chat("Thank you for your order.", SYSTEM))
    assert hit is None and events.seen == [("rejected", "wording")]
    _, hit = ask(cache, chat("What is the capital of Italy?"))
    assert hit is None and events.seen[-1] == ("rejected", "entities")
    _, hit = ask(cache, chat("What's the capital of France?"))
    assert hit is not None and hit.layer == "semantic" and hit.similarity >= 0.9


def test_only_the_last_user_turn_is_compared_by_meaning(encoder: SentenceEncoder) -> None:
    cache = ResponseCache(CacheSettings(semantic=True), encoder)
    keep(cache, chat("What is the capital of France?", SYSTEM, "Hello"), "Paris.")
    assert ask(cache, chat("What's the capital of France?", SYSTEM, "Hello"))[1] is not None
    # anything before it must match exactly: another system prompt, another earlier turn
    longer = SYSTEM + " Be brief."
    assert ask(cache, chat("What's the capital of France?", longer, "Hello"))[1] is None
    assert ask(cache, chat("What's the capital of France?", SYSTEM, "Hi"))[1] is None
    assert ask(cache, chat("What's the capital of France?"))[1] is None
    assert ask(cache, chat("What is the capital of France?", SYSTEM, "Hi"))[1] is None


def test_negative_feedback_evicts_the_entry(encoder: SentenceEncoder) -> None:
    events = Events()
    cache = ResponseCache(CacheSettings(semantic=True), encoder, on_event=events)
    cache.remember("d1", keep(cache, chat("What is the capital of France?"), "Lyon."))
    _, hit = ask(cache, chat("What is the capital of france?"))
    assert hit is not None and hit.layer == "canonical"
    cache.remember("d2", hit.keys)
    assert asyncio.run(cache.forget("d2")) is True
    assert events.seen == [("evicted", "feedback")]
    for text in ("What is the capital of France?", "what is the capital of france?",
                 "What's the capital of France?"):
        assert ask(cache, chat(text))[1] is None
    assert len(cache) == 0
    assert asyncio.run(cache.forget("d2")) is False  # once
    assert asyncio.run(cache.forget("unknown")) is False


@pytest.mark.parametrize("doc", [
    None, "text", {"choices": []}, {**answer("x"), "tierwise": "x"},
    {**answer("x"), "tierwise": {"keys": [], "prompt": "q"}},
    {"tierwise": {"keys": ["k"], "prompt": "q"}, "choices": ["not a choice"]},
])
def test_a_corrupt_entry_is_dropped_and_counted_never_served(doc: Any) -> None:
    events = Events()
    cache = ResponseCache(CacheSettings(), encoder=None, on_event=events)
    key, _ = ask(cache, chat("What is 2 + 2?"))
    cache.backend.put(key, Stored(doc, 0.0, "weak"), None)
    assert ask(cache, chat("What is 2 + 2?"))[1] is None
    assert events.seen == [("evicted", "corrupt")] and len(cache) == 0
