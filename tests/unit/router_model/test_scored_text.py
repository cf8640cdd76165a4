"""``scored_text``: which turns of a chat the router scores."""

from __future__ import annotations

import pytest

from router_model.chat import CONTEXT_CHARS, ChatMessage, ContentPart, scored_text
from router_model.errors import InvalidPrompt


def msg(role: str, *texts: str, kind: str = "text") -> ChatMessage:
    return ChatMessage(role, tuple(ContentPart(kind, t) for t in texts))


def test_single_user_message_is_scored_as_is() -> None:
    assert scored_text([msg("user", "What is 2 + 2?")]) == "What is 2 + 2?"


def test_last_user_turn_with_system_and_previous_user_turn_as_context() -> None:
    chat = [
        msg("system", "You are a math tutor."),
        msg("user", "Prove that sqrt(2) is irrational."),
        msg("assistant", "Suppose sqrt(2) = p/q in lowest terms..."),
        msg("user", "Now do the same for sqrt(3)."),
    ]
    assert scored_text(chat) == (
        "You are a math tutor.\n\nProve that sqrt(2) is irrational.\n\n"
        "Now do the same for sqrt(3)."
    )


def test_context_is_cut_but_the_scored_turn_is_not() -> None:
    system, earlier, last = "S" * 5000, "E" * 3000 + "tail", "L" * 4000
    text = scored_text([msg("developer", system), msg("user", earlier), msg("user", last)])
    head, prev, final = text.split("\n\n")
    assert head == system[:CONTEXT_CHARS]
    assert prev == earlier[-CONTEXT_CHARS:] and prev.endswith("tail")
    assert final == last


def test_assistant_and_tool_turns_and_non_text_parts_are_skipped() -> None:
    chat = [
        msg("user", "Describe this picture.", "https://example.com/a.png", kind="text"),
        msg("tool", "tool output"),
        msg("user", "", kind="image_url"),
        ChatMessage("user", (ContentPart("image_url", "x"), ContentPart("text", "And this?"))),
    ]
    assert scored_text(chat) == "Describe this picture.\nhttps://example.com/a.png\n\nAnd this?"


@pytest.mark.parametrize(
    "chat",
    [[], [msg("system", "Be brief.")], [msg("assistant", "Hi")], [msg("user", "  ")],
     [msg("user", "x", kind="image_url")]],
)
def test_no_user_text_is_invalid(chat: list[ChatMessage]) -> None:
    with pytest.raises(InvalidPrompt):
        scored_text(chat)
