"""One async PostgreSQL connection for a store: opened once, reopened when the server dropped it.

Used by the traffic store and the batch job store (the response cache keeps its own connections:
it abandons hung statements and reconnects in the background). Statements go through ``get``
under ``lock``: one psycopg connection runs one statement at a time.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg

from router_model.errors import InvalidData
from router_model.traffic_schema import PG_CLIENT_ENCODING

logger = logging.getLogger(__name__)

#: Seconds to wait for the server when opening (start-up) and when reconnecting (a request).
OPEN_TIMEOUT_S = 10
RECONNECT_TIMEOUT_S = 5


class PgLink:
    """The connection of the store called ``what`` (named in every message) at ``url``."""

    def __init__(self, url: str, what: str) -> None:
        self._url = url
        self._what = what
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.lock = asyncio.Lock()

    async def open(self) -> psycopg.AsyncConnection[Any]:
        """Connect (once, at start-up).

        Raises:
            InvalidData: when the server cannot be reached or refuses; psycopg's message names
                host and database, never the password.
        """
        try:
            self._conn = await self._connect(OPEN_TIMEOUT_S)
        except psycopg.Error as exc:
            raise InvalidData(f"{self.cannot_open} ({exc})") from exc
        return self._conn

    @property
    def cannot_open(self) -> str:
        """The start of the message for a store that could not be opened."""
        return f"{self._what} (PostgreSQL): cannot open"

    async def get(self) -> psycopg.AsyncConnection[Any]:
        """The connection, opened again first if the server dropped it (call under ``lock``).

        Why: psycopg does not reconnect by itself, so without this one PostgreSQL restart or
        network blip would fail every later statement until the process restarts.

        Raises:
            RuntimeError: when the store is not started.
            psycopg.OperationalError: when the server is still unreachable.
        """
        if self._conn is None:
            raise RuntimeError(f"{self._what} is not started")
        if self._conn.broken or self._conn.closed:
            logger.warning("%s (PostgreSQL): connection lost, reconnecting", self._what)
            await self._conn.close()
            self._conn = await self._connect(RECONNECT_TIMEOUT_S)
        return self._conn

    async def _connect(self, timeout_s: int) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self._url, connect_timeout=timeout_s, client_encoding=PG_CLIENT_ENCODING
        )

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
