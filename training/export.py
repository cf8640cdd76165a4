"""ONNX export of a fitted (calibrated) classifier, checked against scikit-learn before writing.

The graph takes ``features`` float32 ``[None, n_features]`` and returns ``probabilities`` float32
``[None, n_classes]`` in class order ``0..n_classes-1``; classes the estimator never saw get a
zero column (a constant 0/1 matrix maps the estimator's columns onto the tiers), so training
never has to see every tier.

Two pieces are built here rather than by skl2onnx:

- ``CalibratedClassifierCV(FrozenEstimator(est), method="sigmoid")``: skl2onnx knows neither
  ``FrozenEstimator`` nor that a pipeline is calibrated on its ``decision_function`` (it feeds the
  calibrator probabilities instead). We convert the wrapped estimator with ``raw_scores`` when
  scikit-learn calibrates decision values, and append the Platt layer ourselves.
- ``HistGradientBoostingClassifier``: skl2onnx 1.20 passes Python bools in an int-list attribute,
  which protobuf 7 rejects; a wrapped converter casts them to ints before the node is made.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, ClassVar

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import convert_sklearn, update_registered_converter
from skl2onnx.common._registration import get_converter, get_shape_calculator
from skl2onnx.common.data_types import FloatTensorType
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline

from router_model.errors import ArtifactMismatch
from training.fit import Estimator, predict_proba_full

logger = logging.getLogger(__name__)

INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"
#: onnxruntime 1.32 runs opset 17 and ai.onnx.ml 3 (tree attributes as tensors).
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
_HGB_ALIAS = "TierwiseHistGradientBoostingClassifier"


class ExportMismatch(ArtifactMismatch):
    """The ONNX graph's probabilities differ from scikit-learn's beyond the tolerance."""

    code: ClassVar[str] = "export_mismatch"


class _IntAttributeContainer:
    """A skl2onnx container whose ``add_node`` casts bools in list attributes to ints."""

    def __init__(self, container: Any) -> None:
        self._container = container

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def add_node(self, *args: Any, **attrs: Any) -> Any:
        for key, value in attrs.items():
            if isinstance(value, list) and any(isinstance(v, bool | np.bool_) for v in value):
                attrs[key] = [int(v) for v in value]
        return self._container.add_node(*args, **attrs)


@functools.cache
def _register_converters() -> None:
    """Route HistGradientBoostingClassifier through the bool-safe converter (once per process)."""
    stock = "SklearnHistGradientBoostingClassifier"
    convert = get_converter(stock)

    def converter(scope: Any, operator: Any, container: Any) -> None:
        convert(scope, operator, _IntAttributeContainer(container))

    update_registered_converter(
        HistGradientBoostingClassifier,
        _HGB_ALIAS,
        get_shape_calculator(stock),
        converter,
        options={
            "zipmap": [True, False, "columns"],
            "raw_scores": [True, False],
            "output_class_labels": [False, True],
            "nocl": [True, False],
        },
    )


def _unwrap(est: Estimator) -> Estimator:
    while isinstance(est, FrozenEstimator):
        est = est.estimator
    return est


def _convert(est: Estimator, n_features: int, raw_scores: bool) -> tuple[onnx.ModelProto, str]:
    """skl2onnx graph of ``est`` and the name of its ``(n, n_est_classes)`` score output."""
    final = est.steps[-1][1] if isinstance(est, Pipeline) else est
    options: dict[str, Any] = {"zipmap": False}
    if raw_scores:
        options["raw_scores"] = True
    if isinstance(final, KNeighborsClassifier):
        # onnxruntime's CDist kernel (com.microsoft): skl2onnx's default Scan loops over the
        # reference rows, measured 45 ms a row with 20k references against 0.3 ms with CDist
        options["optim"] = "cdist"
    model = convert_sklearn(
        est,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        options={id(final): options},
        target_opset=TARGET_OPSET,
    )
    # free the public output name: the graph's own "probabilities" becomes an inner tensor
    scores = "sk_scores"
    _rename(model.graph, model.graph.output[1].name, scores)
    return model, scores


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in graph.output:
        if value.name == old:
            value.name = new


class _Graph:
    """Appends uniquely named nodes and constants to an ONNX graph."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph

    def const(self, value: NDArray[Any]) -> str:
        name = f"tw_const_{len(self.graph.initializer)}"
        self.graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attrs: Any) -> str:
        out = output or f"tw_{op_type.lower()}_{len(self.graph.node)}"
        self.graph.node.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out


