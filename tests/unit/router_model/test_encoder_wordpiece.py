"""``AsciiWordPiece`` gives the Rust tokenizer's ids on any text it covers; it covers only ASCII."""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer
from tokenizers.models import WordPiece

from router_model.encoder import AsciiWordPiece, load_tokenizer, word_piece_ids


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer()


@pytest.fixture(scope="module")
def fast(tokenizer: Any) -> AsciiWordPiece:
    twin = AsciiWordPiece.from_tokenizer(tokenizer)
    assert twin is not None
    return twin


def rust_ids(tokenizer: Any, text: str) -> list[int]:
    ids: list[int] = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids
    return ids


ascii_text = st.text(st.characters(max_codepoint=127), max_size=200)
WORDS = (
    "the", "unbelievably", "tokenization", "x" * 101, "a" * 100, "qzxv", "2024", "3.14", "don't",
    "e-mail", "C++", "##", "[", "]", "[CLS]", "[mask]", "\x00", "\x0b", "\x1f", "\x7f",
)
word_text = st.lists(st.sampled_from(WORDS + tuple(string.whitespace)), max_size=30).map("".join)


@settings(max_examples=500, deadline=None)
@given(st.one_of(ascii_text, word_text))
def test_ids_equal_the_rust_tokenizer(tokenizer: Any, fast: AsciiWordPiece, text: str) -> None:
    ids = fast.ids(text)
    if "[" in text:
        assert ids is None  # added tokens such as [CLS] are the Rust tokenizer's to match
    else:
        assert ids == rust_ids(tokenizer, text)


def test_non_ascii_is_not_covered(fast: AsciiWordPiece) -> None:
    for text in ("café", "naïve", "😀", "\ud800", "中文"):
        assert fast.ids(text) is None


def test_mixed_batch_equals_the_rust_batch(tokenizer: Any, fast: AsciiWordPiece) -> None:
    texts = ["What is 2 + 2?", "café au lait", "", "[CLS] hi", "\ud800 lone", "x" * 300]
    assert word_piece_ids(tokenizer, texts, fast) == word_piece_ids(tokenizer, texts)


@dataclass
class _Wrapped:
    backend_tokenizer: Tokenizer


def test_other_pipelines_get_no_twin() -> None:
    plain = Tokenizer(WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    assert AsciiWordPiece.from_tokenizer(_Wrapped(plain)) is None
