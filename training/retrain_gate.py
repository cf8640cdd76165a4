"""The retrain gate: what stands for the champion (``refit_champion``, ``check_disjoint``), an
evaluation file kept apart from the training rows (``eval_overlap``, ``check_overlap``), champion
and challenger scored through ONNX on the same evaluation sets, and the rule that decides whether
the challenger replaces the champion (``training.retrain``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from router_model.artifact import Manifest
from router_model.errors import InvalidData
from router_model.router import prompt_digest
from training.bootstrap import paired_diff_ci
from training.data import LabeledRow, data_sha256, normalise_prompt
from training.dataset import Dataset
from training.export import export_checked
from training.pipeline import fit_calibrated, gain_marks, gate_metric
from training.report import build_report

logger = logging.getLogger(__name__)

MIN_GATE_ROWS = 30
#: The least frozen-set rows a promotion needs (``--min-eval-rows``): on fewer, the gate metric's
#: sampling noise dwarfs any margin (APGR moves by ~0.04 with the seed on a few thousand rows).
MIN_EVAL_ROWS = 200
TIMING_ROWS = 200
#: The share of ``--eval-data`` rows whose prompt this retrain also trains on (base data or
#: labeled traffic) at which it refuses the file: at 5% the challenger's figure on the frozen set
#: is partly a training score. Below it those training rows are removed, with a warning.
MAX_EVAL_OVERLAP = 0.05


@dataclass(frozen=True)
class Frame:
    """The evaluation inputs: the frozen set and the traffic holdout (None when empty)."""

    frozen: Dataset
    traffic: Dataset | None


def card(onnx_bytes: bytes, frame: Frame, tier_names: Sequence[str]) -> dict[str, Any]:
    """Gate metric and report figures on both evaluation sets, and per-row ONNX latency."""
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    k = len(tier_names)
    out: dict[str, Any] = {"latency_us_per_row": row_latency_us(session, frame.frozen.X)}
    for key, ds in (("frozen", frame.frozen), ("traffic", frame.traffic)):
        if ds is None or len(ds.rows) == 0:
            out[key] = None
            continue
        proba = np.asarray(session.run(["probabilities"], {"features": ds.X})[0], dtype=np.float64)
        rep = build_report(ds.scores, ds.costs, tier_names, proba)
        gate = gate_metric(rep, k)
        out[key] = {"n": rep["n"], "gate": None if np.isnan(gate) else gate,
                    "apgr": rep["apgr"], "aiq": rep["aiq"], "cpt50": rep["cpt50"]}
    return out


def frozen_diff_ci(champion: bytes, challenger: bytes, frozen: Dataset, n_tiers: int,
                   seed: int) -> list[float] | None:
    """Paired-bootstrap 95% interval of (challenger - champion) gate metric on the frozen set."""
    proba = []
    for onnx_bytes in (champion, challenger):
        session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        out = session.run(["probabilities"], {"features": frozen.X})[0]
        proba.append(np.asarray(out, dtype=np.float64))
    metric = "apgr" if n_tiers == 2 else "aiq"  # as training.pipeline.gate_metric
    return paired_diff_ci(frozen.scores, frozen.costs, proba[0], proba[1], metric, seed=seed)


def row_latency_us(session: ort.InferenceSession, X: NDArray[np.float32]) -> float:
    """Median microseconds to score one row (what a request pays), over up to 200 rows."""
    rows = np.ascontiguousarray(X[:TIMING_ROWS], dtype=np.float32)
    session.run(None, {"features": rows[:1]})  # warm-up
    times = []
    for i in range(len(rows)):
        start = time.perf_counter()
        session.run(None, {"features": rows[i: i + 1]})
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e6)


def gate(champion: dict[str, Any], challenger: dict[str, Any], margin: float,
         max_slowdown: float) -> tuple[bool, list[str]]:
    """Whether the challenger may replace the champion, and why (one line per check)."""
    reasons, ok = [], True
    for key in ("frozen", "traffic"):
        a, b = champion.get(key), challenger.get(key)
        if a is None or b is None or a["gate"] is None or b["gate"] is None:
            reasons.append(f"{key}: gate metric undefined, not checked")
            continue
        if key == "traffic" and a["n"] < MIN_GATE_ROWS:
            reasons.append(f"{key}: {a['n']} rows < {MIN_GATE_ROWS}, not checked")
            continue
        passed = b["gate"] >= a["gate"] - margin
        ok &= passed
        reasons.append(f"{key}: challenger {b['gate']:.4f} vs champion {a['gate']:.4f} "
                       f"(margin {margin}) -> {'pass' if passed else 'FAIL'}")
    ratio = challenger["latency_us_per_row"] / max(champion["latency_us_per_row"], 1e-9)
    fast = ratio <= max_slowdown
    reasons.append(f"latency: {ratio:.2f}x the champion's (bound {max_slowdown}x) -> "
                   f"{'pass' if fast else 'FAIL'}")
    return ok and fast, reasons


def evidence(frozen_rows: int, min_rows: int, diff_ci: list[float] | None, margin: float,
             require_ci: bool) -> tuple[bool, list[str]]:
    """Whether the frozen set is evidence enough to promote, and why (one line per check).

    The frozen set needs at least ``min_rows`` rows. With ``require_ci`` the paired interval of
    (challenger - champion) must exist, have width (a zero-width one, e.g. [0, 0], means the
    resamples never disagreed: too few or identical decisions, no evidence), and a lower bound at
    least ``-margin``.
    """
    enough = frozen_rows >= min_rows
    reasons = [f"frozen: {frozen_rows} rows (at least {min_rows} needed to promote) -> "
               f"{'pass' if enough else 'FAIL'}"]
    line = f"frozen: challenger - champion paired 95% CI {diff_ci}"
    if not require_ci:
        return enough, [*reasons, line]
    if diff_ci is None or not diff_ci[1] > diff_ci[0]:
        return False, [*reasons, f"{line} (undefined or zero-width: no evidence) -> FAIL"]
    shown = diff_ci[0] >= -margin
    return enough and shown, [*reasons, f"{line} (lower bound >= -margin required: "
                                        f"{'pass' if shown else 'FAIL'})"]


@dataclass(frozen=True)
class Overlap:
    """``--eval-data`` rows whose prompt (whitespace-normalised) is also a training row of this
    retrain, and the training rows to keep: those whose prompt is no evaluation prompt."""

    eval_rows: int
    base: int  # evaluation rows whose prompt is in the base data
    traffic: int  # ... in the labeled traffic's training part
    shared: int  # ... in either
    keep_base: tuple[int, ...]
    keep_traffic: tuple[int, ...]

    @property
    def share(self) -> float:
        return self.shared / self.eval_rows if self.eval_rows else 0.0


def eval_overlap(evaluation: Sequence[LabeledRow], base: Sequence[LabeledRow],
                 traffic: Sequence[LabeledRow]) -> Overlap:
    """Which evaluation prompts this retrain's training rows (base, then traffic) also hold.

    Prompts match after whitespace normalisation. A traffic row stored without its text (its
    ``id`` is the serving digest, ``router_model.router.prompt_digest``) matches an evaluation
    prompt whose exact text has that digest.
    """
    texts = [normalise_prompt(r.prompt) for r in evaluation]
    digests = [prompt_digest(r.prompt) for r in evaluation]
    base_texts = [normalise_prompt(r.prompt) for r in base]
    traffic_texts = [normalise_prompt(r.prompt) for r in traffic]
    in_base, in_traffic = set(base_texts), set(traffic_texts)
    traffic_ids = {r.id for r in traffic if r.id}
    hits = [(t in in_base, t in in_traffic or d in traffic_ids)
            for t, d in zip(texts, digests, strict=True)]
    held, held_digests = set(texts), set(digests)
    return Overlap(
        eval_rows=len(evaluation), base=sum(b for b, _ in hits), traffic=sum(t for _, t in hits),
        shared=sum(b or t for b, t in hits),
        keep_base=tuple(i for i, t in enumerate(base_texts) if t not in held),
        keep_traffic=tuple(i for i, (t, r) in enumerate(zip(traffic_texts, traffic, strict=True))
                           if t not in held and r.id not in held_digests),
    )


def check_overlap(overlap: Overlap, eval_data: Path) -> None:
    """Refuse an ``--eval-data`` this retrain substantially trains on; warn on a small overlap.

    Raises:
        InvalidData: when at least ``MAX_EVAL_OVERLAP`` of its rows have a prompt of the base
            data or of the labeled traffic's training part.
    """
    if not overlap.shared:
        return
    what = (f"{overlap.shared} of its {overlap.eval_rows} rows ({overlap.share:.1%}) have a "
            f"prompt this retrain trains on ({overlap.base} in --base-data, {overlap.traffic} in "
            "the labeled traffic)")
    if overlap.share >= MAX_EVAL_OVERLAP:
        raise InvalidData(
            f"--eval-data {eval_data}: {what}, at least {MAX_EVAL_OVERLAP:.0%}: give an "
            "evaluation file disjoint from the training data (or --since to leave old traffic "
            "out), or leave --eval-data out to hold out part of the base data")
    logger.warning("--eval-data %s: %s; those training rows are removed, and whether the "
                   "champion was fitted on them cannot be told", eval_data, what)


def check_disjoint(manifest: Manifest, eval_data: Path, base_data: Sequence[Path],
                   shared: int) -> None:
    """Refuse an ``--eval-data`` the champion artifact is known to have been fitted on.

    The manifest keeps only a hash of the training files (``train_data_sha256``), not per-row
    hashes: overlap is known only when that hash is the eval file's, or the base files' and the
    eval file shares ``shared`` prompts with them (other overlap: ``check_overlap``).

    Raises:
        InvalidData: when the champion was fitted on rows of ``--eval-data``.
    """
    trained_on = manifest.train_data_sha256
    if trained_on == data_sha256([eval_data]) or (
            shared and trained_on == data_sha256(base_data)):
        raise InvalidData(
            f"--eval-data {eval_data}: the champion was fitted on these rows (its manifest's "
            "train_data_sha256 matches); give an evaluation file disjoint from its training "
            "data, or leave --eval-data out to compare it refitted on the base split")


def drop_eval_prompts(manifest: Manifest, eval_data: Path, base_data: Sequence[Path],
                      train: tuple[Dataset, Dataset], frozen: Dataset
                      ) -> tuple[Dataset, Dataset, Overlap]:
    """The (base, traffic) training rows without ``--eval-data``'s prompts, once the file passed
    ``check_disjoint`` (the champion's manifest) and ``check_overlap`` (this retrain's rows).

    Raises:
        InvalidData: when the champion or this retrain is known to be fitted on the file's rows.
    """
    base, traffic = train
    overlap = eval_overlap(frozen.rows, base.rows, traffic.rows)
    check_disjoint(manifest, eval_data, base_data, overlap.base)
    check_overlap(overlap, eval_data)
    return base.subset(overlap.keep_base), traffic.subset(overlap.keep_traffic), overlap


def refit_champion(manifest: Manifest, base: Dataset, seed: int) -> bytes:
    """The champion's configuration (its manifest's estimator and feature set) fitted and
    calibrated on the base training split only, exported: what the gate judges by default,
    since the champion artifact itself was fitted on the rows the frozen set is drawn from."""
    k = len(manifest.classes)
    gain = gain_marks(manifest.label_rule.fit, np.ones(len(base.rows), dtype=bool))
    fitted = fit_calibrated(base, manifest.estimator, k, seed, gain=gain)
    onnx_bytes, _ = export_checked(fitted.estimator, base.X[fitted.cal_idx], k)
    return onnx_bytes
