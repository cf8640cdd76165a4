"""The one labeled-data format (JSONL of prompts with per-model scores): read, write, label, split.

Format: JSONL, optionally gzip-compressed (``.jsonl.gz``), UTF-8, one object per line; blank lines
are skipped::

    {"prompt": "non-empty text",
     "scores": {"<model name>": 0.0 .. 1.0, ...},
     "id": "optional string",
     "group": "optional string, e.g. mmlu/anatomy",
     "cost": {"<model name>": USD >= 0, ...}}

``scores`` says how well each model answered (1/0 for correctness, or a graded score); ``cost``,
when present, is the real USD cost of that model's call and replaces the price estimate. ``id``,
``group`` and ``cost`` may be omitted or null. Any other key is an error (a misspelt ``group``
must not silently drop a row's group). Every malformed line raises ``InvalidData`` naming the file
and its 1-based line.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from router_model.errors import InvalidData
from router_model.tiers import DEFAULT_OUTPUT_TOKENS, Tier

logger = logging.getLogger(__name__)

#: Default slack of the cheapest-adequate rule. For binary correctness (RouteLLM, MMLU-Pro) any
#: tolerance below 1 gives the same labels, so 0.0 is exact. Graded scores (LLMRouter) hold many
#: near-ties (0.57 vs 0.6) where paying for a bigger tier buys nothing a user would notice; their
#: recipes pass a tolerance explicitly (0.05, one twentieth of the score range), so the default
#: never blurs a real difference.
DEFAULT_TOLERANCE = 0.0

#: Slack for float rounding in score comparisons; far below any real score difference.
_EPS = 1e-9
_KEYS = frozenset({"prompt", "scores", "id", "group", "cost"})


@dataclass(frozen=True)
class LabeledRow:
    """One prompt with each model's measured score, and optional id, group and real costs."""

    prompt: str
    scores: Mapping[str, float]
    id: str | None = None
    group: str | None = None
    cost: Mapping[str, float] | None = None


@dataclass(frozen=True)
class TierTable:
    """Rows that have a score for every tier model, as ``(n, k)`` arrays in tier order."""

    rows: tuple[LabeledRow, ...]
    scores: NDArray[np.float64]
    costs: NDArray[np.float64] | None
    skipped: int
    tier_models: tuple[str, ...]


def _number_map(value: Any, field: str, where: str, *, upper: float | None) -> dict[str, float]:
    if not isinstance(value, Mapping) or not value:
        raise InvalidData(f"{where}: '{field}' must be a non-empty object of model -> number")
    out: dict[str, float] = {}
    for model, v in value.items():
        if not isinstance(model, str) or not model:
            raise InvalidData(f"{where}: '{field}' has an empty model name")
        # bool is an int subclass; a JSON true is not a score
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise InvalidData(f"{where}: '{field}'[{model!r}] must be a finite number, got {v!r}")
        if v < 0 or (upper is not None and v > upper):
            bound = f"[0, {upper:g}]" if upper is not None else ">= 0"
            raise InvalidData(f"{where}: '{field}'[{model!r}] = {v!r} is outside {bound}")
        out[model] = float(v)
    return out


def _optional_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidData(f"{where}: '{key}' must be a string, got {type(value).__name__}")
    return value


