"""The shared response cache: two replicas (``ResponseCache`` instances) on one PostgreSQL database.

Real encoder, real database. Needs TIERWISE_TEST_POSTGRES_URL (CI starts a server); skipped
without it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import psycopg
import pytest
from gateway_support import postgres_url_fixture  # noqa: F401  (fixture)

from router_model.encoder import EMBEDDING_DIM, SentenceEncoder
from service.gateway.levers.cache.response import ResponseCache
from service.gateway.levers.cache.store import CacheSettings
from service.gateway.levers.cache.store_pg import PAGE, TABLE, PostgresCacheStore

QUESTION = "What is the capital of France?"
PARAPHRASE = "What's the capital of France?"


def body(text: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


def answer(text: str) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder.load()


@pytest.fixture()
def replicas(postgres_url: str, encoder: SentenceEncoder) -> Any:
    """``replicas(**settings)(scenario)``: run ``await scenario(a, b)`` on two started caches.

    The background refresh is slowed to 5 minutes so that tests decide when mirrors refresh.
    """

    def with_settings(**overrides: Any) -> Any:
        settings = CacheSettings(**{"url": postgres_url, "refresh_s": 300.0, "semantic": True,
                                    **overrides})

        def run(scenario: Any) -> Any:
            async def main() -> Any:
                errors: list[str] = []
                a = ResponseCache(settings, encoder, on_error=errors.append)
                b = ResponseCache(settings, encoder, on_error=errors.append)
                await a.start()
                await b.start()
                try:
                    result = await scenario(a, b)
                finally:
                    await a.aclose()
                    await b.aclose()
                assert errors == []
                return result

            return asyncio.run(main())

        return run

    return with_settings


def pg(cache: ResponseCache) -> PostgresCacheStore:
    assert isinstance(cache.backend, PostgresCacheStore)
    return cache.backend


async def remember(cache: ResponseCache, text: str, tenant: str = "t", tier: str = "weak",
                   cost: float = 0.01) -> None:
    """A miss, then the answer stored (as the gateway does: lookup embeds, store keeps)."""
    key = cache.key(body(text), tenant, tier)
    assert await cache.lookup(key) is None
    await cache.put(key, {**answer(f"answer to {text}"), "tierwise": {"x": 1}}, cost, tier)


async def find(cache: ResponseCache, text: str, tenant: str = "t", tier: str = "weak") -> Any:
    return await cache.lookup(cache.key(body(text), tenant, tier))


def test_an_answer_stored_by_one_replica_serves_the_other(replicas: Any) -> None:
    async def scenario(a: ResponseCache, b: ResponseCache) -> None:
        await remember(a, QUESTION, cost=0.02)
        exact = await find(b, "  What is the capital of France?\r\n")
        assert exact is not None and exact.layer == "exact" and exact.cost_usd == 0.02
        assert exact.doc == answer(f"answer to {QUESTION}") and exact.tier == "weak"
        # b's mirror has not pulled a's embedding yet: the semantic layer waits for the refresh
        assert await find(b, PARAPHRASE) is None
        await pg(b).refresh()
        para = await find(b, PARAPHRASE)
        assert para is not None and para.layer == "semantic" and para.similarity >= 0.95
        assert para.doc == exact.doc
        assert await find(b, "What is the population of France?") is None

    replicas()(scenario)


def test_scopes_hold_across_replicas(replicas: Any) -> None:
    async def scenario(a: ResponseCache, b: ResponseCache) -> None:
        await remember(a, QUESTION)
        await pg(b).refresh()
        assert await find(b, PARAPHRASE) is not None
        for tenant, tier in (("u", "weak"), ("t", "strong")):
            assert await find(b, QUESTION, tenant=tenant, tier=tier) is None
            assert await find(b, PARAPHRASE, tenant=tenant, tier=tier) is None
        other_params = b.key({**body(QUESTION), "temperature": 0.2}, "t", "weak")
        assert await b.lookup(other_params) is None

    replicas()(scenario)


def test_entries_expire_and_the_sweep_deletes_them(replicas: Any, postgres_url: str) -> None:
    async def scenario(a: ResponseCache, b: ResponseCache) -> None:
        await remember(a, QUESTION)
        await pg(b).refresh()
        assert await find(b, QUESTION) is not None and len(b) == 1
        await asyncio.sleep(1.1)  # the rows' expires_at (database time) passes
        assert await find(b, QUESTION) is None
        assert await find(b, PARAPHRASE) is None
        assert rows(postgres_url) == 1  # filtered, not yet deleted
        await pg(a).sweep()
        await pg(b).sweep()
        assert rows(postgres_url) == 0
        assert len(b) == 0  # the mirror forgets rows that are gone

    replicas(ttl_s=1.0)(scenario)


def test_the_sweep_keeps_the_newest_max_entries(replicas: Any, postgres_url: str) -> None:
    texts = ["Name three rivers in Germany.", "How do vaccines train the immune system?",
             "Write a haiku about autumn rain.", "What is the derivative of sin(x)?",
             "Explain TCP slow start in one paragraph."]

    async def scenario(a: ResponseCache, b: ResponseCache) -> None:
        for i, text in enumerate(texts):
            await remember(a if i % 2 else b, text)
        assert rows(postgres_url) == 5
        await pg(a).sweep()
        assert rows(postgres_url) == 3
        await pg(b).refresh()
        await pg(b).sweep()
        assert len(b) == 3
        for text in texts[:2]:
            assert await find(b, text) is None
        for text in texts[2:]:
            found = await find(b, text)
            assert found is not None and found.layer == "exact"

    replicas(max_entries=3)(scenario)


def rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        found = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
    assert found is not None
    return int(found[0])


def test_a_replica_started_later_mirrors_every_row(postgres_url: str) -> None:
    """The start fills the mirror from the table in pages (here one more row than a page)."""
    rng = np.random.default_rng(0)
    n = PAGE + 1
    vectors = rng.standard_normal((n, EMBEDDING_DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    settings = CacheSettings(url=postgres_url, refresh_s=300.0, max_entries=n)

    async def main() -> tuple[int, Any]:
        a = ResponseCache(settings, encoder=None)
        await a.start()
        keys = []
        for i, vector in enumerate(vectors):
            key = a.key(body(f"question {i}"), "t", "weak")
            key.vector = vector
            a.store(key, answer(f"answer {i}"), 0.0, "weak")
            keys.append(key)
        await a.aclose()
        late = ResponseCache(settings, encoder=None)
        await late.start()
        try:
            probe = late.key(body("another wording"), "t", "weak")
            return len(late), await late.backend.nearest(probe, vectors[-1])
        finally:
            await late.aclose()

    mirrored, nearest = asyncio.run(main())
    assert mirrored == n
    assert nearest is not None
    assert {k: v for k, v in nearest[0].doc.items() if k != "tierwise"} == answer(f"answer {n - 1}")


def test_canonical_hits_and_feedback_eviction_are_shared(
    replicas: Any, postgres_url: str
) -> None:
    async def scenario(a: ResponseCache, b: ResponseCache) -> None:
        key = a.key(body(QUESTION), "t", "weak")
        assert await a.lookup(key) is None
        a.remember("d1", a.store(key, answer("Lyon."), 0.01, "weak"))
        await pg(a).flush()
        hit = await find(b, "  what IS the capital of france?")
        assert hit is not None and hit.layer == "canonical"
        evicted: list[tuple[str, str]] = []
        a.on_event = lambda kind, reason: evicted.append((kind, reason))
        assert await a.forget("d1") is True and evicted == [("evicted", "feedback")]
        assert rows(postgres_url) == 0
        await pg(b).refresh()
        for text in (QUESTION, "what is the capital of france?", PARAPHRASE):
            assert await find(b, text) is None

    replicas()(scenario)


def test_a_corrupt_row_is_dropped_and_counted_never_served(
    replicas: Any, postgres_url: str
) -> None:
    async def scenario(a: ResponseCache, b: ResponseCache) -> None:
        await remember(a, QUESTION)
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"UPDATE {TABLE} SET doc = %s::json", ('{"choices": "garbage"}',))
        events: list[tuple[str, str]] = []
        b.on_event = lambda kind, reason: events.append((kind, reason))
        assert await find(b, QUESTION) is None
        assert events == [("evicted", "corrupt")]
        assert rows(postgres_url) == 0

    replicas()(scenario)
