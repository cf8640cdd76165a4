"""The gateway's response cache: an exact layer, a canonical layer, then (opt-in) a semantic
layer on the router's encoder whose candidates must pass an equivalence check (docs/cache.md).

All layers are scoped per tenant (a hash of the client key), per tier, per generation parameters
(``temperature``, ``max_tokens``, …) and per everything before the last user turn (system prompt,
earlier turns, the last turn's ``name``): an answer is stored under the tier that gave it (a
cascade's accepted draft under the draft tier) and served only to a request decided for that tier,
never to another client, for other parameters or after another conversation. The exact layer keys
on sha256 of the scope and the messages with only meaningless whitespace dropped (line endings,
blanks at line ends, blank lines around the text, blanks before a one-line text; ``_normalise``):
indentation counts. The canonical layer keys on the last user turn's ``equivalence.canonical``
form (case, whitespace, option markers, answer cues; none for indented text outside code fences).
The semantic layer (``semantic: true``) embeds only the last user turn with the router's own
``SentenceEncoder`` (no second model), takes the most similar stored turn of the same scope at or
above ``similarity``, and serves it only when ``equivalence.mismatch`` finds no difference (a
failed check is a miss, reported to ``on_event`` by reason). It runs only when the router's bundle
has the ``full`` feature set, only for plain-text turns without indented lines (the encoder cannot
see indentation), and only when the turn fits the encoder's token window. Each entry keeps its own
key and last user turn in its ``tierwise`` member (never sent to clients); an entry without them
is corrupt: dropped and reported, never served. ``remember``/``forget`` let negative feedback on
an answer evict the entry that gave it (this process's memory of which decision used which entry:
feedback sent to another replica evicts nothing).

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
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from router_model.encoder import MAX_TOKENS, SentenceEncoder
from service.gateway.levers.cache.equivalence import canonical, mismatch
from service.gateway.levers.cache.store import (
    CacheKey,
    CacheSettings,
    CacheStore,
    ErrorHook,
    Hit,
    Layer,
    MemoryCacheStore,
    Stored,
    canonical_key,
    digest,
)
from service.gateway.levers.cache.store_pg import PostgresCacheStore
from service.gateway.requests import CacheMode as Mode

#: Request members that do not change the answer (everything else is part of the scope).
#: Called with ("rejected", the failed check) or ("evicted", "feedback" | "corrupt").
EventHook = Callable[[str, str], None]
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


def _last_turn(messages: list[Any]) -> tuple[list[Any], str | None]:
    """The chat but its last user turn's text, and that text (None, with the whole chat as the
    first part, unless the chat ends with a plain-text user message). Only the last user turn is
    compared by meaning; everything before it is part of the scope, matched exactly."""
    last = messages[-1] if messages else None
    if (not isinstance(last, dict) or last.get("role") != "user"
            or not isinstance(last.get("content"), str) or set(last) - {"role", "content", "name"}):
        return messages, None
    return [*messages[:-1], {k: v for k, v in last.items() if k != "content"}], last["content"]


def _embedded(prompt: str | None) -> str | None:
    """The last user turn as the encoder sees it; None for indented lines (the encoder's
    tokenizer drops whitespace: indented code would look the same at any indentation)."""
    if prompt is None or _INDENTED.search(prompt):
        return None
    return _BLANKS.sub(" ", prompt).strip()


def open_cache_store(
    settings: CacheSettings, clock: Callable[[], float], on_error: ErrorHook
) -> CacheStore:
    """The shared PostgreSQL store when ``settings.url`` is set, else this process's memory."""
    if settings.url is None:
        return MemoryCacheStore(settings, clock)
    return PostgresCacheStore(settings, on_error)


def _ignore(op: str) -> None:
    return None


def _ignore_event(kind: str, reason: str) -> None:
    return None


