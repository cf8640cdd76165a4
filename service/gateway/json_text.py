"""Lone UTF-16 surrogates in JSON: JSON can spell one (``"\\ud800"``), but it is not Unicode text.

No UTF-8 encoder, database or protobuf takes such a string. A client's request holding one is
refused (``service.gateway.requests``); an upstream's answer holding one is still an answer, so
the gateway replaces each lone surrogate with U+FFFD (the replacement character, as a UTF-8
decoder does with bytes it cannot read) before it relays, caches or counts it.
"""

from __future__ import annotations

import re
from typing import Any

#: After ``json.loads`` a surrogate is always a lone one: an escaped pair becomes one character.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
#: The JSON escape of a surrogate (``\ud800``-``\udfff``, any case).
_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
#: In bytes also a surrogate's own three bytes (CESU-8): ``json.loads`` of bytes lets them pass.
_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
REPLACEMENT = "\ufffd"


def holds_lone_surrogate(text: str) -> bool:
    """Whether a decoded JSON string holds an unpaired UTF-16 surrogate."""
    return not text.isascii() and LONE_SURROGATE.search(text) is not None


def may_spell_surrogate(raw: bytes | str) -> bool:
    """Whether JSON text may decode to a lone surrogate: it escapes one somewhere, or (bytes) it
    holds one's CESU-8 bytes or is not UTF-8 at all (``json.loads`` reads UTF-16 and -32 too)."""
    if isinstance(raw, str):
        return _ESCAPE.search(raw) is not None
    # JSON text starts with an ASCII character: anything else is a BOM or a wider encoding
    return not raw[:1].isascii() or b"\x00" in raw[:4] or _ESCAPE_BYTES.search(raw) is not None


def replace_lone_surrogates(doc: dict[str, Any] | list[Any]) -> bool:
    """Replace each lone surrogate in the strings and keys of a parsed JSON document, in place,
    with U+FFFD; whether any was found. Iterative: the upstream chose how deep ``doc`` is."""
    changed = False
    stack: list[dict[str, Any] | list[Any]] = [doc]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            if any(holds_lone_surrogate(k) for k in value):
                items = [(_replaced(k), v) for k, v in value.items()]
                value.clear()
                value.update(items)  # keys in order; two that now read the same: the last wins
                changed = True
            pairs: list[tuple[Any, Any]] = list(value.items())
        else:
            pairs = list(enumerate(value))
        for key, item in pairs:
            if isinstance(item, str):
                if holds_lone_surrogate(item):
                    value[key] = _replaced(item)
                    changed = True
            elif isinstance(item, dict | list):
                stack.append(item)
    return changed


def _replaced(text: str) -> str:
    return LONE_SURROGATE.sub(REPLACEMENT, text)
