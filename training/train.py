"""``tierwise train``: data → features → fit → calibrate → export → evaluate → register.

``tierwise train --all`` rebuilds every shipped bundle under ``data/models/`` from the shipped
sources, writes evaluation reports and plots under ``reports/`` and regenerates ``RESULTS.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from router_model.artifact import LabelRule, Manifest, TierSpec, write_bundle
from router_model.errors import InvalidData, RouterError
from router_model.features import FEATURE_VERSION, feature_names
from router_model.logs import configure_logging
from router_model.settings import DATA_DIR, REPO_ROOT, Settings
from router_model.tiers import Tier
from training import registry
from training.cli_args import number_in
from training.data import data_sha256
from training.dataset import FeatureContext, make_context
from training.export import export_checked
from training.fit import CANDIDATES, predict_proba_full
from training.pipeline import (
    default_knob,
    fit_calibrated,
    select_candidate,
)
from training.plots import plot_cost_quality
from training.protocol import (
    check_trainable,
    evaluate_protocols,
    recipe_dataset,
    summary,
    trust_warnings,
)
from training.recipes import HAND_CANDIDATES, SHIPPED, Recipe

logger = logging.getLogger(__name__)

BUNDLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class TrainPaths:
    """Where a training job reads and writes."""

    labeled_dir: Path
    tiers_dir: Path
    models_dir: Path
    reports_dir: Path
    cache_dir: Path | None
    tracking_uri: str | None


def _git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def train_recipe(
    recipe: Recipe, paths: TrainPaths, ctx: FeatureContext, *, seed: int, compare: bool,
    strict: bool = False,
) -> Path:
    """Train, evaluate, export and register one bundle; returns its directory.

    A bundle that ``trust_warnings`` flags is written with its warnings (logged, in the manifest
    and reports), or with ``strict`` refused before anything is written.

    Raises:
        InvalidData: when a data or tiers file is malformed, or ``strict`` and a warning.
        ArtifactMismatch: when the ONNX export disagrees with scikit-learn.
    """
    start = time.perf_counter()
    tiers, ds = recipe_dataset(recipe, paths.labeled_dir, paths.tiers_dir, ctx)
    names = [t.name for t in tiers]
    check_trainable(ds, names, recipe)
    files = [paths.labeled_dir / f for f in recipe.data_files]
    logger.info(
        "%s: %d rows, label shares %s",
        recipe.name,
        len(ds.rows),
        np.bincount(ds.labels, minlength=len(tiers)) / len(ds.rows),
    )
    candidate = recipe.candidates[0]
    table: dict[str, dict[str, float]] = {}
    if compare and len(recipe.candidates) > 1:
        candidate, table = select_candidate(
            ds, recipe.candidates, names, seed, balance_tasks=recipe.balance_tasks
        )
    final = fit_calibrated(ds, candidate, len(tiers), seed, balance_tasks=recipe.balance_tasks)
    knob = default_knob(final, ds)
    reports = evaluate_protocols(ds, recipe, candidate, names, seed, knob)
    cal = ds.subset(final.cal_idx)
    warned = trust_warnings(reports, knob, predict_proba_full(final.estimator, cal.X, len(tiers)))
    if warned and strict:
        raise InvalidData(f"{recipe.name}: refused (--strict): " + "; ".join(warned))
    for text in warned:
        logger.warning("%s: WARNING %s", recipe.name, text)
    onnx_bytes, parity = export_checked(final.estimator, ds.X[final.cal_idx], len(tiers))
    metrics: dict[str, Any] = {k: summary(v) for k, v in reports.items()}
    metrics.update(
        candidates=table,
        onnx_parity_max_abs_diff=parity,
        n_rows=len(ds.rows),
        skipped_rows=ds.skipped,
        train_seconds=round(time.perf_counter() - start, 1),
    )
    manifest = _manifest(recipe, tiers, candidate, knob, metrics, files, onnx_bytes)
    manifest = manifest.model_copy(update={"warnings": warned})
    bundle = write_bundle(paths.models_dir / recipe.name, manifest, onnx_bytes)
    plots = _write_reports(paths.reports_dir / recipe.name, recipe.name, reports, manifest)
    if paths.tracking_uri:
        _register(paths.tracking_uri, recipe, bundle, candidate, seed, metrics, plots)
    logger.info("%s: bundle %s written in %.1fs", recipe.name, bundle, time.perf_counter() - start)
    return bundle


def _manifest(
    recipe: Recipe,
    tiers: Sequence[Tier],
    candidate: str,
    knob: float,
    metrics: dict[str, Any],
    files: Sequence[Path],
    onnx_bytes: bytes,
) -> Manifest:
    return Manifest(
        name=recipe.name,
        feature_version=FEATURE_VERSION,
        feature_set=recipe.feature_set,
        feature_names=list(feature_names(recipe.feature_set)),
        tiers=[
            TierSpec(
                name=t.name, model=t.model, input_price=t.input_price, output_price=t.output_price
            )
            for t in tiers
        ],
        classes=[t.name for t in tiers],
        threshold=round(knob, 6),
        calibration="CalibratedClassifierCV(FrozenEstimator)",
        estimator=candidate,
        label_rule=LabelRule(tolerance=recipe.tolerance),
        metrics=json.loads(json.dumps(metrics, default=float)),
        train_data_sha256=data_sha256(files),
        onnx_sha256=hashlib.sha256(onnx_bytes).hexdigest(),
        git_sha=_git_sha(),
    )


def _write_reports(
    out: Path, name: str, reports: dict[str, dict[str, Any]], manifest: Manifest
) -> tuple[Path, ...]:
    out.mkdir(parents=True, exist_ok=True)
    plots = []
    for split, rep in reports.items():
        slug = split.replace(":", "_").replace("->", "_to_").replace("/", "_")
        doc = {**rep, "warnings": manifest.warnings}
        (out / f"report_{slug}.json").write_text(json.dumps(doc, indent=1, default=float) + "\n")
        plots.append(
            plot_cost_quality(
                rep,
                out / f"cost_quality_{slug}.png",
                title=f"{name}: {split} ({manifest.estimator})",
            )
        )
    return tuple(plots)


def _register(
    uri: str,
    recipe: Recipe,
    bundle: Path,
    candidate: str,
    seed: int,
    metrics: dict[str, Any],
    plots: tuple[Path, ...],
) -> None:
    champion = registry.alias_version(uri, recipe.name, registry.CHAMPION)
    rec = registry.log_and_register(
        uri,
        name=recipe.name,
        bundle_dir=bundle,
        params={
            "estimator": candidate,
            "seed": seed,
            "feature_set": recipe.feature_set,
            "tiers": recipe.tiers_file,
            "data": ",".join(recipe.data_files),
            "tolerance": recipe.tolerance,
            "balance_tasks": recipe.balance_tasks,
            "feature_version": FEATURE_VERSION,
        },
        metrics=metrics,
        plots=plots,
        alias=registry.CHAMPION if champion is None else registry.CHALLENGER,
    )
    if champion is None:
        logger.info("%s registered as %s, alias champion", recipe.name, rec.model_uri)
    else:  # the bundle folder now holds this version; models:/NAME@champion still serves the old
        logger.warning(
            "%s registered as %s, alias challenger: models:/%s@champion stays version %s "
            "(`tierwise retrain` promotes a challenger only past its gate)",
            recipe.name, rec.model_uri, recipe.name, champion,
        )


def _bundle_name(value: str) -> str:
    """A custom bundle's name: one safe path component, also a valid MLflow model name."""
    if not BUNDLE_NAME.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r}: a bundle name is 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    if value in SHIPPED:
        raise argparse.ArgumentTypeError(
            f"{value!r} is a shipped bundle; rebuild it with --recipe {value}, or pick another name"
        )
    return value


