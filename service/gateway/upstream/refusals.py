"""What a client sees of an upstream's refusal (a non-retryable 4xx): the gateway's own error.

An upstream's error body is the provider's text about the gateway's call: it may echo the
gateway's upstream key (``bad key Bearer sk-...``) or describe its account, and its status (401,
403, 404) would read as the client's own key or model being refused. So the body never reaches
the client: it goes to the log with credential-like tokens masked (``mask_credentials``), and the
client gets ``upstream_error`` with the upstream's status as ``upstream_status``:

- a 400, 413 or 422 is the request's fault (a parameter the provider refuses): the client gets a
  400 with the provider's ``message`` cut to ``MAX_REASON_CHARS`` and masked, and its ``param``
  when that is a plain member name;
- any other refusal (401, 403, 404, 409, …) is the gateway's configuration's fault: the client
  gets a 502 that names the tier and the status, nothing of the body.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from service.gateway.errors import envelope

logger = logging.getLogger(__name__)

#: Upstream statuses that blame the request: the client may read the (sanitised) reason.
REQUEST_FAULTS = frozenset({400, 413, 422})
MAX_REASON_CHARS = 300
_MASK = "[masked]"
# a bearer/basic token, an OpenAI-style key, and "key: value" pairs whose name says secret
_CREDENTIALS = (
    re.compile(r"(?i)\b(bearer|basic)\s+[^\s\"',;]+"),
    re.compile(r"\b(sk|pk|rk|ak)-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"(?i)\b(api[_-]?key|authorization|x-api-key|token|secret|password)"
               r"([\"']?\s*[:=]\s*[\"']?)[^\s\"',;}]+"),
)
_PARAM = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\[\]]{0,63}$")


def mask_credentials(text: str, *secrets: str | None) -> str:
    """``text`` with the given secrets and anything shaped like a credential replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, _MASK)
    text = _CREDENTIALS[0].sub(lambda m: f"{m.group(1)} {_MASK}", text)
    text = _CREDENTIALS[1].sub(_MASK, text)
    return _CREDENTIALS[2].sub(lambda m: f"{m.group(1)}{m.group(2)}{_MASK}", text)


def sealed_refusal(
    tier: str, status: int, body: bytes, api_key: str | None
) -> tuple[int, dict[str, Any]]:
    """The client's status and OpenAI error body for an upstream's refusal; logs the body."""
    text = body[:4096].decode("utf-8", "replace")
    logger.warning("upstream %s refused the call (status %d): %s", tier, status,
                   mask_credentials(text, api_key))
    if status not in REQUEST_FAULTS:
        doc = envelope(f"upstream {tier} refused the gateway's call (status {status})", 502,
                       code="upstream_error")
        doc["error"]["upstream_status"] = status
        return 502, doc
    reason, param = _reason(text)
    reason = mask_credentials(reason, api_key)[:MAX_REASON_CHARS]
    doc = envelope(f"upstream {tier} refused the request: {reason or 'no reason given'}", 400,
                   param=param, code="upstream_error")
    doc["error"]["upstream_status"] = status
    return 400, doc


def _reason(text: str) -> tuple[str, str | None]:
    """The ``error.message`` and ``error.param`` of an OpenAI error body (else no reason)."""
    try:
        doc = json.loads(text)
    except ValueError:
        return "", None
    error = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(error, dict):
        return "", None
    message = error.get("message")
    param = error.get("param")
    return (message if isinstance(message, str) else "",
            param if isinstance(param, str) and _PARAM.match(param) else None)
