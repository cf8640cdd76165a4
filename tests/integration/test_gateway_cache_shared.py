"""Two gateway replicas sharing one response cache in PostgreSQL (``cache.url``).

Real gateways on loopback, fake upstreams that count calls, a real database. Needs
TIERWISE_TEST_POSTGRES_URL (CI starts a server); skipped without it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
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

from training.traffic import read_decisions

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


@pytest.fixture(name="sql_ascii_url")
def sql_ascii_url_fixture(postgres_url: str) -> Iterator[str]:
    """A database with no encoding (SQL_ASCII: what ``initdb`` makes under the C locale, as the
    compose stack's PostgreSQL did), on the test server."""
    name = f"tierwise_ascii_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' "
                     "TEMPLATE template0")
    yield urlsplit(postgres_url)._replace(path="/" + name).geturl()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_a_database_without_an_encoding_serves_hits_and_reads_back(
    make_gateway: Any, full_bundle: Path, sql_ascii_url: str
) -> None:
    # psycopg returns bytes for text from a SQL_ASCII database unless the client sets an
    # encoding: cache tiers and decision ids then never compared equal (every lookup missed)
    gw: Gateway = make_gateway(full_bundle, cache={"enabled": True, "url": sql_ascii_url},
                               traffic={"url": sql_ascii_url})
    first = ask(gw, HARD)
    wait_until(lambda: cache_rows(sql_ascii_url) == 1, "the answer committed")
    again = ask(gw, HARD)
    assert (first["tierwise"]["cache"], again["tierwise"]["cache"]) == (None, "exact")
    decided = {d.record.decision_id for d in read_decisions(sql_ascii_url)}
    assert decided == {first["tierwise"]["decision_id"], again["tierwise"]["decision_id"]}
