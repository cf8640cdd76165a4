"""The shipped ``gbt_mono`` bundle (``routellm_fast``) keeps its monotone constraints through ONNX
export.

For real prompts' feature rows, raising one of ``HARDER_WITH`` never lowers P(dearer tier) in
the served ONNX graph. The same check on the shipped ``llmrouter`` bundle, whose trees are not
constrained, finds drops: the check can fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from router_model.artifact import read_bundle
from router_model.features import HAND_FEATURE_NAMES, featurize
from router_model.router import ComplexityRouter
from training.fit import HARDER_WITH

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "data" / "fixtures" / "routellm_small.jsonl"


def _largest_drop(router: ComplexityRouter, base: NDArray[np.float32], column: int) -> float:
    """The largest fall of P(top tier) as ``column`` rises in steps on each row of ``base``."""
    steps = np.linspace(0.0, 3.0, 7, dtype=np.float32)
    rows = np.repeat(base, len(steps), axis=0)
    rows[:, column] += np.tile(steps, len(base))
    top = router.proba_from_features(rows)[:, -1].reshape(len(base), len(steps))
    return float(-np.diff(top, axis=1).min())


def _drops(bundle: str) -> dict[str, float]:
    path = REPO / "data" / "models" / bundle
    router = ComplexityRouter.from_artifact(path)
    prompts = [json.loads(line)["prompt"] for line in FIXTURE.read_text("utf-8").splitlines()]
    base = featurize(prompts[:40], router.featurizer).matrix
    return {n: _largest_drop(router, base, HAND_FEATURE_NAMES.index(n)) for n in HARDER_WITH}


def test_shipped_monotone_bundle_never_lowers_the_top_tier_as_a_prompt_gets_harder() -> None:
    manifest, _ = read_bundle(REPO / "data" / "models" / "routellm_fast")
    assert manifest.estimator == "gbt_mono"
    drops = _drops("routellm_fast")
    assert max(drops.values()) <= 1e-6, drops


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_unconstrained_trees_do_lower_it() -> None:
    manifest, _ = read_bundle(REPO / "data" / "models" / "llmrouter")
    assert manifest.estimator != "gbt_mono"
    assert max(_drops("llmrouter").values()) > 0.01
