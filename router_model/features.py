"""The one feature extractor shared by training and serving: hand-made prompt features + embedding.

``extract_features(prompts, featurizer)`` is the only way features are computed, at training time
and at serving time. Bump ``FEATURE_VERSION`` whenever any output value changes; golden vectors in
``tests/unit/router_model/test_features.py`` pin it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from router_model.encoder import EMBEDDING_DIM, ENCODER_ID, SentenceEncoder, word_piece_ids

FEATURE_VERSION = 1
FeatureSet = Literal["full", "hand"]

_WORD = re.compile(r"\w+", re.UNICODE)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_MATH = re.compile(r"[=+\-*/^<>≤≥∑∫√π]|\\(?:frac|sum|int|sqrt|cdot|le|ge)|\$")
_CODE = re.compile(
    r"```|\bdef \w+\(|\bclass \w+|\breturn\b|\bimport \w+|#include|\bfunction\b|=>|;\s*$|\{\s*$",
    re.MULTILINE,
)
_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)]|\(?[a-zA-Z][.)])\s+", re.MULTILINE)
_CHOICE = re.compile(r"^\s*\(?[A-J][.)]\s+\S", re.MULTILINE)
_TURN = re.compile(r"^(?:system|user|assistant|human|ai)\s*:", re.MULTILINE | re.IGNORECASE)
_WH = re.compile(r"\b(?:what|why|how|which|who|whom|whose|when|where)\b", re.IGNORECASE)
_REASON = re.compile(
    r"\b(?:prove|derive|explain|justify|analy[sz]e|compare|evaluate|calculate|compute|solve|"
    r"step[- ]by[- ]step|reason|implement|design|optimi[sz]e|debug|refactor)\w*",
    re.IGNORECASE,
)
_CONSTRAINT = re.compile(
    r"\b(?:must|exactly|at least|at most|without|only|never|always|do not|don't|ensure)\b",
    re.IGNORECASE,
)
_URL = re.compile(r"https?://")
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
_CHOICE_LINE = re.compile(r"^\(?[A-J][.)]\s+(.*)$", re.MULTILINE)
_NEGATION = re.compile(r"\b(?:not|except|false|incorrect|least|never)\b", re.IGNORECASE)
_NEGATION_CAPS = re.compile(r"\b(?:NOT|EXCEPT|LEAST|FALSE)\b")
_STATEMENTS = re.compile(r"Statement \d|\bI+\.|\bI+ only\b|\bI and II\b")
_WHICH_FOLLOWING = re.compile(r"which of the following", re.IGNORECASE)
_ABOVE = re.compile(r"\b(?:all|none|both) of the above\b", re.IGNORECASE)

HAND_FEATURE_NAMES: tuple[str, ...] = (
    "log_tokens",
    "log_chars",
    "log_words",
    "log_lines",
    "mean_word_len",
    "log_words_per_sentence",
    "frac_digit",
    "frac_upper",
    "frac_punct",
    "frac_non_ascii",
    "log_numbers",
    "log_math_symbols",
    "log_code_markers",
    "log_list_items",
    "log_choices",
    "log_turns",
    "log_question_marks",
    "log_wh_words",
    "log_reasoning_verbs",
    "log_constraints",
    "has_url",
    "ends_with_question",
    # structure of multiple-choice prompts (zero elsewhere): a question stem and its options
    "log_stem_chars",
    "log_mean_choice_chars",
    "log_max_choice_chars",
    "choice_len_spread",
    "frac_numeric_choices",
    "log_stem_negations",
    "log_caps_negations",
    "log_statements",
    "which_of_the_following",
    "all_none_of_the_above",
    "log_stem_numbers",
)
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


def _log(x: float) -> float:
    return math.log1p(x)


def hand_features(prompt: str, n_tokens: int) -> list[float]:
    """The hand-made structural features of one prompt, in ``HAND_FEATURE_NAMES`` order."""
    n_chars = len(prompt)
    chars = max(n_chars, 1)
    words = _WORD.findall(prompt)
    n_words = len(words)
    stripped = prompt.rstrip()
    sentences = max(len(_SENTENCE_END.findall(prompt)), 1)
    return [
        _log(n_tokens),
        _log(n_chars),
        _log(n_words),
        _log(prompt.count("\n") + 1 if prompt else 0),
        min(sum(len(w) for w in words) / n_words, 30.0) / 10.0 if n_words else 0.0,
        _log(n_words / sentences),
        sum(c.isdigit() for c in prompt) / chars,
        sum(c.isupper() for c in prompt) / chars,
        sum((not c.isalnum()) and (not c.isspace()) for c in prompt) / chars,
        sum(ord(c) > 127 for c in prompt) / chars,
        _log(len(_NUMBER.findall(prompt))),
        _log(len(_MATH.findall(prompt))),
        _log(len(_CODE.findall(prompt))),
        _log(len(_LIST_ITEM.findall(prompt))),
        _log(len(_CHOICE.findall(prompt))),
        _log(len(_TURN.findall(prompt))),
        _log(prompt.count("?")),
        _log(len(_WH.findall(prompt))),
        _log(len(_REASON.findall(prompt))),
        _log(len(_CONSTRAINT.findall(prompt))),
        1.0 if _URL.search(prompt) else 0.0,
        1.0 if stripped.endswith("?") or stripped.endswith("Answer:") else 0.0,
        *_choice_features(prompt),
    ]


def _choice_features(prompt: str) -> list[float]:
    """Multiple-choice structure: the stem before the first option, and the options' shape."""
    choices = _CHOICE_LINE.findall(prompt)
    first = _CHOICE_LINE.search(prompt)
    stem = prompt[: first.start()] if first else prompt
    lengths = [len(c) for c in choices] or [0]
    mean_len = sum(lengths) / len(lengths)
    spread = (max(lengths) - min(lengths)) / (mean_len + 1.0)
    return [
        _log(len(stem)),
        _log(mean_len),
        _log(max(lengths)),
        spread,
        sum(any(ch.isdigit() for ch in c) for c in choices) / len(choices) if choices else 0.0,
        _log(len(_NEGATION.findall(stem))),
        _log(len(_NEGATION_CAPS.findall(stem))),
        _log(len(_STATEMENTS.findall(prompt))),
        1.0 if _WHICH_FOLLOWING.search(stem) else 0.0,
        1.0 if _ABOVE.search(prompt) else 0.0,
        _log(len(_NUMBER.findall(stem))),
    ]


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
    ids = word_piece_ids(featurizer.tokenizer, prompts)
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
