"""Server-sent events of OpenAI chat streams: split byte-exactly into events, and read them.

The gateway forwards every event's bytes unchanged, except that it adds a ``tierwise`` member to
the first chunk (and to the usage chunk, when the upstream sends one) and rewrites an event whose
JSON spells a lone UTF-16 surrogate with U+FFFD in its place (``valid_event``); ``SseTap`` splits
the raw byte stream into events and notes, on the way, the usage, the generated text (to count
tokens when there is no usage) and the ``[DONE]`` marker.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from service.gateway.json_text import may_spell_surrogate, replace_lone_surrogates

_EVENT_END = re.compile(rb"\r?\n\r?\n")
DONE = b"[DONE]"


def data_of(event: bytes) -> bytes | None:
    """The payload of an event's ``data:`` lines joined by newlines (None when it has none)."""
    lines = [
        line[5:].removeprefix(b" ")
        for line in event.splitlines()
        if line.startswith(b"data:")
    ]
    return b"\n".join(lines) if lines else None


def json_event(doc: dict[str, Any]) -> bytes:
    """One ``data:`` event holding a JSON document."""
    return b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"


def with_member(event: bytes, name: str, value: Any) -> bytes:
    """The event with ``name: value`` added to its JSON object (unchanged if it is not one)."""
    payload = data_of(event)
    if payload is None:
        return event
    try:
        doc = json.loads(payload)
    except ValueError:
        return event
    if not isinstance(doc, dict):
        return event
    doc[name] = value
    return json_event(doc)


def valid_event(event: bytes) -> bytes:
    """The event, or its JSON rewritten with U+FFFD for each lone surrogate it spells (the same
    text as a non-stream answer gets: ``service.gateway.json_text``)."""
    payload = data_of(event)
    if payload is None or not may_spell_surrogate(payload):
        return event
    try:
        doc = json.loads(payload)
    except ValueError:
        return event
    if isinstance(doc, dict) and replace_lone_surrogates(doc):
        return json_event(doc)
    return event


@dataclass
class SseTap:
    """Splits an SSE byte stream into complete events and records what the chunks report."""

    usage: dict[str, Any] | None = None
    chunk_id: str | None = None
    created: int | None = None
    model: str | None = None
    text: list[str] = field(default_factory=list)
    _buffer: bytes = b""

    def feed(self, data: bytes) -> list[bytes]:
        """The complete events (terminator included) that ``data`` finishes."""
        self._buffer += data
        events: list[bytes] = []
        while True:
            match = _EVENT_END.search(self._buffer)
            if match is None:
                return events
            events.append(self._buffer[: match.end()])
            self._buffer = self._buffer[match.end() :]

    def rest(self) -> bytes:
        """Bytes after the last complete event (a stream that ended mid-event)."""
        rest, self._buffer = self._buffer, b""
        return rest

    def inspect(self, event: bytes) -> tuple[bool, bool]:
        """Note what an event says; returns (is ``[DONE]``, carries usage)."""
        payload = data_of(event)
        if payload is None:
            return False, False
        if payload.strip() == DONE:
            return True, False
        try:
            doc = json.loads(payload)
        except ValueError:
            return False, False
        if not isinstance(doc, dict):
            return False, False
        self.chunk_id = self.chunk_id or doc.get("id")
        self.created = self.created or doc.get("created")
        self.model = self.model or doc.get("model")
        for choice in doc.get("choices") or []:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str):
                self.text.append(content)
        usage = doc.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
            return False, True
        return False, False
