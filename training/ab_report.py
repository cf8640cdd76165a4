"""``tierwise ab-report``: compare the A/B arms the gateway recorded, offline sweeps, off-policy.

Online (default): per arm, requests, cost per request, quality (mean feedback), tier mix and
latency; every other arm's difference from the ``router`` arm with seeded bootstrap 95% CIs and a
two-sided permutation p-value; a PNG; a plain verdict. An arm with fewer than ``--min-labeled``
scored requests gives the verdict "not enough data", never a number (in the table and the PNG
too: its quality is shown as "not enough data").
Quality differences come with a percentile bootstrap 95% CI and a permutation-test p-value; on
few labels the bootstrap interval is too narrow, and a verdict where the two disagree says so.
Off-policy (``--knob``, only when given): the router at those knob settings, estimated from the
logged traffic by inverse propensity scoring (IPS) and doubly robust (DR) estimation, with
bootstrap CIs (``training.ab_offpolicy``; at least ``--min-labeled`` labeled requests).
The savings ledger: per arm and over all answered requests, the USD saved against the top tier
split into routing's share (tiers the router chose), the fixed A/B arms' and fail-open's tier
choices, and each other lever's (cache, trim, batch, cascade), with each part's share.
Offline (``--offline --model DIR --data FILE``): the bundle's curve against every fixed tier and
random routing at matched cost on a labeled file, with ``training.evaluate``.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from router_model.ab_stats import (
    MIN_LABELED,
    REFERENCE_ARM,
    Sample,
    bootstrap_diff,
    quality_diff,
    quality_of,
    too_few,
    verdict,
)
from router_model.errors import RouterError
from router_model.logs import configure_logging
from router_model.policy import choose_tiers
from router_model.records import LEDGER
from router_model.settings import Settings
from training.ab_offpolicy import off_policy
from training.ab_render import markdown, plot_arms
from training.cli_args import number_in
from training.traffic import Decision, parse_since, read_decisions

logger = logging.getLogger(__name__)

#: The arm name the gateway records on pass-through requests (``service.gateway.planning``).
PASSTHROUGH_ARM = "passthrough"

F64 = NDArray[np.float64]


def lever_ledger(decisions: Sequence[Decision]) -> dict[str, Any]:
    """USD saved against the top tier, per ledger part, and each one's share (%).

    The parts are ``router_model.records.LEDGER``: "routing" holds only the savings of tiers the
    router chose; a fixed A/B arm's tier choice is "ab_fixed_arm" and a fail-open's "fail_open".

    Shares are of the total saving and may be negative (a cascade that escalated); all 0 when
    nothing was saved.
    """
    parts = dict.fromkeys(LEDGER, 0.0)
    for d in decisions:
        for part, usd in d.record.ledger.items():
            parts[part] += usd
    total = sum(parts.values())
    return {"savings_usd": total, "levers": {
        k: {"usd": v, "share_pct": 100.0 * v / total if total > 0 else 0.0}
        for k, v in parts.items()
    }}


def arm_summary(decisions: Sequence[Decision], min_labeled: int = MIN_LABELED,
                seed: int = 0) -> dict[str, Any]:
    """Requests, cost, quality, tier mix and latency of one arm's answered requests.

    Quality (mean feedback, with a bootstrap 95% CI of the mean) is None below ``min_labeled``
    labels, and ``quality_note`` says so.
    """
    cost = np.asarray([d.record.cost_usd for d in decisions], dtype=np.float64)
    scores = np.asarray([d.score for d in decisions if d.score is not None], dtype=np.float64)
    lat = np.asarray([d.record.latency_ms for d in decisions], dtype=np.float64)
    mix = Counter(d.record.tier for d in decisions)
    n = len(decisions)
    return {
        "requests": n,
        "cost_per_request_usd": float(cost.mean()) if n else None,
        **quality_of(Sample.of(scores), min_labeled, seed),
        "tier_mix": {t: c / n for t, c in sorted(mix.items())},
        "model_versions": dict(sorted(Counter(
            d.record.model_version for d in decisions if d.record.model_version).items())),
        "latency_ms_mean": float(lat.mean()) if n else None,
        "latency_ms_p50": float(np.median(lat)) if n else None,
        "ledger": lever_ledger(decisions),
    }


def compare_arms(
    by_arm: dict[str, list[Decision]], seed: int, min_labeled: int = MIN_LABELED
) -> dict[str, Any]:
    """Each arm against the router arm: cost and quality differences and one verdict per arm."""
    out: dict[str, Any] = {}
    ref = by_arm.get(REFERENCE_ARM, [])
    for arm, ds in sorted(by_arm.items()):
        if arm == REFERENCE_ARM:
            continue
        q_ref = Sample.of([d.score for d in ref if d.score is not None])
        q_arm = Sample.of([d.score for d in ds if d.score is not None])
        short = too_few(arm, q_ref, q_arm, min_labeled)
        if short is not None:
            out[arm] = {"verdict": short}
            continue
        c_ref = np.asarray([d.record.cost_usd for d in ref], dtype=np.float64)
        c_arm = np.asarray([d.record.cost_usd for d in ds], dtype=np.float64)
        cost = bootstrap_diff(Sample.of(c_arm), Sample.of(c_ref), seed)  # router minus arm
        quality = quality_diff(q_ref, q_arm, seed)
        out[arm] = {"cost_diff": asdict(cost), "quality_diff": asdict(quality),
                    "verdict": verdict(arm, float(c_arm.mean()), cost.diff, quality)}
    return out


def online_report(decisions: Sequence[Decision], seed: int, min_labeled: int) -> dict[str, Any]:
    """The online A/B report of answered requests (``status < 400``).

    Pass-through requests (the client named the model) are not randomised: they are summarised
    apart (``passthrough``) and never compared as an arm.
    """
    by_arm: dict[str, list[Decision]] = {}
    answered = [d for d in decisions if d.record.status < 400 and d.record.tier]
    # pass-through traffic: the client chose the model, no arm was drawn, so it is no A/B arm
    passthrough = [d for d in answered if _is_passthrough(d)]
    for d in answered:
        if not _is_passthrough(d):
            by_arm.setdefault(d.record.arm, []).append(d)
    arms = {arm: arm_summary(ds, min_labeled, seed) for arm, ds in sorted(by_arm.items())}
    if REFERENCE_ARM not in by_arm or len(by_arm) < 2:
        comparisons: dict[str, Any] = {}
        text = f"not enough data: need the '{REFERENCE_ARM}' arm and one other, got {sorted(arms)}"
    else:
        comparisons = compare_arms(by_arm, seed, min_labeled)
        text = "; ".join(c["verdict"] for c in comparisons.values())
        versions = arms[REFERENCE_ARM]["model_versions"]
        if len(versions) > 1:  # one arm, several routers: its numbers pool them
            listed = ", ".join(f"{v} ({n} requests)" for v, n in versions.items())
            text += f"; note: the '{REFERENCE_ARM}' arm mixes model versions {listed}"
    ledger = lever_ledger(answered)
    if not any(d.score is not None for d in answered):  # dollars saved at an unknown price
        ledger["quality"] = "unknown: no feedback recorded"
    return {"arms": arms, "comparisons": comparisons, "verdict": text,
            "passthrough": arm_summary(passthrough, min_labeled, seed) if passthrough else None,
            "ledger": ledger, "min_labeled": min_labeled, "seed": seed}


def _is_passthrough(d: Decision) -> bool:
    # a cache hit keeps the arm but not the source: the arm name says pass-through there
    return d.record.source == "passthrough" or d.record.arm == PASSTHROUGH_ARM


def offline_report(model: Path, data: Path, knobs: Sequence[float]) -> dict[str, Any]:
    """The bundle's curve on a labeled file against fixed tiers and random routing (matched cost).

    Raises:
        ArtifactMismatch: when the bundle does not load.
        InvalidData: when the data file is malformed.
    """
    from router_model.router import ComplexityRouter
    from training.dataset import FeatureContext, build_dataset, load_rows
    from training.evaluate import evaluate_choice
    from training.report import build_report

    router = ComplexityRouter.from_artifact(model)
    ds = build_dataset(load_rows([data]), router.tiers, FeatureContext(router.featurizer),
                       tolerance=router.manifest.label_rule.tolerance, source=str(data))
    proba = router.proba_from_features(ds.X)
    report = build_report(ds.scores, ds.costs, [t.name for t in router.tiers], proba)
    points = {f"{k:g}": asdict(evaluate_choice(ds.scores, ds.costs, choose_tiers(proba, k), k))
              for k in knobs}
    rng = np.random.default_rng(0)
    for point in points.values():  # random routing spending the same: tier 0 or top at that share
        share = point["strong_share"]
        pick = np.where(rng.random(len(ds.labels)) < share, ds.scores.shape[1] - 1, 0)
        point["random_same_share_quality"] = float(ds.scores[np.arange(len(pick)), pick].mean())
    fixed = {k: v for k, v in report["baselines"].items() if k.startswith("always_")}
    return {"n": report["n"], "apgr": report["apgr"], "aiq": report["aiq"], "knobs": points,
            "fixed": fixed, "random_apgr": report["baselines"]["random"]["apgr"]}


def _min_labeled(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 1:  # a mean of no labels is no number
        raise argparse.ArgumentTypeError(f"{value}: at least 1 labeled request per arm")
    return n


def _parser() -> argparse.ArgumentParser:
    # the docstring is reST; --help shows it as plain text
    p = argparse.ArgumentParser(
        prog="tierwise ab-report", description=(__doc__ or "").replace("``", ""))
    p.add_argument("--db", help="traffic store URL (sqlite:///PATH or postgresql://…)")
    p.add_argument("--since", help="only requests at or after this ISO 8601 time")
    p.add_argument("--out", type=Path, required=True, help="where report.json/.md/.png go")
    p.add_argument("--min-labeled", type=_min_labeled, default=MIN_LABELED,
                   help=f"labeled requests an arm needs for a number (at least 1; {MIN_LABELED})")
    p.add_argument("--knob", type=number_in(0.0, 1.0), action="append", default=[],
                   help="off-policy: estimate the router at this knob (repeatable)")
    p.add_argument("--offline", action="store_true", help="evaluate --model on --data instead")
    p.add_argument("--model", type=Path, help="bundle directory (offline)")
    p.add_argument("--data", type=Path, help="labeled JSONL (offline)")
    p.add_argument("--seed", type=int, default=None)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tierwise ab-report``; 2 on bad input (nothing written)."""
    args = _parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    seed = settings.training.seed if args.seed is None else args.seed
    knobs = args.knob or [0.2, 0.5, 0.8]  # the offline sweep's default points
    try:
        if args.offline:
            if not (args.model and args.data):
                logger.error("--offline needs --model DIR and --data FILE")
                return 2
            report = offline_report(args.model, args.data, knobs)
            report["verdict"] = "offline evaluation (see knobs, fixed, random_apgr)"
        else:
            if not args.db:
                logger.error("--db URL is required (or --offline)")
                return 2
            decisions = read_decisions(args.db, parse_since(args.since))
            report = online_report(decisions, seed, args.min_labeled)
            if args.knob:  # off-policy only when asked for, at the knobs asked for
                report["off_policy"] = off_policy(decisions, args.knob, seed, args.min_labeled)
    except RouterError as exc:
        logger.error("ab-report: %s", exc)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    if not args.offline:
        (args.out / "report.md").write_text(markdown(report))
        plot_arms(report, args.out / "ab_arms.png")
    logger.info("verdict: %s", report["verdict"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
