"""The gateway's response cache: an exact layer, then a semantic layer on the router's encoder.

Both layers are scoped per tenant (a hash of the client key), per tier and per generation
parameters (``temperature``, ``max_tokens``, …): an answer is stored under the tier that gave it (a
cascade's accepted draft under the draft tier) and served only to a request decided for that tier,
never to another client, or for other parameters. The exact layer keys on sha256 of the scope and
the messages with only meaningless whitespace dropped (line endings, blanks at line ends, blank
lines around the text, blanks before a one-line text; ``_normalise``): indentation counts. The
semantic layer embeds the chat with the router's own ``SentenceEncoder`` (no second model) and
serves the most similar stored answer of the same scope when the cosine similarity is at least
``similarity``. It runs only when the router's bundle has the ``full`` feature set (a ``hand``
bundle or a remote router gives no encoder: exact layer only), only for plain-text chats without
indented lines (the encoder cannot see indentation), and only when the whole chat fits the
encoder's token window (past it the encoder keeps head and tail, and two chats differing in the
middle would look identical).

Where entries live is a ``CacheStore``; ``ResponseCache`` owns the keys, scopes, normalisation and
embedding, the stores only keep and find. By default ``MemoryCacheStore`` (this process: an LRU
``OrderedDict``, entries expire after ``ttl_s``, at most ``max_entries``). With ``url`` set,
``service.gateway.levers.cache.store_pg.PostgresCacheStore`` shares the entries among every gateway
replica.

Why PostgreSQL and not Redis: the gateway already needs PostgreSQL for its traffic store when it
runs as several replicas, so the shared cache needs no new server to run, secure and back up.
Why no pgvector: the embeddings are small (384 float32, 1.5 KB) and the search is scoped to one
tenant, tier and parameter set, so each replica keeps an in-memory mirror of the table's
embeddings and searches it with one matrix product (the in-process cost), while the database
stays the single truth that every hit is confirmed against; pgvector would be one more extension
for operators to install (it is not in stock PostgreSQL packages) for a search that is not the
bottleneck. Consistency: an answer stored by one replica is an exact hit on every replica as soon
as its write commits (exact lookups go to the database by key), and a semantic hit elsewhere
within ``refresh_s`` (when the other replicas' mirrors pull it). A store that cannot be reached
or answers slower than ``timeout_s`` makes lookups miss and writes drop: the request is still
answered, upstream, and each failure is logged and counted (``on_error``).
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from router_model.encoder import MAX_TOKENS, SentenceEncoder
from service.gateway.levers.cache.store import (
    CacheKey,
    CacheSettings,
    CacheStore,
    ErrorHook,
    Hit,
    Layer,
    MemoryCacheStore,
    Stored,
    digest,
)
from service.gateway.levers.cache.store_pg import PostgresCacheStore

#: Request members that do not change the answer (everything else is part of the scope).
_NOT_SCOPE = frozenset({"messages", "model", "stream", "stream_options", "user", "tierwise"})
_BLANKS = re.compile(r"\s+")
_LINE_BREAK = re.compile(r"\r\n?")
_LINE_END_BLANKS = re.compile(r"[^\S\n]+$", re.MULTILINE)
#: A line that opens with blanks: its indentation may be meaning (code) the encoder cannot see.
_INDENTED = re.compile(r"^[^\S\n]+\S", re.MULTILINE)


def _normalise(value: Any) -> Any:
    """The messages as the exact key sees them: only whitespace that never carries meaning is
    dropped (line endings as ``\\n``, blanks at the end of a line, blank lines before and after
    the text, blanks before a one-line text). Indentation and spaces inside a line are kept: two
    programs that differ only in indentation are two questions."""
    if isinstance(value, str):
        text = _LINE_END_BLANKS.sub("", _LINE_BREAK.sub("\n", value)).strip("\n")
        return text if "\n" in text else text.lstrip()
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    return value


def _chat_text(messages: list[Any]) -> str | None:
    """The chat as one text for the encoder, None unless every message is plain text without
    indented lines (the encoder's tokenizer drops whitespace: indented code would look the same
    at any indentation, so such chats get the exact layer only)."""
    lines = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            return None
        if set(m) - {"role", "content", "name"}:  # tool calls and the like: exact layer only
            return None
        if _INDENTED.search(m["content"]):
            return None
        lines.append(f"{m.get('role')}: {_BLANKS.sub(' ', m['content']).strip()}")
    return "\n".join(lines)


def open_cache_store(
    settings: CacheSettings, clock: Callable[[], float], on_error: ErrorHook
) -> CacheStore:
    """The shared PostgreSQL store when ``settings.url`` is set, else this process's memory."""
    if settings.url is None:
        return MemoryCacheStore(settings, clock)
    return PostgresCacheStore(settings, on_error)


