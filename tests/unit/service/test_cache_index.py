"""The cache's vector index: scoped search in similarity order, removal, growth, retain."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from router_model.encoder import EMBEDDING_DIM
from service.gateway.levers.cache.index import VectorIndex


def unit(*weights: float) -> NDArray[np.float32]:
    v = np.zeros(EMBEDDING_DIM, dtype=np.float32)
    v[: len(weights)] = weights
    out: NDArray[np.float32] = v / np.linalg.norm(v)
    return out


def test_search_is_scoped_ordered_and_thresholded() -> None:
    index = VectorIndex()
    index.add("near", 1, unit(1.0, 0.1))
    index.add("nearest", 1, unit(1.0, 0.01))
    index.add("far", 1, unit(0.0, 1.0))
    index.add("other scope", 2, unit(1.0))
    found = index.search(1, unit(1.0), threshold=0.9, limit=8)
    assert [k for k, _ in found] == ["nearest", "near"]
    assert found[0][1] >= found[1][1] >= 0.9
    assert index.search(1, unit(1.0), threshold=0.9, limit=1) == found[:1]
    assert index.search(3, unit(1.0), threshold=0.0, limit=8) == []


def test_remove_replace_and_retain() -> None:
    index = VectorIndex()
    index.add("a", 1, unit(1.0))
    index.add("a", 1, unit(0.0, 1.0))  # replaced, not duplicated
    assert len(index) == 1
    assert index.search(1, unit(1.0), 0.5, 8) == []
    index.add("b", 1, unit(1.0))
    index.remove("a")
    index.remove("missing")
    assert "a" not in index and "b" in index
    assert index.retain(["c"]) == ["b"]
    assert len(index) == 0 and index.search(1, unit(1.0), 0.0, 8) == []


def test_grows_past_its_first_allocation_and_reuses_slots() -> None:
    index = VectorIndex()
    for i in range(600):
        index.add(f"k{i}", i % 3, unit(1.0, i / 600))
    assert len(index) == 600
    for i in range(0, 600, 2):
        index.remove(f"k{i}")
    for i in range(300):
        index.add(f"new{i}", 7, unit(0.0, 1.0, i / 300))
    assert len(index) == 600
    found = index.search(7, unit(0.0, 1.0), threshold=0.0, limit=1000)
    assert len(found) == 300 and found[0][0] == "new0"
    assert all(k.startswith("k") and int(k[1:]) % 2 for k, _ in index.search(1, unit(1.0), 0, 1000))
