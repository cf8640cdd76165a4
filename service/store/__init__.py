"""Shared state in real servers: the traffic store (SQLite or PostgreSQL) and the connections and
openers every store uses."""
