"""Two gateway replicas sharing one response cache in PostgreSQL (``cache.url``).

Real gateways on loopback, fake upstreams that count calls, a real database. Needs
TIERWISE_TEST_POSTGRES_URL (CI starts a server); skipped without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway_support import (  # noqa: F401  (fixtures)
    HARD,
    STRONG,
    Gateway,
    Upstreams,
    cache_rows,
    make_gateway_fixture,
    postgres_url_fixture,
    upstreams_fixture,
    wait_until,
)

#: HARD reworded (cosine ~0.997 under the router's MiniLM encoder).
PARAPHRASE = "Prove there are infinitely many primes and then derive the prime number theorem."


def ask(gw: Gateway, text: str, key: str | None = None) -> dict[str, Any]:
    """One non-streaming completion on the strong tier (pass-through: the tier is fixed)."""
    client = gw.client(key) if key else gw.client()
    done = client.chat.completions.create(model=STRONG,
                                          messages=[{"role": "user", "content": text}])
    body: dict[str, Any] = done.model_dump()
    return body


def test_two_replicas_share_exact_and_semantic_hits(
    make_gateway: Any, upstreams: Upstreams, full_bundle: Path, postgres_url: str, tmp_path: Path,
) -> None:
    cache = {"enabled": True, "url": postgres_url, "refresh_s": 0.05, "semantic": True}
    one: Gateway = make_gateway(full_bundle, cache=cache)
    two: Gateway = make_gateway(full_bundle, cache=cache,
                                traffic={"url": f"sqlite:///{tmp_path / 'two.db'}"})
    first = ask(one, HARD)
    assert first["tierwise"]["cache"] is None
    wait_until(lambda: cache_rows(postgres_url) == 1, "replica one's answer committed")
    exact = ask(two, "  " + HARD + " ")
    assert exact["tierwise"]["cache"] == "exact"
    assert exact["choices"] == first["choices"]
    assert exact["tierwise"]["saved_usd"] == first["tierwise"]["cost_usd"]
    cache_two = two.completions.cache
    assert cache_two is not None
    wait_until(lambda: len(cache_two) >= 1, "replica two's mirror pulled the embedding")
    para = ask(two, PARAPHRASE)
    assert para["tierwise"]["cache"] == "semantic"
    assert para["tierwise"]["similarity"] >= 0.95
    assert para["choices"] == first["choices"]
    other_tenant = ask(two, HARD, key="tw-client-key-2")
    assert other_tenant["tierwise"]["cache"] is None
    assert len(upstreams.strong.requests) == 2  # the first ask and the other tenant's
