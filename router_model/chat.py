"""Chat requests as the router sees them, and ``scored_text``: which turns of a chat get scored.

Shared by the service (every chat request) and ``tierwise knob`` (chat samples), so both score
the same text for the same chat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from router_model.errors import InvalidPrompt

#: Characters of each context turn (system prompt, previous user turn) kept in the scored text.
CONTEXT_CHARS = 500
_SYSTEM_ROLES = frozenset({"system", "developer"})


@dataclass(frozen=True)
class ContentPart:
    """One part of a message's content (OpenAI format); only ``text`` parts are scored."""

    type: str
    text: str


@dataclass(frozen=True)
class ChatMessage:
    """One chat turn."""

    role: str
    content: tuple[ContentPart, ...]

    @property
    def text(self) -> str:
        """The message's text parts joined by newlines (images, audio and files are skipped)."""
        return "\n".join(p.text for p in self.content if p.type == "text" and p.text)


def scored_text(messages: Sequence[ChatMessage]) -> str:
    """The text the router scores for a chat: the last user message, with light context.

    Why this rule: the classifier was trained on single-turn prompts, so the scored text should look
    like one. The last user message is what the chosen model must answer now, so it is scored
    whole. Two context turns are prepended, each cut to ``CONTEXT_CHARS``: the start of the system
    (or developer) prompt, because it sets the task ("you are a proof assistant") while its long
    boilerplate would otherwise swamp the length features; and the end of the previous user turn,
    because a follow-up such as "now do it in Rust" is only as hard as what it follows. Assistant
    and tool turns are skipped: they are the model's own output, not the difficulty of the next
    question. Turns are joined by blank lines without "user:" labels, which the turn-count feature
    would read as a pasted transcript.

    Raises:
        InvalidPrompt: when no user message carries any text.
    """
    users = [m.text for m in messages if m.role == "user"]
    users = [t for t in users if t.strip()]
    if not users:
        raise InvalidPrompt("messages must contain a user message with text content")
    parts: list[str] = []
    system = next((m.text for m in messages if m.role in _SYSTEM_ROLES and m.text.strip()), "")
    if system:
        parts.append(system[:CONTEXT_CHARS])
    if len(users) > 1:
        parts.append(users[-2][-CONTEXT_CHARS:])
    parts.append(users[-1])
    return "\n\n".join(parts)
