"""Prompt trimming on chats built from shipped prompts (the committed routellm fixture rows)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from router_model.encoder import load_tokenizer, word_piece_ids
from service.gateway.levers.trimming import KEEP_EDGE_TOKENS, trim_messages

FIXTURE = Path(__file__).resolve().parents[3] / "data" / "fixtures" / "routellm_small.jsonl"
SYSTEM = "You are a patient tutor. Answer with the letter of the correct option, then explain."


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    rows = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]
    return sorted({str(r["prompt"]) for r in rows}, key=len)


@pytest.fixture(scope="module")
def ids() -> Any:
    tokenizer = load_tokenizer()

    def count(texts: Sequence[str]) -> list[list[int]]:
        return word_piece_ids(tokenizer, texts)

    return count


def tokens(ids: Any, messages: list[dict[str, Any]]) -> int:
    return sum(len(x) for x in ids([m["content"] for m in messages]))


def assert_cut(ids: Any, old: str, new: str) -> None:
    """``new`` is ``old``'s head and tail around one marker stating the tokens removed."""
    parts = re.fullmatch(r"(.*)\n\[… (\d+) tokens trimmed by tierwise …\]\n(.*)", new, re.DOTALL)
    assert parts is not None
    head, n, tail = parts.groups()
    assert old.startswith(head) and old.endswith(tail) and len(head) + len(tail) < len(old)
    before, kept_head, kept_tail = (len(x) for x in ids([old, head, tail]))
    assert int(n) == before - kept_head - kept_tail


