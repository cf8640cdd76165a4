"""Golden vectors pin the feature extractor: any change in values must bump FEATURE_VERSION."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from router_model.encoder import SentenceEncoder, load_tokenizer
from router_model.features import (
    FEATURE_VERSION,
    HAND_FEATURE_NAMES,
    Featurizer,
    extract_features,
    feature_names,
    featurize,
)

GOLDEN = Path(__file__).resolve().parents[3] / "data" / "fixtures" / "golden_prompts.json"
N_TOKENS = [82, 64, 121, 333, 50]
HAND = np.array([
    [4.41884, 5.86930, 4.04305, 1.94591, 0.51071, 2.07944, 0.00000, 0.01700, 0.03399, 0.00000, 0.00000, 0.00000, 0.00000, 1.60944, 1.60944, 0.00000, 0.00000, 0.00000, 0.00000, 0.00000, 0.00000, 1.00000],
    [4.17439, 5.63836, 3.98898, 0.69315, 0.41698, 2.65676, 0.01071, 0.01429, 0.02857, 0.00357, 1.09861, 0.69315, 0.00000, 0.00000, 0.00000, 0.00000, 0.69315, 0.69315, 0.00000, 0.00000, 0.00000, 1.00000],
    [4.80402, 5.85507, 4.04305, 2.56495, 0.39286, 4.04305, 0.06322, 0.01437, 0.16667, 0.00000, 2.48491, 2.19722, 1.09861, 0.00000, 0.00000, 0.00000, 0.00000, 0.00000, 0.00000, 0.00000, 0.00000, 0.00000],
    [5.81114, 7.29574, 5.62402, 2.94444, 0.41377, 2.74254, 0.00747, 0.01290, 0.03055, 0.00000, 2.48491, 1.79176, 0.00000, 2.63906, 0.00000, 0.00000, 0.69315, 2.77259, 0.00000, 0.00000, 0.00000, 1.00000],
    [3.93183, 5.20949, 3.61092, 1.09861, 0.37778, 2.56495, 0.04396, 0.02747, 0.07692, 0.00000, 1.60944, 0.00000, 0.00000, 0.00000, 0.00000, 0.00000, 0.00000, 0.00000, 0.69315, 0.00000, 0.00000, 0.00000],
])
EMB_HEAD = np.array([
    [0.00950, 0.02490, 0.01650, 0.03410, -0.07820, 0.05680, 0.00200, 0.05300],
    [0.10200, 0.07370, 0.02350, 0.03700, -0.01160, -0.01040, 0.05360, -0.01160],
    [0.04090, 0.03600, -0.01550, -0.05730, 0.05400, -0.06300, 0.11750, -0.02950],
    [0.00630, 0.00850, 0.03270, -0.01420, -0.06840, 0.04100, 0.09530, -0.07110],
    [0.09050, 0.06680, -0.05060, -0.04780, -0.04140, 0.12670, -0.06540, 0.02680],
])


@pytest.fixture(scope="module")
def tokenizer() -> object:
    return load_tokenizer()


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    return [item["prompt"] for item in json.loads(GOLDEN.read_text(encoding="utf-8"))]


def test_version_is_pinned() -> None:
    # the golden values below were produced by FEATURE_VERSION 1
    assert FEATURE_VERSION == 1


def test_hand_features_match_golden(tokenizer: object, prompts: list[str]) -> None:
    feats = featurize(prompts, Featurizer("hand", tokenizer))
    assert feats.n_tokens.tolist() == N_TOKENS
    assert feats.matrix.shape == (5, len(HAND_FEATURE_NAMES))
    np.testing.assert_allclose(feats.matrix, HAND, atol=2e-5)


def test_full_features_match_golden(tokenizer: object, prompts: list[str]) -> None:
    enc = SentenceEncoder.load(tokenizer=tokenizer)
    matrix = extract_features(prompts, Featurizer("full", tokenizer, enc))
    assert matrix.shape == (5, len(feature_names("full")))
    assert matrix.dtype == np.float32
    np.testing.assert_allclose(matrix[:, : len(HAND_FEATURE_NAMES)], HAND, atol=2e-5)
    np.testing.assert_allclose(matrix[:, 22:30], EMB_HEAD, atol=2e-3)
    norms = np.linalg.norm(matrix[:, len(HAND_FEATURE_NAMES) :], axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-4)


def test_deterministic_and_batch_independent(tokenizer: object, prompts: list[str]) -> None:
    enc = SentenceEncoder.load(tokenizer=tokenizer)
    f = Featurizer("full", tokenizer, enc)
    together = extract_features(prompts, f)
    alone = np.vstack([extract_features([p], f) for p in prompts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_full_without_encoder_is_refused(tokenizer: object) -> None:
    with pytest.raises(ValueError, match="encoder"):
        extract_features(["hi"], Featurizer("full", tokenizer))


def test_empty_and_odd_inputs(tokenizer: object) -> None:
    f = Featurizer("hand", tokenizer)
    out = extract_features(["", " ", "\x00\ud800", "😀" * 5000], f)
    assert out.shape == (4, len(HAND_FEATURE_NAMES))
    assert np.isfinite(out).all()
    assert extract_features([], f).shape == (0, len(HAND_FEATURE_NAMES))
