"""The one feature extractor shared by training and serving: hand-made prompt features + embedding.

``extract_features(prompts, featurizer)`` is the only way features are computed, at training time
and at serving time. Bump ``FEATURE_VERSION`` whenever any output value changes; golden vectors in
``tests/unit/router_model/test_features.py`` pin it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from router_model.encoder import (
    EMBEDDING_DIM,
    ENCODER_ID,
    AsciiWordPiece,
    SentenceEncoder,
    word_piece_count,
    word_piece_ids,
)
from router_model.hand_features import _FOLD_EXTRA as _FOLD_EXTRA
from router_model.hand_features import HAND_FEATURE_NAMES as HAND_FEATURE_NAMES
from router_model.hand_features import hand_features as hand_features

FEATURE_VERSION = 1
FeatureSet = Literal["full", "hand"]

EMBEDDING_NAMES: tuple[str, ...] = tuple(f"emb_{i:03d}" for i in range(EMBEDDING_DIM))


def feature_names(feature_set: FeatureSet) -> tuple[str, ...]:
    """Names of the columns ``extract_features`` returns for a feature set."""
    return HAND_FEATURE_NAMES + (EMBEDDING_NAMES if feature_set == "full" else ())


def feature_id(feature_set: FeatureSet) -> str:
    """A string that changes whenever the features' values would change."""
    encoder = ENCODER_ID if feature_set == "full" else "none"
    return f"v{FEATURE_VERSION}/{feature_set}/{encoder}"


class EmbeddingStore(Protocol):
    """A cache of embeddings keyed by text (the key includes the encoder id)."""

    def get_many(self, texts: Sequence[str]) -> list[NDArray[np.float32] | None]: ...

    def put_many(self, texts: Sequence[str], vectors: NDArray[np.float32]) -> None: ...


@dataclass(frozen=True)
class Featurizer:
    """What ``extract_features`` needs: the tokenizer, and the encoder for the ``full`` set."""

    feature_set: FeatureSet
    tokenizer: Any
    encoder: SentenceEncoder | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return feature_names(self.feature_set)

    @functools.cached_property
    def word_piece(self) -> AsciiWordPiece | None:
        """The Python twin of ``tokenizer`` for ASCII prompts (built on first use, ~20 ms)."""
        return AsciiWordPiece.from_tokenizer(self.tokenizer)



def hand_row(prompt: str, featurizer: Featurizer) -> tuple[list[float], int]:
    """One prompt's ``hand`` features (``featurize``'s row, as floats) and its word-piece count.

    The single-prompt path of serving: the same ``hand_features`` and token count as
    ``featurize``, without the numpy arrays, which for 33 floats cost more than the row itself.
    """
    n_tokens = word_piece_count(featurizer.tokenizer, prompt, featurizer.word_piece)
    return hand_features(prompt, n_tokens), n_tokens


@dataclass(frozen=True)
class Features:
    """Feature matrix plus the token count of each prompt (for cost estimates)."""

    matrix: NDArray[np.float32]
    n_tokens: NDArray[np.int64]


def extract_features(
    prompts: Sequence[str],
    featurizer: Featurizer,
    *,
    cache: EmbeddingStore | None = None,
    progress: Callable[[int], None] | None = None,
) -> NDArray[np.float32]:
    """Features of each prompt, shape ``(len(prompts), len(featurizer.names))``, float32.

    Deterministic for a given featurizer; the optional cache only skips recomputing embeddings that
    the same encoder produced before.

    Raises:
        ValueError: when the ``full`` set is asked for without an encoder.
    """
    return featurize(prompts, featurizer, cache=cache, progress=progress).matrix


def featurize(
    prompts: Sequence[str],
    featurizer: Featurizer,
    *,
    cache: EmbeddingStore | None = None,
    progress: Callable[[int], None] | None = None,
) -> Features:
    """``extract_features`` plus token counts, from one tokenizer pass.

    Raises:
        ValueError: when the ``full`` set is asked for without an encoder.
    """
    if featurizer.feature_set == "full" and featurizer.encoder is None:
        raise ValueError("the 'full' feature set needs an encoder")
    ids = word_piece_ids(featurizer.tokenizer, prompts, featurizer.word_piece)
    hand = np.array(
        [hand_features(p, len(i)) for p, i in zip(prompts, ids, strict=True)], dtype=np.float32
    ).reshape(len(prompts), len(HAND_FEATURE_NAMES))
    n_tokens = np.array([len(i) for i in ids], dtype=np.int64)
    if featurizer.feature_set == "hand":
        return Features(hand, n_tokens)
    assert featurizer.encoder is not None
    emb = _embeddings(prompts, ids, featurizer.encoder, cache, progress)
    return Features(np.hstack([hand, emb]).astype(np.float32), n_tokens)


def _embeddings(
    prompts: Sequence[str],
    ids: list[list[int]],
    encoder: SentenceEncoder,
    cache: EmbeddingStore | None,
    progress: Callable[[int], None] | None,
) -> NDArray[np.float32]:
    out = np.zeros((len(prompts), EMBEDDING_DIM), dtype=np.float32)
    cached = cache.get_many(prompts) if cache is not None else [None] * len(prompts)
    todo = [i for i, v in enumerate(cached) if v is None]
    for i, v in enumerate(cached):
        if v is not None:
            out[i] = v
    if progress is not None:
        progress(len(prompts) - len(todo))
    chunk = 512
    for start in range(0, len(todo), chunk):
        idx = todo[start : start + chunk]
        vecs = encoder.encode_ids([ids[i] for i in idx])
        out[idx] = vecs
        if cache is not None:
            cache.put_many([prompts[i] for i in idx], vecs)
        if progress is not None:
            progress(len(idx))
    return out
