"""Learning curve of shadow labels: how fast a deployment learns traffic its bundle never saw.

Not a test. The kind of traffic: LLMRouter's non-benchmark clusters (``llmrouter/cluster0..2``:
open-domain and commonsense questions, reading passages) without rows sharing a run of 8 words
with a RouteLLM prompt (``protocol_data.load_sources``, the rows ``bench_cross_task.py`` uses).
They have no Mixtral / GPT-4 outcomes, so the stand-in pair of ``bench_cross_task.py`` plays the
deployment's two tiers: llama-3.1-8b-instruct's recorded score is the weak tier's,
llama-3.1-nemotron-51b-instruct's the strong tier's.

The kind's rows are shuffled (seeded) into a held-out set (``--holdout`` of them) and a stream.
Every server is its own process on loopback: one fake OpenAI upstream (``tests/fake_upstream.py``
on the wire protocol) answers both tiers and the judge, and ``tierwise gateway`` runs the shipped
bundle (``--model``) with shadow sampling at rate 1.0, the judge on the strong tier, traffic in
SQLite, no prompt text kept. The judge is replaced by the recorded outcomes: a tier's answer
carries the tier and the prompt's key, and the fake judge answers ``Rating: [[N]]`` with
N = 1 + round(9 * that tier's recorded score), so a stored judge label is (N - 1) / 9 = the score.
Every prompt of the stream goes through the real gateway (client calls, shadow calls, judge calls
and ``judge_labels`` writes are the gateway's own): about 30 prompts/s here, so no bulk path.

After 100, 300, 1,000 and 3,000 streamed prompts (each waited for until its shadow sample is
done) ``tierwise retrain`` runs as a command (the shipped bundle registered as champion in a temp
MLflow SQLite registry, ``--base-data`` its recipe's RouteLLM files, ``--eval-data`` the held-out
rows, ``--holdout-fraction 0``: every label trains). Printed per step, on the held-out rows: APGR
with its bootstrap 95% interval, its paired difference from the cross-validated reference, the
strong tier's share of calls at the challenger's default knob, and the shadow spend per 1,000
requests (the gateway's ``tierwise_gateway_shadow_cost_usd``) at ``data/gateway.example.yaml``'s
prices. Answer lengths are the fake's: each tier's answer is ``--answer-chars`` long, the judge's
``--judge-chars``, and the fake reports usage at 4 characters a token. Reference rows: the
shipped bundle, and the same recipe fitted on its base data plus every stream row and the other
folds of the held-out rows (``--folds``-fold cross-validation over them, fitted as retrain's
defaults fit: traffic weight, ``--fit-on auto`` given every stream row), the issue's target:
within 0.02 of it after at most 1,000 labels. Last, the oracle: a router that knows each
held-out prompt's outcome (the strong tier where it scores higher), at the knob that reaches the
same PGR target as a bundle's default; its strong share is the issue's second target.

    python bench/bench_learning.py [--steps 100 300 1000 3000]
    python bench/bench_learning.py --quick    # one step of 40 labels, fixture base data: smoke

The labeled files come from ``data/sources`` (``tierwise convert``; converted here when missing).
The first full run embeds the RouteLLM base rows once (``data/cache``); later runs read them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import yaml
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from bench_cross_task import LLMROUTER_STRONG, LLMROUTER_WEAK  # noqa: E402
from bench_gateway import (  # noqa: E402
    Process,
    emit,
    free_port,
    run_gateway,
    shadow_counts,
    wait_http,
)
from bench_replay import tierwise  # noqa: E402
from protocol_data import load_sources  # noqa: E402

from router_model.artifact import Manifest, read_bundle  # noqa: E402
from router_model.judge import MAX_RATING, MIN_RATING  # noqa: E402
from router_model.settings import Settings  # noqa: E402
from training import registry  # noqa: E402
from training.bootstrap import bootstrap_ci, paired_diff_ci  # noqa: E402
from training.data import LabeledRow, dedupe, write_labeled  # noqa: E402
from training.dataset import (  # noqa: E402
    Dataset,
    build_dataset,
    concat,
    load_rows,
    make_context,
)
from training.fit import predict_proba_full  # noqa: E402
from training.pipeline import (  # noqa: E402
    default_knob,
    fit_calibrated,
    gain_marks,
    knob_for_pgr,
    select_fit_rule,
)
from training.recipes import SHIPPED  # noqa: E402
from training.report import build_report  # noqa: E402
from training.retrain import TRAFFIC_WEIGHT  # noqa: E402
from training.sources import ensure_converted  # noqa: E402

CLIENT_KEY = "bench-client"
NAME = "routellm_learning"
KIND = ("llmrouter/cluster0", "llmrouter/cluster1", "llmrouter/cluster2")
JUDGE_MARK, ANSWER_MARK = "[Instruction]", "[The Start of Assistant's Answer]"
EXAMPLE = REPO / "data" / "gateway.example.yaml"
QUICK_BASE = REPO / "data" / "fixtures" / "routellm_small.jsonl"


def key_of(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


def fake_reply(table: dict[str, list[float]], models: list[str], sizes: tuple[int, int],
               body: dict[str, Any]) -> str:
    """A tier's answer names its tier and prompt; the judge's verdict is that recorded score."""
    text = str(body["messages"][-1]["content"])
    if text.startswith(JUDGE_MARK):
        graded = text.split(ANSWER_MARK, 1)[1].split()
        tier, key = int(graded[1].removeprefix("tier=")), graded[2].removeprefix("key=")
        score = table[key][tier]
        rating = MIN_RATING + round((MAX_RATING - MIN_RATING) * score)
        return "x" * sizes[1] + f" Rating: [[{rating}]]"
    return f"answer tier={models.index(body['model'])} key={key_of(text)} " + "x" * sizes[0]


def serve_upstream(port: int, table_path: Path, models: list[str], sizes: tuple[int, int]) -> None:
    """Child-process mode: the fake upstream of both tiers and the judge on ``port``."""
    import uvicorn

    sys.path.insert(0, str(REPO / "tests"))
    from fake_upstream import FakeUpstream

    table = json.loads(table_path.read_text("utf-8"))

    class Recorded(FakeUpstream):
        def completion(self, body: dict[str, Any]) -> dict[str, Any]:
            self.requests.clear()  # kept by the fake for tests; thousands here
            doc = super().completion(body)
            chars = sum(len(str(m.get("content") or "")) for m in body["messages"])
            out = len(doc["choices"][0]["message"]["content"])
            doc["usage"] = {"prompt_tokens": math.ceil(chars / 4),
                            "completion_tokens": math.ceil(out / 4)}
            doc["usage"]["total_tokens"] = sum(doc["usage"].values())
            return doc

    fake = Recorded("learning", reply=lambda body: fake_reply(table, models, sizes, body))
    uvicorn.run(fake.app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


@dataclass(frozen=True)
class Kind:
    """The kind's held-out rows and stream, scores keyed by the bundle's tier models."""

    held: list[LabeledRow]
    stream: list[LabeledRow]


def load_kind(labeled: Path, models: list[str], holdout: int, seed: int) -> Kind:
    rows = [LabeledRow(prompt=r.prompt, scores={models[0]: w, models[1]: s}, id=r.id,
                       group=r.group)
            for r, w, s in load_sources(labeled, None, seed)["llmrouter"] if r.group in KIND]
    return split_kind(dedupe(rows), holdout, seed)


def split_kind(rows: Sequence[LabeledRow], holdout: int, seed: int) -> Kind:
    """The rows shuffled by ``seed``: the first ``holdout`` held out, the rest the stream."""
    order = np.random.default_rng(seed).permutation(len(rows))
    return Kind([rows[i] for i in order[:holdout]], [rows[i] for i in order[holdout:]])


def start_gateway(stack: ExitStack, env: dict[str, str], upstream: str, manifest: Manifest,
                  model: Path, tmp: Path) -> tuple[str, str]:
    """``tierwise gateway`` with shadow sampling at 1.0; (base URL, traffic store URL)."""
    prices = {t["name"]: t for t in yaml.safe_load(EXAMPLE.read_text("utf-8"))["tiers"]}
    tiers = [{"name": t.name, "model": t.model, "input_price": prices[t.name]["input_price"],
              "output_price": prices[t.name]["output_price"], "base_url": upstream,
              "api_key_env": "BENCH_UPSTREAM_KEY", "timeout_s": 60} for t in manifest.tiers]
    db = f"sqlite:///{tmp / 'traffic.db'}"
    config = {"tiers": tiers, "router": {"bundle": str(model)}, "default_tier": "strong",
              "traffic": {"url": db, "store_prompts": False},
              "shadow": {"rate": 1.0, "judge": "strong", "max_usd_per_day": 1e9,
                         "queue": 100_000, "concurrency": 4, "timeout_s": 60}}
    return run_gateway(stack, env, config, tmp / "gateway.yaml", name="gateway")[0], db


def send(url: str, rows: Sequence[LabeledRow], workers: int) -> None:
    """Each row's prompt as a routed chat completion, ``workers`` clients at once."""
    def work(part: Sequence[LabeledRow]) -> None:
        headers = {"authorization": f"Bearer {CLIENT_KEY}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            for row in part:
                r = client.post("/v1/chat/completions", json={
                    "model": "tierwise-auto",
                    "messages": [{"role": "user", "content": row.prompt}]})
                r.raise_for_status()

    threads = [threading.Thread(target=work, args=(rows[i::workers],)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def wait_shadow(url: str, n: int, timeout: float = 1800) -> dict[str, float]:
    """Wait until ``n`` samples are done (labelled or counted as why not); the counters."""
    done = ("labeled", "unparseable", "judge_failed", "no_other_answer", "failed", "over_budget")
    deadline = time.monotonic() + timeout
    while True:
        counts = shadow_counts(url)
        if sum(counts.get(k, 0) for k in done) + counts.get("dropped_full", 0) >= n:
            return counts
        if time.monotonic() > deadline:
            raise RuntimeError(f"shadow samples not done after {timeout}s: {counts}")
        time.sleep(0.5)


def onnx_proba(bundle: Path, X: NDArray[np.float32]) -> NDArray[np.float64]:
    session = ort.InferenceSession(read_bundle(bundle)[1], providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["probabilities"], {"features": X})[0], dtype=np.float64)


def row(label: str, held: Dataset, proba: NDArray[np.float64], knob: float | None,
        ref: NDArray[np.float64] | None, extra: str = "", share: float | None = None) -> None:
    """One printed row: APGR [95% CI], vs the reference [paired CI], strong share, extra."""
    rep = build_report(held.scores, held.costs, ["weak", "strong"], proba, default_knob=knob)
    ci = bootstrap_ci(held.scores, held.costs, proba)["apgr"] or [np.nan, np.nan]
    diff = "" if ref is None else "{:+.3f} [{:+.3f}, {:+.3f}]".format(
        rep["apgr"] - build_report(held.scores, held.costs, ["weak", "strong"], ref)["apgr"],
        *(paired_diff_ci(held.scores, held.costs, ref, proba, "apgr") or [np.nan, np.nan]))
    if share is None:
        share = rep["at_default_knob"]["strong_share"] if knob is not None else float("nan")
    emit(f"  {label:<34} {rep['apgr']:6.3f} [{ci[0]:.3f}, {ci[1]:.3f}]  {diff:<24} "
         f"{share:6.3f}  {extra}")


def retrain_weights(base: Dataset, n_traffic: int, weight: float) -> NDArray[np.float64]:
    """Row weights as ``tierwise retrain`` gives them: 1 per base row, then ``weight`` per
    traffic row (every traffic row here is judge-labelled, at ``--judge-weight`` 1)."""
    return np.concatenate([np.ones(len(base.rows)), np.full(n_traffic, weight)])


def reference_rule(manifest: Manifest, base: Dataset, stream: Dataset, seed: int,
                   weight: float = TRAFFIC_WEIGHT) -> str:
    """The fit rule ``tierwise retrain --fit-on auto`` picks given every stream row."""
    ds = concat(base, stream)
    return select_fit_rule(ds, manifest.estimator, seed,
                           retrain_weights(base, len(stream.rows), weight),
                           np.ones(len(ds.rows), bool),
                           np.arange(len(base.rows), len(ds.rows)))[0]


def cv_reference(manifest: Manifest, base: Dataset, stream: Dataset, held: Dataset, folds: int,
                 seed: int, weight: float = TRAFFIC_WEIGHT, fit_on: str = "auto",
                 ) -> tuple[NDArray[np.float64], float, str]:
    """Out-of-fold probabilities on the held-out rows of the recipe fitted on base + stream +
    the other folds, as ``tierwise retrain`` fits (``fit_on``: its ``--fit-on``, ``auto`` the
    rule it picks given every stream row; every row here has both tiers scored), the strong
    share at each fold model's own default knob (pooled) and the rule used."""
    if fit_on == "auto":
        fit_on = reference_rule(manifest, base, stream, seed, weight)
    proba = np.zeros((len(held.rows), 2))
    strong = 0.0
    parts = np.array_split(np.random.default_rng(seed).permutation(len(held.rows)), folds)
    for part in parts:
        rest = np.setdiff1d(np.arange(len(held.rows)), part)
        ds = concat(concat(base, stream), held.subset(rest))
        weights = retrain_weights(base, len(ds.rows) - len(base.rows), weight)
        fitted = fit_calibrated(ds, manifest.estimator, 2, seed, sample_weight=weights,
                                gain=gain_marks(fit_on, np.ones(len(ds.rows), dtype=bool)))
        proba[part] = predict_proba_full(fitted.estimator, held.X[part], 2)
        fold = held.subset(part)
        rep = build_report(fold.scores, fold.costs, ["weak", "strong"], proba[part],
                           default_knob=default_knob(fitted, ds))
        strong += rep["at_default_knob"]["strong_share"] * len(part)
    return proba, strong / len(held.rows), fit_on


@dataclass(frozen=True)
class Run:
    """What one run needs: the paths, the bundle and the knobs of the command line."""

    tmp: Path
    model: Path
    manifest: Manifest
    base_files: tuple[Path, ...]
    env: dict[str, str]
    args: argparse.Namespace


def curve(run: Run, stack: ExitStack, kind: Kind, held: Dataset,
          ref: NDArray[np.float64]) -> None:
    """Stream the kind through the gateway; retrain and score at each step."""
    a, tmp = run.args, run.tmp
    models = [t.model for t in run.manifest.tiers]
    table = {key_of(r.prompt): [r.scores[m] for m in models] for r in kind.stream}
    (tmp / "table.json").write_text(json.dumps(table), encoding="utf-8")
    port = free_port()
    proc = Process([sys.executable, __file__, "--serve-upstream", str(port), "--table",
                    str(tmp / "table.json"), "--answer-chars", str(a.answer_chars),
                    "--judge-chars", str(a.judge_chars)], run.env, "upstream")
    stack.callback(proc.stop)
    wait_http(f"http://127.0.0.1:{port}/")
    gateway, db = start_gateway(stack, run.env, f"http://127.0.0.1:{port}/v1", run.manifest,
                                run.model, tmp)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    registry.log_and_register(uri, name=NAME, bundle_dir=run.model, params={}, metrics={},
                              alias=registry.CHAMPION)
    child = {**run.env, "TIERWISE_TRAINING__MLFLOW_TRACKING_URI": uri,
             "TIERWISE_LOG_LEVEL": "WARNING"}
    sent = 0
    for n in sorted({min(s, len(kind.stream)) for s in a.steps}):
        start = time.perf_counter()
        send(gateway, kind.stream[sent:n], a.workers)
        counts = wait_shadow(gateway, n)
        took, sent = time.perf_counter() - start, n
        out = tmp / f"retrain_{n}"
        retrain_s = tierwise(["retrain", "--db", db, "--name", NAME, "--out", str(out),
                              "--base-data", *map(str, run.base_files), "--eval-data",
                              str(tmp / "held.jsonl"), "--holdout-fraction", "0",
                              "--seed", str(a.seed), *(["--no-cache"] if a.quick else [])],
                             child)
        decision = json.loads((out / "retrain_decision.json").read_text())
        manifest = read_bundle(out / "challenger")[0]
        spend = 1000 * counts.get("cost_usd", 0.0) / n
        row(f"after {n} prompts ({decision['data']['traffic_labeled']} labeled)", held,
            onnx_proba(out / "challenger", held.X), manifest.threshold, ref,
            f"${spend:7.3f}   {n / took:5.1f} prompts/s, retrain {retrain_s:.0f}s, "
            f"{int(counts.get('labeled', 0))} labelled, fit on {decision['fit_on']}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--model", type=Path, default=REPO / "data" / "models" / "routellm")
    p.add_argument("--steps", type=int, nargs="+", default=[100, 300, 1000, 3000])
    p.add_argument("--holdout", type=int, default=1000, help="held-out rows of the kind")
    p.add_argument("--folds", type=int, default=5, help="folds of the reference's CV")
    p.add_argument("--workers", type=int, default=4, help="concurrent clients")
    p.add_argument("--answer-chars", type=int, default=800, help="each tier's answer length")
    p.add_argument("--judge-chars", type=int, default=400, help="the judge's reply length")
    p.add_argument("--labeled-dir", type=Path, default=None, help="default: settings")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="40 labels, 40 held out, fixture base rows (a smoke run, no figures)")
    p.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    p.add_argument("--table", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    manifest = read_bundle(a.model)[0]
    models = [t.model for t in manifest.tiers]
    if a.serve_upstream:
        serve_upstream(a.serve_upstream, a.table, models, (a.answer_chars, a.judge_chars))
        return 0
    settings = Settings().training
    labeled = a.labeled_dir or settings.labeled_dir
    ensure_converted(settings.sources_dir, labeled)
    base_files = tuple(labeled / f for f in SHIPPED[manifest.name].data_files)
    if a.quick:
        a.steps, a.holdout, a.folds, base_files = [40], 40, 2, (QUICK_BASE,)
    kind = load_kind(labeled, models, a.holdout, a.seed)
    if a.quick:
        kind = Kind(kind.held, kind.stream[:max(a.steps)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERWISE_")}
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        write_labeled(kind.held, tmp / "held.jsonl")
        ctx = make_context(manifest.feature_set, None if a.quick else settings.cache_dir)
        tiers, tol = manifest.tier_ladder(), manifest.label_rule.tolerance
        held, stream = (build_dataset(rows, tiers, ctx, tolerance=tol, source=name)
                        for name, rows in (("held-out", kind.held), ("stream", kind.stream)))
        base = build_dataset(load_rows(base_files), tiers, ctx, tolerance=tol, source="base")
        emit(f"bench_learning: {len(kind.held) + len(kind.stream)} prompts of "
             f"{', '.join(KIND)} ({LLMROUTER_WEAK} as weak, {LLMROUTER_STRONG} as strong): "
             f"{len(kind.held)} held out, {len(kind.stream)} to stream; weak right on "
             f"{held.scores[:, 0].mean():.3f}, strong on {held.scores[:, 1].mean():.3f} of the "
             f"held-out; base {len(base.rows)} rows; {os.cpu_count()} CPUs")
        ref, ref_share, rule = cv_reference(manifest, base, stream, held, a.folds, a.seed)
        emit(f"  {'router':<34} {'APGR':>6} {'95% CI':>15}  {'vs CV reference [CI]':<24} "
             f"{'strong':>6}  shadow USD/1k requests")
        row(f"shipped bundle ({a.model.name})", held, onnx_proba(a.model, held.X),
            manifest.threshold, ref)
        row(f"reference: {a.folds}-fold CV, all, {rule}", held, ref, None, None,
            share=ref_share)
        gain = held.scores[:, 1] - held.scores[:, 0]  # the oracle knows who wins
        oracle = np.stack([gain < 0, gain > 0], axis=1) + 0.5 * (gain == 0)[:, None]
        row("oracle (knows the outcomes)", held, oracle,
            knob_for_pgr(held.scores, held.costs, oracle), None)
        curve(Run(tmp, a.model, manifest, base_files, env, a), stack, kind, held, ref)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
