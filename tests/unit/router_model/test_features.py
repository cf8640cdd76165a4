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
HAND = np.array(
    [
        [
            4.41884,
            5.86930,
            4.04305,
            1.94591,
            0.51071,
            2.07944,
            0.00000,
            0.01700,
            0.03399,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            1.60944,
            1.60944,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            1.00000,
            4.61512,
            4.06903,
            4.45435,
            0.90598,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
        ],
        [
            4.17439,
            5.63835,
            3.98898,
            0.69315,
            0.41698,
            2.65676,
            0.01071,
            0.01429,
            0.02857,
            0.00357,
            1.09861,
            0.69315,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.69315,
            0.69315,
            0.00000,
            0.00000,
            0.00000,
            1.00000,
            5.63835,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            1.09861,
        ],
        [
            4.80402,
            5.85507,
            4.04305,
            2.56495,
            0.39286,
            4.04305,
            0.06322,
            0.01437,
            0.16667,
            0.00000,
            2.48491,
            2.19722,
            1.09861,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            5.85507,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.69315,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            2.48491,
        ],
        [
            5.81114,
            7.29573,
            5.62402,
            2.94444,
            0.41377,
            2.74254,
            0.00747,
            0.01290,
            0.03055,
            0.00000,
            2.48491,
            1.79176,
            0.00000,
            2.63906,
            0.00000,
            0.00000,
            0.69315,
            2.77259,
            0.00000,
            0.00000,
            0.00000,
            1.00000,
            7.29573,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.69315,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            2.48491,
        ],
        [
            3.93183,
            5.20949,
            3.61092,
            1.09861,
            0.37778,
            2.56495,
            0.04396,
            0.02747,
            0.07692,
            0.00000,
            1.60944,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.69315,
            0.00000,
            0.00000,
            0.00000,
            5.20949,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            0.00000,
            1.60944,
        ],
    ]
)
EMB_HEAD = np.array(
    [
        [0.00955, 0.02494, 0.01654, 0.03407, -0.07815, 0.05684, 0.00201, 0.05304],
        [0.10198, 0.07371, 0.02353, 0.03701, -0.01160, -0.01041, 0.05364, -0.01155],
        [0.04091, 0.03597, -0.01546, -0.05733, 0.05399, -0.06304, 0.11746, -0.02952],
        [0.00634, 0.00848, 0.03273, -0.01425, -0.06844, 0.04100, 0.09532, -0.07111],
        [0.09054, 0.06679, -0.05063, -0.04780, -0.04143, 0.12667, -0.06541, 0.02681],
    ]
)


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
    np.testing.assert_allclose(
        matrix[:, len(HAND_FEATURE_NAMES) : len(HAND_FEATURE_NAMES) + 8], EMB_HEAD, atol=2e-3
    )
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
