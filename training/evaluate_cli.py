"""``tierwise evaluate --model DIR --data FILE.jsonl --out OUTDIR``: a bundle against fixed routing.

The bundle is loaded exactly as serving loads it (``ComplexityRouter.from_artifact``) and scores the
file's prompts through the shared feature extractor, so the figures are those of the served model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from router_model.embed_cache import DiskEmbeddingCache
from router_model.encoder import ENCODER_ID
from router_model.errors import RouterError
from router_model.features import featurize
from router_model.logs import configure_logging
from router_model.router import ComplexityRouter
from router_model.settings import Settings
from training.bootstrap import bootstrap_ci
from training.data import read_labeled, select_tiers, table_costs
from training.plots import plot_cost_quality
from training.report import build_report

logger = logging.getLogger(__name__)


def evaluate_bundle(
    model_dir: Path, data: Path, cache_dir: Path | None, seed: int = 0
) -> dict[str, Any]:
    """Evaluate a bundle on a labeled file; returns the report dict, with bootstrap 95% CIs of
    the router's figures under ``ci95`` (``seed`` seeds the resamples).

    Raises:
        ArtifactMismatch: when the bundle cannot be loaded.
        InvalidData: when the file is malformed or has none of the bundle's tier models.
    """
    router = ComplexityRouter.from_artifact(model_dir)
    tiers = router.tiers
    table = select_tiers(read_labeled(data), [t.model for t in tiers], source=str(data))
    prompts = [r.prompt for r in table.rows]
    cache = None
    if cache_dir is not None and router.featurizer.feature_set == "full":
        cache = DiskEmbeddingCache(cache_dir, ENCODER_ID)
    feats = featurize(prompts, router.featurizer, cache=cache)
    if cache is not None:
        cache.flush()
    proba = router.proba_from_features(feats.matrix)
    costs = table_costs(table, feats.n_tokens, tiers)
    report = build_report(table.scores, costs, [t.name for t in tiers], proba,
                          default_knob=router.manifest.threshold)
    report.update(
        model_version=router.model_version,
        data=str(data),
        skipped_rows=table.skipped,
        default_knob=router.manifest.threshold,
        ci95=bootstrap_ci(table.scores, costs, proba, seed=seed),
    )
    return report


def _write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), 0o644)  # mkstemp makes 0600; a report is ordinary output
        json.dump(doc, fh, indent=1, default=float)
        fh.write("\n")
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tierwise evaluate``."""
    # the docstring is reST; --help shows it as plain text
    p = argparse.ArgumentParser(
        prog="tierwise evaluate", description=(__doc__ or "").replace("``", ""))
    p.add_argument("--model", type=Path, required=True, help="bundle directory")
    p.add_argument("--data", type=Path, required=True, help="labeled JSONL file")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--no-cache", action="store_true", help="do not use the embedding cache")
    args = p.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    try:  # before the evaluation, so a bad --out does not waste it
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        p.error(f"--out {args.out}: cannot create the output directory ({exc.strerror or exc})")
    try:
        report = evaluate_bundle(
            args.model,
            args.data,
            None if args.no_cache else settings.training.cache_dir,
            seed=settings.training.seed,
        )
    except RouterError as exc:
        logger.error("%s", exc)
        return 2
    _write_json_atomic(args.out / "report.json", report)
    plot_cost_quality(
        report, args.out / "cost_quality.png", title=f"{args.model.name} on {args.data.name}"
    )
    logger.info(
        "apgr=%s cpt50=%s cpt80=%s aiq=%s ci95=%s -> %s",
        report["apgr"],
        report["cpt50"],
        report["cpt80"],
        report["aiq"],
        report["ci95"],
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
