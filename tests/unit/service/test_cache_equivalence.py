"""The semantic cache's equivalence check and canonical form: each rule on a pair it must split."""

from __future__ import annotations

import pytest

from service.gateway.levers.cache.equivalence import REASONS, canonical, mismatch

MCQ = ("Find the order of the group Z_3 x Z_3.\nA. 3\nB. 6\nC. 9\nD. 12\nAnswer:")


@pytest.mark.parametrize(("stored", "asked", "reason"), [
    # the options, and their order (the letter of an answer depends on it)
    (MCQ, MCQ.replace("A. 3\nB. 6", "A. 6\nB. 3"), "options"),
    (MCQ, MCQ.replace("D. 12", "D. 27"), "options"),
    ("What does `len(x)` return?", "What does `len(y)` return?", "code"),
    ('Translate "good morning" to French.', 'Translate "good night" to French.', "quoted"),
    ("Find the order of Z_3 x 3Z.", "Find the order of Z_3 x Z_3.", "numbers"),
    ("Simplify a+b*c.", "Simplify a*b+c.", "math"),
    ("Solve $x^2 = 4$ for x.", "Solve $x^2 = 9$ for x.", "math"),
    ("Convert 5 km to miles.", "Convert 5 kg to miles.", "numbers"),
    ("Convert 5 km to miles.", "Convert 6 km to miles.", "numbers"),
    ("Name three rivers in Europe.", "Name four rivers in Europe.", "numbers"),
    ("What is the capital of France?", "What is the capital of Italy?", "entities"),
    ("Which of these is a prime?", "Which of these is not a prime?", "negation"),
    ("Which planet is the largest?", "Which planet is the least dense?", "negation"),
    ("Thank you for your patience.", "Thank you for your order.", "wording"),
    ("Why is the sky blue?", "Why is the sea blue?", "wording"),
])
def test_a_difference_that_changes_the_question_is_a_mismatch(
    stored: str, asked: str, reason: str
) -> None:
    assert reason in REASONS
    assert mismatch(stored, asked) == reason
    assert mismatch(asked, stored) is not None  # symmetric: neither serves the other


@pytest.mark.parametrize(("stored", "asked"), [
    ("What is the capital of France?", "What's the capital of France?"),
    ("Prove that there are infinitely many primes, then derive the prime number theorem.",
     "Prove there are infinitely many primes and then derive the prime number theorem."),
    ("Summarise the following text for me.", "Please summarise the following text."),
    (MCQ, MCQ + "  "),
    # dollar amounts are not a TeX span ("$100 to the firm and $")
    ("The firm paid $100 to the bank and $35 in fees. Why?",
     "The firm paid $100 to the bank, and $35 in fees. Why?"),
])
def test_the_same_question_reworded_passes(stored: str, asked: str) -> None:
    assert mismatch(stored, asked) is None


def test_canonical_form_meets_reformatted_repeats() -> None:
    reformatted = MCQ.removesuffix("Answer:").lower()
    for letter in "abcd":
        reformatted = reformatted.replace(f"\n{letter}. ", f"\n({letter}) ")
    assert canonical(reformatted) == canonical(MCQ)
    assert canonical("  What   is 2+2?\r\n\r\n") == canonical("what is 2+2?")
    assert canonical("A) one\nB) two") == canonical("a. one\nb. two")


def test_canonical_form_keeps_what_carries_meaning() -> None:
    # letter case inside code and quoted spans, options' order, the numbers
    assert canonical("What does `Foo()` return?") != canonical("What does `foo()` return?")
    assert canonical('Spell "NASA" backwards.') != canonical('Spell "nasa" backwards.')
    assert canonical("Q\nA. x\nB. y") != canonical("Q\nA. y\nB. x")
    assert canonical("What is 2+2?") != canonical("What is 2+3?")
    # indentation outside a code fence may be code: no canonical form (exact layer only)
    assert canonical("What prints?\nfor i in x:\n    print(i)") is None
    assert canonical("What prints?\n```\nfor i in x:\n    print(i)\n```") is not None
