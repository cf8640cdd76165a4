"""Two-tier bundles on tasks none trained on: MMLU-Pro questions not from MMLU, LLMRouter's prompts.

Not a test. No figure in ``RESULTS.md`` uses these rows, and neither task has the RouteLLM pair,
so the nearest pair stands in for Mixtral-8x7B / GPT-4:

- ``mmlu_pro``, the validation task on which ``gbt_mono``'s monotone prior (``training.fit``) was
  chosen: rows of ``data/labeled/mmlu_pro.jsonl`` (``tierwise convert``) whose source is not
  ``ori_mmlu`` (STEM-website, TheoremQA and SciBench questions, 4,264 rows); Mixtral-8x7B (the
  bundles' own weak model) against gpt-4o.
- ``llmrouter``: ``data/labeled/llmrouter.jsonl`` (open-domain and commonsense questions, reading
  passages, code; not multiple choice) without its ``math`` rows (GSM8K problems) and without any
  row sharing a run of 8 words with a RouteLLM MMLU or GSM8K prompt; llama-3.1-8b-instruct against
  llama-3.1-nemotron-51b-instruct (a small and a large model, as the bundles' pair is). It shows
  what the bundles do with prompts unlike the benchmark questions they learned from.

Prints each bundle's APGR and CPT(50%) with bootstrap 95% intervals, the paired APGR difference
of every bundle against the first, and what the bundle's default knob does there (strong tier's
share of calls, gap recovered).

    python bench/bench_cross_task.py [--bundles data/models/routellm_fast data/models/routellm ...]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from router_model.features import featurize
from router_model.router import ComplexityRouter
from router_model.settings import DATA_DIR, Settings
from training.bootstrap import bootstrap_ci, paired_diff_ci
from training.data import estimate_costs, read_labeled
from training.report import build_report
from training.sources import ensure_converted, mmlu_origin

WEAK = "Mixtral-8x7B-Instruct-v0.1"
STRONG = "gpt-4o-2024-05-13"
LLMROUTER_WEAK = "llama-3.1-8b-instruct"
LLMROUTER_STRONG = "llama-3.1-nemotron-51b-instruct"
TASKS = ("mmlu_pro", "llmrouter")


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def load_task(path: Path, weak: str, strong: str) -> tuple[list[str], NDArray[np.float64]]:
    """Prompts and ``(n, 2)`` scores of the rows not from MMLU that score both models."""
    prompts, scores = [], []
    for row in read_labeled(path):
        if mmlu_origin(row) is not None or weak not in row.scores or strong not in row.scores:
            continue
        prompts.append(row.prompt)
        scores.append([row.scores[weak], row.scores[strong]])
    return prompts, np.asarray(scores, dtype=np.float64)


def _runs(text: str, n: int = 8) -> set[str]:
    words = re.sub(r"\W+", " ", text.lower()).split()
    return {" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def load_llmrouter(path: Path, seen: Sequence[Path], weak: str,
                   strong: str) -> tuple[list[str], NDArray[np.float64]]:
    """LLMRouter rows that are not ``math`` and share no 8-word run with a prompt in ``seen``."""
    known = set().union(*(_runs(row.prompt) for p in seen for row in read_labeled(p)))
    prompts, scores = [], []
    for row in read_labeled(path):
        if row.group == "llmrouter/math" or _runs(row.prompt) & known:
            continue
        prompts.append(row.prompt)
        scores.append([row.scores[weak], row.scores[strong]])
    return prompts, np.asarray(scores, dtype=np.float64)


def task_rows(name: str, labeled: Path) -> tuple[str, str, list[str], NDArray[np.float64]]:
    """``(weak, strong, prompts, scores)`` of one task."""
    if name == "mmlu_pro":
        return WEAK, STRONG, *load_task(labeled / "mmlu_pro.jsonl", WEAK, STRONG)
    seen = [labeled / "routellm_mmlu.jsonl", labeled / "routellm_gsm8k.jsonl"]
    return (LLMROUTER_WEAK, LLMROUTER_STRONG,
            *load_llmrouter(labeled / "llmrouter.jsonl", seen, LLMROUTER_WEAK, LLMROUTER_STRONG))


#: ``--quick``: rows per task.
QUICK_ROWS = 100


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    models = DATA_DIR / "models"
    p.add_argument("--bundles", type=Path, nargs="+",
                   default=[models / "routellm_fast", models / "routellm"])
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    p.add_argument("--labeled-dir", type=Path, default=None, help="default: settings")
    p.add_argument("--quick", action="store_true",
                   help=f"the first {QUICK_ROWS} rows of each task (a smoke run, no figures)")
    args = p.parse_args(argv)
    paths = Settings().training
    labeled = args.labeled_dir or paths.labeled_dir
    ensure_converted(paths.sources_dir, labeled)
    routers = [ComplexityRouter.from_artifact(b) for b in args.bundles]
    for task in args.tasks:
        weak, strong, prompts, scores = task_rows(task, labeled)
        if args.quick:
            prompts, scores = prompts[:QUICK_ROWS], scores[:QUICK_ROWS]
        out(f"{task}: {len(prompts)} rows; {weak} right on {scores[:, 0].mean():.3f}, "
            f"{strong} on {scores[:, 1].mean():.3f}")
        out(f"{'bundle':<36} {'APGR':>6} {'95% CI':>15} {'CPT(50%)':>9} {'95% CI':>15}"
            f"  {'vs first: APGR':<18} default knob: share / PGR")
        first: NDArray[np.float64] | None = None
        for bundle, router in zip(args.bundles, routers, strict=True):
            if len(router.tiers) != 2:
                out(f"{str(bundle)[-36:]:<36} skipped: {len(router.tiers)} tiers")
                continue
            feats = featurize(prompts, router.featurizer)
            proba = router.proba_from_features(feats.matrix)
            costs = estimate_costs(feats.n_tokens, router.tiers)
            rep = build_report(scores, costs, [t.name for t in router.tiers], proba,
                               default_knob=router.manifest.threshold)
            ci = bootstrap_ci(scores, costs, proba)
            diff = "" if first is None else str(np.round(
                paired_diff_ci(scores, costs, first, proba, "apgr") or [np.nan, np.nan],
                3).tolist())
            a, c = ci["apgr"] or [np.nan, np.nan], ci["cpt50"] or [np.nan, np.nan]
            knob = rep["at_default_knob"]
            out(f"{str(bundle)[-36:]:<36} {rep['apgr']:6.3f} [{a[0]:.3f}, {a[1]:.3f}] "
                f"{rep['cpt50']:9.3f} [{c[0]:.3f}, {c[1]:.3f}]  {diff:<18} "
                f"{knob['strong_share']:.3f} / {knob['pgr']:.3f}")
            first = proba if first is None else first
        out()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
