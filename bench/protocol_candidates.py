"""The candidates and baselines ``bench_protocol.py`` scores: each fits on a task's training rows
and returns a score per test prompt (higher = more likely to need the strong model).

Not a test. Only the order of the scores matters (APGR is measured on their ranks), so no
candidate is calibrated here. Candidates the pipeline can ship are fitted through
``training.fit.fit_candidate`` (the same estimator the bundle would hold); the rest are the
issue's explorations and baselines, kept here until one of them wins.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from protocol_data import F64, N_HAND, Pool, Task
from scipy.stats import rankdata
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from router_model.features import HAND_FEATURE_NAMES
from training.fit import fit_candidate, monotone_constraints

#: Graded LLMRouter scores: the strong model "wins" a row only by more than this (the llmrouter
#: recipe's label tolerance); binary scores are unaffected.
AUX_TOLERANCE = 0.05


@dataclass(frozen=True)
class TrainSet:
    """A task's training rows: features, prompts, hard label, soft label, auxiliary mask."""

    X: NDArray[np.float32]
    prompts: list[str]
    y: NDArray[np.int64]
    soft: F64
    aux: NDArray[np.bool_]


Scorer = Callable[[NDArray[np.float32], list[str]], F64]
Candidate = Callable[[TrainSet, int], Scorer]


def train_set(pool: Pool, task: Task, *, with_aux: bool) -> TrainSet:
    """The task's main training rows, plus its auxiliary pool when ``with_aux``."""
    idx = np.concatenate([task.train, task.aux]) if with_aux else task.train
    s = pool.scores[idx]
    gap = s[:, 1] - s[:, 0]
    return TrainSet(
        X=pool.X[idx],
        prompts=[pool.prompts[i] for i in idx],
        y=(gap > AUX_TOLERANCE).astype(np.int64),
        soft=np.clip((gap + 1.0) / 2.0, 0.0, 1.0),
        aux=np.arange(idx.size) >= task.train.size,
    )


def _proba1(est: Any, X: NDArray[Any] | list[str]) -> F64:
    return np.asarray(est.predict_proba(X)[:, 1], dtype=np.float64)


def emb_lr(C: float = 1.0, soft: bool = False) -> Candidate:
    """Logistic regression on the MiniLM embedding alone (C=1: the issue's plain baseline);
    ``soft`` fits the score gap as a soft label (each row twice, weights p and 1 - p)."""
    def fit(t: TrainSet, seed: int) -> Scorer:
        X, y, w = t.X[:, N_HAND:], t.y, None
        if soft:
            X = np.vstack([X, X])
            y = np.r_[np.ones(len(t.y)), np.zeros(len(t.y))].astype(np.int64)
            w = np.r_[t.soft, 1.0 - t.soft]
        est = LogisticRegression(C=C, max_iter=3000, random_state=seed).fit(X, y, sample_weight=w)
        return lambda X, _p: _proba1(est, X[:, N_HAND:])
    return fit


def emb_mlp(t: TrainSet, seed: int) -> Scorer:
    est = MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-2, early_stopping=True,
                        max_iter=200, random_state=seed).fit(t.X[:, N_HAND:], t.y)
    return lambda X, _p: _proba1(est, X[:, N_HAND:])


def emb_hand_lr(t: TrainSet, seed: int) -> Scorer:
    """Standardised hand features beside the raw embedding, one logistic regression."""
    cols = ColumnTransformer([("hand", StandardScaler(), list(range(N_HAND))),
                              ("emb", "passthrough", list(range(N_HAND, t.X.shape[1])))])
    est = make_pipeline(cols, LogisticRegression(C=1.0, max_iter=3000, random_state=seed))
    est.fit(t.X, t.y)
    return lambda X, _p: _proba1(est, X)


def gbt_mono_emb(t: TrainSet, seed: int) -> Scorer:
    """Monotone trees on the hand features plus 16 principal components of the embedding."""
    cols = ColumnTransformer([("hand", "passthrough", list(range(N_HAND))),
                              ("emb", PCA(16, random_state=seed),
                               list(range(N_HAND, t.X.shape[1])))])
    trees = HistGradientBoostingClassifier(
        learning_rate=0.05, max_iter=300, max_leaf_nodes=7, min_samples_leaf=200,
        l2_regularization=5.0, early_stopping=True, n_iter_no_change=20,
        monotonic_cst=monotone_constraints(N_HAND + 16), random_state=seed)
    est = make_pipeline(cols, trees).fit(t.X, t.y)
    return lambda X, _p: _proba1(est, X)


def shipped(name: str, hand_only: bool = False) -> Candidate:
    """A ``training.fit`` candidate, fitted as the pipeline fits it (hand columns if asked)."""
    def fit(t: TrainSet, seed: int) -> Scorer:
        cols = slice(0, N_HAND) if hand_only else slice(None)
        est = fit_candidate(name, t.X[:, cols], t.y, n_classes=2, seed=seed)
        return lambda X, _p: _proba1(est, X[:, cols])
    return fit


def tfidf_lr(t: TrainSet, seed: int) -> Scorer:
    est = make_pipeline(TfidfVectorizer(sublinear_tf=True, min_df=2),
                        LogisticRegression(C=1.0, max_iter=3000, random_state=seed))
    est.fit(t.prompts, t.y)
    return lambda _X, p: _proba1(est, p)


def length(t: TrainSet, seed: int) -> Scorer:
    col = HAND_FEATURE_NAMES.index("log_tokens")
    return lambda X, _p: np.asarray(X[:, col], dtype=np.float64)


def rank_mean(*parts: Candidate) -> Candidate:
    """The mean of the parts' ranks on the scored rows (ties share their mean rank)."""
    def fit(t: TrainSet, seed: int) -> Scorer:
        scorers = [c(t, seed) for c in parts]
        return lambda X, p: np.mean([rankdata(s(X, p)) for s in scorers], axis=0)
    return fit


#: name -> (candidate, trained with the auxiliary pool). Baselines first.
BASELINES = ("random", "length", "tfidf_lr", "emb_lr")
CANDIDATES: Mapping[str, tuple[Candidate, bool]] = {
    "length": (length, False),
    "tfidf_lr": (tfidf_lr, False),
    "emb_lr": (emb_lr(), False),
    "gbt_mono (today's default)": (shipped("gbt_mono", hand_only=True), False),
    "emb_lr C=0.1": (emb_lr(0.1), False),
    "emb_lr C=10": (emb_lr(10.0), False),
    "emb_mlp": (emb_mlp, False),
    "emb_hand_lr": (emb_hand_lr, False),
    "gbt_mono_emb": (gbt_mono_emb, False),
    "rank(emb_lr, gbt_mono)": (rank_mean(emb_lr(), shipped("gbt_mono", True)), False),
    "emb_lr soft": (emb_lr(soft=True), False),
    "emb_lr +aux": (emb_lr(), True),
    "emb_lr soft +aux": (emb_lr(soft=True), True),
    "rank(emb_lr +aux, gbt_mono)": (rank_mean(emb_lr(), shipped("gbt_mono", True)), True),
}
#: What ``--quick`` scores: the baselines and one ensemble (the code paths of every kind).
QUICK = ("length", "tfidf_lr", "emb_lr", "rank(emb_lr, gbt_mono)", "emb_lr soft +aux")
