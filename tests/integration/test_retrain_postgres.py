"""Retraining reads a PostgreSQL traffic store: the gateway writes records and feedback there,
``training.traffic`` reads them back through the ``postgresql://`` URL with the same labels as the
same replay through a SQLite store, and a store without labels is a clear "no labeled rows".

Skips when TIERWISE_TEST_POSTGRES_URL is unset (``gateway_support.postgres_url``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gateway_support import (  # noqa: F401  (fixtures)
    make_gateway_fixture,
    postgres_url_fixture,
    upstreams_fixture,
)

from router_model.artifact import read_bundle
from router_model.errors import InvalidData
from training import registry
from training.data import read_labeled
from training.replay import replay
from training.retrain import RetrainConfig, run_retrain
from training.retrain import main as retrain_main
from training.traffic import DEFAULT_ADEQUATE, TrafficLabels, label_traffic, read_decisions

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" / "fixtures" / "routellm_small.jsonl"
AB = {"salt": "pg", "arms": [{"name": "router", "weight": 0.5},
                             {"name": "always_strong", "tier": "strong", "weight": 0.5}]}


def _labels(url: str, bundle: Path) -> TrafficLabels:
    manifest = read_bundle(bundle)[0]
    return label_traffic(read_decisions(url), manifest.tier_ladder(), len(manifest.feature_names),
                         DEFAULT_ADEQUATE)


def _by_prompt(t: TrafficLabels) -> dict[str, tuple[int, list[float], list[float]]]:
    return {k: (int(t.labels[i]), t.scores[i].tolist(), t.X[i].tolist())
            for i, k in enumerate(t.prompt_sha256)}


def test_postgres_store_reads_back_what_the_gateway_wrote(
    postgres_url: str, make_gateway: Any, fast_bundle: Path
) -> None:
    rows = read_labeled(DATA)
    pg = make_gateway(fast_bundle, ab=AB, traffic={"url": postgres_url, "store_prompts": False})
    lite = make_gateway(fast_bundle, ab=AB)  # the same replay into SQLite, as the reference
    for gw in (pg, lite):
        with gw.http() as client:
            result = replay(rows, client)
        assert result.answered == result.feedback == len(rows)

    decisions = read_decisions(postgres_url)
    assert len(decisions) == len(rows) and all(d.n_labels == 1 for d in decisions)
    assert {d.record.arm for d in decisions} == {"router", "always_strong"}
    # replayed one by one, read back oldest first: each label is the recorded score of the model
    # that answered that row
    assert [d.score for d in decisions] == [
        r.scores[d.record.model] for r, d in zip(rows, decisions, strict=True)]
    from_pg, from_lite = _labels(postgres_url, fast_bundle), _labels(
        lite.config.traffic.url, fast_bundle)
    assert len(from_pg.labels) > 30 and from_pg.skipped == from_lite.skipped
    assert _by_prompt(from_pg) == _by_prompt(from_lite)
    assert np.isin(from_pg.labels, [0, 1]).all()


def test_retrain_on_a_postgres_store_without_labels_changes_nothing(
    postgres_url: str, make_gateway: Any, fast_bundle: Path, tmp_path: Path,
) -> None:
    gw = make_gateway(fast_bundle, traffic={"url": postgres_url, "store_prompts": False})
    with gw.http() as client:  # answered and recorded, but nobody sent feedback
        for row in read_labeled(DATA)[:5]:
            body = {"model": "tierwise-auto", "messages": [{"role": "user", "content": row.prompt}]}
            assert client.post("/v1/chat/completions", json=body).status_code == 200
    assert len(read_decisions(postgres_url)) == 5
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry.log_and_register(uri, name="tiny_fast", bundle_dir=fast_bundle, params={},
                              metrics={}, alias=registry.CHAMPION)
    out = tmp_path / "rt"
    assert retrain_main(["--db", postgres_url, "--name", "tiny_fast", "--out", str(out),
                         "--tracking-uri", uri, "--base-data", str(DATA)]) == 2
    cfg = RetrainConfig(
        db=postgres_url, name="tiny_fast", tracking_uri=uri, out=out, base_data=(DATA,),
        eval_data=None, since=None, traffic_weight=2.0, adequate=DEFAULT_ADEQUATE, margin=0.005,
        max_slowdown=1.5, holdout_fraction=0.2, bundle_out=None, estimator=None, seed=0)
    with pytest.raises(InvalidData, match="traffic store has no labeled rows to learn from"):
        run_retrain(cfg)  # the message main logs before exiting 2
    assert not out.exists()
    assert registry.alias_version(uri, "tiny_fast", registry.CHALLENGER) is None
    assert registry.alias_version(uri, "tiny_fast", registry.CHAMPION) == "1"