def _ignore(op: str) -> None:
    return None


class ResponseCache:
    """Exact and semantic lookups of stored non-streaming completions; ``start`` before use."""

    def __init__(
        self, settings: CacheSettings, encoder: SentenceEncoder | None,
        clock: Callable[[], float] = time.monotonic, on_error: ErrorHook | None = None,
    ) -> None:
        self.settings = settings
        self.encoder = encoder
        self.backend = open_cache_store(settings, clock, on_error or _ignore)

    @property
    def semantic(self) -> bool:
        """Whether the semantic layer runs (the router's bundle has an encoder)."""
        return self.encoder is not None

    def __len__(self) -> int:
        return len(self.backend)

    async def start(self) -> None:
        """Open the store (a shared one connects and fills its mirror; failures only log)."""
        await self.backend.start()

    async def aclose(self) -> None:
        """Finish pending writes and close the store."""
        await self.backend.aclose()

    def key(self, forward: Mapping[str, Any], tenant: str, tier: str) -> CacheKey:
        """The cache key of a forwarded body, for ``tenant`` on ``tier``."""
        params = json.dumps({k: v for k, v in forward.items() if k not in _NOT_SCOPE},
                            sort_keys=True, default=str)
        messages = forward.get("messages")
        messages = messages if isinstance(messages, list) else []
        chat = json.dumps(_normalise(messages), sort_keys=True, default=str)
        scope = digest(tenant, tier, params)
        return CacheKey(scope, digest(scope, chat), _chat_text(messages), None, tier,
                        (tenant, params, chat))

    async def lookup(self, key: CacheKey) -> Hit | None:
        """The stored answer for ``key``: exact first, then the most similar one in scope; only
        an answer of ``key.tier`` (an entry written before answers were scoped by the tier that
        gave them may hold another tier's)."""
        stored = await self.backend.exact(key)
        if stored is not None:
            return _hit("exact", stored, 1.0) if stored.tier == key.tier else None
        if self.encoder is None or key.text is None:
            return None
        key.vector = await asyncio.to_thread(self._embed, key.text)
        if key.vector is None:
            return None
        found = await self.backend.nearest(key, key.vector)
        if found is None or found[0].tier != key.tier:
            return None
        return _hit("semantic", *found)

    def _embed(self, text: str) -> NDArray[np.float32] | None:
        assert self.encoder is not None
        ids = self.encoder.token_ids([text])[0]
        if len(ids) > MAX_TOKENS - 2:  # the encoder would cut the middle out: no safe neighbour
            return None
        vector: NDArray[np.float32] = self.encoder.encode_ids([ids])[0]
        return vector

    def store(self, key: CacheKey, doc: Mapping[str, Any], cost_usd: float, tier: str) -> None:
        """Keep a completion (without ``tierwise``) that ``tier`` answered, for ``ttl_s``, under
        ``tier``'s scope (``key.on_tier``): a cascade's accepted draft is the draft tier's answer,
        served only to requests decided for that tier. A shared store writes later."""
        kept = copy.deepcopy({k: v for k, v in doc.items() if k != "tierwise"})
        key = key.on_tier(tier)
        self.backend.put(key, Stored(kept, cost_usd, tier), key.vector)

    async def put(self, key: CacheKey, doc: Mapping[str, Any], cost_usd: float,
                  tier: str) -> None:
        """``store``, then wait until the write is done (a shared store's commit)."""
        self.store(key, doc, cost_usd, tier)
        await self.backend.flush()


def _hit(layer: Layer, stored: Stored, similarity: float) -> Hit:
    return Hit(layer, copy.deepcopy(stored.doc), stored.cost_usd, stored.tier, similarity)


def replay(hit: Hit) -> dict[str, Any]:
    """The stored completion as a new one: a fresh ``id`` and ``created``, the rest unchanged."""
    return {**hit.doc, "id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time())}
