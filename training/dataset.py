"""A recipe's labeled rows turned into the arrays training needs, features computed once."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from router_model.embed_cache import DiskEmbeddingCache
from router_model.encoder import ENCODER_ID, SentenceEncoder, load_tokenizer
from router_model.features import FeatureSet, Featurizer, featurize
from router_model.tiers import Tier
from training.data import (
    LabeledRow,
    cheapest_adequate,
    dedupe,
    read_labeled,
    select_tiers,
    table_costs,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dataset:
    """Rows with per-tier scores and costs, features and cheapest-adequate labels."""

    rows: tuple[LabeledRow, ...]
    X: NDArray[np.float32]
    n_tokens: NDArray[np.int64]
    scores: NDArray[np.float64]
    costs: NDArray[np.float64]
    labels: NDArray[np.int64]
    skipped: int

    @property
    def groups(self) -> list[str]:
        return [r.group or "" for r in self.rows]

    def task_weights(self) -> NDArray[np.float64]:
        """Row weights giving every task the same total weight, mean 1.

        A row's task is its group up to the first ``/`` (``mmlu/anatomy`` -> ``mmlu``, ``gsm8k``
        -> ``gsm8k``; no group is one task of its own), so a benchmark with many rows does not
        teach the classifier its own quirks at the expense of the others.
        """
        tasks = [g.split("/", 1)[0] for g in self.groups]
        _, inverse, counts = np.unique(tasks, return_inverse=True, return_counts=True)
        return np.asarray(len(tasks) / (len(counts) * counts[inverse]), dtype=np.float64)

    def subset(self, idx: Sequence[int] | NDArray[np.int64]) -> Dataset:
        """The rows at ``idx`` (arrays sliced alike)."""
        ix = np.asarray(idx, dtype=np.int64)
        return Dataset(
            rows=tuple(self.rows[i] for i in ix),
            X=self.X[ix],
            n_tokens=self.n_tokens[ix],
            scores=self.scores[ix],
            costs=self.costs[ix],
            labels=self.labels[ix],
            skipped=0,
        )


def concat(a: Dataset, b: Dataset) -> Dataset:
    """Rows of ``a`` then ``b``."""
    return Dataset(rows=a.rows + b.rows, X=np.vstack([a.X, b.X]),
                   n_tokens=np.concatenate([a.n_tokens, b.n_tokens]),
                   scores=np.vstack([a.scores, b.scores]), costs=np.vstack([a.costs, b.costs]),
                   labels=np.concatenate([a.labels, b.labels]), skipped=a.skipped + b.skipped)


@dataclass(frozen=True)
class FeatureContext:
    """What computing features needs: the featurizer and an optional embedding cache dir."""

    featurizer: Featurizer
    cache_dir: Path | None = None


def make_context(feature_set: FeatureSet, cache_dir: Path | None) -> FeatureContext:
    """Open the tokenizer (and the encoder for the ``full`` set)."""
    tokenizer = load_tokenizer()
    encoder = SentenceEncoder.load(tokenizer=tokenizer) if feature_set == "full" else None
    return FeatureContext(Featurizer(feature_set, tokenizer, encoder), cache_dir)


def load_rows(paths: Sequence[Path]) -> list[LabeledRow]:
    """Read and concatenate labeled files, dropping duplicate prompts.

    Raises:
        InvalidData: when a file is malformed (names the file and line).
    """
    rows: list[LabeledRow] = []
    for path in paths:
        rows.extend(read_labeled(path))
    return dedupe(rows)


def build_dataset(
    rows: Sequence[LabeledRow],
    tiers: Sequence[Tier],
    ctx: FeatureContext,
    *,
    tolerance: float,
    source: str,
) -> Dataset:
    """Select tier scores, label, and featurize through the shared extractor.

    Raises:
        InvalidData: when no row has scores for every tier model.
    """
    table = select_tiers(rows, [t.model for t in tiers], source=source)
    if table.skipped:
        logger.warning("%s: skipped %d rows missing a tier model's score", source, table.skipped)
    prompts = [r.prompt for r in table.rows]
    cache = (
        DiskEmbeddingCache(ctx.cache_dir, ENCODER_ID)
        if ctx.cache_dir is not None and ctx.featurizer.feature_set == "full"
        else None
    )
    with tqdm(total=len(prompts), desc=f"features {source}", unit="prompt", leave=False) as bar:
        feats = featurize(prompts, ctx.featurizer, cache=cache, progress=bar.update)
    if cache is not None:
        cache.flush()
    return Dataset(
        rows=tuple(table.rows),
        X=feats.matrix,
        n_tokens=feats.n_tokens,
        scores=table.scores,
        costs=table_costs(table, feats.n_tokens, tiers),
        labels=cheapest_adequate(table.scores, tolerance),
        skipped=table.skipped,
    )
