"""Hand-made structural features of a prompt: counts of characters, words and patterns.

``router_model.features`` assembles these with the embedding into the one feature vector; this
module owns only the per-prompt hand features (values pinned by ``FEATURE_VERSION`` there).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


#: Where a ``_Sieved`` looks for its pieces: the prompt, and the lower case of "\n" + prompt if
#: ASCII (None for non-ASCII text, where lower() is not re's case folding). A plain tuple indexed
#: by ``_Sieved.folded`` (0 or 1): building a NamedTuple costs a Python-level ``__new__`` call.
#: The newline lets a line-anchored pattern's pieces start with it; no other piece has one.
_Hay = tuple[str, str | None]


@dataclass(frozen=True)
class _Sieved:
    """A pattern and literal pieces of which every match contains one.

    When no piece occurs in the prompt, the count is zero without a scan (``in`` runs at memchr
    speed, a scan at re's). For a case-insensitive pattern (``folded``) the pieces are lower case
    and are looked for in the lower-cased prompt (see ``_Hay``), which is exact only for ASCII text.
    """

    pattern: re.Pattern[str]
    pieces: tuple[str, ...]
    folded: bool = False

    def count(self, text: str, hay: _Hay) -> int:
        """``len(pattern.findall(text))`` for ``text`` the prompt or a part of it."""
        seen = hay[self.folded]
        if seen is not None:
            # a plain loop: ``in`` is one bytecode here, ~3x cheaper a piece than any(map(...))
            for piece in self.pieces:
                if piece in seen:
                    break
            else:
                return 0
        return len(self.pattern.findall(text))


def _words(words: Sequence[str], tail: str, pieces: Sequence[str] = ()) -> _Sieved:
    """``_keywords`` case-insensitively, sieved by each word's literal head (or ``pieces``)."""
    heads = pieces or [re.split(r"[\[(\\]", w)[0].lower() for w in words]
    return _Sieved(_keywords(words, tail), tuple(heads), folded=True)


_log = math.log1p  # as a name, not a wrapper: one Python call fewer per feature
_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
# the same on ASCII text, where \d is [0-9]: a range test, ~20% faster than \d's Unicode lookup
_ASCII_NUMBER = re.compile(r"[0-9]+(?:[.,][0-9]+)?")
_ASCII_DIGITS = frozenset("0123456789")
# [=+\-*/^<>≤≥∑∫√π]|\\(?:frac|sum|int|sqrt|cdot|le|ge)|\$ with one leading class; not sieved:
# re scans for a class of single characters as fast as ``in`` looks for each of them
_MATH = re.compile(r"[=+\-*/^<>≤≥∑∫√π$\\](?:(?<=\\)(?:frac|sum|int|sqrt|cdot|le|ge)|(?<!\\))")
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
_TURN_WORDS = ("system", "user", "assistant", "human", "ai")
_TURN = _Sieved(
    re.compile(rf"\n(?:{'|'.join(_TURN_WORDS)})\s*:", re.IGNORECASE),
    tuple("\n" + w for w in _TURN_WORDS),  # rarer than ":" (in every "Answer:")
    folded=True,
)
# ^\(?[A-J][.)]\s+(.*)$
_CHOICE_LINE = re.compile(r"\n\(?[A-J][.)]\s+(.*)$", re.MULTILINE)
# sieved by two pieces, not nine: in MMLU prompts "wh" is barely more common than the words
_WH = _words(
    ("what", "why", "how", "which", "who", "whom", "whose", "when", "where"), r"\b", ("wh", "how")
)
_REASON = _words((
    "prove", "derive", "explain", "justify", "analy[sz]e", "compare", "evaluate", "calculate",
    "compute", "solve", "step[- ]by[- ]step", "reason", "implement", "design", "optimi[sz]e",
    "debug", "refactor",
), r"\w*")
_CONSTRAINT = _words((
    "must", "exactly", "at least", "at most", "without", "only", "never", "always", "do not",
    "don't", "ensure",
), r"\b")
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
_NEGATION = _words(("not", "except", "false", "incorrect", "least", "never"), r"\b")
_CAPS = ("NOT", "EXCEPT", "LEAST", "FALSE")
_NEGATION_CAPS = _Sieved(_keywords(_CAPS, r"\b", ignore_case=False), _CAPS)
# Statement \d|\bI+\.|\bI+ only\b|\bI and II\b
_STATEMENTS = _Sieved(
    re.compile(r"Statement \d|I(?<!\wI)(?:I*\.|I* only\b| and II\b)"),
    ("Statement ", "I.", "I only", "I and II"),  # not "I": in many a prompt, and ~always in lists
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


def _is_punct(c: str) -> bool:
    return not c.isalnum() and not c.isspace()


def _is_word(c: str) -> bool:
    return c.isalnum() or c == "_"  # what re's \w matches


def _keep_ascii(keep: Callable[[str], bool]) -> bytes:
    """``bytes.translate``'s delete argument that keeps only the ASCII bytes ``keep`` accepts."""
    return bytes(b for b in range(256) if not (b < 128 and keep(chr(b))))


#: delete arguments keeping the ASCII digits, upper-case letters, punctuation and word characters
_ASCII_KEEPS = tuple(map(_keep_ascii, (str.isdigit, str.isupper, _is_punct, _is_word)))


def _ascii_class(c: str) -> str:
    """d digit, u upper case, _ (a word character and punctuation), w another word character,
    e a sentence end (.!?, punctuation), p other punctuation, a blank for the rest (white space,
    exactly what re's \\s matches)."""
    if c == "_":
        return "_"
    if c in ".!?":
        return "e"
    for mark, test in (("d", str.isdigit), ("u", str.isupper), ("w", _is_word), ("p", _is_punct)):
        if test(c):
            return mark
    return " "


#: ``bytes.translate`` table classing ASCII bytes (one pass, then a count per class)
_ASCII_CLASSES = bytes(ord(_ascii_class(chr(b))) if b < 128 else ord(" ") for b in range(256))
#: the classes of word characters marked ``a``, the others a blank (see ``_MARK_HIGH_BLANK``)
_MARK_CLASSES = bytes(ord("a" if chr(b) in "duw_" else " ") for b in range(256))
_DROP_ASCII = bytes(range(128))
#: ``bytes.translate`` tables marking word bytes ``a`` and the others a blank: a word then starts
#: at each ``" a"``. UTF-8 bytes of non-ASCII characters are all >= 128 and get one mark.
_MARK_HIGH_BLANK = bytes(ord("a" if b < 128 and _is_word(chr(b)) else " ") for b in range(256))
_MARK_HIGH_WORD = bytes(ord("a" if b >= 128 or _is_word(chr(b)) else " ") for b in range(256))


#: digits, upper, punct, non_ascii, word_chars, words, sentence_ends: a plain tuple, as building
#: a NamedTuple costs a Python-level ``__new__`` call
_CharCounts = tuple[int, int, int, int, int, int, int]


def _char_counts(prompt: str) -> _CharCounts:
    """Per-character class counts and the number of ``\\w+`` runs, in C loops over UTF-8 bytes.

    ASCII characters are counted by deleting the other bytes, distinct non-ASCII ones one by one.
    For ASCII text also the sentence ends ``[.!?](?:\\s|$)``: an "e" before a blank or at the end
    (``$`` also matches before a last newline, a blank there anyway).
    """
    raw = prompt.encode("utf-8", "surrogatepass")
    if prompt.isascii():  # one translate into classes, then C counts
        classes = raw.translate(_ASCII_CLASSES)
        underscores, punct = classes.count(b"_"), classes.count(b"p") + classes.count(b"e")
        marks = classes.translate(_MARK_CLASSES)
        return (
            classes.count(b"d"), classes.count(b"u"), punct + underscores, 0,
            len(classes) - punct - classes.count(b" "), marks.count(b" a") + marks.startswith(b"a"),
            classes.count(b"e ") + classes.endswith(b"e"),
        )
    digits, upper, punct, word_chars = [len(raw.translate(None, keep)) for keep in _ASCII_KEEPS]
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
    ends = len(_SENTENCE_END.findall(prompt))
    return digits, upper, punct, len(high), word_chars + high_words, words, ends


def hand_features(prompt: str, n_tokens: int) -> list[float]:
    """The hand-made structural features of one prompt, in ``HAND_FEATURE_NAMES`` order."""
    n_chars = len(prompt)
    chars = max(n_chars, 1)
    digits, upper, punct, non_ascii, word_chars, n_words, sentence_ends = _char_counts(prompt)
    stripped = prompt.rstrip()
    sentences = max(sentence_ends, 1)
    lined = "\n" + prompt  # for the line-anchored patterns
    ascii_text = prompt.isascii()
    hay = (prompt, lined.lower() if ascii_text else None)
    number = _ASCII_NUMBER if ascii_text else _NUMBER
    # \d matches a subset of what str.isdigit accepts
    numbers = len(number.findall(prompt)) if digits else 0
    return [
        _log(n_tokens),
        _log(n_chars),
        _log(n_words),
        _log(prompt.count("\n") + 1 if prompt else 0),
        min(word_chars / n_words, 30.0) / 10.0 if n_words else 0.0,
        _log(n_words / sentences),
        digits / chars,
        upper / chars,
        punct / chars,
        non_ascii / chars,
        _log(numbers),
        _log(len(_MATH.findall(prompt))),
        _log(_CODE.count(prompt, hay)),
        _log(len(_LIST_ITEM.findall(lined))),
        _log(len(_CHOICE.findall(lined))),
        _log(_TURN.count(lined, hay)),
        _log(prompt.count("?")),
        _log(_WH.count(prompt, hay)),
        _log(_REASON.count(prompt, hay)),
        _log(_CONSTRAINT.count(prompt, hay)),
        1.0 if "http://" in prompt or "https://" in prompt else 0.0,  # https?:// without re
        1.0 if stripped.endswith(("?", "Answer:")) else 0.0,
        *_choice_features(prompt, lined, hay, number, numbers, digits),
    ]


def _choice_features(
    prompt: str, lined: str, hay: _Hay, number: re.Pattern[str], numbers: int, digits: int
) -> list[float]:
    """Multiple-choice structure: the stem before the first option, and the options' shape.

    The stem is part of the prompt, so the prompt's hay also sieves the stem's patterns.
    """
    first = _CHOICE_LINE.search(lined)
    if first:
        # a match in ``lined`` starts at the newline before its line: at that line's index in
        # prompt; the first match is the first choice, so there is at least one
        start = first.start()
        stem = prompt[:start]
        choices = _CHOICE_LINE.findall(lined, start)
        lengths = list(map(len, choices))
        mean_len = sum(lengths) / len(lengths)
        longest = max(lengths)
        spread = (longest - min(lengths)) / (mean_len + 1.0)
        # each choice is part of the prompt: without a digit there, no choice has one
        if not digits:
            numeric = 0
        elif hay[1] is not None:  # ASCII, where str.isdigit accepts exactly 0-9
            numeric = len(choices) - sum(map(_ASCII_DIGITS.isdisjoint, choices))  # C loops
        else:
            numeric = sum(any(map(str.isdigit, c)) for c in choices)
        share = numeric / len(choices)
        stem_numbers = len(number.findall(stem)) if numbers else 0
    else:  # what one empty choice list gives (lengths [0]), without the arithmetic
        stem, mean_len, longest, spread, share, stem_numbers = prompt, 0.0, 0, 0.0, 0.0, numbers
    negations = _NEGATION.count(stem, hay)
    return [
        _log(len(stem)),
        _log(mean_len),
        _log(longest),
        spread,
        share,
        _log(negations),
        # a match of the caps pattern is one of the case-insensitive one: none there, none here
        _log(_NEGATION_CAPS.count(stem, hay) if negations else 0),
        _log(_STATEMENTS.count(prompt, hay)),
        1.0 if _WHICH_FOLLOWING.count(stem, hay) else 0.0,
        1.0 if _ABOVE.count(prompt, hay) else 0.0,
        _log(stem_numbers),
    ]
