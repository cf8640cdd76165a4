"""The one SQLite opener of the stores: WAL, ``synchronous=FULL``, a busy timeout.

WAL lets readers run beside the one writer; ``synchronous=FULL`` makes a commit durable before it
returns (a record a client got its answer for survives a crash); the busy timeout lets gateway
processes that share the file wait for each other's write lock instead of failing.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def connect_sqlite(path: Path) -> sqlite3.Connection:
    """Open (creating its folder) a database for use from one dedicated thread at a time.

    Raises:
        OSError: when the folder cannot be created.
        sqlite3.Error: when the database cannot be opened.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn
