"""The gateway's response cache: an exact layer, then a semantic layer on the router's encoder.

Both layers are scoped per tenant (a hash of the client key), per decided tier and per generation
parameters (``temperature``, ``max_tokens``, …): a cached answer is never served to another
client, from another tier, or for other parameters. The exact layer keys on sha256 of the scope
and the whitespace-normalised messages. The semantic layer embeds the chat with the router's own
``SentenceEncoder`` (no second model) and serves the most similar stored answer of the same scope
when the cosine similarity is at least ``similarity``. It runs only when the router's bundle has
the ``full`` feature set (a ``hand`` bundle or a remote router gives no encoder: exact layer only),
only for plain-text chats, and only when the whole chat fits the encoder's token window (past it
the encoder keeps head and tail, and two chats differing in the middle would look identical).
Entries expire after ``ttl_s`` and the least recently used go past ``max_entries``; all of it
lives in this process (an ``OrderedDict`` and one numpy matrix).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from router_model.encoder import EMBEDDING_DIM, MAX_TOKENS, SentenceEncoder

#: Request members that do not change the answer (everything else is part of the scope).
_NOT_SCOPE = frozenset({"messages", "model", "stream", "stream_options", "user", "tierwise"})
_BLANKS = re.compile(r"\s+")

Layer = Literal["exact", "semantic"]


@dataclass(frozen=True)
class CacheSettings:
    """The ``cache:`` config section's values."""

    similarity: float = 0.95
    ttl_s: float = 3600.0
    max_entries: int = 10_000


@dataclass
class CacheKey:
    """Where a request's answer is looked up and stored; ``vector`` is set by the lookup."""

    scope: str
    exact: str
    text: str | None
    vector: NDArray[np.float32] | None = None


@dataclass(frozen=True)
class Hit:
    """A cached answer: the stored completion and what it cost when it was bought."""

    layer: Layer
    doc: dict[str, Any]
    cost_usd: float
    tier: str
    similarity: float


@dataclass
class _Entry:
    scope_id: int
    doc: dict[str, Any]
    cost_usd: float
    tier: str
    expires: float
    slot: int | None = None


def tenant_of(headers: Mapping[str, str]) -> str:
    """The tenant of a request: sha256 of its bearer key (the key itself is never kept)."""
    return hashlib.sha256(headers.get("authorization", "").encode()).hexdigest()


def _normalise(value: Any) -> Any:
    if isinstance(value, str):
        return _BLANKS.sub(" ", value).strip()
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    return value


def _chat_text(messages: list[Any]) -> str | None:
    """The chat as one text for the encoder, None unless every message is plain text."""
    lines = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            return None
        if set(m) - {"role", "content", "name"}:  # tool calls and the like: exact layer only
            return None
        lines.append(f"{m.get('role')}: {_normalise(m['content'])}")
    return "\n".join(lines)


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


def _scope_id(scope: str) -> int:
    return int(scope[:15], 16)


