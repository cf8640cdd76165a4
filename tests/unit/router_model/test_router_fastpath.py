"""The single-prompt hand-feature path decides exactly as the one-row ``featurize`` path.

``ComplexityRouter.route`` on a hand-feature bundle counts word pieces without building ids
(``AsciiWordPiece.count``), builds the row without numpy (``hand_row``) and runs the classifier
through an IOBinding; the path it short-cuts runs ``featurize`` and ``session.run`` on a one-row
matrix. Both must give the same token counts, rows and probabilities, bit for bit. (Rows scored
in a larger batch may differ in the last bits: onnxruntime's kernels depend on the batch size.)
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router_model.encoder import AsciiWordPiece, load_tokenizer, word_piece_count, word_piece_ids
from router_model.features import Featurizer, featurize, hand_row
from router_model.policy import Policy
from router_model.router import ComplexityRouter

REPO = Path(__file__).resolve().parents[3]
GOLDEN = REPO / "data" / "fixtures" / "golden_prompts.json"
ROWS = REPO / "data" / "fixtures" / "routellm_small.jsonl"


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer()


@pytest.fixture(scope="module")
def featurizer(tokenizer: Any) -> Featurizer:
    return Featurizer("hand", tokenizer)


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    golden = [p["prompt"] for p in json.loads(GOLDEN.read_text("utf-8"))]
    with ROWS.open(encoding="utf-8") as f:
        rows = [json.loads(line)["prompt"] for line in f]
    extra = ["héllo wörld?", "x [CLS] y", "1+1=2; def f(x):\n  return x", "\t", "ＡＢＣ １２３"]
    return [*golden, *rows[:150], *extra]


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
def test_count_is_the_number_of_ids(tokenizer: Any, text: str) -> None:
    fast = AsciiWordPiece.from_tokenizer(tokenizer)
    assert fast is not None
    ids = fast.ids(text)
    assert fast.count(text) == (None if ids is None else len(ids))
    assert word_piece_count(tokenizer, text, fast) == len(word_piece_ids(tokenizer, [text])[0])


def test_hand_row_is_featurize_row(featurizer: Featurizer, prompts: list[str]) -> None:
    feats = featurize(prompts, featurizer)
    for prompt, matrix_row, n_tokens in zip(prompts, feats.matrix, feats.n_tokens, strict=True):
        row, count = hand_row(prompt, featurizer)
        assert count == n_tokens
        assert np.array_equal(np.array(row, dtype=np.float32), matrix_row), prompt


def test_single_prompt_path_equals_session_run(fast_bundle: Path, prompts: list[str]) -> None:
    router = ComplexityRouter.from_artifact(fast_bundle)
    for text in (p for p in prompts if p.strip()):
        feats = featurize([text], router.featurizer)
        # the one-row path it short-cuts: featurize, then session.run on a (1, n) matrix
        expected = router.proba_from_features(feats.matrix)[0].tolist()
        for policy in (None, Policy(quality=0.3)):
            decision = router.route(text, policy=policy)
            assert list(decision.probabilities.values()) == expected, text
            assert decision.input_tokens == feats.n_tokens[0]
            assert router.route_batch([text], [policy]) == [decision]


def test_concurrent_single_prompts_decide_as_sequential(fast_bundle: Path,
                                                        prompts: list[str]) -> None:
    # threads that find the binding busy score through session.run: same decisions
    router = ComplexityRouter.from_artifact(fast_bundle)
    texts = [p for p in prompts if p.strip()] * 4
    sequential = [router.route(t) for t in texts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(router.route, texts)) == sequential
