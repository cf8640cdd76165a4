"""The dashboard's A/B arms: requests and cost per arm from the hourly rollup, feedback quality
from one ``GROUP BY`` over the labeled requests, and the figures of ``tierwise ab-report``.

The statistics are ``router_model.ab_stats``, the report's own: the same requests (answered,
status < 400, a tier, not pass-through), the same mean feedback per decision, the same seed and
minimum of labels, so the quality, its CI and the verdict are the report's for the same window.
The cost difference is the difference of the arms' mean costs (the report adds a bootstrap CI
over each request's cost; that needs every row, which the dashboard does not read).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from pydantic import BaseModel, Field

from router_model.ab_stats import (
    MIN_LABELED,
    REFERENCE_ARM,
    Sample,
    quality_diff,
    quality_of,
    too_few,
    verdict,
)

#: Pass-through requests (the client named the model) are no arm (``training.ab_report``).
PASSTHROUGH = "passthrough"
#: The seed of the intervals (``tierwise ab-report``'s default, ``settings.training.seed``).
SEED = 0


def labels_sql(placeholder: str) -> str:
    """Per arm and mean feedback value: how many answered arm requests had it (``GROUP BY``).

    Takes the window's start twice. A label is given after its answer, so every label of a
    request in the window is from its start on: only those are averaged and joined (on a wide
    store the join is what costs). A decision from before the start may get a partial mean here;
    the join's own ``created_at`` condition drops it.
    """
    return (
        "SELECT t.arm, f.score, COUNT(*) FROM (SELECT decision_id, AVG(value) AS score "
        f"FROM feedback WHERE created_at >= {placeholder} GROUP BY decision_id) f "
        "JOIN traffic t ON t.decision_id = f.decision_id "
        f"WHERE t.created_at >= {placeholder} AND t.status < 400 AND t.tier <> '' "
        f"AND t.source <> '{PASSTHROUGH}' AND t.arm <> '{PASSTHROUGH}' GROUP BY t.arm, f.score"
    )


class Arm(BaseModel):
    """One arm's answered requests: count, cost per request, mean feedback with its 95% CI."""

    requests: int = 0
    cost_per_request_usd: float | None = None
    labeled: int = 0
    quality: float | None = None
    quality_ci: list[float] | None = None
    quality_note: str | None = None


class Comparison(BaseModel):
    """The router arm against another: cost per request and quality differences (router minus
    arm), and the report's verdict sentence."""

    cost_diff_usd: float | None = None
    quality_diff: dict[str, float] | None = None
    verdict: str


class ABArms(BaseModel):
    """The A/B arms of a window, as ``tierwise ab-report`` shows them."""

    reference: str = REFERENCE_ARM
    min_labeled: int = MIN_LABELED
    seed: int = SEED
    arms: dict[str, Arm] = Field(default_factory=dict)
    comparisons: dict[str, Comparison] = Field(default_factory=dict)
    verdict: str = ""


def ab_arms(rollup: Sequence[Sequence[Any]], labels: Sequence[Sequence[Any]],
            min_labeled: int = MIN_LABELED, seed: int = SEED) -> ABArms:
    """The arms from rollup rows (``aggregates.main_sql``: arm, tier and source at 1-3,
    requests at 5, cost at 8) and ``labels_sql`` rows."""
    requests: dict[str, int] = defaultdict(int)
    cost: dict[str, float] = defaultdict(float)
    for row in rollup:
        arm, tier, source = str(row[1]), str(row[2]), str(row[3])
        if tier and PASSTHROUGH not in (arm, source):
            requests[arm] += int(row[5])
            cost[arm] += float(row[8] or 0.0)
    counted: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for arm, score, n in labels:
        counted[str(arm)].append((float(score), int(n)))
    samples = {arm: Sample.counted(counted.get(arm, [])) for arm in sorted(requests)}
    out = ABArms(min_labeled=min_labeled, seed=seed)
    for arm, sample in samples.items():
        out.arms[arm] = Arm(requests=requests[arm],
                            cost_per_request_usd=cost[arm] / requests[arm] if requests[arm]
                            else None, **quality_of(sample, min_labeled, seed))
    if REFERENCE_ARM not in samples or len(samples) < 2:
        out.verdict = (f"not enough data: need the '{REFERENCE_ARM}' arm and one other, "
                       f"got {sorted(samples)}")
        return out
    ref = out.arms[REFERENCE_ARM]
    for arm in samples:
        if arm != REFERENCE_ARM:
            out.comparisons[arm] = _compare(arm, ref, out.arms[arm], samples, min_labeled, seed)
    out.verdict = "; ".join(c.verdict for c in out.comparisons.values())
    return out


def _compare(arm: str, ref: Arm, other: Arm, samples: dict[str, Sample], min_labeled: int,
             seed: int) -> Comparison:
    short = too_few(arm, samples[REFERENCE_ARM], samples[arm], min_labeled)
    if short is not None:
        return Comparison(verdict=short)
    arm_cost, ref_cost = other.cost_per_request_usd or 0.0, ref.cost_per_request_usd or 0.0
    quality = quality_diff(samples[REFERENCE_ARM], samples[arm], seed)
    return Comparison(cost_diff_usd=ref_cost - arm_cost, quality_diff=asdict(quality),
                      verdict=verdict(arm, arm_cost, ref_cost - arm_cost, quality))