class ResponseCache:
    """Exact and semantic lookups of stored non-streaming completions (thread-safe)."""

    def __init__(
        self, settings: CacheSettings, encoder: SentenceEncoder | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.encoder = encoder
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._matrix: NDArray[np.float32] | None = None
        self._scopes = np.zeros(settings.max_entries, dtype=np.int64)
        self._live = np.zeros(settings.max_entries, dtype=bool)
        self._owners: list[str | None] = [None] * settings.max_entries
        self._free = list(range(settings.max_entries - 1, -1, -1))

    @property
    def semantic(self) -> bool:
        """Whether the semantic layer runs (the router's bundle has an encoder)."""
        return self.encoder is not None

    def __len__(self) -> int:
        return len(self._entries)

    def key(self, forward: Mapping[str, Any], tenant: str, tier: str) -> CacheKey:
        """The cache key of a forwarded body, for ``tenant`` on ``tier``."""
        params = {k: v for k, v in forward.items() if k not in _NOT_SCOPE}
        scope = _digest(tenant, tier, json.dumps(params, sort_keys=True, default=str))
        messages = forward.get("messages")
        messages = messages if isinstance(messages, list) else []
        exact = _digest(scope, json.dumps(_normalise(messages), sort_keys=True, default=str))
        return CacheKey(scope, exact, _chat_text(messages))

    async def lookup(self, key: CacheKey) -> Hit | None:
        """The stored answer for ``key``: exact first, then the most similar one in scope."""
        hit = self._exact(key)
        if hit is not None or self.encoder is None or key.text is None:
            return hit
        key.vector = await asyncio.to_thread(self._embed, key.text)
        return self._nearest(key) if key.vector is not None else None

    def _embed(self, text: str) -> NDArray[np.float32] | None:
        assert self.encoder is not None
        ids = self.encoder.token_ids([text])[0]
        if len(ids) > MAX_TOKENS - 2:  # the encoder would cut the middle out: no safe neighbour
            return None
        vector: NDArray[np.float32] = self.encoder.encode_ids([ids])[0]
        return vector

    def _exact(self, key: CacheKey) -> Hit | None:
        with self._lock:
            entry = self._entries.get(key.exact)
            if entry is None:
                return None
            if entry.expires <= self._clock():
                self._drop(key.exact)
                return None
            self._entries.move_to_end(key.exact)
            return Hit("exact", copy.deepcopy(entry.doc), entry.cost_usd, entry.tier, 1.0)

    def _nearest(self, key: CacheKey) -> Hit | None:
        assert key.vector is not None
        with self._lock:
            if self._matrix is None:
                return None
            mask = self._live & (self._scopes == _scope_id(key.scope))
            if not mask.any():
                return None
            sims = np.where(mask, self._matrix @ key.vector, -np.inf)
            while True:
                slot = int(np.argmax(sims))
                if sims[slot] < self.settings.similarity:
                    return None
                owner = self._owners[slot]
                entry = self._entries.get(owner) if owner is not None else None
                if entry is not None and owner is not None and entry.expires > self._clock():
                    self._entries.move_to_end(owner)
                    return Hit("semantic", copy.deepcopy(entry.doc), entry.cost_usd, entry.tier,
                               float(sims[slot]))
                if owner is not None:
                    self._drop(owner)
                sims[slot] = -np.inf

    def store(self, key: CacheKey, doc: Mapping[str, Any], cost_usd: float, tier: str) -> None:
        """Keep a completion (without its ``tierwise`` member) for ``ttl_s``."""
        entry = _Entry(_scope_id(key.scope), {k: v for k, v in doc.items() if k != "tierwise"},
                       cost_usd, tier, self._clock() + self.settings.ttl_s)
        entry.doc = copy.deepcopy(entry.doc)
        with self._lock:
            self._drop(key.exact)
            while len(self._entries) >= self.settings.max_entries:
                self._drop(next(iter(self._entries)))
            if key.vector is not None:
                entry.slot = self._place(key.exact, entry.scope_id, key.vector)
            self._entries[key.exact] = entry

    def _place(self, owner: str, scope_id: int, vector: NDArray[np.float32]) -> int:
        if self._matrix is None:
            self._matrix = np.zeros((self.settings.max_entries, EMBEDDING_DIM), dtype=np.float32)
        slot = self._free.pop()
        self._matrix[slot] = vector
        self._scopes[slot], self._live[slot], self._owners[slot] = scope_id, True, owner
        return slot

    def _drop(self, exact: str) -> None:
        entry = self._entries.pop(exact, None)
        if entry is not None and entry.slot is not None:
            self._live[entry.slot], self._owners[entry.slot] = False, None
            self._free.append(entry.slot)


def replay(hit: Hit) -> dict[str, Any]:
    """The stored completion as a new one: a fresh ``id`` and ``created``, the rest unchanged."""
    return {**hit.doc, "id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time())}