class ResponseCache:
    """Exact and semantic lookups of stored non-streaming completions; ``start`` before use."""

    def __init__(
        self, settings: CacheSettings, encoder: SentenceEncoder | None,
        clock: Callable[[], float] = time.monotonic, on_error: ErrorHook | None = None,
        on_event: EventHook | None = None,
    ) -> None:
        self.settings = settings
        self.encoder = encoder
        self.backend = open_cache_store(settings, clock, on_error or _ignore)
        #: Called with ("rejected", check) for a failed equivalence check, ("evicted", why).
        self.on_event = on_event or _ignore_event
        self._answered: OrderedDict[str, tuple[str, ...]] = OrderedDict()

    @property
    def semantic(self) -> bool:
        """Whether the semantic layer runs (on in the settings, and the bundle has an encoder)."""
        return self.settings.semantic and self.encoder is not None

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
        earlier, prompt = _last_turn(messages)
        scoped = params + "\x00" + json.dumps(_normalise(earlier), sort_keys=True, default=str)
        canon = canonical(prompt) if prompt is not None and self.settings.canonical else None
        scope = digest(tenant, tier, scoped)
        return CacheKey(scope, digest(scope, chat), _embedded(prompt), None, tier,
                        (tenant, scoped, chat, canon), canonical_key(scope, canon), prompt)

    async def lookup(self, key: CacheKey, mode: Mode = "auto") -> Hit | None:
        """The stored answer of ``key.tier`` for ``key``: exact, then (``mode`` "auto") the same
        canonical form, then the most similar last user turn that passes the equivalence check
        (a failed check is a miss, counted by reason). A corrupt entry is dropped, never served."""
        found = await self._entry("exact", await self.backend.exact(key), 1.0, key)
        if found is not None or mode != "auto":
            return found
        if key.canonical is not None:
            found = await self._entry("canonical", await self.backend.canonical(key), 1.0, key)
            if found is not None:
                return found
        if not self.semantic or key.text is None:
            return None
        key.vector = await asyncio.to_thread(self._embed, key.text)
        if key.vector is None:
            return None
        near = await self.backend.nearest(key, key.vector)
        return None if near is None else await self._entry("semantic", *near, key)

    async def _entry(self, layer: Layer, stored: Stored | None, similarity: float,
                     key: CacheKey) -> Hit | None:
        """``stored`` as a hit when it is whole, of ``key.tier`` and (semantic) equivalent."""
        if stored is None or stored.tier != key.tier:  # another tier's: an entry written before
            return None                                 # answers were scoped by their tier
        meta = entry_meta(stored.doc)
        if meta is None:
            self.on_event("evicted", "corrupt")
            await self.backend.drop([stored.key])
            return None
        keys, prompt = meta
        if layer == "semantic":
            reason = "wording" if prompt is None or key.prompt is None else mismatch(
                prompt, key.prompt)
            if reason is not None:
                self.on_event("rejected", reason)
                return None
        doc = copy.deepcopy({k: v for k, v in stored.doc.items() if k != "tierwise"})
        return Hit(layer, doc, stored.cost_usd, stored.tier, similarity, keys)

    def remember(self, decision_id: str, keys: tuple[str, ...]) -> None:
        """Note which entry answered (or was stored by) a decision, for ``forget``."""
        self._answered[decision_id] = keys
        while len(self._answered) > self.settings.max_entries:
            self._answered.popitem(last=False)

    async def forget(self, decision_id: str) -> bool:
        """Evict the entry that answered ``decision_id`` (negative feedback); False if none."""
        keys = self._answered.pop(decision_id, None)
        if not keys:
            return False
        await self.backend.drop(list(keys))
        self.on_event("evicted", "feedback")
        return True

    def _embed(self, text: str) -> NDArray[np.float32] | None:
        assert self.encoder is not None
        ids = self.encoder.token_ids([text])[0]
        if len(ids) > MAX_TOKENS - 2:  # the encoder would cut the middle out: no safe neighbour
            return None
        vector: NDArray[np.float32] = self.encoder.encode_ids([ids])[0]
        return vector

    def store(self, key: CacheKey, doc: Mapping[str, Any], cost_usd: float,
              tier: str) -> tuple[str, ...]:
        """Keep a completion (without ``tierwise``) that ``tier`` answered, for ``ttl_s``, under
        ``tier``'s scope (``key.on_tier``): a cascade's accepted draft is the draft tier's answer,
        served only to requests decided for that tier. A shared store writes later. Returns the
        entry's keys (what ``remember`` takes)."""
        key = key.on_tier(tier)
        keys = (key.exact,)
        kept = copy.deepcopy({k: v for k, v in doc.items() if k != "tierwise"})
        kept["tierwise"] = {"keys": list(keys), "prompt": key.prompt}
        self.backend.put(key, Stored(kept, cost_usd, tier), key.vector)
        return keys

    async def put(self, key: CacheKey, doc: Mapping[str, Any], cost_usd: float,
                  tier: str) -> None:
        """``store``, then wait until the write is done (a shared store's commit)."""
        self.store(key, doc, cost_usd, tier)
        await self.backend.flush()


def entry_meta(doc: Any) -> tuple[tuple[str, ...], str | None] | None:
    """An entry's own keys and last user turn (``store`` writes them in its ``tierwise``
    member); None when the entry is not a whole completion with them (corrupt, or foreign)."""
    meta = doc.get("tierwise") if isinstance(doc, dict) else None
    if not isinstance(meta, dict):
        return None
    keys, prompt = meta.get("keys"), meta.get("prompt")
    choices = doc.get("choices")
    if (not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys)
            or not (prompt is None or isinstance(prompt, str))
            or not isinstance(choices, list) or not choices
            or not all(isinstance(c, dict) for c in choices)):
        return None
    return tuple(keys), prompt


def replay(hit: Hit) -> dict[str, Any]:
    """The stored completion as a new one: a fresh ``id`` and ``created``, the rest unchanged."""
    return {**hit.doc, "id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time())}