def parse_row(obj: Any, where: str) -> LabeledRow:
    """Validate one decoded object of the format and build its row; ``where`` is ``file:line``.

    Raises:
        InvalidData: when the object breaks the format (the message starts with ``where``).
    """
    if not isinstance(obj, dict):
        raise InvalidData(f"{where}: expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - _KEYS)
    if unknown:
        raise InvalidData(f"{where}: unknown keys {unknown}; allowed: {sorted(_KEYS)}")
    prompt = obj.get("prompt")
    if prompt is None:
        raise InvalidData(f"{where}: 'prompt' is missing (every row needs a prompt string)")
    if not isinstance(prompt, str):
        raise InvalidData(f"{where}: 'prompt' must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise InvalidData(f"{where}: 'prompt' is empty")
    cost = obj.get("cost")
    return LabeledRow(
        prompt=prompt,
        scores=_number_map(obj.get("scores"), "scores", where, upper=1.0),
        id=_optional_str(obj, "id", where),
        group=_optional_str(obj, "group", where),
        cost=None if cost is None else _number_map(cost, "cost", where, upper=None),
    )


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.name.endswith(".gz") else raw
    except (OSError, EOFError) as exc:
        raise InvalidData(f"{path}: cannot read the file ({exc})") from exc


def iter_json_lines(path: Path) -> Iterator[tuple[str, Any]]:
    """``("{path}:{line}", object)`` for each non-blank line of a JSONL (or ``.jsonl.gz``) file.

    Raises:
        InvalidData: when the file is missing or unreadable, or a line is not UTF-8 JSON.
    """
    for number, raw in enumerate(_read_bytes(path).split(b"\n"), start=1):
        where = f"{path}:{number}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidData(f"{where}: not UTF-8 ({exc.reason})") from exc
        if not text.strip():
            continue
        try:
            yield where, json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidData(f"{where}: bad JSON ({exc.msg} at column {exc.colno})") from exc


def read_labeled(path: Path) -> list[LabeledRow]:
    """Read a labeled JSONL (or ``.jsonl.gz``) file strictly.

    Raises:
        InvalidData: when the file is missing or unreadable, or a line is malformed
            (the message is ``"{path}:{line}: ..."`` with a 1-based line).
    """
    rows = [parse_row(obj, where) for where, obj in iter_json_lines(path)]
    logger.debug("read %d labeled rows from %s", len(rows), path)
    return rows


def row_to_dict(row: LabeledRow) -> dict[str, Any]:
    """The JSON object of a row in the format (optional fields left out when unset)."""
    doc: dict[str, Any] = {"prompt": row.prompt, "scores": dict(row.scores)}
    if row.id is not None:
        doc["id"] = row.id
    if row.group is not None:
        doc["group"] = row.group
    if row.cost is not None:
        doc["cost"] = dict(row.cost)
    return doc


def write_labeled(rows: Iterable[LabeledRow], path: Path) -> int:
    """Write rows atomically (temp file in the same folder, then ``os.replace``); returns the count.

    A ``.gz`` name is gzip-compressed with a fixed timestamp, so equal rows give equal bytes.

    Raises:
        OSError: when the folder cannot be written; no partial or temp file is left behind.
    """
    lines = [json.dumps(row_to_dict(r), ensure_ascii=False) + "\n" for r in rows]
    data = "".join(lines).encode("utf-8")
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    write_atomic(path, data)
    return len(lines)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``.

    Raises:
        OSError: when the folder cannot be written; the temp file is removed on any failure.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o644)  # mkstemp makes 0600; the result is ordinary data
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # also on KeyboardInterrupt: never leave a half-written temp file behind
        Path(tmp).unlink(missing_ok=True)
        raise


def select_tiers(rows: Sequence[LabeledRow], tier_models: Sequence[str], *,
                 source: str) -> TierTable:
    """Keep rows scored for every tier model; other models are ignored, incomplete rows counted.

    Raises:
        InvalidData: when no row has scores for all tier models (names the models present).
    """
    models = tuple(tier_models)
    if not models or len(set(models)) != len(models):
        raise InvalidData(f"{source}: tier models must be non-empty and unique, got {list(models)}")
    kept = [r for r in rows if all(m in r.scores for m in models)]
    if not rows:
        raise InvalidData(f"{source}: no rows (the file is empty or only blank lines)")
    if not kept:
        present = sorted({m for r in rows for m in r.scores})
        raise InvalidData(f"{source}: none of the rows has scores for all tier models "
                          f"{list(models)}; models present: {present}")
    scores = np.array([[r.scores[m] for m in models] for r in kept], dtype=np.float64)
    costs = None
    if all(r.cost is not None and all(m in r.cost for m in models) for r in kept):
        costs = np.array([[r.cost[m] for m in models] for r in kept if r.cost is not None],
                         dtype=np.float64)
    return TierTable(tuple(kept), scores, costs, len(rows) - len(kept), models)


def estimate_costs(token_counts: NDArray[Any], tiers: Sequence[Tier],
                   output_tokens: float = DEFAULT_OUTPUT_TOKENS) -> NDArray[np.float64]:
    """USD per call ``(n, k)``: each prompt's input tokens plus ``output_tokens``, list prices."""
    tokens = np.asarray(token_counts, dtype=np.float64).reshape(-1)
    # Tier.cost is linear in the token counts, so this is Tier.cost per row, vectorised.
    cols = [t.cost(0, output_tokens) + tokens * t.cost(1, 0) for t in tiers]
    if not cols:
        return np.zeros((tokens.shape[0], 0), dtype=np.float64)
    return np.stack(cols, axis=1)


def table_costs(table: TierTable, token_counts: NDArray[Any],
                tiers: Sequence[Tier]) -> NDArray[np.float64]:
    """Per-call USD ``(n, k)``: a row's real ``cost`` when it has all tier models, else estimated.

    Raises:
        ValueError: when ``tiers`` are not the table's tier models or the counts' length differs.
    """
    if tuple(t.model for t in tiers) != table.tier_models:
        raise ValueError(f"tiers {[t.model for t in tiers]} != table {list(table.tier_models)}")
    costs = estimate_costs(token_counts, tiers)
    if costs.shape[0] != len(table.rows):
        raise ValueError(f"{costs.shape[0]} token counts for {len(table.rows)} rows")
    for i, row in enumerate(table.rows):
        if row.cost is not None and all(m in row.cost for m in table.tier_models):
            costs[i] = [row.cost[m] for m in table.tier_models]
    return costs


def cheapest_adequate(scores: NDArray[np.float64],
                      tolerance: float = DEFAULT_TOLERANCE) -> NDArray[np.int64]:
    """Label each row with the cheapest tier scoring at least (row max - ``tolerance``).

    Tiers are columns, cheapest first, so ties go to the cheaper tier; a row no tier gets right
    (all zeros) is labelled with the cheapest tier, since paying more buys nothing.

    Raises:
        ValueError: when ``scores`` is not 2-D or ``tolerance`` is negative.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] == 0:
        raise ValueError(f"scores must be (n, k) with k >= 1, got shape {s.shape}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    # _EPS absorbs float rounding: 0.6 is adequate against 0.9 at tolerance 0.3 (0.9 - 0.3 > 0.6)
    adequate = s >= s.max(axis=1, keepdims=True) - tolerance - _EPS
    labels: NDArray[np.int64] = np.argmax(adequate, axis=1).astype(np.int64)
    return labels


def normalise_prompt(prompt: str) -> str:
    """The prompt with runs of whitespace collapsed to one space: the key duplicates share."""
    return " ".join(prompt.split())


def dedupe(rows: Iterable[LabeledRow]) -> list[LabeledRow]:
    """Drop rows whose prompt repeats an earlier one (whitespace-normalised), keeping the first."""
    seen: set[str] = set()
    out: list[LabeledRow] = []
    total = 0
    for row in rows:
        total += 1
        key = normalise_prompt(row.prompt)
        if key not in seen:
            seen.add(key)
            out.append(row)
    if total != len(out):
        logger.info("dedupe: dropped %d duplicate prompts of %d rows", total - len(out), total)
    return out


def _unit_key(row: LabeledRow) -> str:
    """The split unit of a row: its group, or for ungrouped rows the row itself."""
    if row.group is not None:
        return f"group:{row.group}"
    return f"row:{row.id}" if row.id is not None else f"prompt:{normalise_prompt(row.prompt)}"


def _hash_order(key: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}\x00{key}".encode()).hexdigest()


def group_split(rows: Sequence[LabeledRow], *, test_groups: Collection[str] | None = None,
                test_fraction: float = 0.2, seed: int) -> tuple[list[int], list[int]]:
    """Train and test indices with no group on both sides; deterministic for a seed.

    With ``test_groups`` the test side is exactly the rows of those groups (ungrouped rows train).
    Otherwise units (a group, or one ungrouped row keyed by id or prompt) are visited in an order
    hashed from ``seed`` and the key, and each is put in test while test stays within
    ``test_fraction`` of the rows (if no unit is that small, test is the first unit alone). The
    result does not depend on the rows' order, only on their keys.

    Raises:
        ValueError: when ``test_fraction`` is not in (0, 1).
        InvalidData: when one side would be empty (too few groups, or unknown ``test_groups``).
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if test_groups is not None:
        wanted = set(test_groups)
        missing = sorted(wanted - {r.group for r in rows if r.group is not None})
        if missing:
            logger.warning("group_split: test groups not in the data: %s", missing)
        in_test = [r.group is not None and r.group in wanted for r in rows]
    else:
        units: dict[str, int] = {}
        for row in rows:
            key = _unit_key(row)
            units[key] = units.get(key, 0) + 1
        order = sorted(units, key=lambda k: _hash_order(k, seed))
        target, taken, test_units = test_fraction * len(rows), 0, set[str]()
        for key in order:
            if taken + units[key] <= target:
                test_units.add(key)
                taken += units[key]
        if not test_units and order:  # every unit is bigger than the target: take the first
            test_units.add(order[0])
        in_test = [_unit_key(r) in test_units for r in rows]
    train = [i for i, t in enumerate(in_test) if not t]
    test = [i for i, t in enumerate(in_test) if t]
    if not train or not test:
        raise InvalidData(f"group_split: cannot split {len(rows)} rows into non-empty train "
                          f"({len(train)}) and test ({len(test)}) sides by group")
    return train, test


def random_split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded random ``(rest, held_out)`` indices, ``fraction`` of ``n`` held out (at least one).

    Raises:
        ValueError: when ``n < 2`` or ``fraction`` is not in (0, 1).
    """
    if n < 2 or not 0 < fraction < 1:
        raise ValueError(f"need n >= 2 and fraction in (0, 1), got n={n}, fraction={fraction}")
    n_test = min(max(round(n * fraction), 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return sorted(int(i) for i in perm[n_test:]), sorted(int(i) for i in perm[:n_test])


def data_sha256(paths: Iterable[Path]) -> str:
    """SHA-256 over the files' bytes in order (names and folders do not count), for manifests.

    Raises:
        InvalidData: when a file cannot be read.
    """
    outer = hashlib.sha256()
    for path in paths:
        inner = hashlib.sha256()
        try:
            with path.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    inner.update(chunk)
        except OSError as exc:
            raise InvalidData(f"{path}: cannot read data file ({exc})") from exc
        outer.update(inner.digest())
    return outer.hexdigest()
