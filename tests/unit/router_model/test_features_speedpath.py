"""The fast hand features equal the plain implementation they replaced, on any text.

``reference_hand_features`` below is the original, straightforward implementation (kept here, not
in product code): one generator pass per character class and the regexes in their plain form. The
fast one must give identical values (the shipped bundles were trained on them), in linear time.
"""

from __future__ import annotations

import math
import re
import sys
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from router_model import features
from router_model.features import HAND_FEATURE_NAMES, hand_features

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


def _log(x: float) -> float:
    return math.log1p(x)


def reference_hand_features(prompt: str, n_tokens: int) -> list[float]:
    """The original implementation (FEATURE_VERSION 1), verbatim."""
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
        *_reference_choice_features(prompt),
    ]


def _reference_choice_features(prompt: str) -> list[float]:
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


def assert_same(prompt: str) -> None:
    fast, ref = hand_features(prompt, 7), reference_hand_features(prompt, 7)
    assert len(fast) == len(HAND_FEATURE_NAMES)
    diff = {n: (f, r) for n, f, r in zip(HAND_FEATURE_NAMES, fast, ref, strict=True) if f != r}
    assert not diff, f"{prompt!r}: {diff}"


# -- text that exercises every feature: fragments the patterns look for, glued at random ---------

FRAGMENTS = (
    "\n", "\n\n", " ", "  ", "\t", "\r\n", "\x0b", "\x1c", "\x85", "\u2028", "\xa0", "A", "B", "J",
    "K", "a", "z", "I", "II", "(", ")", ".", ". ", ")", "-", "*", "•", "1", "12", "3.5", "1,000",
    "٣", "²", "_", ";", "{", "}", "$", "\\", "\\frac", "\\le", "=", "=>", "<", "π", "√", "?", "!",
    ":", "'", "```", "#include", "def f(", "class X", "return", "import os", "function", "what",
    "Which", "WHOM", "whose", "how", "prove", "Derive", "analyse", "step-by-step", "step by step",
    "reasoning", "optimize", "must", "at least", "AT MOST", "don't", "do not", "never", "only",
    "not", "NOT", "EXCEPT", "least", "LEAST", "false", "FALSE", "incorrect", "Statement 1",
    "I and II", "I only", "which of the following", "All of the above", "none of the above",
    "both of the above", "http://", "https://x", "Answer:", "system:", "User :", "assistant\n:",
    "human", "AI:", "A. ", "B) ", "(C) ", "J. x", "1. ", "2) ", "a) ", "- ", "* ", "• ",
    "\u0130", "\u0131", "\u017f", "\u212a", "é", "É", "ß", "—", "’", "😀", "中", "\ud800", "\udfff",
    "\x00", "ǅ", "Ⅳ", "ⓐ",
)
fragment_text = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)
TURN_FRAGMENTS = ("\n", " ", "\t", "ai", "User", ":", "x", "A.", "B)")
#: short texts dense in line structure, where the line-anchored rewrites differ if they are wrong
structure_text = st.one_of(
    st.text(st.sampled_from("\n \t-1.)(a"), max_size=10),
    st.text(st.sampled_from("\n \tA.)(x"), max_size=10),
    st.text(st.sampled_from("\n \r\x0b-*•1.)(aAJxI:;{"), max_size=24),
    st.lists(st.sampled_from(TURN_FRAGMENTS), max_size=8).map("".join),
)
surrogate = st.integers(0xD800, 0xDFFF).map(chr)
any_text = st.text(st.one_of(st.characters(), surrogate, st.sampled_from("\n AIs.-(")))


@settings(max_examples=600, deadline=None)
@given(fragment_text)
def test_equal_on_feature_rich_text(prompt: str) -> None:
    assert_same(prompt)


@settings(max_examples=2000, deadline=None)
@given(structure_text)
def test_equal_on_dense_line_structure(prompt: str) -> None:
    assert_same(prompt)


@settings(max_examples=400, deadline=None)
@given(any_text)
def test_equal_on_arbitrary_unicode(prompt: str) -> None:
    assert_same(prompt)


@settings(max_examples=200, deadline=None)
@given(st.text(st.sampled_from(" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u2028\u3000")))
def test_equal_on_whitespace_only(prompt: str) -> None:
    assert_same(prompt)


def test_equal_on_edge_cases() -> None:
    for prompt in (
        "", " ", "\n", "\x00\ud800", "😀" * 5000, "a" * 100_000, "Which one?\n" * 3000,
        "A. yes\nB. no\n" * 500 + "Answer:", "\ud83d\ude00 paired surrogates", "\udfff" * 10,
        "x\n\n\n- item\n\n  (b) second\nA.\nB. swallowed", "é—", "é a", "— a", "-\n -\r",
        "-\n\n- a", "1.\n \n2. b", "a) \n", "A.\n\n  B. c\nC) d",
        " ai: x", "x\n\tuser :\n", "AI\n\n: y",
        # re folds these to ASCII letters, str.lower() does not: "which", "solve", "at least"
        "WH\u0130CH one?", "\u017folve it", "at lea\u017ft", "wh\u0131ch of the followıng",
    ):
        assert_same(prompt)


def test_fold_extra_lists_every_other_character_folding_to_ascii_letters() -> None:
    everything = "".join(map(chr, range(sys.maxunicode + 1)))
    folding = {c for c in re.findall("[a-z]", everything, re.IGNORECASE) if not c.isascii()}
    assert folding == set(features._FOLD_EXTRA)


def test_blank_lines_take_linear_time() -> None:
    # the plain ^\s* patterns retry every blank line to the end of the run: quadratic
    start = time.perf_counter()
    for prompt in ("\n" * 200_000, " \n" * 100_000 + "x", "A.\n" + "\n \t" * 50_000):
        hand_features(prompt, 1)
    assert time.perf_counter() - start < 1.0
