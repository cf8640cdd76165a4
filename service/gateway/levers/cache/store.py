"""The response cache's entries: keys, settings, the ``CacheStore`` interface and this process's
store.

``MemoryCacheStore`` keeps entries in this process (an LRU ``OrderedDict``, entries expire after
``ttl_s``, at most ``max_entries``); ``store_pg.PostgresCacheStore`` shares them among replicas.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from service.gateway.levers.cache.index import VectorIndex

#: Semantic candidates tried per lookup, most similar first (the rest of a crowded scope waits).
CANDIDATES = 8

Layer = Literal["exact", "canonical", "semantic"]
#: Called with the failed operation ("lookup", "store", "refresh", "sweep") of a shared store.
ErrorHook = Callable[[str], None]


@dataclass(frozen=True)
class CacheSettings:
    """The ``cache:`` config section's values."""

    similarity: float = 0.95
    #: Reformatted repeats of the last user turn meet under its canonical form.
    canonical: bool = True
    #: The embedding layer (with its equivalence check); off unless asked (docs/cache.md).
    semantic: bool = False
    ttl_s: float = 3600.0
    max_entries: int = 10_000
    #: ``postgresql://…``: entries shared by every replica; None: this process only.
    url: str | None = None
    timeout_s: float = 0.25
    refresh_s: float = 1.0


@dataclass
class CacheKey:
    """Where a request's answer is looked up and stored; ``vector`` is set by the lookup."""

    scope: str
    exact: str
    text: str | None
    vector: NDArray[np.float32] | None = None
    #: The tier whose answers the key finds: an entry another tier answered is never served.
    tier: str = ""
    #: The scope's parts besides the tier (tenant, parameters and earlier turns), the messages'
    #: part of ``exact`` and the canonical last user turn: what ``on_tier`` needs.
    parts: tuple[str, str, str, str | None] = ("", "", "", None)
    #: Where reformatted repeats of the last user turn meet (None: not a plain-text turn).
    canonical: str | None = None
    #: The last user turn as sent: what the equivalence check compares.
    prompt: str | None = None

    def on_tier(self, tier: str) -> CacheKey:
        """The same request's key on ``tier`` (the embedding kept): where that tier's answer is
        stored."""
        if tier == self.tier:
            return self
        tenant, params, chat, canon = self.parts
        scope = digest(tenant, tier, params)
        return CacheKey(scope, digest(scope, chat), self.text, self.vector, tier, self.parts,
                        canonical_key(scope, canon), self.prompt)


@dataclass(frozen=True)
class Stored:
    """What an entry keeps: the completion (its ``tierwise`` member holds the entry's own keys and
    last user turn, ``response.entry_meta``), its cost and its tier."""

    doc: Any
    cost_usd: float
    tier: str
    #: The key it was found under (set by the stores): what dropping a corrupt entry deletes.
    key: str = ""


@dataclass(frozen=True)
class Hit:
    """A cached answer: the stored completion and what it cost when it was bought."""

    layer: Layer
    doc: dict[str, Any]
    cost_usd: float
    tier: str
    similarity: float
    #: The entry's keys: what negative feedback on this answer evicts.
    keys: tuple[str, ...] = ()


class CacheStore(Protocol):
    """Keeps entries and finds them; every method but ``put`` may wait on I/O."""

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def exact(self, key: CacheKey) -> Stored | None:
        """The live entry stored under ``key.exact``."""
        ...

    async def canonical(self, key: CacheKey) -> Stored | None:
        """The newest live entry stored with ``key.canonical`` (None when it is None)."""
        ...

    async def nearest(
        self, key: CacheKey, vector: NDArray[np.float32]
    ) -> tuple[Stored, float] | None:
        """The live entry of ``key.scope`` most similar to ``vector``, at or above the threshold."""
        ...

    def put(self, key: CacheKey, stored: Stored, vector: NDArray[np.float32] | None) -> None:
        """Keep an entry under ``key.exact`` and (when set) ``key.canonical``; never blocks (a
        shared store finishes the write in the background)."""
        ...

    async def flush(self) -> None:
        """Wait for the writes ``put`` started."""
        ...

    async def drop(self, keys: list[str]) -> None:
        """Delete the entries stored under ``keys`` (a failure is counted, never raised)."""
        ...

    def __len__(self) -> int: ...


def digest(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


def canonical_key(scope: str, canon: str | None) -> str | None:
    """Where the canonical form ``canon`` of a last user turn is stored in ``scope``."""
    return None if canon is None else digest(scope, "canonical", canon)


def scope_id(scope: str) -> int:
    """The scope's tag in a ``VectorIndex`` (60 bits of its sha256: collisions are negligible)."""
    return int(scope[:15], 16)


@dataclass
class _Entry:
    stored: Stored
    expires: float


class MemoryCacheStore:
    """This process's entries: least recently used evicted past ``max_entries`` (thread-safe).
    An entry's canonical key is an alias of its exact key (one entry per answer)."""

    def __init__(self, settings: CacheSettings, clock: Callable[[], float]) -> None:
        self._settings = settings
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._index = VectorIndex()
        #: canonical key -> the exact key of the entry last stored with it, and back.
        self._aliases: dict[str, str] = {}
        self._canonical_of: dict[str, str] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def flush(self) -> None:
        return None

    async def exact(self, key: CacheKey) -> Stored | None:
        with self._lock:
            return self._live(key.exact)

    async def canonical(self, key: CacheKey) -> Stored | None:
        with self._lock:
            exact = self._aliases.get(key.canonical) if key.canonical is not None else None
            return None if exact is None else self._live(exact)

    async def drop(self, keys: list[str]) -> None:
        with self._lock:
            for k in keys:
                self._drop(k)

    async def nearest(
        self, key: CacheKey, vector: NDArray[np.float32]
    ) -> tuple[Stored, float] | None:
        """The most similar live entry; the caller checks it (one candidate: the closest)."""
        with self._lock:
            found = self._index.search(scope_id(key.scope), vector, self._settings.similarity,
                                       CANDIDATES)
            for owner, similarity in found:
                stored = self._live(owner)
                if stored is not None:
                    return stored, similarity
            return None

    def _live(self, exact: str) -> Stored | None:
        entry = self._entries.get(exact)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            self._drop(exact)
            return None
        self._entries.move_to_end(exact)
        return replace(entry.stored, key=exact)

    def put(self, key: CacheKey, stored: Stored, vector: NDArray[np.float32] | None) -> None:
        entry = _Entry(stored, self._clock() + self._settings.ttl_s)
        with self._lock:
            self._drop(key.exact)
            while len(self._entries) >= self._settings.max_entries:
                self._drop(next(iter(self._entries)))
            if vector is not None:
                self._index.add(key.exact, scope_id(key.scope), vector)
            self._entries[key.exact] = entry
            if key.canonical is not None:
                self._aliases[key.canonical] = key.exact
                self._canonical_of[key.exact] = key.canonical

    def _drop(self, key: str) -> None:
        """Forget the entry stored under ``key`` and its canonical alias."""
        self._entries.pop(key, None)
        self._index.remove(key)
        canonical = self._canonical_of.pop(key, None)
        if canonical is not None and self._aliases.get(canonical) == key:
            del self._aliases[canonical]
