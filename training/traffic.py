"""Reading the gateway's traffic store (SQLite or PostgreSQL) and labelling its decisions.

Reads ``traffic`` joined with ``feedback`` through ``router_model.traffic_schema`` (no service
import). A decision's score is the mean of its feedback values. Labelling rule (the store only
shows how the tier that ANSWERED did), with ``adequate = score >= threshold`` and tiers cheapest
first, assuming adequacy is monotone in the tier (a dearer tier is at least as good):

- every answered, scored decision of one prompt (same ``prompt_sha256``: replays and repeats) is
  pooled; per tier the mean score counts;
- ``lo`` = the dearest tier seen inadequate, ``hi`` = the cheapest tier seen adequate;
- ``hi <= lo`` (a cheaper tier adequate, a dearer one not) → skipped as ``conflicting``;
- ``hi == lo + 1`` → label ``hi`` (exact: every cheaper tier failed, this one did not); ``hi == 0``
  is the cheapest tier adequate;
- nothing adequate and ``lo`` the top tier → label 0: no tier helps, so paying more buys nothing
  (the same rule as ``training.data.cheapest_adequate`` on an all-zero row);
- nothing adequate below the top → label ``lo + 1``: escalate one step, the cheapest tier not seen
  failing (an optimistic guess, documented so; replay data replaces it with the observed outcome);
- otherwise (an adequate tier with unseen cheaper tiers) the label is not identified → skipped as
  ``unidentified``.

Judge labels (``judge_labels``: the gateway's shadow calls, graded by an LLM judge) are per-tier
scores of the same prompt, kept apart from feedback. Per prompt and tier the judge's mean score
counts, and client feedback on a tier replaces the judge's score for that tier (a person's word on
the answer the client got outranks the judge's). A prompt whose tiers are all scored (the judge
graded every tier) gets the exact label of a labeled-data row: ``training.data.cheapest_adequate``
with the bundle's label tolerance; otherwise the rule above applies to what is known. Each row's
``source`` says where its scores came from: ``feedback``, ``judge`` or ``judge+feedback``.

Cache rows (``source == "cache"``: answers replayed from the gateway's response cache) are never
labels: skipped as ``cache_hit``. Rows with no stored features (the router scored nothing) are
skipped as ``passthrough`` (the client named the model) or ``no_features`` (any other source, e.g.
a request that failed open). Rows whose stored features were computed by other feature code
(``feature_version`` or width differs) are skipped as ``feature_mismatch``; they can only be used
again after re-featurizing.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError

from router_model.errors import InvalidData
from router_model.features import FEATURE_VERSION
from router_model.records import TrafficRecord
from router_model.tiers import Tier
from router_model.traffic_schema import (
    FEEDBACK_TABLE,
    JUDGE_TABLE,
    NAMES,
    PG_CLIENT_ENCODING,
    TRAFFIC_TABLE,
    decode_record,
    select_list,
    store_location,
)
from training.data import LabeledRow, cheapest_adequate
from training.dataset import Dataset

logger = logging.getLogger(__name__)

#: Default score at or above which an answer counts as adequate (binary correctness: 1 vs 0).
DEFAULT_ADEQUATE = 0.5


@dataclass(frozen=True)
class Decision:
    """One recorded decision and its feedback: ``score`` is the mean label, None when unlabelled;
    ``judge``: the judge's score per tier name (shadow labels), empty when none."""

    record: TrafficRecord
    score: float | None
    n_labels: int
    judge: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TrafficLabels:
    """Labeled prompts derived from traffic: features, labels, imputed per-tier scores and costs."""

    X: NDArray[np.float32]
    labels: NDArray[np.int64]
    scores: NDArray[np.float64]
    costs: NDArray[np.float64]
    created_at: tuple[datetime, ...]
    prompt_sha256: tuple[str, ...]
    prompts: tuple[str | None, ...]
    skipped: dict[str, int] = field(default_factory=dict)
    #: Per row: ``feedback``, ``judge`` or ``judge+feedback`` (module docstring).
    sources: tuple[str, ...] = ()
    #: Per row: every tier scored (no score imputed), as a row of the labeled-data format.
    complete: tuple[bool, ...] = ()


