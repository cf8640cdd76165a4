"""The budget knob: the gateway keeps the top tier's share of routed calls under a ceiling.

A bundle's default knob is calibrated on benchmark rows. On traffic unlike them it can send most
calls to the top tier (docs/results.md: 97% of LLMRouter's open-domain prompts with
``routellm_fast``). ``tierwise knob --top-share S`` fits the knob offline on a sample of prompts;
``budget.top_share: S`` in the gateway config does the same online, on the traffic itself:

- every ``tierwise-auto`` decision the router makes (on any A/B arm) adds the router's adequacy
  of the tier below the top (``a[-2]``, ``router_model.policy.adequacy``) to a window of the last
  ``window`` decisions;
- a request that sets no knob gets the largest knob that would have sent at most ``S`` of the
  window to the top tier (``router_model.policy.knob_for_share_below_top``, the rule of
  ``tierwise knob --top-share``), refitted every ``refresh`` decisions;
- until the window holds ``min_samples`` decisions, such a request gets ``default_quality`` (or
  the bundle's default knob);
- a request's own knob (``tierwise.quality``, the header) always wins, and its decision still
  joins the window: the window describes the traffic, not the knobs it was routed with;
- the budget is a ceiling: its knob never exceeds ``default_quality`` (or the bundle's default),
  so it lowers the top tier's share where the default would send more, and changes nothing where
  the default already sends less (``top_share: 1.0`` is no budget);
- adequacies of different model versions are not quite comparable. While versions share the
  traffic (a canary, a rollout across remote router replicas) the window pools them; once one
  version has made the last ``min_samples`` decisions alone (a reload, a new champion) the other
  versions' decisions leave the window.

The window lives in each replica, so a replica behind a load balancer budgets on its own share
of the traffic: a random sample of the same traffic. A replica starting up refills the window
from the traffic store's most recent records (``seed``), so a new or restarted replica starts at
the fleet's knob instead of at the default.

The target is a share of calls as the router would route them with no tier limits; a request's
``min_tier`` / ``max_tier`` / ``allowed_tiers``, fixed A/B arms, failovers and fail-opens move
the realised share away from it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from router_model.policy import knob_for_share_below_top

logger = logging.getLogger(__name__)


def below_top(probabilities: Mapping[str, float], ladder: Sequence[str]) -> float | None:
    """The adequacy of the tier below the top from a decision's per-tier probabilities (None
    when they do not cover the ladder, e.g. a fail-open record)."""
    if any(name not in probabilities for name in ladder):
        return None
    total = sum(float(probabilities[name]) for name in ladder[:-1])
    return min(max(total, 0.0), 1.0)


class BudgetKnob:
    """The knob that keeps ``top_share`` of the last ``window`` decisions off the top tier."""

    def __init__(
        self, top_share: float, window: int, min_samples: int, ladder: Sequence[str],
        refresh: int | None = None,
    ) -> None:
        self.top_share = top_share
        self.min_samples = min_samples
        self.ladder = tuple(ladder)
        #: Decisions between two fits of the knob: a sort of the window, kept off the hot path
        #: (16 for the default window of 2,000; 500 for the largest, 100,000).
        self.refresh = refresh if refresh is not None else max(16, window // 200)
        #: The model version of the newest decision.
        self.model_version: str | None = None
        self._window: deque[tuple[str, float]] = deque(maxlen=window)
        self._run = 0  # decisions in a row from ``model_version``
        self._knob: float | None = None
        self._since_refresh = 0

    def __len__(self) -> int:
        return len(self._window)

    def knob(self) -> float | None:
        """The budget's knob, or None while the window holds fewer than ``min_samples``."""
        if len(self._window) < self.min_samples:
            return None
        if self._knob is None or self._since_refresh >= self.refresh:
            values = np.fromiter((v for _, v in self._window), float, len(self._window))
            self._knob = knob_for_share_below_top(values, self.top_share)
            self._since_refresh = 0
        return self._knob

    def observe(self, probabilities: Mapping[str, float], model_version: str) -> None:
        """Add one router decision (per-tier probabilities in the ladder's names)."""
        value = below_top(probabilities, self.ladder)
        if value is None:
            return
        if model_version == self.model_version:
            self._run += 1
        else:
            self.model_version, self._run = model_version, 1
        self._window.append((model_version, value))
        self._since_refresh += 1
        if self._run == self.min_samples and any(v != model_version for v, _ in self._window):
            # a model that has made the last min_samples decisions alone replaced the others
            logger.info("budget: model %s now decides alone, its window starts again",
                        model_version)
            kept = [row for row in self._window if row[0] == model_version]
            self._window.clear()
            self._window.extend(kept)
            self._knob = None

    def seed(self, recent: Iterable[tuple[str, Mapping[str, float]]]) -> int:
        """Fill the window from stored decisions, newest first (``(model_version,
        probabilities)``), as if they had been observed in order; the number kept."""
        kept: list[tuple[str, Mapping[str, float]]] = []
        for version, probabilities in recent:
            if below_top(probabilities, self.ladder) is None:
                continue
            kept.append((version, probabilities))
            if len(kept) >= (self._window.maxlen or 0):
                break
        for version, probabilities in reversed(kept):  # oldest first, as they were observed
            self.observe(probabilities, version)
        return len(kept)
