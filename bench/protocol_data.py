"""The rows and held-out tasks of ``bench_protocol.py``: every task this repository can form from
its shipped data, each with the training rows a candidate may use when that task is held out.

Not a test. Main training rows are RouteLLM's (Mixtral-8x7B vs GPT-4-1106, MMLU and GSM8K), as
the default bundle's. Tasks without that pair use the stand-in pairs of ``bench_cross_task.py``:
MMLU-Pro questions not from MMLU (Mixtral-8x7B vs gpt-4o) and LLMRouter's task families
(llama-3.1-8b vs nemotron-51b, without GSM8K-like ``math`` rows and rows sharing 8 words with a
RouteLLM prompt). Those rows can also serve as *auxiliary* training rows (their own pair's
outcome as a difficulty signal), but never from the task held out: a task's auxiliary pool leaves
out its own source family, and every MMLU-Pro row that is a rewrite of an MMLU question.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from bench_cross_task import LLMROUTER_STRONG, LLMROUTER_WEAK, STRONG, WEAK, _runs
from numpy.typing import NDArray

from router_model.embed_cache import DiskEmbeddingCache
from router_model.encoder import ENCODER_ID
from router_model.features import HAND_FEATURE_NAMES, featurize
from training.data import LabeledRow, dedupe, read_labeled
from training.dataset import FeatureContext
from training.recipes import ROUTELLM_UNSEEN
from training.sources import mmlu_origin

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
RL_WEAK, RL_STRONG = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
N_HAND = len(HAND_FEATURE_NAMES)


@dataclass(frozen=True)
class Pool:
    """Every row of every source: features (hand + embedding), the row's own pair's two scores
    (weak, strong), its group and its source (``routellm``, ``mmlu_pro`` or ``llmrouter``)."""

    prompts: tuple[str, ...]
    X: NDArray[np.float32]
    n_tokens: I64
    scores: F64
    groups: tuple[str, ...]
    source: NDArray[np.str_]

    def where(self, mask: NDArray[np.bool_]) -> I64:
        return np.flatnonzero(mask).astype(np.int64)


@dataclass(frozen=True)
class Task:
    """One held-out task: the rows scored, the main training rows, the auxiliary pool."""

    name: str
    test: I64
    train: I64
    aux: I64


def _pair_rows(rows: Sequence[LabeledRow], weak: str,
               strong: str) -> list[tuple[LabeledRow, float, float]]:
    return [(r, r.scores[weak], r.scores[strong]) for r in rows
            if weak in r.scores and strong in r.scores]


def _capped(rows: list[tuple[LabeledRow, float, float]], cap: int | None,
            seed: int) -> list[tuple[LabeledRow, float, float]]:
    """At most ``cap`` seeded rows per group (all rows when ``cap`` is None)."""
    if cap is None:
        return rows
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, (r, _, _) in enumerate(rows):
        by_group[r.group or ""].append(i)
    rng = np.random.default_rng(seed)
    keep = sorted(j for idx in by_group.values()
                  for j in rng.permutation(idx)[:cap].tolist())
    return [rows[j] for j in keep]


#: ``--quick``'s MMLU subjects: four held-out and four seen ones (and GSM8K), for speed.
QUICK_MMLU = (*ROUTELLM_UNSEEN[:4], "mmlu/anatomy", "mmlu/astronomy", "mmlu/marketing",
              "mmlu/virology")


def load_sources(labeled: Path, cap: int | None,
                 seed: int) -> dict[str, list[tuple[LabeledRow, float, float]]]:
    """Each source's rows with its pair's (weak, strong) scores; with ``cap`` (``--quick``), at
    most ``cap`` seeded rows per group and only ``QUICK_MMLU``'s MMLU subjects."""
    rl = dedupe(read_labeled(labeled / "routellm_mmlu.jsonl")
                + read_labeled(labeled / "routellm_gsm8k.jsonl"))
    quick_rl = [r for r in rl if r.group == "gsm8k" or r.group in QUICK_MMLU]
    pro = [r for r in read_labeled(labeled / "mmlu_pro.jsonl") if mmlu_origin(r) is None]
    known = set().union(*(_runs(r.prompt) for r in rl))
    llm = [r for r in read_labeled(labeled / "llmrouter.jsonl")
           if r.group != "llmrouter/math" and not _runs(r.prompt) & known]
    return {
        "routellm": _capped(_pair_rows(rl if cap is None else quick_rl, RL_WEAK, RL_STRONG),
                            cap, seed),
        "mmlu_pro": _capped(_pair_rows(pro, WEAK, STRONG), cap, seed),
        "llmrouter": _capped(_pair_rows(llm, LLMROUTER_WEAK, LLMROUTER_STRONG), cap, seed),
    }


def build_pool(sources: dict[str, list[tuple[LabeledRow, float, float]]],
               ctx: FeatureContext) -> Pool:
    """Featurize every row once (embeddings through the training cache when it has a dir)."""
    flat = [(name, *t) for name, rows in sources.items() for t in rows]
    prompts = [r.prompt for _, r, _, _ in flat]
    cache = (DiskEmbeddingCache(ctx.cache_dir, ENCODER_ID)
             if ctx.cache_dir is not None else None)
    feats = featurize(prompts, ctx.featurizer, cache=cache)
    if cache is not None:
        cache.flush()
    return Pool(
        prompts=tuple(prompts),
        X=feats.matrix,
        n_tokens=feats.n_tokens,
        scores=np.asarray([[w, s] for _, _, w, s in flat], dtype=np.float64),
        groups=tuple(r.group or "" for _, r, _, _ in flat),
        source=np.asarray([name for name, _, _, _ in flat]),
    )


def tasks(pool: Pool) -> list[Task]:
    """Every held-out task, leave-one-task-out: a task's own rows are in neither training set."""
    g = np.asarray(pool.groups)
    rl, pro, llm = (pool.source == s for s in ("routellm", "mmlu_pro", "llmrouter"))
    mmlu = rl & np.char.startswith(g.astype(str), "mmlu/")
    gsm = rl & (g == "gsm8k")
    unseen = rl & np.isin(g, ROUTELLM_UNSEEN)
    out = [
        Task("mmlu_unseen", pool.where(unseen), pool.where(rl & ~unseen), pool.where(pro | llm)),
        Task("mmlu->gsm8k", pool.where(gsm), pool.where(mmlu), pool.where(pro | llm)),
        Task("gsm8k->mmlu", pool.where(mmlu), pool.where(gsm), pool.where(pro | llm)),
        Task("mmlu_pro", pool.where(pro), pool.where(rl), pool.where(llm)),
    ]
    for fam in sorted(set(g[llm].tolist())):
        test = llm & (g == fam)
        out.append(Task(fam.removeprefix("llmrouter/"), pool.where(test), pool.where(rl),
                        pool.where(pro | (llm & ~test))))
    return [t for t in out if t.test.size and t.train.size]
