"""On-disk embedding cache keyed by encoder id and text hash, so retraining skips the encoder."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

#: New vectors between automatic saves: a crash loses at most this much encoder work.
FLUSH_EVERY = 4096


def _key(encoder_id: str, text: str) -> str:
    return hashlib.sha256(f"{encoder_id}\0{text}".encode("utf-8", "surrogatepass")).hexdigest()


class DiskEmbeddingCache:
    """Embeddings in one ``.npz`` per encoder under ``root``; loaded lazily, saved by ``flush``."""

    def __init__(self, root: Path, encoder_id: str) -> None:
        self.root = root
        self.encoder_id = encoder_id
        self._table: dict[str, NDArray[np.float32]] | None = None
        self._pending = 0

    @property
    def path(self) -> Path:
        name = hashlib.sha256(self.encoder_id.encode()).hexdigest()[:16]
        return self.root / f"embeddings-{name}.npz"

    def _load(self) -> dict[str, NDArray[np.float32]]:
        if self._table is None:
            self._table = {}
            if self.path.exists():
                with np.load(self.path) as data:
                    keys, vecs = data["keys"], data["vectors"]
                self._table = {str(k): v for k, v in zip(keys, vecs, strict=True)}
                logger.info("embedding cache %s: %d vectors", self.path, len(self._table))
        return self._table

    def get_many(self, texts: Sequence[str]) -> list[NDArray[np.float32] | None]:
        """Cached vectors for the texts, None where absent."""
        table = self._load()
        return [table.get(_key(self.encoder_id, t)) for t in texts]

    def put_many(self, texts: Sequence[str], vectors: NDArray[np.float32]) -> None:
        """Add vectors; persisted every ``FLUSH_EVERY`` new vectors and by ``flush``."""
        table = self._load()
        for t, v in zip(texts, vectors, strict=True):
            table[_key(self.encoder_id, t)] = np.asarray(v, dtype=np.float32)
        self._pending += len(texts)
        if self._pending >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Write the cache atomically (temp file + rename) if it changed."""
        if not self._pending or self._table is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self._table.keys()))
        vecs = np.stack(list(self._table.values())).astype(np.float32)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".npz.tmp")
        os.close(fd)
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, keys=keys, vectors=vecs)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._pending = 0
