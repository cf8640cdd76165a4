"""Who a request is from: the tenant (a hash of the client's bearer key; the key is never kept)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping


def bearer_key(authorization: str) -> str:
    """The key of an ``Authorization: Bearer <key>`` header ("" for any other scheme); the
    scheme's case and the spaces around the key do not matter (RFC 9110 section 11.1)."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def tenant_of(headers: Mapping[str, str]) -> str:
    """The tenant of a request: sha256 of ``"Bearer " + key`` for the bearer key the gateway
    checked (``bearer_key``; the key itself is never kept), so every spelling of one key is one
    tenant, and the canonical spelling hashes as it did when the raw header was hashed (records,
    jobs and cache entries written before still match). Without a bearer key (auth off): the
    raw header's hash, as before."""
    raw = headers.get("authorization", "")
    key = bearer_key(raw)
    return hashlib.sha256((f"Bearer {key}" if key else raw).encode()).hexdigest()
