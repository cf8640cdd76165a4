"""What a recipe is trained and measured on: its dataset, the checks that it can be trained, and
the protocol's named train/test splits with the chosen candidate's report on each.

``tierwise train`` (``training.train``) and the benchmarks in ``bench/`` share these, so a figure
printed by a benchmark is measured on the same rows and splits as ``RESULTS.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router_model.errors import InvalidData
from router_model.tiers import Tier, load_tiers
from training.bootstrap import bootstrap_ci
from training.data import group_split, random_split
from training.dataset import Dataset, FeatureContext, build_dataset, load_rows
from training.fit import predict_proba_full
from training.pipeline import fit_calibrated
from training.recipes import Recipe
from training.report import build_report

logger = logging.getLogger(__name__)

SUMMARY_KEYS = ("apgr", "cpt50", "cpt80", "aiq", "gap_closed")
#: The least data ``check_trainable`` accepts: usable rows, and rows of each of two labels.
MIN_ROWS = 20
MIN_LABEL_ROWS = 5


def recipe_dataset(
    recipe: Recipe, labeled_dir: Path, tiers_dir: Path, ctx: FeatureContext
) -> tuple[tuple[Tier, ...], Dataset]:
    """A recipe's tiers, and its labeled files read, labeled and featurized.

    Raises:
        InvalidData: when a data or tiers file is malformed.
    """
    tiers = load_tiers(tiers_dir / recipe.tiers_file)
    files = [labeled_dir / f for f in recipe.data_files]
    ds = build_dataset(
        load_rows(files),
        tiers,
        ctx,
        tolerance=recipe.tolerance,
        source=", ".join(str(f) for f in files),
    )
    return tiers, ds


def check_trainable(ds: Dataset, tier_names: Sequence[str], recipe: Recipe) -> None:
    """Refuse data no router can be fitted, calibrated and evaluated on, saying why.

    Raises:
        InvalidData: fewer than ``MIN_ROWS`` usable rows, or fewer than ``MIN_LABEL_ROWS`` rows
            for each of at least two labels (cheapest adequate tiers).
    """
    source = ", ".join(recipe.data_files)
    counts = np.bincount(ds.labels, minlength=len(tier_names))
    shares = ", ".join(f"{n}: {int(c)}" for n, c in zip(tier_names, counts, strict=True))
    if len(ds.rows) < MIN_ROWS:
        raise InvalidData(f"{source}: {len(ds.rows)} usable rows ({ds.skipped} skipped "
                          f"for a missing tier score); training needs at least {MIN_ROWS}")
    if int((counts >= MIN_LABEL_ROWS).sum()) < 2:
        raise InvalidData(
            f"{source}: rows per cheapest adequate tier ({shares}) at tolerance "
            f"{recipe.tolerance}: a router needs at least {MIN_LABEL_ROWS} rows of each of two "
            "tiers (with a large tolerance the cheapest tier is adequate everywhere)"
        )


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of a report, plus the zero router's and oracle's AIQ."""
    out = {k: report.get(k) for k in SUMMARY_KEYS}
    out["n"] = report.get("n")
    for base in ("zero_router", "oracle", "random"):
        b = report.get("baselines", {}).get(base, {})
        out[f"{base}_aiq"] = b.get("aiq")
        out[f"{base}_apgr"] = b.get("apgr")
    return out


def protocol_splits(
    ds: Dataset, recipe: Recipe, seed: int
) -> dict[str, tuple[list[int], list[int]]]:
    """Named (train, test) index splits: unseen groups, in-domain, and never-seen tasks."""
    rows = list(ds.rows)
    unseen = set(recipe.unseen_groups) or None
    splits = {}
    try:
        splits["unseen"] = group_split(rows, test_groups=unseen, test_fraction=0.2, seed=seed)
    except InvalidData as exc:  # e.g. one group only: every row would be on one side
        logger.warning("%s: no unseen-group figures (%s)", recipe.name, exc)
    splits["in_domain"] = random_split(len(rows), 0.2, seed)
    groups = ds.groups
    for src, dst in recipe.cross_tasks:
        tr = [i for i, g in enumerate(groups) if g.startswith(src)]
        te = [i for i, g in enumerate(groups) if g.startswith(dst)]
        splits[f"task:{src.rstrip('/')}->{dst.rstrip('/')}"] = (tr, te)
    return splits


def evaluate_protocols(
    ds: Dataset, recipe: Recipe, candidate: str, tier_names: Sequence[str], seed: int,
    knob: float | None = None,
) -> dict[str, dict[str, Any]]:
    """Full reports of the chosen candidate under every protocol split, with bootstrap CIs (and,
    with ``knob``, what that default operating point does there)."""
    reports = {}
    for name, (tr, te) in protocol_splits(ds, recipe, seed).items():
        if np.unique(ds.labels[tr]).size < 2:  # e.g. groups that line up with the labels
            logger.warning("%s: no %s figures: its training rows hold one tier's label only",
                           recipe.name, name)
            continue
        fitted = fit_calibrated(
            ds.subset(tr), candidate, len(tier_names), seed, balance_tasks=recipe.balance_tasks
        )
        test = ds.subset(te)
        proba = predict_proba_full(fitted.estimator, test.X, len(tier_names))
        reports[name] = build_report(test.scores, test.costs, tier_names, proba, knob)
        reports[name]["ci95"] = bootstrap_ci(test.scores, test.costs, proba, seed=seed)
        logger.info("%s %s: %s", recipe.name, name, summary(reports[name]))
    return reports


def trust_warnings(
    reports: dict[str, dict[str, Any]], knob: float, cal_proba: Any
) -> list[str]:
    """Why a trained bundle should not be trusted as it is (empty when nothing is wrong).

    The held-out split is ``unseen`` when there is one, else ``in_domain``: a router whose
    APGR interval there includes 0.5 is not shown to order prompts better than random routing.
    """
    out = []
    split = "unseen" if "unseen" in reports else "in_domain"
    rep = reports.get(split)
    ci = None if rep is None else (rep.get("ci95") or {}).get("apgr")
    if rep is None or rep.get("apgr") is None or not ci:
        out.append("no held-out APGR could be measured: nothing shows this router beats random "
                   "routing")
    elif ci[0] <= 0.5 <= ci[1]:
        out.append(f"held-out ({split}) APGR {rep['apgr']:.3f}, 95% interval [{ci[0]:.3f}, "
                   f"{ci[1]:.3f}] includes 0.5: not shown to route better than random; "
                   "label more rows")
    if np.unique(np.round(np.asarray(cal_proba, dtype=np.float64), 6), axis=0).shape[0] < 2:
        out.append("the router gives one probability to every calibration prompt: it cannot "
                   "rank prompts")
    if knob >= 1.0:
        out.append("default knob 1.0: without a policy every prompt goes to the top tier")
    return out
