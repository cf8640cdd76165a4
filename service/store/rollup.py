"""``traffic_hourly``: the traffic table rolled up per UTC hour, kept by an insert trigger.

Why: a dashboard over millions of rows cannot scan them on every page (a million-row scan alone
takes longer than the page's 1 s budget on two cores); the trigger adds each answered record
(status < 400) to its hour's row in the same transaction as the insert, so the rollup is exactly
the table's ``GROUP BY``. A store whose traffic table predates the rollup is backfilled once, in
the transaction that creates it (the traffic table locked meanwhile). ``traffic`` is append-only
(no code updates or deletes its rows); a hand-made delete would leave the rollup ahead.

Key: ``hour`` (``YYYY-MM-DDTHH`` text, UTC, in both backends), ``arm``, ``tier``, ``source``,
``fail_open``; sums: requests, tokens, cost, baseline, each lever's USD, router latencies counted
and their histogram (``LATENCY_BOUNDS``).
"""

from __future__ import annotations

from collections.abc import Callable

from router_model.records import LEVERS

TABLE = "traffic_hourly"
KEY = ("hour", "arm", "tier", "source", "fail_open")
#: Upper bounds (ms) of the router-latency histogram: 0.01 ms times powers of 1.5 up to a
#: minute, then everything above; a percentile read from it is within a factor 1.5 of the exact
#: one before interpolation.
LATENCY_BOUNDS: tuple[float, ...] = tuple(round(0.01 * 1.5 ** k, 6) for k in range(39))
LATENCY_COLUMNS = tuple(f"lat_{k}" for k in range(len(LATENCY_BOUNDS) + 1))
SUMS = ("requests", "input_tokens", "output_tokens", "cost_usd", "top_tier_cost_usd",
        *(f"lever_{name}" for name in LEVERS), "latencies", *LATENCY_COLUMNS)


def _values(prefix: str, hour: str, lever: Callable[[str], str]) -> list[str]:
    """The rollup row of one traffic row (``prefix``: "NEW." in a trigger, "" in a SELECT)."""
    p = prefix
    return [hour, f"{p}arm", f"{p}tier", f"{p}source", f"{p}fail_open", "1",
            f"{p}input_tokens", f"{p}output_tokens", f"{p}cost_usd", f"{p}top_tier_cost_usd",
            *(lever(name) for name in LEVERS),
            f"CASE WHEN {p}router_latency_ms IS NULL THEN 0 ELSE 1 END",
            *_histogram(f"{p}router_latency_ms")]


def _histogram(x: str) -> list[str]:
    """One 0/1 column per ``LATENCY_BOUNDS`` bucket (``lo < x <= hi``), then the overflow."""
    edges = (None, *LATENCY_BOUNDS, None)
    out = []
    for lo, hi in zip(edges, edges[1:], strict=False):
        cond = " AND ".join(c for c in (f"{x} > {lo}" if lo is not None else "",
                                        f"{x} <= {hi}" if hi is not None else "") if c)
        out.append(f"CASE WHEN {x} IS NOT NULL AND {cond} THEN 1 ELSE 0 END")
    return out


def _sqlite_lever(p: str) -> Callable[[str], str]:
    # most rows used no lever: skip the JSON parse for them
    return lambda n: (f"CASE WHEN {p}levers = '{{}}' THEN 0 ELSE "
                      f"COALESCE(json_extract({p}levers, '$.{n}'), 0) END")


def _pg_lever(p: str) -> Callable[[str], str]:
    return lambda n: (f"CASE WHEN {p}levers = '{{}}' THEN 0 ELSE "
                      f"COALESCE(({p}levers::jsonb ->> '{n}')::double precision, 0) END")


def _table(real: str, boolean: str) -> str:
    ints = ("requests", "latencies", "input_tokens", "output_tokens", *LATENCY_COLUMNS)
    sums = ", ".join(f"{c} {'INTEGER' if c in ints else real} NOT NULL" for c in SUMS)
    return (f"CREATE TABLE {TABLE} (hour TEXT NOT NULL, arm TEXT NOT NULL, tier TEXT NOT NULL, "
            f"source TEXT NOT NULL, fail_open {boolean} NOT NULL, {sums}, "
            f"PRIMARY KEY ({', '.join(KEY)}))")


def _upsert(values: list[str]) -> str:
    adds = ", ".join(f"{c} = {TABLE}.{c} + excluded.{c}" for c in SUMS)
    return (f"INSERT INTO {TABLE} ({', '.join(KEY + SUMS)}) VALUES ({', '.join(values)}) "
            f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET {adds}")


def _backfill(hour: str, lever: Callable[[str], str]) -> str:
    cols = _values("", hour, lever)
    keys, sums = cols[:len(KEY)], cols[len(KEY):]
    return (f"INSERT INTO {TABLE} ({', '.join(KEY + SUMS)}) SELECT {', '.join(keys)}, "
            f"{', '.join(f'SUM({s})' for s in sums)} FROM traffic WHERE status < 400 "
            f"GROUP BY {', '.join(keys)}")


SQLITE_HOUR = "substr({p}created_at, 1, 13)"
PG_HOUR = "to_char({p}created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24')"


#: Taken before looking for the rollup: replicas starting together create it once.
PG_LOCK = "LOCK TABLE traffic IN SHARE ROW EXCLUSIVE MODE"
EXISTS_SQLITE = f"SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{TABLE}'"
EXISTS_PG = f"SELECT to_regclass('{TABLE}') IS NOT NULL"


def sqlite_ddl() -> list[str]:
    """Statements creating the rollup, its backfill and its trigger (one transaction)."""
    trigger = _upsert(_values("NEW.", SQLITE_HOUR.format(p="NEW."), _sqlite_lever("NEW.")))
    return [
        _table("REAL", "INTEGER"),
        _backfill(SQLITE_HOUR.format(p=""), _sqlite_lever("")),
        f"CREATE TRIGGER {TABLE}_add AFTER INSERT ON traffic WHEN NEW.status < 400 "
        f"BEGIN {trigger}; END",
    ]


def postgres_ddl() -> list[str]:
    """Statements creating the rollup, its backfill and its trigger (one transaction, after
    ``PG_LOCK`` and a check that the rollup is absent)."""
    trigger = _upsert(_values("NEW.", PG_HOUR.format(p="NEW."), _pg_lever("NEW.")))
    return [
        _table("DOUBLE PRECISION", "BOOLEAN"),
        _backfill(PG_HOUR.format(p=""), _pg_lever("")),
        f"CREATE OR REPLACE FUNCTION {TABLE}_add() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN IF NEW.status < 400 THEN {trigger}; END IF; RETURN NULL; END $$",
        f"CREATE TRIGGER {TABLE}_add AFTER INSERT ON traffic FOR EACH ROW "
        f"EXECUTE FUNCTION {TABLE}_add()",
    ]
