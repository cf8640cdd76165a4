"""``tierwise retrain``: labeled traffic + base data → challenger → gate against the champion.

Steps: read the traffic store and label it (``training.traffic``: rule in its docstring), hold out
the most recent ``--holdout-fraction`` of labeled traffic prompts, merge the rest with the base
training data (``--base-data``, default the shipped recipe's files) with weight ``--traffic-weight``
per traffic row (times ``--judge-weight`` for a row labeled by the judge alone: shadow labels,
``training.traffic``) and 1 per base row (traffic is the distribution served, so it counts more; the
base rows keep the classes traffic rarely shows), fit a challenger with the champion's estimator
through ``training.pipeline``, export it to ONNX, and evaluate champion and challenger, both
through ONNX, on the same frozen set (``--eval-data``, default a seeded 20% of the base groups,
removed from training) and on the traffic holdout.

What "champion" means in that comparison (``champion_judged`` in the decision): neither side is
scored on rows it was fitted on. Without ``--eval-data`` the champion's configuration is refitted
on the base training split (no traffic) and compared with the challenger; with ``--eval-data``
(disjoint from the champion's training data, overlap refused with exit 2) the champion artifact
itself is scored. The whole rule: docs/retrain.md.

Refused (exit 2, nothing registered) when the training rows (base + traffic) fail
``training.protocol.check_trainable``, the same floor as ``tierwise train``.

Gate: promote only when the challenger's gate metric (APGR for two tiers, AIQ for more) is at
most ``--margin`` below the champion's on the frozen set, and also on the traffic holdout when it
has at least ``retrain_gate.MIN_GATE_ROWS`` prompts and the metric is defined there; when its
median per-row ONNX latency is at most ``--max-slowdown`` times the champion's; and when the
frozen set has at least ``--min-eval-rows`` rows (default ``retrain_gate.MIN_EVAL_ROWS``, 200).
The frozen set's paired bootstrap 95% interval of (challenger - champion) is always reported
(``frozen_diff_ci95``); with ``--require-ci`` it must be defined and of nonzero width (a [0, 0]
interval is no evidence) and its lower bound at least ``-margin`` (non-inferiority shown rather
than a point estimate within the margin: on a few thousand rows the seed alone moves APGR by ~0.04,
eight times the default margin). The challenger is always
registered (alias ``challenger``); a promoted one also gets ``champion`` and, with
``--bundle-out``, is written atomically where a running service watches its manifest (the
service's manifest watch reloads it). A service serving ``models:/NAME@champion`` polls the alias
and reloads the promoted version by itself (``service.router.registry_watch``); training never
calls the service. Every input error exits 2 with nothing registered or written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from router_model.artifact import LabelRule, Manifest, read_bundle, write_bundle
from router_model.errors import InvalidData, NotFound, RouterError
from router_model.logs import configure_logging
from router_model.settings import Settings
from router_model.tiers import Tier
from training import registry
from training.cli_args import number_in
from training.data import data_sha256, group_split
from training.dataset import Dataset, build_dataset, concat, load_rows, make_context
from training.export import export_checked
from training.pipeline import default_knob, fit_calibrated, gain_marks, select_fit_rule
from training.protocol import check_trainable
from training.recipes import SHIPPED, Recipe
from training.retrain_gate import (
    MIN_EVAL_ROWS,
    Frame,
    card,
    drop_eval_prompts,
    evidence,
    frozen_diff_ci,
    gate,
    refit_champion,
)
from training.traffic import (
    DEFAULT_ADEQUATE,
    label_traffic,
    parse_since,
    read_decisions,
    split_traffic,
    traffic_dataset,
)

logger = logging.getLogger(__name__)

#: ``--traffic-weight``'s default: chosen by ``bench/bench_learning_seeds.py`` on two kinds of
#: prompts the shipped bundles never saw (LLMRouter's clusters, 6 shuffles; MMLU-Pro, 4): after
#: 300, 1,000 and 3,000 labels, 10 gave the best or a tied mean APGR on both, 2 the worst.
TRAFFIC_WEIGHT = 10.0


@dataclass(frozen=True)
class RetrainConfig:
    """Everything one retrain run needs (built from flags and settings in ``main``)."""

    db: str
    name: str
    tracking_uri: str
    out: Path
    base_data: tuple[Path, ...]
    eval_data: Path | None
    since: datetime | None
    traffic_weight: float
    adequate: float
    margin: float
    max_slowdown: float
    holdout_fraction: float
    bundle_out: Path | None
    estimator: str | None
    seed: int
    #: Also require the paired 95% interval of (challenger - champion) on the frozen set to
    #: stay above -margin (non-inferiority shown, not just a point estimate within the margin).
    require_ci: bool = False
    #: The least frozen-set rows a promotion needs (fewer: the challenger is registered only).
    min_eval_rows: int = MIN_EVAL_ROWS
    #: The embedding cache of the base and eval rows (None: embed them again), as in training.
    cache_dir: Path | None = None
    #: Multiplies ``traffic_weight`` for rows whose scores all came from the LLM judge (shadow
    #: labels); rows with client feedback keep ``traffic_weight``.
    judge_weight: float = 1.0
    #: ``auto``, ``gain`` or ``label`` (``LabelRule.fit``): ``gain`` fits a two-tier challenger's
    #: fully scored rows (base data, judged traffic) on their score gain; ``auto`` picks the rule
    #: by cross-validation on the judged traffic (``training.pipeline.select_fit_rule``).
    fit_on: str = "auto"


def load_base(cfg: RetrainConfig, manifest: Manifest, tiers: Sequence[Tier]) -> tuple[Dataset,
                                                                                      Dataset]:
    """(base training rows, frozen evaluation rows), featurized through the shared extractor.

    Without ``--eval-data`` the frozen rows are a seeded group split held out of the base data;
    with it they are the file's rows, and ``prepare`` removes their prompts from training.

    Raises:
        InvalidData: when a file is malformed or no base data is known for this bundle.
    """
    ctx = make_context(manifest.feature_set, cfg.cache_dir)
    tol = manifest.label_rule.tolerance
    base = build_dataset(load_rows(cfg.base_data), tiers, ctx, tolerance=tol, source="base data")
    if cfg.eval_data is None:
        train_idx, test_idx = group_split(list(base.rows), test_fraction=0.2, seed=cfg.seed)
        return base.subset(train_idx), base.subset(test_idx)
    frozen = build_dataset(load_rows([cfg.eval_data]), tiers, ctx, tolerance=tol,
                           source=str(cfg.eval_data))
    return base, frozen


def champion_bundle(cfg: RetrainConfig) -> tuple[str, Manifest, bytes]:
    """The registered champion's version, manifest and ONNX bytes.

    Raises:
        NotFound: when the store is missing or unreachable, or has no champion for ``cfg.name``.
    """
    # probed once, before the first read (else a missing store reads as "no champion"), and
    # passed to the download rather than probed again
    store = registry.check_store(cfg.tracking_uri)
    version = registry.alias_version(cfg.tracking_uri, cfg.name, registry.CHAMPION)
    if version is None:
        raise NotFound(f"registry {cfg.tracking_uri} has no '{registry.CHAMPION}' for "
                       f"{cfg.name!r}: register one first (tierwise train --tracking-uri ...)")
    # the version just resolved, not the alias again: the alias may move in between. A temp
    # folder: a run that fails on bad input leaves OUT untouched
    path = registry.download(store, f"models:/{cfg.name}/{version}")
    manifest, onnx_bytes = read_bundle(path)
    return version, manifest, onnx_bytes


@dataclass(frozen=True)
class Prepared:
    """The rows of one retrain: the challenger's (and weights), the base split alone, the
    evaluation frame and a data summary."""

    train: Dataset
    weights: NDArray[np.float64]
    #: Rows fitted on their score gain (None: every row on its label).
    gain: NDArray[np.bool_] | None
    base: Dataset
    frame: Frame
    summary: dict[str, Any]


def prepare(cfg: RetrainConfig, manifest: Manifest) -> Prepared:
    """The training rows and their weights, the base split, the evaluation frame and a summary.

    Raises:
        InvalidData: when the store holds no usable labeled traffic or a file is malformed.
    """
    tiers = manifest.tier_ladder()
    labels = label_traffic(read_decisions(cfg.db, cfg.since), tiers, len(manifest.feature_names),
                           cfg.adequate, manifest.label_rule.tolerance)
    if len(labels.labels) == 0:
        raise InvalidData(f"traffic store has no labeled rows to learn from (skipped: "
                          f"{labels.skipped or 'none'}; unlabelled decisions are not counted)")
    train_idx, hold_idx = split_traffic(labels, cfg.holdout_fraction)
    # the same labels fit the same model whatever order they arrived in (the calibration slice
    # and the fit-rule folds are drawn by position)
    train_idx = train_idx[np.argsort([labels.prompt_sha256[i] for i in train_idx], kind="stable")]
    base, frozen = load_base(cfg, manifest, tiers)
    recent = traffic_dataset(labels, train_idx, tiers)
    overlap = None
    if cfg.eval_data is not None:  # neither side may be fitted on an evaluation prompt
        base, recent, overlap = drop_eval_prompts(manifest, cfg.eval_data, cfg.base_data,
                                                  (base, recent), frozen)
    merged = concat(base, recent)
    source_of = dict(zip(labels.prompt_sha256, labels.sources, strict=True))
    complete_of = dict(zip(labels.prompt_sha256, labels.complete, strict=True))
    complete = np.concatenate([np.ones(len(base.rows), dtype=bool), np.asarray(
        [complete_of.get(row.id or "", False) for row in recent.rows], dtype=bool)])
    weights = np.concatenate([np.ones(len(base.rows)), [
        cfg.traffic_weight * (cfg.judge_weight if source_of.get(row.id or "") == "judge" else 1.0)
        for row in recent.rows]])
    # the same floor as tierwise train: fewer rows cannot be fitted, calibrated and evaluated
    check_trainable(merged, [t.name for t in tiers], Recipe(
        name=cfg.name, tiers_file="", tolerance=manifest.label_rule.tolerance,
        data_files=(*(str(f) for f in cfg.base_data), "traffic store (training part)")))
    fit_on, fit_rule = cfg.fit_on, {"why": f"--fit-on {cfg.fit_on}"}
    if fit_on == "gain" and len(tiers) != 2:
        raise InvalidData(f"--fit-on gain needs a two-tier bundle; {cfg.name} has {len(tiers)}")
    if fit_on == "auto":  # compared on the traffic rows the judge scored in full
        fit_on, fit_rule = select_fit_rule(
            merged, cfg.estimator or manifest.estimator, cfg.seed, weights, complete,
            np.flatnonzero(complete[len(base.rows):]) + len(base.rows))
    gain = gain_marks(fit_on, complete)
    holdout = traffic_dataset(labels, hold_idx, tiers) if len(hold_idx) else None
    summary = {"traffic_labeled": len(labels.labels), "traffic_train": len(recent.rows),
               "traffic_holdout": len(hold_idx), "traffic_skipped": labels.skipped,
               "label_sources": dict(Counter(labels.sources)),
               "base_rows": len(base.rows), "frozen_rows": len(frozen.rows),
               "label_shares": np.bincount(merged.labels, minlength=len(tiers)).tolist(),
               "fit_rule": fit_rule,
               "traffic_fit_on_gain": 0 if gain is None else int(gain[len(base.rows):].sum()),
               "eval_overlap": None if overlap is None else {
                   "rows": overlap.shared, "base": overlap.base, "traffic": overlap.traffic}}
    logger.info("retrain data: %s", summary)
    return Prepared(merged, weights, gain, base, Frame(frozen, holdout), summary)


def fit_challenger(cfg: RetrainConfig, manifest: Manifest, prep: Prepared) -> tuple[Manifest,
                                                                                   bytes]:
    """Fit, calibrate and export the challenger; its manifest is the champion's, updated."""
    k, ds = len(manifest.classes), prep.train
    candidate = cfg.estimator or manifest.estimator
    fitted = fit_calibrated(ds, candidate, k, cfg.seed, sample_weight=prep.weights, gain=prep.gain)
    onnx_bytes, parity = export_checked(fitted.estimator, ds.X[fitted.cal_idx], k)
    digest = hashlib.sha256(data_sha256(cfg.base_data).encode())
    digest.update(ds.X.tobytes())
    new = manifest.model_copy(update={
        "estimator": candidate, "threshold": round(default_knob(fitted, ds), 6),
        "label_rule": LabelRule(tolerance=manifest.label_rule.tolerance,
                                fit="label" if prep.gain is None else "gain"),
        "metrics": {"onnx_parity_max_abs_diff": parity, "n_rows": len(ds.rows),
                    "retrained_from": manifest.model_version},
        "train_data_sha256": digest.hexdigest(),
        "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    })
    return Manifest.model_validate(new.model_dump()), onnx_bytes


def run_retrain(cfg: RetrainConfig) -> dict[str, Any]:
    """Retrain, gate, register and (when promoted) publish; returns the decision document.

    Raises:
        NotFound: when the registry has no champion.
        InvalidData: when there is no usable labeled traffic or an input file is malformed.
    """
    champ_version, manifest, champ_onnx = champion_bundle(cfg)
    prep = prepare(cfg, manifest)
    frame, summary = prep.frame, prep.summary
    new_manifest, new_onnx = fit_challenger(cfg, manifest, prep)
    names = list(manifest.classes)
    judged = "artifact" if cfg.eval_data is not None else "refit on base-train"
    if cfg.eval_data is None:  # the artifact was fitted on the frozen rows: judge its recipe
        champ_onnx = refit_champion(manifest, prep.base, cfg.seed)
    cards = {"champion": card(champ_onnx, frame, names), "challenger": card(new_onnx, frame, names)}
    promote, reasons = gate(cards["champion"], cards["challenger"], cfg.margin, cfg.max_slowdown)
    reasons.insert(0, f"champion judged: {judged}" + (
        f" (version {champ_version}'s estimator {manifest.estimator!r} fitted on the base split "
        "the frozen set is held out of)" if cfg.eval_data is None else " (on --eval-data)"))
    diff_ci = frozen_diff_ci(champ_onnx, new_onnx, frame.frozen, len(names), cfg.seed)
    enough, why = evidence(len(frame.frozen.rows), cfg.min_eval_rows, diff_ci, cfg.margin,
                           cfg.require_ci)
    promote, reasons = promote and enough, reasons + why
    decision: dict[str, Any] = {
        "name": cfg.name, "promoted": promote, "reasons": reasons, "cards": cards, "data": summary,
        "champion_version": champ_version, "margin": cfg.margin,
        "max_slowdown": cfg.max_slowdown, "traffic_weight": cfg.traffic_weight,
        "judge_weight": cfg.judge_weight, "fit_on": new_manifest.label_rule.fit,
        "challenger_model_version": new_manifest.model_version,
        "frozen_diff_ci95": diff_ci, "require_ci": cfg.require_ci,
        "min_eval_rows": cfg.min_eval_rows, "champion_judged": judged,
    }
    bundle = write_bundle(cfg.out / "challenger", new_manifest, new_onnx)
    path = cfg.out / "retrain_decision.json"
    path.write_text(json.dumps(decision, indent=1, default=float) + "\n")
    rec = registry.log_and_register(
        cfg.tracking_uri, name=cfg.name, bundle_dir=bundle,
        params={"kind": "retrain", "estimator": new_manifest.estimator, "seed": cfg.seed,
                "traffic_weight": cfg.traffic_weight, "margin": cfg.margin,
                "max_slowdown": cfg.max_slowdown, "promoted": promote,
                "champion_version": champ_version, "db": cfg.db.split("@")[-1]},
        metrics={**cards, "promoted": int(promote)}, plots=(path,), alias=registry.CHALLENGER,
    )
    decision["challenger_version"] = rec.version
    if promote:
        registry.set_alias(cfg.tracking_uri, cfg.name, registry.CHAMPION, rec.version)
        if cfg.bundle_out is not None:
            write_bundle(cfg.bundle_out, new_manifest, new_onnx)
            decision["bundle_out"] = str(cfg.bundle_out)
    path.write_text(json.dumps(decision, indent=1, default=float) + "\n")
    logger.info("retrain %s: %s (%s)", cfg.name, "PROMOTED" if promote else "kept champion",
                "; ".join(reasons))
    return decision


def _parser() -> argparse.ArgumentParser:
    # the docstring is reST; --help shows it as plain text
    p = argparse.ArgumentParser(
        prog="tierwise retrain", description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--db", required=True, help="traffic store URL (sqlite:///PATH, postgresql://)")
    p.add_argument("--name", required=True, help="registered model name (its champion is gated)")
    p.add_argument("--out", type=Path, required=True, help="where bundles and the decision go")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: settings)")
    p.add_argument("--base-data", type=Path, nargs="+", help="labeled JSONL (default: recipe's)")
    p.add_argument("--eval-data", type=Path, help="frozen evaluation JSONL")
    p.add_argument("--since", help="only traffic at or after this ISO 8601 time")
    p.add_argument("--traffic-weight", type=number_in(0, np.inf, lo_open=True, hi_open=True),
                   default=TRAFFIC_WEIGHT, help="weight of a traffic row (a base row weighs 1; "
                   f"default {TRAFFIC_WEIGHT:g}: docs/learning.md); > 0")
    # feedback values are in [0, 1]: a threshold outside it labels every answer alike
    p.add_argument("--adequate", type=number_in(0, 1), default=DEFAULT_ADEQUATE,
                   help="feedback score in [0, 1] at or above which an answer was adequate")
    # APGR and AIQ differences lie within [-1, 1]; a negative margin demands a gain instead
    p.add_argument("--margin", type=number_in(0, 1), default=0.005,
                   help="how far in [0, 1] the challenger may fall below the champion")
    # below 1 the challenger must be faster than the champion, which timing noise decides
    p.add_argument("--max-slowdown", type=number_in(1, np.inf, hi_open=True), default=1.5,
                   help="latency bound as a multiple (>= 1) of the champion's")
    p.add_argument("--require-ci", action="store_true",
                   help="promote only when the paired 95%% CI of challenger - champion on the "
                        "frozen set has its lower bound >= -margin")
    p.add_argument("--min-eval-rows", type=int, default=MIN_EVAL_ROWS,
                   help="frozen-set rows (>= 1) a promotion needs; fewer: registered, not promoted")
    p.add_argument("--judge-weight", type=number_in(0, np.inf, hi_open=True), default=1.0,
                   help="multiplies --traffic-weight for rows labeled by the LLM judge alone "
                        "(shadow labels); rows with client feedback keep --traffic-weight")
    p.add_argument("--fit-on", choices=("auto", "gain", "label"), default="auto",
                   help="gain: a two-tier challenger fits rows with every tier scored (base data, "
                        "judge labels) on which tier scored higher, weighted by the gap, ties "
                        "left out; label: on the cheapest-adequate label; auto: the one ranking "
                        "the judged traffic better in cross-validation (docs/learning.md)")
    p.add_argument("--holdout-fraction", type=number_in(0, 1, hi_open=True), default=0.2,
                   help="share in [0, 1) of the latest labeled traffic prompts held out")
    p.add_argument("--bundle-out", type=Path, help="write a promoted bundle here (service watch)")
    p.add_argument("--estimator", help="estimator of the challenger (default: the champion's)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-cache", action="store_true",
                   help="embed the base and eval prompts again instead of reading the embedding "
                        "cache that training fills")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tierwise retrain``: 0 whether or not promoted, 2 on bad input."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.min_eval_rows < 1:
        parser.error(f"--min-eval-rows {args.min_eval_rows}: must be at least 1")
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    t = settings.training
    base = tuple(args.base_data or ())
    if not base and args.name in SHIPPED:
        base = tuple(t.labeled_dir / f for f in SHIPPED[args.name].data_files)
    try:
        if not base:
            raise InvalidData(f"{args.name!r} is not a shipped recipe: name --base-data FILES")
        cfg = RetrainConfig(
            db=args.db, name=args.name, tracking_uri=args.tracking_uri or t.mlflow_tracking_uri,
            out=args.out, base_data=base, eval_data=args.eval_data, since=parse_since(args.since),
            traffic_weight=args.traffic_weight, adequate=args.adequate, margin=args.margin,
            max_slowdown=args.max_slowdown, holdout_fraction=args.holdout_fraction,
            bundle_out=args.bundle_out, estimator=args.estimator,
            seed=t.seed if args.seed is None else args.seed, require_ci=args.require_ci,
            min_eval_rows=args.min_eval_rows, cache_dir=None if args.no_cache else t.cache_dir,
            judge_weight=args.judge_weight, fit_on=args.fit_on,
        )
        run_retrain(cfg)
    except RouterError as exc:
        logger.error("retrain: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