def parse_since(text: str | None) -> datetime | None:
    """An ISO 8601 time as aware UTC (a naive one is taken as UTC).

    Raises:
        InvalidData: when the text is not ISO 8601.
    """
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidData(f"--since {text!r} is not an ISO 8601 time") from exc
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _columns(description: Any) -> set[str]:
    """Column names of a cursor's ``description`` (older stores lack the newer columns)."""
    return {str(d[0]) for d in description or ()}


_JUDGE_SQL = f"SELECT decision_id, tier, score FROM {JUDGE_TABLE}"


def _sqlite_judge(conn: sqlite3.Connection) -> list[Any]:
    """The judge labels, none when the store predates the table."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return conn.execute(_JUDGE_SQL).fetchall() if JUDGE_TABLE in tables else []


def _sqlite_rows(path: Path, since: datetime | None) -> tuple[list[Any], list[Any], list[Any]]:
    if not path.is_file():
        raise InvalidData(f"traffic store {path}: no such file")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise InvalidData(f"traffic store {path}: cannot open ({exc})") from exc
    try:
        where, params = ("WHERE created_at >= ?", (since.isoformat(),)) if since else ("", ())
        present = _columns(conn.execute(f"SELECT * FROM {TRAFFIC_TABLE} LIMIT 0").description)
        sql = f"SELECT {select_list(present)} FROM {TRAFFIC_TABLE} {where} ORDER BY created_at"
        rows = conn.execute(sql, params).fetchall()
        labels = conn.execute(f"SELECT decision_id, value FROM {FEEDBACK_TABLE}").fetchall()
        judged = _sqlite_judge(conn)
    except sqlite3.Error as exc:
        raise InvalidData(f"traffic store {path}: not a tierwise traffic store ({exc})") from exc
    finally:
        conn.close()
    return rows, labels, judged


def _postgres_rows(url: str, since: datetime | None) -> tuple[list[Any], list[Any], list[Any]]:
    import psycopg

    where, params = ("WHERE created_at >= %s", (since,)) if since else ("", ())
    try:
        with psycopg.connect(url, connect_timeout=10, client_encoding=PG_CLIENT_ENCODING) as conn:
            head = conn.execute(f"SELECT * FROM {TRAFFIC_TABLE} LIMIT 0").description
            sql = (f"SELECT {select_list(_columns(head))} FROM {TRAFFIC_TABLE} {where} "
                   "ORDER BY created_at")
            rows = conn.execute(sql, params).fetchall()
            labels = conn.execute(f"SELECT decision_id, value FROM {FEEDBACK_TABLE}").fetchall()
            found = conn.execute("SELECT to_regclass(%s)", (JUDGE_TABLE,)).fetchone()
            judged = conn.execute(_JUDGE_SQL).fetchall() if found and found[0] else []
    except psycopg.Error as exc:
        raise InvalidData(f"traffic store (PostgreSQL): cannot read ({exc})") from exc
    return list(rows), list(labels), list(judged)


def read_decisions(url: str, since: datetime | None = None) -> list[Decision]:
    """Every decision recorded at or after ``since``, oldest first, with its mean feedback.

    Raises:
        InvalidData: when the URL is neither ``sqlite:///PATH`` nor ``postgresql://…``, the store
            cannot be read, a row is not a valid record, or a feedback value is outside [0, 1].
    """
    backend, where = store_location(url)
    if backend == "sqlite":
        rows, labels, judged = _sqlite_rows(Path(where), since)
    else:
        rows, labels, judged = _postgres_rows(where, since)
    judge = _judge_by_decision(judged)
    by_id: dict[str, list[float]] = defaultdict(list)
    for decision_id, value in labels:
        if value is None or not 0.0 <= float(value) <= 1.0:
            raise InvalidData(f"feedback for {decision_id!r}: value {value!r} is outside [0, 1]")
        by_id[str(decision_id)].append(float(value))
    out = []
    for row in rows:
        try:
            record = decode_record(dict(zip(NAMES, row, strict=True)))
        except (ValidationError, ValueError) as exc:
            raise InvalidData(f"traffic row {row[1]!r}: not a valid record ({exc})") from exc
        if since is not None and record.created_at < since:
            continue
        values = by_id.get(record.decision_id, [])
        score = float(np.mean(values)) if values else None
        out.append(Decision(record, score, len(values), judge.get(record.decision_id, {})))
    logger.info("read %d decisions (%d with feedback, %d with judge labels) from the traffic "
                "store", len(out), sum(d.score is not None for d in out),
                sum(bool(d.judge) for d in out))
    return out


def _judge_by_decision(rows: Sequence[Any]) -> dict[str, dict[str, float]]:
    """``judge_labels`` rows as decision id -> tier -> score.

    Raises:
        InvalidData: when a score is outside [0, 1].
    """
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for decision_id, tier, score in rows:
        if score is None or not 0.0 <= float(score) <= 1.0:
            raise InvalidData(f"judge label for {decision_id!r}: score {score!r} outside [0, 1]")
        out[str(decision_id)][str(tier)] = float(score)
    return out


def label_from_outcomes(outcomes: dict[int, float], n_tiers: int, threshold: float) -> int | str:
    """The cheapest-adequate label of one prompt from per-tier scores, or why it has none.

    Returns an int label, or ``"conflicting"`` / ``"unidentified"`` (see the module docstring).
    """
    bad = [k for k, s in outcomes.items() if s < threshold]
    good = [k for k, s in outcomes.items() if s >= threshold]
    lo = max(bad) if bad else -1
    hi = min(good) if good else n_tiers
    if hi <= lo:
        return "conflicting"
    if hi == lo + 1:
        return hi if hi < n_tiers else 0
    if not good:
        return lo + 1
    return "unidentified"


def _usable(d: Decision, tier_index: dict[str, int], width: int) -> str | None:
    r = d.record
    if r.source == "cache":  # a replayed answer says nothing new about the tier that wrote it
        return "cache_hit"
    if d.score is None and not d.judge:
        return "unlabelled"
    if r.status >= 400 or r.tier not in tier_index:
        return "not_answered"
    if not r.features:  # nothing was scored: not a mismatch, there is nothing to re-featurize
        return "passthrough" if r.source == "passthrough" else "no_features"
    if r.feature_version != FEATURE_VERSION or len(r.features) != width:
        return "feature_mismatch"
    return None


def _outcomes(ds: Sequence[Decision], index: dict[str, int]) -> tuple[dict[int, float], str]:
    """One prompt's per-tier scores (judge means, then feedback means over them) and source."""
    feedback: dict[int, list[float]] = defaultdict(list)
    judged: dict[int, list[float]] = defaultdict(list)
    for d in ds:
        if d.score is not None:
            feedback[index[d.record.tier]].append(d.score)
        for tier, score in d.judge.items():
            if tier in index:
                judged[index[tier]].append(score)
    outcomes = {k: float(np.mean(v)) for k, v in judged.items()}
    outcomes.update({k: float(np.mean(v)) for k, v in feedback.items()})
    source = "+".join(n for n, part in (("judge", judged), ("feedback", feedback)) if part)
    return outcomes, source


