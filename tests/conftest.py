"""Shared fixtures: small real bundles trained once per test session from data/fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "data" / "fixtures"
TIERS = REPO / "data" / "tiers"


def _train(tmp: Path, name: str, feature_set: str, data: Path, tiers: Path) -> Path:
    from training.train import main

    code = main(
        [
            "--data",
            str(data),
            "--tiers",
            str(tiers),
            "--name",
            name,
            "--feature-set",
            feature_set,
            "--estimator",
            "logreg",
            "--models-dir",
            str(tmp / "models"),
            "--reports-dir",
            str(tmp / "reports"),
            "--no-register",
            "--no-cache",
        ]
    )
    assert code == 0
    return tmp / "models" / name


@pytest.fixture(scope="session")
def full_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-tier bundle with the full (encoder) feature set, trained on real fixture rows."""
    tmp = tmp_path_factory.mktemp("full_bundle")
    return _train(
        tmp, "tiny_full", "full", FIXTURES / "routellm_small.jsonl", TIERS / "routellm.yaml"
    )


@pytest.fixture(scope="session")
def fast_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-tier bundle on hand-made features only (the fast path), trained on fixture rows."""
    tmp = tmp_path_factory.mktemp("fast_bundle")
    return _train(
        tmp, "tiny_fast", "hand", FIXTURES / "routellm_small.jsonl", TIERS / "routellm.yaml"
    )


@pytest.fixture(scope="session")
def three_tier_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-tier bundle (MMLU-Pro tiers) trained on real fixture rows."""
    tmp = tmp_path_factory.mktemp("three_tier_bundle")
    return _train(
        tmp, "tiny_three", "full", FIXTURES / "three_tier_small.jsonl", TIERS / "mmlu_pro.yaml"
    )