def _sigmoid_layer(g: _Graph, scores: str, cal: Estimator) -> str:
    """Platt layer of a one-model ``CalibratedClassifierCV``: scikit-learn's ``predict_proba``."""
    pair = cal.calibrated_classifiers_[0]
    inner_classes = np.asarray(_unwrap(pair.estimator).classes_)
    a = np.array([c.a_ for c in pair.calibrators], dtype=np.float32)
    b = np.array([c.b_ for c in pair.calibrators], dtype=np.float32)
    if (len(inner_classes) == 2) != (len(cal.classes_) == 2):
        raise ValueError(
            f"estimator classes {inner_classes.tolist()} and calibrated classes "
            f"{np.asarray(cal.classes_).tolist()} mix binary and multi-class"
        )
    if len(cal.classes_) == 2:
        # one calibrator, on the positive class's score (column 1 of the two-column output)
        col = g.op("Gather", scores, g.const(np.array([1], dtype=np.int64)), axis=1)
        p1 = g.op("Sigmoid", g.op("Neg", g.op("Add", g.op("Mul", col, g.const(a)), g.const(b))))
        p0 = g.op("Sub", g.const(np.array([[1.0]], dtype=np.float32)), p1)
        return g.op("Concat", p0, p1, axis=1)
    p = g.op("Sigmoid", g.op("Neg", g.op("Add", g.op("Mul", scores, g.const(a)), g.const(b))))
    p = g.op("MatMul", p, g.const(_scatter(inner_classes, np.asarray(cal.classes_))))
    n = len(cal.classes_)
    total = g.op("MatMul", p, g.const(np.ones((n, 1), dtype=np.float32)))
    is_zero = g.op("Equal", total, g.const(np.array([[0.0]], dtype=np.float32)))
    safe = g.op("Where", is_zero, g.const(np.array([[1.0]], dtype=np.float32)), total)
    # scikit-learn falls back to the uniform distribution when every calibrator says 0
    uniform = g.const(np.full((1, n), 1.0 / n, dtype=np.float32))
    return g.op("Where", is_zero, uniform, g.op("Div", p, safe))


def _fold_platt(graph: onnx.GraphProto, scores: str, cal: Estimator) -> str | None:
    """The binary Platt layer folded into the tree ensemble that computes ``scores``, or ``None``.

    ``sigmoid(-(a * s + b))`` of a sum of leaf values ``s`` is the ensemble's own ``LOGISTIC``
    post-transform after scaling every leaf value and the base value by ``-a`` and shifting the
    base by ``-b``; onnxruntime's binary output is then ``[1 - p, p]``, what ``_sigmoid_layer``
    builds. One node instead of eight: ~5 us a row instead of ~21 us, most of a hand-feature
    decision's classifier call (each small node costs ~2 us to launch). Export's parity check
    still compares the result with scikit-learn.
    """
    pair = cal.calibrated_classifiers_[0]
    if len(cal.classes_) != 2 or len(_unwrap(pair.estimator).classes_) != 2:
        return None
    producers = [n for n in graph.node if scores in n.output]
    consumers = [n for n in graph.node if scores in n.input]
    if len(producers) != 1 or consumers or producers[0].op_type != "TreeEnsembleClassifier":
        return None
    node = producers[0]
    attrs = {a.name: a for a in node.attribute}
    transform = attrs["post_transform"].s if "post_transform" in attrs else b"NONE"
    base_values = list(attrs["base_values"].floats) if "base_values" in attrs else [0.0]
    if (transform != b"NONE" or "class_weights" not in attrs
            or set(attrs["class_ids"].ints) != {0}
            or any(name.endswith("_as_tensor") for name in attrs)
            or len(base_values) != 1):
        return None
    a, b = float(pair.calibrators[0].a_), float(pair.calibrators[0].b_)
    weights = (np.asarray(attrs["class_weights"].floats, dtype=np.float64) * -a).astype(np.float32)
    base = np.asarray(base_values, dtype=np.float64) * -a - b
    keep = [x for x in node.attribute
            if x.name not in ("class_weights", "base_values", "post_transform")]
    del node.attribute[:]
    node.attribute.extend(keep + [
        helper.make_attribute("class_weights", weights.tolist()),
        helper.make_attribute("base_values", base.astype(np.float32).tolist()),
        helper.make_attribute("post_transform", "LOGISTIC"),
    ])
    return scores


def _scatter(source: NDArray[Any], target: NDArray[Any]) -> NDArray[np.float32]:
    """0/1 matrix moving columns labelled ``source`` to their place among ``target``."""
    matrix = np.zeros((len(source), len(target)), dtype=np.float32)
    for i, cls in enumerate(source):
        matrix[i, int(np.flatnonzero(target == cls)[0])] = 1.0
    return matrix


def _inputs(node: onnx.NodeProto) -> set[str]:
    """Names a node reads, including those its subgraphs (Scan, Loop, If bodies) capture."""
    names = set(node.input)
    for attr in node.attribute:
        for sub in [attr.g, *attr.graphs] if attr.HasField("g") else attr.graphs:
            for inner in sub.node:
                names |= _inputs(inner)
    return names


