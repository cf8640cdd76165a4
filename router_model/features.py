"""The one feature extractor shared by training and serving: hand-made prompt features + embedding.

``extract_features(prompts, featurizer)`` is the only way features are computed, at training time
and at serving time. Bump ``FEATURE_VERSION`` whenever any output value changes; golden vectors in
``tests/unit/router_model/test_features.py`` pin it.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
from numpy.typing import NDArray

from router_model.encoder import (
    EMBEDDING_DIM,
    ENCODER_ID,
    AsciiWordPiece,
    SentenceEncoder,
    word_piece_ids,
)

FEATURE_VERSION = 1
FeatureSet = Literal["full", "hand"]

# The patterns are written so that re can skip ahead: one whose first item is a literal or a
# class is scanned in a tight C loop, one that starts with \b or ^ is tried at every position
# (~10x slower). Each counts exactly what its plain form (the reference implementation in
# tests/unit/router_model/test_features_speedpath.py) counts.
#: Characters besides ASCII letters that re's IGNORECASE matches to an ASCII letter (İ ı ſ K); a
#: test checks every code point, so that a first-letter class never misses one.
_FOLD_EXTRA = "\u0130\u0131\u017f\u212a"


def _keywords(words: Sequence[str], tail: str, *, ignore_case: bool = True) -> re.Pattern[str]:
    r"""``\b(?:word|...)`` then ``tail``, rewritten to start with a character class.

    The class consumes the first letter (case-sensitively, so that re can scan for it), the ``\b``
    before it becomes a look-behind, and a look-behind on that letter picks the words that start
    with it. Words with different first letters never match at one position, so grouping them by
    first letter keeps the alternation's order wherever the order matters.
    """
    groups: dict[str, list[str]] = {}
    for word in words:
        groups.setdefault(word[0], []).append(word[1:])
    firsts = {c for k in groups for c in ((k.lower(), k.upper()) if ignore_case else (k,))}
    first = "".join(sorted(firsts)) + (_FOLD_EXTRA if ignore_case else "")
    body = "|".join(f"(?<={k})(?:{'|'.join(rest)})" for k, rest in groups.items())
    flags = re.IGNORECASE if ignore_case else re.NOFLAG
    return re.compile(rf"(?-i:[{first}])(?<!\w.)(?:{body}){tail}", flags)


class _Hay(NamedTuple):
    """Where a ``_Sieved`` looks for its pieces: the prompt, and its lower case if ASCII."""

    exact: str
    folded: str | None  # None for non-ASCII text, where lower() is not re's case folding


@dataclass(frozen=True)
class _Sieved:
    """A pattern and literal pieces of which every match contains one.

    When no piece occurs in the prompt, the count is zero without a scan (``in`` runs at memchr
    speed, a scan at re's). For a case-insensitive pattern (``folded``) the pieces are lower case
    and are looked for in the lower-cased prompt, which is exact only for ASCII text.
    """

    pattern: re.Pattern[str]
    pieces: tuple[str, ...]
    folded: bool = False

    def count(self, text: str, hay: _Hay) -> int:
        """``len(pattern.findall(text))`` for ``text`` the prompt or a part of it."""
        seen = hay.folded if self.folded else hay.exact
        if seen is not None and not any(map(seen.__contains__, self.pieces)):
            return 0
        return len(self.pattern.findall(text))


def _words(words: Sequence[str], tail: str, pieces: Sequence[str] = ()) -> _Sieved:
    """``_keywords`` case-insensitively, sieved by each word's literal head (or ``pieces``)."""
    heads = pieces or [re.split(r"[\[(\\]", w)[0].lower() for w in words]
    return _Sieved(_keywords(words, tail), tuple(heads), folded=True)


_log = math.log1p  # as a name, not a wrapper: one Python call fewer per feature
_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
# [=+\-*/^<>≤≥∑∫√π]|\\(?:frac|sum|int|sqrt|cdot|le|ge)|\$ with one leading class
_MATH = _Sieved(
    re.compile(r"[=+\-*/^<>≤≥∑∫√π$\\](?:(?<=\\)(?:frac|sum|int|sqrt|cdot|le|ge)|(?<!\\))"),
    tuple("=+-*/^<>≤≥∑∫√π$\\"),
)
# ```|\bdef \w+\(|\bclass \w+|\breturn\b|\bimport \w+|#include|\bfunction\b|=>|;\s*$|\{\s*$
_CODE = _Sieved(
    re.compile(
        r"```|d(?<!\wd)ef \w+\(|c(?<!\wc)lass \w+|r(?<!\wr)eturn\b|i(?<!\wi)mport \w+|#include"
        r"|f(?<!\wf)unction\b|=>|;\s*$|\{\s*$",
        re.MULTILINE,
    ),
    ("```", "def ", "class ", "return", "import ", "#include", "function", "=>", ";", "{"),
)
# The line-anchored patterns run on "\n" + prompt and start with that newline instead of ^. Where
# the plain form starts with \s* (which spans blank lines, and is quadratic on runs of them), only
# a line's first non-blank character can start a match, so the rewrite skips horizontal blanks.
# ^\s*(?:[-*•]|\d+[.)]|\(?[a-zA-Z][.)])\s+ : the trailing blanks are consumed as the plain form
# consumes them, except a last newline, which starts the next line's match.
_LIST_ITEM = re.compile(
    r"\n[^\S\n]*+(?:[-*•]|\d+[.)]|\(?[a-zA-Z][.)])(?=\s)\s*?(?=\n?(?:\S|\Z))"
)
# ^\s*\(?[A-J][.)]\s+\S
_CHOICE = re.compile(r"\n[^\S\n]*+\(?[A-J][.)]\s++\S")
# ^(?:system|user|assistant|human|ai)\s*:
_TURN = _Sieved(re.compile(r"\n(?:system|user|assistant|human|ai)\s*:", re.IGNORECASE), (":",))
# ^\(?[A-J][.)]\s+(.*)$
_CHOICE_LINE = re.compile(r"\n\(?[A-J][.)]\s+(.*)$", re.MULTILINE)
_WH = _words(("what", "why", "how", "which", "who", "whom", "whose", "when", "where"), r"\b")
_REASON = _words((
    "prove", "derive", "explain", "justify", "analy[sz]e", "compare", "evaluate", "calculate",
    "compute", "solve", "step[- ]by[- ]step", "reason", "implement", "design", "optimi[sz]e",
    "debug", "refactor",
), r"\w*")
_CONSTRAINT = _words((
    "must", "exactly", "at least", "at most", "without", "only", "never", "always", "do not",
    "don't", "ensure",
), r"\b")
_URL = re.compile(r"https?://")
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
_NEGATION = _words(("not", "except", "false", "incorrect", "least", "never"), r"\b")
_CAPS = ("NOT", "EXCEPT", "LEAST", "FALSE")
_NEGATION_CAPS = _Sieved(_keywords(_CAPS, r"\b", ignore_case=False), _CAPS)
# Statement \d|\bI+\.|\bI+ only\b|\bI and II\b
_STATEMENTS = _Sieved(
    re.compile(r"Statement \d|I(?<!\wI)(?:I*\.|I* only\b| and II\b)"), ("Statement ", "I")
)
# which of the following, case-insensitive (no other character folds to w)
_WHICH_FOLLOWING = _Sieved(
    re.compile(r"[wW](?i:hich of the following)"), ("which of the following",), folded=True
)
_ABOVE = _words(("all", "none", "both"), r" of the above\b", ("of the above",))

HAND_FEATURE_NAMES: tuple[str, ...] = (
    "log_tokens", "log_chars", "log_words", "log_lines", "mean_word_len", "log_words_per_sentence",
    "frac_digit", "frac_upper", "frac_punct", "frac_non_ascii", "log_numbers", "log_math_symbols",
    "log_code_markers", "log_list_items", "log_choices", "log_turns", "log_question_marks",
    "log_wh_words", "log_reasoning_verbs", "log_constraints", "has_url", "ends_with_question",
    # structure of multiple-choice prompts (zero elsewhere): a question stem and its options
    "log_stem_chars", "log_mean_choice_chars", "log_max_choice_chars", "choice_len_spread",
    "frac_numeric_choices", "log_stem_negations", "log_caps_negations", "log_statements",
    "which_of_the_following", "all_none_of_the_above", "log_stem_numbers",
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

    @functools.cached_property
    def word_piece(self) -> AsciiWordPiece | None:
        """The Python twin of ``tokenizer`` for ASCII prompts (built on first use, ~20 ms)."""
        return AsciiWordPiece.from_tokenizer(self.tokenizer)


def _is_punct(c: str) -> bool:
    return not c.isalnum() and not c.isspace()


def _is_word(c: str) -> bool:
    return c.isalnum() or c == "_"  # what re's \w matches


def _keep_ascii(keep: Callable[[str], bool]) -> bytes:
    """``bytes.translate``'s delete argument that keeps only the ASCII bytes ``keep`` accepts."""
    return bytes(b for b in range(256) if not (b < 128 and keep(chr(b))))


#: delete arguments keeping the ASCII digits, upper-case letters, punctuation and word characters
_ASCII_KEEPS = tuple(map(_keep_ascii, (str.isdigit, str.isupper, _is_punct, _is_word)))
_DROP_ASCII = bytes(range(128))
#: ``bytes.translate`` tables marking word bytes ``a`` and the others a blank: a word then starts
#: at each ``" a"``. UTF-8 bytes of non-ASCII characters are all >= 128 and get one mark.
_MARK_HIGH_BLANK = bytes(ord("a" if b < 128 and _is_word(chr(b)) else " ") for b in range(256))
_MARK_HIGH_WORD = bytes(ord("a" if b >= 128 or _is_word(chr(b)) else " ") for b in range(256))


class _CharCounts(NamedTuple):
    digits: int
    upper: int
    punct: int
    non_ascii: int
    word_chars: int
    words: int


def _char_counts(prompt: str) -> _CharCounts:
    """Per-character class counts and the number of ``\\w+`` runs, in C loops over UTF-8 bytes.

    ASCII characters are counted by deleting the other bytes, distinct non-ASCII ones one by one.
    """
    raw = prompt.encode("utf-8", "surrogatepass")
    digits, upper, punct, word_chars = [len(raw.translate(None, keep)) for keep in _ASCII_KEEPS]
    if prompt.isascii():
        marks = raw.translate(_MARK_HIGH_BLANK)
        words = marks.count(b" a") + marks.startswith(b"a")
        return _CharCounts(digits, upper, punct, 0, word_chars, words)
    high = raw.translate(None, _DROP_ASCII).decode("utf-8", "surrogatepass")
    high_words = 0
    for ch, n in Counter(high).items():
        digits += n * ch.isdigit()
        upper += n * ch.isupper()
        punct += n * _is_punct(ch)
        high_words += n * _is_word(ch)
    if high_words in (0, len(high)):  # every non-ASCII character a word character, or none
        marks = raw.translate(_MARK_HIGH_WORD if high_words else _MARK_HIGH_BLANK)
        words = marks.count(b" a") + marks.startswith(b"a")
    else:
        words = len(_WORD.findall(prompt))
    return _CharCounts(digits, upper, punct, len(high), word_chars + high_words, words)


def hand_features(prompt: str, n_tokens: int) -> list[float]:
    """The hand-made structural features of one prompt, in ``HAND_FEATURE_NAMES`` order."""
    n_chars = len(prompt)
    chars = max(n_chars, 1)
    counts = _char_counts(prompt)
    n_words = counts.words
    stripped = prompt.rstrip()
    sentences = max(len(_SENTENCE_END.findall(prompt)), 1)
    lined = "\n" + prompt  # for the line-anchored patterns
    hay = _Hay(prompt, prompt.lower() if prompt.isascii() else None)
    # \d matches a subset of what str.isdigit accepts
    numbers = len(_NUMBER.findall(prompt)) if counts.digits else 0
    return [
        _log(n_tokens),
        _log(n_chars),
        _log(n_words),
        _log(prompt.count("\n") + 1 if prompt else 0),
        min(counts.word_chars / n_words, 30.0) / 10.0 if n_words else 0.0,
        _log(n_words / sentences),
        counts.digits / chars,
        counts.upper / chars,
        counts.punct / chars,
        counts.non_ascii / chars,
        _log(numbers),
        _log(_MATH.count(prompt, hay)),
        _log(_CODE.count(prompt, hay)),
        _log(len(_LIST_ITEM.findall(lined))),
        _log(len(_CHOICE.findall(lined))),
        _log(_TURN.count(lined, hay)),
        _log(prompt.count("?")),
        _log(_WH.count(prompt, hay)),
        _log(_REASON.count(prompt, hay)),
        _log(_CONSTRAINT.count(prompt, hay)),
        1.0 if _URL.search(prompt) else 0.0,
        1.0 if stripped.endswith("?") or stripped.endswith("Answer:") else 0.0,
        *_choice_features(prompt, lined, hay, numbers),
    ]


def _choice_features(prompt: str, lined: str, hay: _Hay, numbers: int) -> list[float]:
    """Multiple-choice structure: the stem before the first option, and the options' shape.

    The stem is part of the prompt, so the prompt's hay also sieves the stem's patterns.
    """
    first = _CHOICE_LINE.search(lined)
    # a match in ``lined`` starts at the newline before its line: at that line's index in prompt
    stem = prompt[: first.start()] if first else prompt
    choices = _CHOICE_LINE.findall(lined, first.start()) if first else []
    lengths = [len(c) for c in choices] or [0]
    mean_len = sum(lengths) / len(lengths)
    spread = (max(lengths) - min(lengths)) / (mean_len + 1.0)
    numeric = sum(any(map(str.isdigit, c)) for c in choices)
    return [
        _log(len(stem)),
        _log(mean_len),
        _log(max(lengths)),
        spread,
        numeric / len(choices) if choices else 0.0,
        _log(_NEGATION.count(stem, hay)),
        _log(_NEGATION_CAPS.count(stem, hay)),
        _log(_STATEMENTS.count(prompt, hay)),
        1.0 if _WHICH_FOLLOWING.count(stem, hay) else 0.0,
        1.0 if _ABOVE.count(prompt, hay) else 0.0,
        _log(len(_NUMBER.findall(stem)) if first and numbers else numbers),
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
