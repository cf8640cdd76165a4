"""The shortcuts in ``hand_features`` for short prompts give the plain implementation's values.

Each strategy aims at one shortcut: sentence ends counted from ASCII classes (every ASCII blank),
the sieves' pieces (``wh``/``how``, the statements' and turns' pieces), the caps negations counted
only after a case-insensitive one, and the share of numeric choices.
"""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st
from test_features_speedpath import assert_same

#: every ASCII character, so that each sentence-end class is met with each neighbour
ascii_text = st.text(st.sampled_from([chr(b) for b in range(128)]), max_size=30)
ASCII_BLANKS = "".join(c for c in map(chr, range(128)) if c.isspace())
sentence_text = st.text(st.sampled_from(".!?a_" + ASCII_BLANKS), max_size=20)
KEYWORDS = (
    "wh", "What", "WHY", "how", "somehow", "while", "whom", "Whose", "not", "NOT", "Not",
    "EXCEPT", "except", "LEAST", "FALSE", "never", "I", "II", "III", "I.", "II.", "I only",
    "I and II", "WWI.", "Statement 2", "Statement", "system", "user", "ai", "AI", ":", " :", "\n",
    " ", "\t", ".", "?",
)
CHOICE_PARTS = ("\nA. ", "\nB) ", "\n(C) ", "\nJ. ", "1", "2.5", "x", "٣", "é", " ", "Answer:")
keyword_text = st.lists(st.sampled_from(KEYWORDS), max_size=20).map("".join)
choice_text = st.lists(st.sampled_from(CHOICE_PARTS + KEYWORDS), max_size=20).map("".join)


@settings(max_examples=1500, deadline=None)
@given(ascii_text)
def test_equal_on_ascii_text(prompt: str) -> None:
    assert_same(prompt)


@settings(max_examples=1000, deadline=None)
@given(sentence_text)
def test_equal_on_sentence_ends(prompt: str) -> None:
    assert_same(prompt)


@settings(max_examples=1000, deadline=None)
@given(keyword_text)
def test_equal_on_sieved_keywords(prompt: str) -> None:
    assert_same(prompt)


@settings(max_examples=1000, deadline=None)
@given(choice_text)
def test_equal_on_choices(prompt: str) -> None:
    assert_same(prompt)


def test_equal_on_every_ascii_pair() -> None:
    # each ASCII character before and after a sentence end, at the end and before a newline
    for c in map(chr, range(128)):
        for end in ".!?":
            for prompt in (c + end, end + c, c + end + "\n", end + c + string.ascii_letters):
                assert_same(prompt)
