"""ONNX export of every candidate and its calibrated wrapper, checked with onnxruntime."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from numpy.typing import NDArray
from onnx import numpy_helper
from threadpoolctl import threadpool_limits

from router_model.encoder import EMBEDDING_DIM
from router_model.errors import ArtifactMismatch
from router_model.features import HAND_FEATURE_NAMES
from training.calibrate import calibrate
from training.export import (
    INPUT_NAME,
    OUTPUT_NAME,
    ExportMismatch,
    check_parity,
    export_checked,
    onnx_proba,
    to_onnx,
)
from training.fit import (
    CANDIDATES,
    KNN_COMPONENTS,
    KNN_MAX_REFERENCE,
    Estimator,
    fit_candidate,
)

#: the shipped feature layout: hand-made columns, then the sentence embedding
D = len(HAND_FEATURE_NAMES) + EMBEDDING_DIM


@pytest.fixture(autouse=True)
def _one_openmp_thread() -> Iterator[None]:
    # HistGradientBoosting's OpenMP threads spin on a busy 2-core runner: a 300-row fit took
    # 0.1 s alone and 5-20 s beside other test jobs. One thread keeps these tests fast.
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def make_data(
    n: int, k: int, seed: int, d: int = D
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    logits = X[:, :k] * 2.0 + rng.gumbel(size=(n, k))
    return X, np.argmax(logits, axis=1).astype(np.int64)


def fitted(name: str, k: int, calibrated: bool) -> Estimator:
    X, y = make_data(300, k, seed=k)
    est = fit_candidate(name, X, y, n_classes=k, seed=0)
    if not calibrated:
        return est
    X_cal, y_cal = make_data(150, k, seed=10 + k)
    return calibrate(est, X_cal, y_cal, n_classes=k)


@pytest.mark.parametrize("calibrated", [False, True])
@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("name", sorted(CANDIDATES))
def test_every_candidate_exports_with_parity(name: str, k: int, calibrated: bool) -> None:
    est = fitted(name, k, calibrated)
    X_hold, _ = make_data(200, k, seed=99)
    onnx_bytes, delta = export_checked(est, X_hold, k)
    assert delta <= 1e-5
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    (out,) = session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1]) == (INPUT_NAME, "tensor(float)", D)
    assert (out.name, out.type, out.shape[1]) == (OUTPUT_NAME, "tensor(float)", k)
    proba = onnx_proba(onnx_bytes, X_hold)
    assert proba.shape == (200, k)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", ["gbt", "logreg"])
def test_the_same_estimator_exports_to_the_same_bytes(name: str) -> None:
    est = fitted(name, 2, calibrated=True)
    first = to_onnx(est, D, 2)
    assert to_onnx(est, D, 2) == first
    assert onnx.load_from_string(first).graph.name == "tierwise_router"


@pytest.mark.parametrize("name", ["gbt", "gbt_mono", "gbt_pca"])
def test_binary_platt_calibration_folds_into_the_tree_ensemble(name: str) -> None:
    est = fitted(name, 2, calibrated=True)
    X_hold, _ = make_data(200, 2, seed=98)
    onnx_bytes, delta = export_checked(est, X_hold, 2)
    nodes = [n.op_type for n in onnx.load_from_string(onnx_bytes).graph.node]
    # the tree ensemble writes the probabilities itself: no Gather/Mul/Add/Sigmoid/Concat layer
    assert nodes[-1] == "TreeEnsembleClassifier" and "Sigmoid" not in nodes, nodes
    assert delta <= 1e-6
    # three tiers keep the explicit layer (one-vs-rest calibrators, then normalised)
    three = onnx.load_from_string(to_onnx(fitted(name, 3, calibrated=True), D, 3))
    assert "Sigmoid" in [n.op_type for n in three.graph.node]


def test_platt_fold_holds_when_no_leaf_value_is_negative() -> None:
    # onnxruntime has a separate binary branch for ensembles whose weights are all >= 0
    X, y = make_data(300, 2, seed=2)
    est = fit_candidate("gbt", X, y, n_classes=2, seed=0)
    for predictors in est._predictors:
        for tree in predictors:
            leaf = tree.nodes["is_leaf"].astype(bool)
            tree.nodes["value"][leaf] = np.abs(tree.nodes["value"][leaf])
    cal = calibrate(est, *make_data(150, 2, seed=12), n_classes=2)
    onnx_bytes, delta = export_checked(cal, make_data(200, 2, seed=97)[0], 2)
    (node,) = onnx.load_from_string(onnx_bytes).graph.node
    weights = next(a.floats for a in node.attribute if a.name == "class_weights")
    assert min(weights) >= 0 and delta <= 1e-6


@pytest.mark.parametrize("calibrated", [False, True])
def test_absent_class_gets_a_zero_column(calibrated: bool) -> None:
    X, y = make_data(300, 3, seed=1)
    y = np.where(y == 1, 2, y)  # no tier-1 rows
    est = fit_candidate("gbt", X, y, n_classes=3, seed=0)
    if calibrated:
        est = calibrate(est, *make_data(150, 3, seed=2), n_classes=3)
    X_hold, _ = make_data(100, 3, seed=3)
    onnx_bytes, _ = export_checked(est, X_hold, 3)
    proba = onnx_proba(onnx_bytes, X_hold)
    assert proba.shape == (100, 3)
    assert (proba[:, 1] == 0.0).all()


def test_corrupted_graph_fails_parity() -> None:
    est = fitted("logreg", 3, calibrated=True)
    X_hold, _ = make_data(100, 3, seed=4)
    model = onnx.load_from_string(to_onnx(est, D, 3))
    weights = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    values = numpy_helper.to_array(weights).copy()
    values.flat[0] += 0.5
    weights.CopyFrom(numpy_helper.from_array(values, weights.name))
    with pytest.raises(ExportMismatch, match="differ by") as info:
        check_parity(est, model.SerializeToString(), X_hold, 3)
    assert isinstance(info.value, ArtifactMismatch)


def test_parity_rejects_wrong_class_count() -> None:
    est = fitted("logreg", 2, calibrated=False)
    X_hold, _ = make_data(20, 2, seed=5)
    with pytest.raises(ExportMismatch, match="shape"):
        check_parity(est, to_onnx(est, D, 2), X_hold, 3)


def test_knn_graph_size_is_bounded() -> None:
    # the graph embeds the reference rows projected to KNN_COMPONENTS dims, plus the projection
    X, y = make_data(600, 2, seed=6, d=400)
    est = fit_candidate("knn", X, y, n_classes=2, seed=0)
    size = len(to_onnx(est, 400, 2))
    floats = 600 * KNN_COMPONENTS + 400 * KNN_COMPONENTS
    assert floats * 4 < size < floats * 4 + 50_000
    # at the reference cap, with 400 features, that stays under 8 MB
    assert (KNN_MAX_REFERENCE + 400) * KNN_COMPONENTS * 4 + 50_000 < 8_000_000


def test_knn_keeps_at_most_the_reference_cap() -> None:
    X, y = make_data(KNN_MAX_REFERENCE + 500, 2, seed=7, d=4)
    est = fit_candidate("knn", X, y, n_classes=2, seed=0)
    assert est[-1].n_samples_fit_ == KNN_MAX_REFERENCE


def test_export_rejects_classes_beyond_k() -> None:
    est = fitted("logreg", 3, calibrated=False)
    with pytest.raises(ValueError, match="exceed"):
        to_onnx(est, D, 2)