def _prune(model: onnx.ModelProto) -> None:
    """Drop nodes and initializers the graph outputs do not need (the label branch)."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            keep.append(node)
            needed |= _inputs(node)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


#: The exported graph's name (fixed: see ``_finish``).
GRAPH_NAME = "tierwise_router"


def _finish(
    model: onnx.ModelProto, g: _Graph, proba: str, classes: NDArray[Any], n_classes: int
) -> bytes:
    """Map ``proba``'s columns onto ``0..n_classes-1`` as the ``probabilities`` output."""
    labels = np.asarray(classes, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"estimator classes {labels.tolist()} exceed {n_classes} classes")
    if np.array_equal(labels, np.arange(n_classes)):
        _rename(model.graph, proba, OUTPUT_NAME)  # no Identity node: each node costs a launch
    else:
        g.op("MatMul", proba, g.const(_scatter(labels, np.arange(n_classes))), output=OUTPUT_NAME)
    del model.graph.output[:]
    model.graph.output.append(
        helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [None, n_classes])
    )
    _prune(model)
    # skl2onnx may list a domain twice or the default one below the opset our nodes need
    versions = {"": TARGET_OPSET[""]}
    for o in model.opset_import:
        versions[o.domain] = max(o.version, versions.get(o.domain, 1))
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in sorted(versions.items()))
    # skl2onnx names the graph with a random UUID: a fixed name makes the same estimator export
    # to the same bytes, so a regenerated bundle keeps its onnx_sha256 and model_version
    model.graph.name = GRAPH_NAME
    onnx.checker.check_model(model, full_check=True)
    return bytes(model.SerializeToString())


def to_onnx(est: Estimator, n_features: int, n_classes: int) -> bytes:
    """Serialized ONNX graph ``features [None, n_features] -> probabilities [None, n_classes]``.

    Raises:
        ValueError: a calibration other than one sigmoid model, or classes beyond ``n_classes``.
    """
    _register_converters()
    est = _unwrap(est)
    if isinstance(est, CalibratedClassifierCV):
        if est.method != "sigmoid" or len(est.calibrated_classifiers_) != 1:
            raise ValueError(
                "only CalibratedClassifierCV(FrozenEstimator(...), "
                f"method='sigmoid') exports; got method={est.method!r}, "
                f"{len(est.calibrated_classifiers_)} calibrated models"
            )
        inner = _unwrap(est.calibrated_classifiers_[0].estimator)
        # scikit-learn calibrates decision_function when the estimator has one
        model, scores = _convert(inner, n_features, hasattr(inner, "decision_function"))
        g = _Graph(model.graph)
        proba = _fold_platt(model.graph, scores, est) or _sigmoid_layer(g, scores, est)
    else:
        model, proba = _convert(est, n_features, raw_scores=False)
        g = _Graph(model.graph)
    return _finish(model, g, proba, est.classes_, n_classes)


def onnx_proba(onnx_bytes: bytes, X: NDArray[np.float32]) -> NDArray[np.float32]:
    """Run the graph with onnxruntime's CPU provider: ``(n, n_classes)`` probabilities."""
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    out = session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(X, dtype=np.float32)})
    return np.asarray(out[0], dtype=np.float32)


def check_parity(
    est: Estimator,
    onnx_bytes: bytes,
    X_holdout: NDArray[np.float32],
    n_classes: int,
    tol: float = 1e-5,
) -> float:
    """Max ``|p_onnx - p_sklearn|`` over ``X_holdout``, compared at ``tol``.

    Raises:
        ExportMismatch: the difference exceeds ``tol``, or the shapes differ.
    """
    expected = predict_proba_full(est, X_holdout, n_classes)
    got = onnx_proba(onnx_bytes, X_holdout)
    if got.shape != expected.shape:
        raise ExportMismatch(f"ONNX gives shape {got.shape}, scikit-learn {expected.shape}")
    delta = float(np.max(np.abs(got.astype(np.float64) - expected))) if got.size else 0.0
    if not delta <= tol:  # also catches NaN
        raise ExportMismatch(
            f"ONNX and scikit-learn probabilities differ by {delta:.3g} > {tol:g} "
            f"on {len(X_holdout)} holdout rows"
        )
    return delta


def export_checked(
    est: Estimator, X_holdout: NDArray[np.float32], n_classes: int, tol: float = 1e-5
) -> tuple[bytes, float]:
    """Convert ``est`` and check it on ``X_holdout``: the ONNX bytes and the max ``|Δp|``.

    Raises:
        ExportMismatch: parity fails (nothing should be written).
        ValueError: see ``to_onnx``.
    """
    onnx_bytes = to_onnx(est, X_holdout.shape[1], n_classes)
    delta = check_parity(est, onnx_bytes, X_holdout, n_classes, tol)
    logger.info(
        "exported %s: %d bytes, parity max |dp| %.2g on %d rows",
        type(est).__name__,
        len(onnx_bytes),
        delta,
        len(X_holdout),
    )
    return onnx_bytes, delta
