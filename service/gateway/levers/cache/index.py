"""The response cache's vector index: unit embeddings by entry key, searched within one scope.

Both cache stores use it: the in-process store for its entries, the PostgreSQL store for its
mirror of the shared table's embeddings. Not thread-safe: callers serialise access.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray

from router_model.encoder import EMBEDDING_DIM

#: Rows allocated by the first ``add``; the matrix doubles when full.
_FIRST_ROWS = 256


class VectorIndex:
    """Rows of float32 unit vectors, each owned by an entry key and tagged with a scope id."""

    def __init__(self) -> None:
        self._matrix = np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        self._scopes = np.zeros(0, dtype=np.int64)
        self._live = np.zeros(0, dtype=bool)
        self._owners: list[str | None] = []
        self._slots: dict[str, int] = {}
        self._free: list[int] = []

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key: object) -> bool:
        return key in self._slots

    def keys(self) -> list[str]:
        """The keys that have a vector."""
        return list(self._slots)

    def add(self, key: str, scope_id: int, vector: NDArray[np.float32]) -> None:
        """Index ``vector`` (unit length) under ``key``, replacing the key's previous vector."""
        self.remove(key)
        if not self._free:
            self._grow()
        slot = self._free.pop()
        self._matrix[slot] = vector
        self._scopes[slot], self._live[slot], self._owners[slot] = scope_id, True, key
        self._slots[key] = slot

    def remove(self, key: str) -> None:
        """Forget ``key``'s vector (nothing when it has none)."""
        slot = self._slots.pop(key, None)
        if slot is not None:
            self._live[slot], self._owners[slot] = False, None
            self._free.append(slot)

    def retain(self, keys: Iterable[str]) -> list[str]:
        """Forget every key not in ``keys``; returns the forgotten ones."""
        keep = set(keys)
        gone = [k for k in self._slots if k not in keep]
        for k in gone:
            self.remove(k)
        return gone

    def search(
        self, scope_id: int, vector: NDArray[np.float32], threshold: float, limit: int
    ) -> list[tuple[str, float]]:
        """Up to ``limit`` keys of ``scope_id`` with cosine >= ``threshold``, most similar first."""
        # only the scope's rows are multiplied: scopes are per tenant, tier and parameters, so
        # one is usually a small part of the matrix. einsum, not ``@``: ``@`` goes to OpenBLAS,
        # whose threads wake slowly between the gateway's sparse calls (12 ms instead of 0.8 ms
        # for 2k rows on a loaded 2-core machine, bench/bench_cache_store.py)
        rows = np.flatnonzero(self._live & (self._scopes == scope_id))
        if rows.size == 0:
            return []
        sims: NDArray[np.float32] = np.einsum("ij,j->i", self._matrix[rows], vector)
        above = np.flatnonzero(sims >= threshold)
        best = above[np.argsort(-sims[above], kind="stable")][:limit]
        found: list[tuple[str, float]] = []
        for i in best:
            owner = self._owners[int(rows[i])]
            if owner is not None:
                found.append((owner, float(sims[i])))
        return found

    def _grow(self) -> None:
        old = len(self._owners)
        rows = max(_FIRST_ROWS, 2 * old)
        matrix = np.zeros((rows, EMBEDDING_DIM), dtype=np.float32)
        matrix[:old] = self._matrix
        self._matrix = matrix
        self._scopes = np.concatenate([self._scopes, np.zeros(rows - old, dtype=np.int64)])
        self._live = np.concatenate([self._live, np.zeros(rows - old, dtype=bool)])
        self._owners += [None] * (rows - old)
        self._free += range(rows - 1, old - 1, -1)
