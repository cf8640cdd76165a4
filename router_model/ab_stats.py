"""The A/B arms' statistics that ``tierwise ab-report`` and the gateway's dashboard both show.

Pure numpy over a ``Sample``: distinct values with their counts, so that the dashboard can read
an arm's feedback as a ``GROUP BY`` (a few rows whatever the traffic) and the report from its
rows, and both get the same numbers for the same labels and seed. A bootstrap resample of ``n``
values drawn with replacement is a multinomial draw of the counts (the same distribution as
drawing rows), and a permutation of the pooled labels is a multivariate hypergeometric split of
the pooled counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
#: The arm every other arm is compared with.
REFERENCE_ARM = "router"
#: Labeled requests an arm needs before its quality is a number.
MIN_LABELED = 30
#: Resamples of each bootstrap interval and permutations of each test.
N_RESAMPLES = 2000
#: The percentiles bounding a percentile-bootstrap 95% interval.
CI95 = (2.5, 97.5)


def percentile_ci(replicates: F64) -> list[float]:
    """Percentile 95% interval ``[lo, hi]`` of bootstrap replicates of a figure (non-empty)."""
    return [float(v) for v in np.percentile(replicates, CI95)]


@dataclass(frozen=True)
class Sample:
    """Values and how often each occurs (counts >= 1), values ascending."""

    values: F64
    counts: NDArray[np.int64]

    @classmethod
    def of(cls, values: Any) -> Sample:
        """The sample of a sequence of values (each row once)."""
        found, counts = np.unique(np.asarray(values, dtype=np.float64), return_counts=True)
        return cls(found, counts.astype(np.int64))

    @classmethod
    def counted(cls, pairs: Any) -> Sample:
        """The sample of ``(value, count)`` pairs, as a ``GROUP BY value`` returns them."""
        rows = sorted((float(v), int(c)) for v, c in pairs if int(c) > 0)
        merged: dict[float, int] = {}
        for v, c in rows:
            merged[v] = merged.get(v, 0) + c
        return cls(np.asarray(list(merged), dtype=np.float64),
                   np.asarray(list(merged.values()), dtype=np.int64))

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def mean(self) -> float:
        return float(self.values @ self.counts / self.n)

    def resampled_means(self, rng: np.random.Generator, resamples: int) -> F64:
        """Means of ``resamples`` bootstrap resamples (each ``n`` values with replacement)."""
        drawn = rng.multinomial(self.n, self.counts / self.n, size=resamples)
        return np.asarray(drawn @ self.values / self.n, dtype=np.float64)


def mean_ci(sample: Sample, seed: int, resamples: int = N_RESAMPLES) -> list[float]:
    """Percentile bootstrap 95% interval of the sample's mean (non-empty sample)."""
    return percentile_ci(sample.resampled_means(np.random.default_rng(seed), resamples))


@dataclass(frozen=True)
class Diff:
    """``mean(b) - mean(a)`` with a bootstrap 95% CI and a permutation p-value."""

    diff: float
    lo: float
    hi: float
    p_value: float


def bootstrap_diff(a: Sample, b: Sample, seed: int, n_boot: int = N_RESAMPLES) -> Diff:
    """Difference of means ``b - a``: percentile bootstrap 95% CI, permutation p-value.

    Each sample is resampled on its own (the arms are independent). The p-value is two-sided,
    ``(1 + #{|perm diff| >= |diff|}) / (1 + n)`` so that it is never 0.

    Raises:
        ValueError: when a sample is empty.
    """
    if a.n == 0 or b.n == 0:
        raise ValueError("both samples need at least one value")
    rng = np.random.default_rng(seed)
    lo, hi = percentile_ci(b.resampled_means(rng, n_boot) - a.resampled_means(rng, n_boot))
    return Diff(b.mean() - a.mean(), lo, hi, permutation_p(a, b, rng, n_boot))


def permutation_p(a: Sample, b: Sample, rng: np.random.Generator,
                  n_perm: int = N_RESAMPLES) -> float:
    """Two-sided permutation p-value of the difference of means (``n_perm`` label shuffles)."""
    pooled = Sample.counted([*zip(a.values, a.counts, strict=True),
                             *zip(b.values, b.counts, strict=True)])
    observed = abs(b.mean() - a.mean())
    in_a = rng.multivariate_hypergeometric(pooled.counts, a.n, size=n_perm)
    sum_a = in_a @ pooled.values
    total = float(pooled.values @ pooled.counts)
    diffs = np.abs((total - sum_a) / b.n - sum_a / a.n)
    hits = int(np.count_nonzero(diffs >= observed - 1e-12))
    return float((1 + hits) / (1 + n_perm))


def quality_of(labels: Sample, min_labeled: int = MIN_LABELED, seed: int = 0) -> dict[str, Any]:
    """An arm's labeled count, mean quality and its bootstrap 95% CI; None (with a note) below
    ``min_labeled`` labels."""
    enough = labels.n >= max(min_labeled, 1)
    return {
        "labeled": labels.n,
        "quality": labels.mean() if enough else None,
        "quality_ci": mean_ci(labels, seed) if enough else None,
        "quality_note": None if enough else (f"not enough data: {labels.n} labels "
                                             f"(need {min_labeled})"),
    }


def too_few(arm: str, ref: Sample, other: Sample, min_labeled: int = MIN_LABELED) -> str | None:
    """The "not enough data" verdict of ``arm`` against the reference arm, or None."""
    if min(ref.n, other.n) >= max(min_labeled, 1):
        return None
    return (f"not enough data: {ref.n} labeled requests on '{REFERENCE_ARM}', {other.n} on "
            f"'{arm}' (need {min_labeled} each)")


def quality_diff(ref: Sample, other: Sample, seed: int) -> Diff:
    """The reference arm's quality minus ``other``'s (the seed the report uses for it)."""
    return bootstrap_diff(other, ref, seed + 1)


def verdict(arm: str, arm_cost: float, cost_diff: float, quality: Diff) -> str:
    """One sentence: the router arm's saving against ``arm`` (``cost_diff``: router minus arm,
    per request) and its quality change with CI."""
    saved = -100.0 * cost_diff / arm_cost + 0.0 if arm_cost > 0 else 0.0  # + 0.0: never "-0.0%"
    half = (quality.hi - quality.lo) / 2
    if saved >= 0:
        spend = f"saves {saved:.1f}% per request against '{arm}'"
    else:  # against a cheaper arm a percentage "more" reads badly past 100%: say the ratio
        ratio = (arm_cost + cost_diff) / arm_cost if arm_cost > 0 else float("inf")
        spend = (f"costs {ratio:.2f}x what '{arm}' costs per request "
                 f"(+${cost_diff:.6f})")
    text = (f"router arm {spend} at a quality change of {quality.diff:+.3f} ± {half:.3f} "
            f"(bootstrap 95% CI [{quality.lo:+.3f}, {quality.hi:+.3f}], permutation test "
            f"p = {quality.p_value:.3g})")
    if (quality.lo > 0 or quality.hi < 0) != (quality.p_value < 0.05):
        # the percentile bootstrap is too narrow on few labels (3 equal labels resample to a
        # zero-width spread) while the permutation test is exact: say which one to believe
        text += (" [the interval and the test disagree: too few labels for the bootstrap "
                 "interval; the permutation test is exact, trust it]")
    return text
