"""What the LiteLLM plug-in's tests share: the import guard, fake tier upstreams, the model list.

LiteLLM fetches its price map from GitHub on import unless told not to; tests never touch the
network, so the switch is set before the first import.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from fake_upstream import FakeUpstream, start_server

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

WEAK_MODEL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG_MODEL = "gpt-4-1106-preview"
GROUP = "auto"
#: Chats the shipped fast bundle sends to both tiers.
CHATS = [
    "What is the capital of France?",
    "Prove that there are infinitely many primes, then generalise the argument to primes of "
    "the form 4k+3 and explain where it fails for 4k+1.",
    "hi",
    "Write a Python function that merges two sorted lists in linear time, with tests.",
]


@dataclass
class Upstreams:
    """One fake OpenAI upstream per tier, so a test sees which deployment a request went to."""

    weak: FakeUpstream
    strong: FakeUpstream
    weak_url: str
    strong_url: str

    def served_by(self) -> str:
        """Which upstream received the last request (exactly one request since ``clear``)."""
        counts = (len(self.weak.requests), len(self.strong.requests))
        assert sorted(counts) == [0, 1], counts
        return "weak" if counts[0] else "strong"

    def clear(self) -> None:
        self.weak.requests.clear()
        self.strong.requests.clear()

    def model_list(self) -> list[dict[str, Any]]:
        """Group ``auto``: the weak deployment marked by ``model_info``, the strong one known by
        its model name (both ways of naming a tier)."""
        return [
            {"model_name": GROUP, "litellm_params": {
                "model": f"openai/{WEAK_MODEL}", "api_base": self.weak_url, "api_key": "sk-fake"},
             "model_info": {"id": "auto-weak", "tierwise_tier": "weak"}},
            {"model_name": GROUP, "litellm_params": {
                "model": f"openai/{STRONG_MODEL}", "api_base": self.strong_url,
                "api_key": "sk-fake"},
             "model_info": {"id": "auto-strong"}},
        ]


@contextmanager
def tier_upstreams() -> Iterator[Upstreams]:
    """Two fake upstreams on loopback (weak and strong)."""
    weak, strong = FakeUpstream("weak"), FakeUpstream("strong")
    with ExitStack() as stack:
        servers = [start_server(weak.app()), start_server(strong.app())]
        for server in servers:
            stack.callback(server.stop)
        yield Upstreams(weak, strong, servers[0].url + "/v1", servers[1].url + "/v1")
