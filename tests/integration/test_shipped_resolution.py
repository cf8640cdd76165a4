"""Every shipped bundle gives distinct probabilities to distinct prompts: a router that ties
unrelated prompts (the old ``routellm`` kNN bundle gave 0.8798 to a capital-city question and to
a proof about primes) cannot rank them, so no knob can separate them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from router_model.router import ComplexityRouter

MODELS = Path(__file__).resolve().parents[2] / "data" / "models"
PROMPTS = [
    "hi",
    "What is the capital of France?",
    "Prove that there are infinitely many prime numbers.",
    "Write a haiku about autumn leaves.",
    "Design a lock-free multi-producer queue in C++ and explain its memory ordering.",
    "Summarise the causes of the First World War in three sentences.",
    "A train leaves at 3 pm travelling 60 km/h; when has it covered 150 km?",
    "Translate 'good morning' into Spanish.",
]


@pytest.mark.parametrize("bundle", sorted(p.name for p in MODELS.iterdir()
                                          if (p / "manifest.json").exists()))
def test_distinct_prompts_get_distinct_probabilities(bundle: str) -> None:
    router = ComplexityRouter.from_artifact(MODELS / bundle)
    proba = router.predict_proba(PROMPTS)
    # the top tier's column alone must already tell every prompt apart
    top = np.round(proba[:, -1], 6)
    assert np.unique(top).size == len(PROMPTS), dict(zip(PROMPTS, top.tolist(), strict=True))
