"""``TrafficRecord`` and ``FeedbackRecord``: the channel from serving to retraining."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from router_model.records import FeedbackRecord, TrafficRecord


def record(**changes: object) -> TrafficRecord:
    doc: dict[str, object] = {
        "decision_id": "d1", "arm": "router", "propensity": 1.0, "source": "router",
        "requested_model": "tierwise-auto", "decided_tier": "weak", "tier": "weak",
        "model": "m", "status": 200, "cost_usd": 1.0, "top_tier_cost_usd": 4.0,
    }
    doc.update(changes)
    return TrafficRecord.model_validate(doc)


def test_features_are_float32_exactly() -> None:
    values = np.random.default_rng(0).normal(size=417).astype(np.float32)
    r = record(features=[float(x) for x in values])
    assert r.features_array().dtype == np.float32
    assert np.array_equal(r.features_array(), values)
    assert TrafficRecord.features_from_blob(r.features_blob()) == r.features
    assert record(features=[0.1]).features == [float(np.float32(0.1))]
    assert TrafficRecord.features_from_blob(b"") == []


def test_record_validation_and_savings() -> None:
    assert record().savings_usd == 3.0
    assert record().created_at.tzinfo is not None
    for bad in ({"propensity": 1.5}, {"source": "guess"}, {"status": 42}, {"extra": 1},
                {"decision_id": ""}):
        with pytest.raises(ValidationError):
            record(**bad)
    assert record().model_copy(update={"arm": "x"}).arm == "x"


def test_feedback_labels() -> None:
    assert FeedbackRecord(decision_id="d", score=0.4).value == 0.4
    assert FeedbackRecord(decision_id="d", thumbs="up").value == 1.0
    assert FeedbackRecord(decision_id="d", thumbs="down").value == 0.0
    for bad in ({"score": 1.1}, {"score": -0.1}, {}, {"score": 0.5, "thumbs": "up"},
                {"thumbs": "meh"}):
        with pytest.raises(ValidationError):
            FeedbackRecord.model_validate({"decision_id": "d", **bad})