def tutoring_chat(prompts: list[str], turns: int) -> list[dict[str, Any]]:
    """A system prompt, ``turns`` earlier question/answer pairs, then a short final question."""
    chat: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
    for p in prompts[-turns - 1:-1]:  # the longest prompts: the context to trim
        chat += [{"role": "user", "content": p},
                 {"role": "assistant", "content": "B. " + p[: len(p) // 2]}]
    return chat + [{"role": "user", "content": prompts[0]}]


def test_short_chat_is_unchanged(prompts: list[str], ids: Any) -> None:
    chat = tutoring_chat(prompts, 2)
    out = trim_messages(chat, 100_000, ids)
    assert out.messages == chat and out.saved == 0


def test_repeated_system_text_is_dropped(prompts: list[str], ids: Any) -> None:
    chat = tutoring_chat(prompts, 2)
    # an SDK loop that re-sends the system prompt (once as a developer message)
    noisy = [*chat[:3], {"role": "system", "content": SYSTEM + "  "}, *chat[3:5],
             {"role": "developer", "content": SYSTEM}, *chat[5:]]
    out = trim_messages(noisy, 100_000, ids)
    assert out.messages == chat
    assert out.saved == tokens(ids, noisy) - tokens(ids, chat) > 0


def test_repeated_turns_are_conversation_and_kept(ids: Any) -> None:
    # the user asked "Another one." twice and got the same answer twice: the next question
    # needs both exchanges, and chat templates such as Mixtral's need alternating roles
    chat = [{"role": "user", "content": "Give me a random number between 1 and 10."},
            {"role": "assistant", "content": "7"},
            {"role": "user", "content": "Another one."}, {"role": "assistant", "content": "3"},
            {"role": "user", "content": "Another one."}, {"role": "assistant", "content": "3"},
            {"role": "system", "name": "example_user", "content": "Another one."},
            {"role": "system", "name": "example_user", "content": "Another one."},
            {"role": "user", "content": "Sum all the numbers you gave me."}]
    for budget in (100_000, 8):
        out = trim_messages(chat, budget, ids)
        assert out.messages == chat and out.saved == 0


def test_over_budget_cuts_older_turns_to_head_and_tail(prompts: list[str], ids: Any) -> None:
    chat = tutoring_chat(prompts, 6)
    before = copy.deepcopy(chat)
    budget = tokens(ids, chat) * 6 // 10
    out = trim_messages(chat, budget, ids)
    assert chat == before  # the caller's list is not modified
    assert out.tokens_after <= budget < out.tokens_before
    assert out.saved == out.tokens_before - out.tokens_after
    assert out.messages[-1] == chat[-1]  # the last user turn, verbatim
    assert out.messages[0] == chat[0]
    cut = [(a, b) for a, b in zip(chat, out.messages, strict=True) if a != b]
    assert cut
    for old, new in cut:
        assert old["role"] == new["role"]
        assert_cut(ids, old["content"], new["content"])


def test_unreachable_budget_cuts_every_long_turn_to_its_edges(
    prompts: list[str], ids: Any
) -> None:
    chat = tutoring_chat(prompts, 6)
    out = trim_messages(chat, 1, ids)
    assert out.tokens_after < out.tokens_before
    for old, new in zip(chat[:-1], out.messages[:-1], strict=True):
        assert len(ids([new["content"]])[0]) <= 2 * KEEP_EDGE_TOKENS + 16
        if new != old:  # cut (some twice): one marker stating the whole loss
            assert_cut(ids, old["content"], new["content"])


def test_last_user_turn_is_never_cut(prompts: list[str], ids: Any) -> None:
    huge = "\n".join(prompts[-40:])
    chat = [{"role": "user", "content": prompts[-1]}, {"role": "assistant", "content": "C."},
            {"role": "user", "content": huge}]
    out = trim_messages(chat, 256, ids)
    assert out.messages[-1]["content"] == huge
    assert len(ids([out.messages[0]["content"]])[0]) <= 2 * KEEP_EDGE_TOKENS + 16


def test_structured_messages_are_kept(prompts: list[str], ids: Any) -> None:
    call = {"role": "assistant", "content": None,
            "tool_calls": [{"id": "c1", "type": "function",
                            "function": {"name": "lookup", "arguments": "{}"}}]}
    tool = {"role": "tool", "tool_call_id": "c1", "content": prompts[-2]}
    chat = [{"role": "user", "content": prompts[-3]}, call, tool, dict(tool),
            {"role": "user", "content": prompts[-1]}]
    out = trim_messages(chat, 256, ids)
    assert out.messages[1:4] == [call, tool, tool]
    assert out.messages[-1] == chat[-1]


def test_function_results_are_kept(prompts: list[str], ids: Any) -> None:
    # the legacy functions API: the result is a plain-looking message with a name, and its data
    # (item 150 here) is what the last question asks about
    rows = ",".join(f'{{"id": {i}, "price": {i * 3}}}' for i in range(200))
    result = {"role": "function", "name": "lookup", "content": '{"rows": [' + rows + "]}"}
    call = {"role": "assistant", "content": None,
            "function_call": {"name": "lookup", "arguments": "{}"}}
    chat = [{"role": "user", "content": prompts[-1]}, call, result, dict(result),
            {"role": "tool", "content": prompts[-2]},
            {"role": "user", "content": "And what is the price of item 150 exactly?"}]
    out = trim_messages(chat, 256, ids)
    assert out.messages[1:] == chat[1:]
    assert out.saved > 0  # only the first user turn was cut


def test_a_turn_cut_twice_states_all_it_lost(ids: Any) -> None:
    # JSON is dense in tokens: the first cut, estimated by characters, falls short of the budget
    rows = ",".join(f'{{"id": {i}, "price": {i * 3}}}' for i in range(200))
    data = '{"rows": [' + rows + "]}"
    chat = [{"role": "user", "content": data}, {"role": "assistant", "content": "Noted."},
            {"role": "user", "content": "What is the price of item 150?"}]
    out = trim_messages(chat, 256, ids)
    assert out.tokens_after <= 256 < out.tokens_before
    assert_cut(ids, data, out.messages[0]["content"])
    assert out.messages[1:] == chat[1:]
