"""Prompt trimming: drop redundant context from a chat before it is forwarded (opt-in).

Two steps: (1) a system or developer message whose text repeats an earlier one is dropped,
whatever the budget (a verbatim repeat of an instruction tells the model nothing new); (2) while
the chat is over ``max_input_tokens`` (counted with the router's word-piece tokenizer), the
longest older plain-text turn is cut to its head and tail around a marker. User and assistant
turns are never dropped (a repeated one is still conversation, and dropping it would break the
alternation of roles). The last user turn is never changed, nor are messages that carry tool
calls, tool or function results, or non-text parts (their structure and data are part of the
conversation's meaning).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from router_model.encoder import word_piece_ids
from service.gateway.config import TrimConfig
from service.gateway.requests import KnobIn

#: Tokens of an older turn kept at each end when it is cut (the head states the task, the tail
#: usually holds the conclusion the next turn refers to).
KEEP_EDGE_TOKENS = 64
_SYSTEM_ROLES = frozenset({"system", "developer"})
_TEXT_ROLES = _SYSTEM_ROLES | {"user", "assistant"}
_MARKER = "\n[… {n} tokens trimmed by tierwise …]\n"

Counter = Callable[[Sequence[str]], list[list[int]]]


@dataclass(frozen=True)
class Trimmed:
    """The trimmed messages and how many input tokens (by the router's tokenizer) were saved."""

    messages: list[Any]
    tokens_before: int
    tokens_after: int

    @property
    def saved(self) -> int:
        return self.tokens_before - self.tokens_after


def _text(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


def _plain(message: Any) -> bool:
    """A text turn: a system, developer, user or assistant message with string content only.

    Tool and function results (role ``tool``, legacy ``function`` with a ``name``), tool or
    function calls and unknown roles are never plain: their content is data the next turn reads.
    """
    return (isinstance(message, dict) and message.get("role") in _TEXT_ROLES
            and isinstance(message.get("content"), str)
            and not set(message) - {"role", "content", "name"})


def _last_user(messages: Sequence[Any]) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], dict) and messages[i].get("role") == "user":
            return i
    return len(messages)  # no user turn: nothing is protected beyond the rules above


def _dedupe(messages: list[Any]) -> list[Any]:
    """``messages`` without the system or developer messages whose text repeats an earlier one.

    Only unnamed instructions go: a repeated user or assistant turn is conversation (the user
    asked twice), dropping it would leave two turns of one role in a row (chat templates such as
    Mixtral's need them alternating), and a named system message is a few-shot example turn.
    """
    seen: set[str] = set()
    out: list[Any] = []
    for m in messages:
        if _plain(m) and m.get("role") in _SYSTEM_ROLES and "name" not in m:
            text = _text(m).strip()
            if text in seen:
                continue
            seen.add(text)
        out.append(m)
    return out


@dataclass(frozen=True)
class _Cut:
    """An older turn's ``original`` text cut to its first and last ``kept`` characters (half
    each) around a marker that states the ``removed`` tokens: the original's minus those kept."""

    original: str
    tokens: int
    kept: int
    removed: int = 0

    @property
    def head(self) -> str:
        return self.original[: self.kept // 2]

    @property
    def tail(self) -> str:
        return self.original[len(self.original) - (self.kept - self.kept // 2):]

    @property
    def text(self) -> str:
        return self.head + _MARKER.format(n=self.removed) + self.tail


def trim_messages(messages: Sequence[Any], max_input_tokens: int, ids: Counter) -> Trimmed:
    """Drop repeated system text, then shorten older turns to the budget.

    ``ids`` tokenises texts (the router's word-piece tokenizer). The last user message is kept
    verbatim; the input list is not modified.
    """
    original = list(messages)
    before = sum(len(x) for x in ids([_text(m) for m in original]))
    protected = _last_user(original)
    kept = original[protected] if protected < len(original) else None
    out = _dedupe(original)
    token_ids = ids([_text(m) for m in out])
    cuts: dict[int, _Cut] = {}  # by index in ``out``: a turn cut again is cut from its original
    for _ in range(4 * len(out)):  # each cut shrinks a turn; the bound guards odd tokenizations
        total = sum(len(x) for x in token_ids)
        if total <= max_input_tokens:
            break
        cuttable = [i for i, m in enumerate(out) if _plain(m) and m is not kept
                    and len(token_ids[i]) > 2 * KEEP_EDGE_TOKENS + 16]
        if not cuttable:
            break
        i = max(cuttable, key=lambda j: len(token_ids[j]))
        cut = cuts.get(i) or _Cut(_text(out[i]), len(token_ids[i]), len(_text(out[i])))
        cuts[i] = _shorten(cut, len(token_ids[i]), total - max_input_tokens, ids)
        out[i] = {**out[i], "content": cuts[i].text}
        token_ids[i] = ids([cuts[i].text])[0]
    return Trimmed(out, before, sum(len(x) for x in token_ids))


def _shorten(cut: _Cut, n_tokens: int, excess: int, ids: Counter) -> _Cut:
    """``cut`` (now ``n_tokens`` long) kept shorter, by about ``excess`` tokens.

    Cut by characters in proportion to tokens (the tokenizer gives ids, not offsets); the loop in
    ``trim_messages`` re-counts and cuts again when the estimate falls short. The kept head and
    tail are counted so that the marker states every token this turn has lost.
    """
    keep_tokens = max(2 * KEEP_EDGE_TOKENS, n_tokens - excess - 16)  # < n_tokens: it shrinks
    shorter = replace(cut, kept=max(1, cut.kept * keep_tokens // max(n_tokens, 1)))
    head, tail = ids([shorter.head, shorter.tail])
    return replace(shorter, removed=cut.tokens - len(head) - len(tail))


async def trim_forward(
    forward: dict[str, Any], config: TrimConfig, knob: KnobIn | None, tokenizer: Any
) -> int:
    """Trim a forwarded body's messages in place when the request's knob (else the config) asks.

    Returns the input tokens saved (0 when trimming is off). Long chats are tokenised off the
    event loop.
    """
    messages = forward.get("messages")
    asked = knob.trim if knob is not None else None
    if not (config.enabled if asked is None else asked) or not isinstance(messages, list):
        return 0

    def ids(texts: Sequence[str]) -> list[list[int]]:
        return word_piece_ids(tokenizer, texts)

    result = await asyncio.to_thread(trim_messages, messages, config.max_input_tokens, ids)
    forward["messages"] = result.messages
    return result.saved
