"""Whether two user turns ask the same thing, beyond reading alike; and their canonical form.

Pure functions, no I/O. The semantic layer serves a stored answer only when the embeddings are
similar *and* ``mismatch(stored, asked)`` is None: two questions that read alike but differ in a
number, a unit, a quoted string, a code or math span, a named entity, an option (or the options'
order), a negation or any content word are different questions, whatever their cosine. Why so
strict: measured on near-duplicate MMLU questions, no similarity threshold separates "Z_3 x 3Z"
from "Z_3 x Z_3" or a question from itself with its options reordered, and a wrong answer served
with a 200 is worse than a miss (``docs/cache.md``).

``canonical(text)`` is the form under which reformatted repeats of one question meet (the
canonical layer): whitespace collapsed, option markers ``(a)``, ``a)``, ``A:`` written ``A.``,
trailing answer cues ("Answer:") dropped, and letters lowered outside code and quoted spans.
"""

from __future__ import annotations

import re
from collections import Counter

#: Checks in the order they are tried; the first that fails names the miss in ``/metrics``.
REASONS = ("options", "code", "quoted", "numbers", "math", "entities", "negation", "wording")

_FENCE = re.compile(r"```.*?(?:```|$)", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
#: TeX: ``$$…$$``, ``\(…\)``, ``\[…\]`` and ``$…$`` (not a dollar amount: "$100 and $35").
_TEX = re.compile(r"\$\$.+?\$\$|\$(?![\d\s])[^$\n]+?(?<!\s)\$|\\\(.+?\\\)|\\\[.+?\\\]",
                  re.DOTALL)
_QUOTED = re.compile(r"\"[^\"\n]+\"|“[^”\n]+”|(?<!\w)'[^'\n]+'(?!\w)|«[^»\n]+»")
#: A line that opens with an option marker: "A.", "A)", "(a)", "a)", "A:" then the option.
_OPTION = re.compile(r"^[^\S\n]*(?:\(([A-Ja-j])\)|([A-Ja-j])[.):])[^\S\n]+(.*\S)[^\S\n]*$",
                     re.MULTILINE)
_ANSWER_CUE = re.compile(r"(?:\n|^)[^\S\n]*(?:answer|the answer is|correct answer)[^\S\n]*:?"
                         r"[^\S\n]*\Z", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])[-+−]?\d+(?:[.,]\d+)*(?:[^\S\n]*(%|°[CF]?|[A-Za-zµ]+))?")
_INDENTED = re.compile(r"^[^\S\n]+\S", re.MULTILINE)
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
#: A token with digits or math symbols besides letters: "Z_3", "3Z", "x^2", "a+b".
_SYMBOLIC = re.compile(r"\S*(?:[_^=<>+*/\\|×÷√πΣ∑∫≤≥≠]|\d)\S*")
_CAPITAL = re.compile(r"(?<![^\W_])[A-Z][^\W_]*")
#: What comes before a capital that opens a sentence (or a line, or the text).
_OPENER = re.compile(r"(?:^|[.!?:\n])[\s\"'(“]*\Z")
_NUMBER_WORDS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty hundred thousand "
    "million billion first second third fourth fifth sixth seventh eighth ninth tenth half "
    "twice double triple quarter once".split())
_NEGATIONS = frozenset(
    "not no never none nothing nobody neither nor except excluding without least fewest "
    "minimum lowest smallest false incorrect untrue cannot unlikely impossible unless but "
    "only fails worst".split())
#: Words whose presence or absence changes no question: dropped before the wording check.
_STOPWORDS = frozenset(
    "a an the of to in on at for by with from and or is are was were be been being do does "
    "did this that these those it its as into about please i you me my your we our us can "
    "could would should will shall may might must there here following so then than also "
    "just tell give say let s".split())


def _spans(pattern: re.Pattern[str], text: str) -> tuple[str, ...]:
    return tuple(" ".join(m.group(0).split()) for m in pattern.finditer(text))


def _prose(text: str) -> str:
    """The text without code, math and quoted spans (each checked on its own)."""
    for pattern in (_FENCE, _INLINE_CODE, _TEX, _QUOTED):
        text = pattern.sub(" ", text)
    return text


def _options(text: str) -> tuple[str, ...]:
    return tuple(f"{(m.group(1) or m.group(2)).upper()}. {' '.join(m.group(3).lower().split())}"
                 for m in _OPTION.finditer(text))


def _stem(word: str) -> str:
    word = word.lower().replace("n't", " not").replace("'s", "")
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _words(prose: str) -> list[str]:
    return [w for token in _WORD.findall(prose) for w in _stem(token).split()]


def _entities(a: str, b: str) -> bool:
    """Every capitalised word (not opening a sentence) of either text is in the other too."""
    words_a, words_b = set(_words(a)), set(_words(b))
    names = {_stem(m.group(0)) for text in (a, b) for m in _CAPITAL.finditer(text)
             if not _OPENER.search(text, 0, m.start())}
    return all(n in words_a and n in words_b for n in names if " " not in n)


def _content(words: list[str]) -> list[str]:
    return [w for w in words if w not in _STOPWORDS]


def mismatch(stored: str, asked: str) -> str | None:
    """The first check (one of ``REASONS``) on which two user turns differ, None when they ask
    the same thing. Symmetric."""
    if stored == asked:
        return None
    if _options(stored) != _options(asked):
        return "options"
    if _spans(_FENCE, stored) + _spans(_INLINE_CODE, stored) != (
            _spans(_FENCE, asked) + _spans(_INLINE_CODE, asked)):
        return "code"
    if _spans(_QUOTED, stored) != _spans(_QUOTED, asked):
        return "quoted"
    prose_s, prose_a = _prose(stored), _prose(asked)
    words_s, words_a = _words(prose_s), _words(prose_a)
    if _numbers(prose_s, words_s) != _numbers(prose_a, words_a):
        return "numbers"
    if _spans(_TEX, stored) != _spans(_TEX, asked) or _spans(_SYMBOLIC, prose_s) != _spans(
            _SYMBOLIC, prose_a):
        return "math"
    if not _entities(prose_s, prose_a):
        return "entities"
    if Counter(w for w in words_s if w in _NEGATIONS) != Counter(
            w for w in words_a if w in _NEGATIONS):
        return "negation"
    if _content(words_s) != _content(words_a):
        return "wording"
    return None


def _numbers(prose: str, words: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    digits = tuple(" ".join(m.group(0).replace("−", "-").lower().split())
                   for m in _NUMBER.finditer(prose))
    return digits, tuple(w for w in words if w in _NUMBER_WORDS)


def canonical(text: str) -> str | None:
    """The form reformatted repeats of one user turn share (see the module docstring); None for
    a text with indented lines outside code fences (indentation may be meaning: exact only)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip("\n")
    text = text if "\n" in text else text.strip()
    if _INDENTED.search(_FENCE.sub("", text)):
        return None
    text = _OPTION.sub(lambda m: f"{(m.group(1) or m.group(2)).upper()}. {m.group(3)}", text)
    text = _ANSWER_CUE.sub("", text.rstrip())
    kept: list[str] = []

    def keep(m: re.Match[str]) -> str:
        kept.append(m.group(0))
        return f"\x00{len(kept) - 1}\x00"

    for pattern in (_FENCE, _INLINE_CODE, _QUOTED):
        text = pattern.sub(keep, text)
    text = "\n".join(" ".join(line.split()) for line in text.lower().split("\n") if line.strip())
    return re.sub("\x00(\\d+)\x00", lambda m: kept[int(m.group(1))], text)
