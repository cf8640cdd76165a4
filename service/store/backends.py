"""Opening the traffic store a URL names: SQLite (``sqlite:///PATH``) or PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from router_model.traffic_schema import store_location
from service.store.traffic import TrafficStore
from service.store.traffic_pg import PostgresTrafficStore
from service.store.traffic_sqlite import SqliteTrafficStore


def open_store(url: str) -> TrafficStore:
    """The store for a ``sqlite:///PATH`` or ``postgresql://…`` URL (not yet started).

    Raises:
        InvalidData: for any other URL.
    """
    backend, where = store_location(url)
    if backend == "sqlite":
        return SqliteTrafficStore(Path(where))
    return PostgresTrafficStore(where)
