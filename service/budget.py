"""The budget knob: the gateway keeps the top tier's share of routed calls at a target.

A bundle's default knob is calibrated on benchmark rows. On traffic unlike them it can send most
calls to the top tier (README, "Shipped bundles": 97% of LLMRouter's open-domain prompts with
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
- adequacies of different model versions are not comparable: a decision from a new model version
  (a reload, a new champion) empties the window, which refills from that model's decisions.

The window lives in each replica, so a replica behind a load balancer budgets on its own share
of the traffic: a random sample of the same traffic. A replica starting up refills the window
from the traffic store's most recent records of the same model version (``seed``), so a new or
restarted replica starts at the fleet's knob instead of at the default.

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
        self.model_version: str | None = None
        self._values: deque[float] = deque(maxlen=window)
        self._knob: float | None = None
        self._since_refresh = 0

    def __len__(self) -> int:
        return len(self._values)

    def knob(self) -> float | None:
        """The budget's knob, or None while the window holds fewer than ``min_samples``."""
        if len(self._values) < self.min_samples:
            return None
        if self._knob is None or self._since_refresh >= self.refresh:
            self._knob = knob_for_share_below_top(np.fromiter(self._values, float), self.top_share)
            self._since_refresh = 0
        return self._knob

    def observe(self, probabilities: Mapping[str, float], model_version: str) -> None:
        """Add one router decision (per-tier probabilities in the ladder's names)."""
        value = below_top(probabilities, self.ladder)
        if value is None:
            return
        if model_version != self.model_version:
            if self._values:
                logger.info("budget: model %s replaces %s, the window starts again",
                            model_version, self.model_version)
            self._values.clear()
            self._knob = None
            self.model_version = model_version
        self._values.append(value)
        self._since_refresh += 1

    def seed(self, recent: Iterable[tuple[str, Mapping[str, float]]]) -> int:
        """Fill the window from stored decisions, newest first (``(model_version,
        probabilities)``), keeping only the newest one's model version; the number kept."""
        kept: list[Mapping[str, float]] = []
        version: str | None = None
        for row_version, probabilities in recent:
            if version is None:
                version = row_version
            if row_version != version or below_top(probabilities, self.ladder) is None:
                continue
            kept.append(probabilities)
            if len(kept) >= (self._values.maxlen or 0):
                break
        for probabilities in reversed(kept):  # oldest first, as they were observed
            self.observe(probabilities, version or "")
        return len(kept)