def _label_row(outcomes: dict[int, float], n_tiers: int, threshold: float,
               tolerance: float) -> tuple[int, list[float]] | str:
    """A prompt's label and per-tier score row, or why it has none (module docstring)."""
    if len(outcomes) == n_tiers:  # every tier scored: a row of the labeled format
        row = [outcomes[j] for j in range(n_tiers)]
        return int(cheapest_adequate(np.asarray([row]), tolerance)[0]), row
    label = label_from_outcomes(outcomes, n_tiers, threshold)
    if isinstance(label, str):
        return label
    no_help = label == 0 and all(s < threshold for s in outcomes.values())
    row = [0.0 if (j < label or no_help) else 1.0 for j in range(n_tiers)]
    return label, [outcomes.get(j, row[j]) for j in range(n_tiers)]


def label_traffic(
    decisions: Sequence[Decision], tiers: Sequence[Tier], width: int, threshold: float,
    tolerance: float = 0.0,
) -> TrafficLabels:
    """Pool decisions by prompt and label each prompt (rule in the module docstring).

    ``width`` is the bundle's feature count; ``tolerance`` the label tolerance of a prompt whose
    tiers are all scored. Scores of the tiers not observed are imputed from the label (1 at and
    above it, 0 below; all 0 when no tier helps); costs are each tier's list price on the
    decision's recorded tokens.
    """
    index = {t.name: i for i, t in enumerate(tiers)}
    skipped: Counter[str] = Counter()
    groups: dict[str, list[Decision]] = defaultdict(list)
    for d in decisions:
        why = _usable(d, index, width)
        if why is None:
            groups[d.record.prompt_sha256 or d.record.decision_id].append(d)
        elif why != "unlabelled":
            skipped[why] += 1
    X, labels, scores, costs, when, keys, prompts, sources = [], [], [], [], [], [], [], []
    complete: list[bool] = []
    for key, ds in groups.items():
        outcomes, source = _outcomes(ds, index)
        found = _label_row(outcomes, len(tiers), threshold, tolerance)
        if isinstance(found, str):
            skipped[found] += 1
            continue
        first = ds[0].record
        X.append(first.features_array())
        labels.append(found[0])
        scores.append(found[1])
        costs.append([t.cost(first.input_tokens, first.output_tokens) for t in tiers])
        when.append(max(d.record.created_at for d in ds))
        keys.append(key)
        prompts.append(first.prompt)
        sources.append(source)
        complete.append(len(outcomes) == len(tiers))
    return TrafficLabels(
        X=np.asarray(X, dtype=np.float32).reshape(len(X), width),
        labels=np.asarray(labels, dtype=np.int64),
        scores=np.asarray(scores, dtype=np.float64).reshape(len(X), len(tiers)),
        costs=np.asarray(costs, dtype=np.float64).reshape(len(X), len(tiers)),
        created_at=tuple(when), prompt_sha256=tuple(keys), prompts=tuple(prompts),
        skipped=dict(skipped), sources=tuple(sources), complete=tuple(complete),
    )


def traffic_dataset(t: TrafficLabels, idx: NDArray[np.int64], tiers: Sequence[Tier]) -> Dataset:
    """Labeled traffic rows as a ``Dataset`` (prompt text or its hash stands in for the row)."""
    rows = tuple(
        LabeledRow(prompt=t.prompts[i] or f"sha256:{t.prompt_sha256[i]}",
                   scores={tier.model: float(t.scores[i, j]) for j, tier in enumerate(tiers)},
                   id=t.prompt_sha256[i], group="traffic")
        for i in idx
    )
    return Dataset(rows=rows, X=t.X[idx], n_tokens=np.zeros(len(idx), dtype=np.int64),
                   scores=t.scores[idx], costs=t.costs[idx], labels=t.labels[idx], skipped=0)


def split_traffic(t: TrafficLabels, fraction: float) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(train, holdout) indices: the holdout is the most recent ``fraction`` of prompts."""
    order = np.argsort(np.asarray([w.timestamp() for w in t.created_at]), kind="stable")
    n_hold = int(round(len(order) * fraction)) if len(order) > 1 else 0
    return order[: len(order) - n_hold].astype(np.int64), order[len(order) - n_hold:].astype(
        np.int64)