def _parser() -> argparse.ArgumentParser:
    # the docstring is reST; --help shows it as plain text
    p = argparse.ArgumentParser(
        prog="tierwise train", description=(__doc__ or "").replace("``", ""))
    p.add_argument("--all", action="store_true", help="rebuild every shipped bundle")
    p.add_argument(
        "--recipe",
        action="append",
        choices=sorted(SHIPPED),
        default=[],
        help="a shipped recipe to build (repeatable)",
    )
    p.add_argument("--data", type=Path, nargs="+", help="labeled JSONL files (custom bundle)")
    p.add_argument("--tiers", type=Path, help="tiers YAML file (custom bundle)")
    p.add_argument("--name", type=_bundle_name,
                   help="bundle name (custom bundle): letters, digits, '.', '_', '-'; "
                        "not a shipped bundle's name")
    p.add_argument("--feature-set", choices=["full", "hand"], default="full")
    p.add_argument("--tolerance", type=number_in(0.0, 1.0), default=0.0,
                   help="label rule: cheapest tier within this of the best tier's score "
                        "(0 to 1; 0 for right/wrong scores, about 0.05 for graded ones)")
    p.add_argument("--balance-tasks", action="store_true",
                   help="weight rows so every task (group prefix before '/') counts the same")
    p.add_argument("--estimator", default=None, choices=sorted(CANDIDATES),
                   help="skip comparison and use this candidate")
    p.add_argument("--compare", action="store_true", help="compare candidates and pick the best")
    p.add_argument("--models-dir", type=Path, help="where bundles are written")
    p.add_argument("--reports-dir", type=Path, default=REPO_ROOT / "reports")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: settings)")
    p.add_argument("--no-register", action="store_true", help="do not log to MLflow")
    p.add_argument("--no-cache", action="store_true", help="do not use the embedding cache")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--strict", action="store_true",
                   help="refuse a bundle not shown to beat random routing on held-out rows")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tierwise train``."""
    args = _parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    t = settings.training
    paths = TrainPaths(
        labeled_dir=t.labeled_dir,
        tiers_dir=DATA_DIR / "tiers",
        models_dir=args.models_dir or t.models_dir,
        reports_dir=args.reports_dir,
        cache_dir=None if args.no_cache else t.cache_dir,
        tracking_uri=None if args.no_register else (args.tracking_uri or t.mlflow_tracking_uri),
    )
    if args.data and not (args.tiers and args.name):
        _parser().error("--data needs --tiers and --name")
    recipes = _recipes(args, paths)
    if not recipes:
        _parser().error("name --all, --recipe NAME, or --data/--tiers/--name for a custom bundle")
    if any(r.name in SHIPPED and SHIPPED[r.name] == r for r in recipes):
        from training.sources import ensure_converted

        ensure_converted(t.sources_dir, t.labeled_dir)
    seed = t.seed if args.seed is None else args.seed
    contexts: dict[str, FeatureContext] = {}
    for recipe in recipes:
        if recipe.feature_set not in contexts:
            contexts[recipe.feature_set] = make_context(recipe.feature_set, paths.cache_dir)
        try:
            train_recipe(
                recipe, paths, contexts[recipe.feature_set], seed=seed, compare=args.compare,
                strict=args.strict,
            )
        except RouterError as exc:
            logger.error("%s: %s", recipe.name, exc)
            return 2
    if (args.all or (args.recipe and not args.data)) and rewrites_results(paths):
        from training.results import write_results

        write_results(args.reports_dir, paths.models_dir, REPO_ROOT / "RESULTS.md")
    return 0


def rewrites_results(paths: TrainPaths) -> bool:
    """Whether a shipped-recipe build rewrites the committed ``RESULTS.md``: only when it wrote
    into the repository's own ``data/models`` and ``reports`` (a models folder set by
    ``--models-dir`` or ``TIERWISE_TRAINING__MODELS_DIR`` holds other bundles)."""
    ours = (paths.models_dir, DATA_DIR / "models"), (paths.reports_dir, REPO_ROOT / "reports")
    if all(a.resolve() == b.resolve() for a, b in ours):
        return True
    logger.info("RESULTS.md not rewritten: the bundles are not in the repository's data/models "
                "and reports folders")
    return False


def _recipes(args: argparse.Namespace, paths: TrainPaths) -> list[Recipe]:
    if args.all:
        chosen = list(SHIPPED.values())
    else:
        chosen = [SHIPPED[n] for n in args.recipe]
    if args.data:
        chosen.append(
            Recipe(
                name=args.name,
                tiers_file=str(args.tiers.resolve()),
                data_files=tuple(str(p.resolve()) for p in args.data),
                feature_set=args.feature_set,
                tolerance=args.tolerance,
                balance_tasks=args.balance_tasks,
                candidates=HAND_CANDIDATES
                if args.feature_set == "hand"
                else SHIPPED["routellm"].candidates,
            )
        )
    if args.estimator:
        chosen = [replace(r, candidates=(args.estimator,)) for r in chosen]
    return chosen


if __name__ == "__main__":
    raise SystemExit(main())
