"""Candidate classifiers for the cheapest-adequate tier, and fitting one of them.

Every candidate is a stock scikit-learn estimator or pipeline that ``training.export`` turns into
ONNX. Tiers are labels ``0..k-1`` (cheapest first); a fitted estimator may know only the classes
present in its training rows, so ``predict_proba_full`` always returns ``k`` columns.

Sample weights (retraining on traffic passes them) reach every pipeline step whose ``fit``
accepts ``sample_weight``: all candidates except ``knn``, which ignores them with a warning.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeAlias

import numpy as np
from numpy.typing import NDArray
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler

from router_model.encoder import EMBEDDING_DIM
from router_model.features import HAND_FEATURE_NAMES

logger = logging.getLogger(__name__)

#: Principal components of the sentence embedding that ``gbt_pca`` feeds its trees.
EMBED_COMPONENTS = 32

#: A fitted scikit-learn classifier (``classes_``, ``predict_proba``); sklearn ships no types.
Estimator: TypeAlias = Any

#: Dimensions kNN compares in (PCA inside the pipeline) and the most reference rows it keeps:
#: the ONNX graph embeds the reference set, 20,000 x 32 float32 = 2.5 MB.
KNN_COMPONENTS = 32
KNN_MAX_REFERENCE = 20_000
KNN_NEIGHBORS = 25


def _scaled_logreg(C: float, seed: int) -> Estimator:
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(C=C, max_iter=2000, random_state=seed),
    )


def _logreg(seed: int) -> Estimator:
    # The penalty grows with the width: on the shipped routellm and mmlu_pro data (hand + 384
    # embedding columns, standardised) held-out log-loss and AUC improved steadily from C=1 down
    # to C~1e-4..3e-4, on random and on held-out-domain splits; the signal is weak and wide.
    return _scaled_logreg(3e-4, seed)


def _hand_logreg(seed: int) -> Estimator:
    # On the ~33 hand-made columns alone the same sweep is flat from C=0.01 to 1 and worse at 1e-4.
    return _scaled_logreg(0.1, seed)


def _gbt(seed: int) -> Estimator:
    # HistGradientBoosting bins features, so it fits 20k x 400 in seconds where
    # GradientBoostingClassifier takes minutes; export.py repairs its ONNX converter. Capped at
    # 100 rounds of 15-leaf trees, each split drawn from half the columns (faster, and less prone
    # to chase one of ~400 correlated embedding dimensions); early stopping usually ends sooner.
    return HistGradientBoostingClassifier(
        learning_rate=0.15,
        max_iter=100,
        max_leaf_nodes=15,
        min_samples_leaf=40,
        max_features=0.5,
        l2_regularization=1.0,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=10,
        random_state=seed,
    )


#: Hand-made features that can only make a prompt harder: ``gbt_mono``'s probability of the dearer
#: tier never falls as one of them grows, all else equal (longer, more numbers, formulas, code,
#: reasoning verbs, constraints, negations, numbered statements). A prior, not a fit: unconstrained
#: trees on MMLU learn quirks such as "a long reading passage is easy", which does not carry to
#: other tasks. Chosen on a validation task that no reported figure uses (MMLU-Pro's questions
#: that did not come from MMLU, Mixtral-8x7B vs gpt-4o; docs/training.md, "Routing quality").
HARDER_WITH = (
    "log_tokens",
    "log_chars",
    "log_words",
    "log_words_per_sentence",
    "log_numbers",
    "log_math_symbols",
    "log_code_markers",
    "log_reasoning_verbs",
    "log_constraints",
    "log_stem_chars",
    "log_stem_numbers",
    "log_stem_negations",
    "log_statements",
)


def monotone_constraints(n_features: int) -> list[int]:
    """``monotonic_cst`` for a feature matrix whose first columns are the hand-made features:
    +1 for ``HARDER_WITH``, 0 for every other column (the embedding included).

    Raises:
        ValueError: fewer columns than hand-made features (not the featurizer's layout).
    """
    if n_features < len(HAND_FEATURE_NAMES):
        raise ValueError(
            f"gbt_mono needs the hand-made features first: {n_features} columns "
            f"< {len(HAND_FEATURE_NAMES)}"
        )
    hand = [1 if name in HARDER_WITH else 0 for name in HAND_FEATURE_NAMES]
    return hand + [0] * (n_features - len(hand))


def _gbt_mono(seed: int) -> Estimator:
    # HARDER_WITH as monotone constraints (set by ``_adapt_to_data`` once the width and the
    # classes are known) on smaller, slower-learning trees than ``gbt``'s: a prior-driven model
    # should not chase one benchmark's quirks. On the validation task (6 seeds, all routellm
    # rows) these settings gave APGR 0.558 (0.527-0.579) against 0.512 (0.452-0.562) with
    # ``gbt``'s, at 0.592 against 0.603 on held-out MMLU domains (docs/training.md,
    # "Routing quality").
    return _gbt(seed).set_params(
        learning_rate=0.05,
        max_iter=300,
        max_leaf_nodes=7,
        min_samples_leaf=200,
        l2_regularization=5.0,
        n_iter_no_change=20,
    )


def _gbt_pca(seed: int) -> Estimator:
    # Trees on the hand-made columns as they are plus the embedding's first EMBED_COMPONENTS
    # principal components: on 400 raw columns the trees split on single embedding dimensions that
    # encode topic, which does not carry over to unseen domains (held-out MMLU domains: APGR 0.63
    # against 0.58 for the same trees on all columns, in a prototype on the shipped data).
    n_hand = len(HAND_FEATURE_NAMES)
    columns = ColumnTransformer(
        [
            ("hand", "passthrough", list(range(n_hand))),
            (
                "emb",
                PCA(n_components=EMBED_COMPONENTS, random_state=seed),
                list(range(n_hand, n_hand + EMBEDDING_DIM)),
            ),
        ]
    )
    trees = HistGradientBoostingClassifier(
        learning_rate=0.05,
        max_iter=200,
        max_leaf_nodes=15,
        min_samples_leaf=40,
        l2_regularization=1.0,
        random_state=seed,
    )
    return make_pipeline(columns, trees)


def _emb_logreg(seed: int) -> Estimator:
    # Issue 17's plain baseline: logistic regression (C=1) on the MiniLM embedding alone, the hand
    # columns dropped. No scaler: the embedding is already unit-length. On the selection protocol
    # (bench/bench_protocol.py, RESULTS.md) no candidate beat it under the rule, so it ships.
    n_hand = len(HAND_FEATURE_NAMES)
    columns = ColumnTransformer(
        [("emb", "passthrough", list(range(n_hand, n_hand + EMBEDDING_DIM)))]
    )
    return make_pipeline(columns, LogisticRegression(C=1.0, max_iter=3000, random_state=seed))


def _mlp(seed: int) -> Estimator:
    return make_pipeline(
        StandardScaler(),
        MLPClassifier(
            hidden_layer_sizes=(64,),
            alpha=1e-3,
            learning_rate_init=1e-3,
            max_iter=200,
            early_stopping=True,
            validation_fraction=0.1,
            n_iter_no_change=10,
            random_state=seed,
        ),
    )


def _knn(seed: int) -> Estimator:
    # Standardise, project to KNN_COMPONENTS dims, L2-normalise: Euclidean distance on unit rows
    # ranks like cosine similarity, and the exported graph stays a few MB. Uniform weights:
    # distance weights divide by zero on duplicate prompts, which ONNX does not reproduce.
    return make_pipeline(
        StandardScaler(),
        PCA(n_components=KNN_COMPONENTS, random_state=seed),
        Normalizer(),
        KNeighborsClassifier(n_neighbors=KNN_NEIGHBORS),
    )


#: Candidate name -> factory of an unfitted estimator from a seed. ``hand_logreg`` is ``logreg``
#: with the penalty for ~33 columns; the caller passes only the hand-made feature columns.
CANDIDATES: Mapping[str, Callable[[int], Estimator]] = MappingProxyType(
    {
        "logreg": _logreg,
        "gbt": _gbt,
        "gbt_mono": _gbt_mono,
        "gbt_pca": _gbt_pca,
        "mlp": _mlp,
        "knn": _knn,
        "emb_logreg": _emb_logreg,
        "hand_logreg": _hand_logreg,
    }
)


def _steps(est: Estimator) -> list[tuple[str, Estimator]]:
    if isinstance(est, Pipeline):
        return list(est.steps)
    return [("", est)]


def _accepts_weight(step: Estimator) -> bool:
    return "sample_weight" in inspect.signature(step.fit).parameters


def _weight_params(name: str, est: Estimator, weight: NDArray[Any] | None) -> dict[str, Any]:
    """``fit`` keyword arguments routing ``weight`` to every step that accepts it."""
    if weight is None:
        return {}
    steps = _steps(est)
    if not _accepts_weight(steps[-1][1]):
        logger.warning("candidate %s ignores sample weights (its estimator takes none)", name)
        return {}
    return {
        (f"{step_name}__sample_weight" if step_name else "sample_weight"): weight
        for step_name, step in steps
        if _accepts_weight(step)
    }


#: Below this many training rows early stopping's validation slice (10%) is too small to say
#: anything, and the trees' leaf sizes are scaled to the data (``_shrink_to_size``).
SMALL_DATA_ROWS = 200


def _inner_steps(est: Estimator) -> list[Estimator]:
    """Every step of a pipeline, including the transformers of a ``ColumnTransformer``."""
    out = []
    for _, step in _steps(est):
        out.append(step)
        if isinstance(step, ColumnTransformer):
            out.extend(t for _, t, _ in step.transformers if not isinstance(t, str))
    return out


def _shrink_to_size(name: str, step: Estimator, n_rows: int, n_features: int) -> None:
    """Settings a small training set cannot satisfy, scaled down to it.

    40 rows with ``min_samples_leaf=200`` grow no split (one probability for every prompt), and
    32 principal components need 32 rows.
    """
    if isinstance(step, PCA) and step.n_components is not None:
        k = min(int(step.n_components), n_features, n_rows)
        if k < step.n_components:
            logger.info("candidate %s: %d principal components for %d rows", name, k, n_rows)
        step.set_params(n_components=max(1, k))
    if n_rows >= SMALL_DATA_ROWS:
        return
    params = step.get_params(deep=False)
    if params.get("early_stopping") is True:
        logger.info("candidate %s: %d rows; early stopping off", name, n_rows)
        step.set_params(early_stopping=False)
    if isinstance(step, HistGradientBoostingClassifier):
        leaf = max(2, min(int(step.min_samples_leaf), n_rows // 10))
        step.set_params(min_samples_leaf=leaf, max_iter=min(int(step.max_iter), 100))


def _adapt_to_data(name: str, est: Estimator, y: NDArray[np.int64], n_features: int) -> None:
    """Shrink settings that small or skewed training sets cannot satisfy; set ``gbt_mono``'s
    constraints for this width (none for three or more classes, which HistGradientBoosting's
    monotone constraints do not support)."""
    classes = np.unique(y)
    min_count = int(np.bincount(y)[classes].min())
    if name == "gbt_mono":
        if classes.size == 2:
            est.set_params(monotonic_cst=monotone_constraints(n_features))
        else:
            logger.info("candidate gbt_mono: %d classes; fitted without monotone constraints",
                        classes.size)
    for step in _inner_steps(est):
        params = step.get_params(deep=False)
        # early stopping holds out a stratified split: a class with one row cannot be split
        if params.get("early_stopping") is True and min_count < 2:
            logger.info("candidate %s: a class has one row; early stopping off", name)
            step.set_params(early_stopping=False)
        _shrink_to_size(name, step, len(y), n_features)
        if isinstance(step, KNeighborsClassifier):
            step.set_params(n_neighbors=min(KNN_NEIGHBORS, len(y)))


def _reference_rows(n: int, seed: int) -> NDArray[np.int64]:
    """At most ``KNN_MAX_REFERENCE`` row indices, a seeded uniform sample when there are more."""
    if n <= KNN_MAX_REFERENCE:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=KNN_MAX_REFERENCE, replace=False)).astype(np.int64)


def _fit_logging_convergence(
    name: str,
    est: Estimator,
    X: NDArray[np.float32],
    y: NDArray[np.int64],
    params: dict[str, Any],
) -> None:
    """Fit ``est``, turning scikit-learn's ConvergenceWarning into a log record.

    A model that stopped at its iteration cap is still a usable candidate (selection judges it
    on held-out rows); the training log is where that fact belongs. Other warnings pass through.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        est.fit(X, y, **params)
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            logger.warning("candidate %s did not converge: %s", name, w.message)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def fit_candidate(
    name: str,
    X: NDArray[np.float32],
    y: NDArray[np.int64],
    *,
    n_classes: int,
    seed: int,
    sample_weight: NDArray[np.floating[Any]] | None = None,
) -> Estimator:
    """Fit candidate ``name`` on ``X``/``y`` (labels in ``[0, n_classes)``) and return it.

    ``knn`` keeps a seeded sample of at most ``KNN_MAX_REFERENCE`` rows and ignores weights.

    Raises:
        KeyError: ``name`` is not in ``CANDIDATES``.
        ValueError: shapes disagree, a label is outside ``[0, n_classes)``, or ``y`` holds
            fewer than two classes.
    """
    if name not in CANDIDATES:
        raise KeyError(f"unknown candidate {name!r}; expected one of {sorted(CANDIDATES)}")
    y = np.asarray(y, dtype=np.int64)
    if X.ndim != 2 or X.shape[0] != y.shape[0]:
        raise ValueError(f"X {X.shape} and y {y.shape} disagree")
    if sample_weight is not None and sample_weight.shape != y.shape:
        raise ValueError(f"sample_weight {sample_weight.shape} and y {y.shape} disagree")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got [{y.min()}, {y.max()}]")
    if np.unique(y).size < 2:
        raise ValueError(f"candidate {name} needs at least two classes, got {np.unique(y)}")
    est = CANDIDATES[name](seed)
    if name == "knn":
        rows = _reference_rows(len(y), seed)
        X, y = X[rows], y[rows]
        sample_weight = None if sample_weight is None else sample_weight[rows]
    _adapt_to_data(name, est, y, X.shape[1])
    _fit_logging_convergence(name, est, X, y, _weight_params(name, est, sample_weight))
    absent = sorted(set(range(n_classes)) - {int(c) for c in est.classes_})
    if absent:
        logger.warning("candidate %s saw no rows of classes %s; they score 0", name, absent)
    return est


def predict_proba_full(
    est: Estimator, X: NDArray[np.float32], n_classes: int
) -> NDArray[np.float64]:
    """``(n, n_classes)`` probabilities in class order ``0..n_classes-1``; unseen classes are 0.

    Raises:
        ValueError: the estimator knows a class outside ``[0, n_classes)``.
    """
    classes = np.asarray(est.classes_, dtype=np.int64)
    if classes.size and (classes.min() < 0 or classes.max() >= n_classes):
        raise ValueError(f"estimator classes {classes.tolist()} exceed {n_classes} classes")
    proba = np.asarray(est.predict_proba(X), dtype=np.float64)
    out = np.zeros((proba.shape[0], n_classes), dtype=np.float64)
    out[:, classes] = proba
    return out
