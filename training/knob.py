"""``tierwise knob --model DIR --prompts FILE (--top-share S | --cost-share C)``: budget knob.

Operators budget in calls or dollars ("at most 30% of calls to the top tier"), not in adequacy
probabilities. This command scores a sample of the operator's own prompts or chats (no labels
needed) with the bundle, exactly as serving scores them, and returns the highest ``quality`` knob
whose decisions stay within the budget on that sample. On traffic unlike the benchmarks the bundle
learned from (small talk, short instructions), the bundle's default knob can send most calls to
the top tier; a knob fitted to the real prompt mix keeps the cost where it is meant to be.

Budgets:
- ``--top-share S``: at most a fraction ``S`` of the prompts goes to the top tier.
- ``--cost-share C``: the expected cost (the bundle's per-prompt estimate from token counts and
  tier prices) at most ``C`` times the cost of sending every prompt to the top tier.

The knob is the largest one within the budget, so it buys the most quality the budget allows;
ties between prompts can leave the share a little under the budget. The output (JSON on stdout)
shows the knob (``quality``: send it as ``policy.quality`` or set the gateway's
``default_quality``), the shares per tier and the cost there, and the same at the bundle's
default knob.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from router_model.chat import ChatMessage, ContentPart, scored_text
from router_model.errors import InvalidData, InvalidPrompt, RouterError
from router_model.features import featurize
from router_model.logs import configure_logging
from router_model.policy import adequacy, choose_tiers, knob_for_top_share
from router_model.router import ComplexityRouter, check_prompt
from router_model.settings import Settings
from training.data import estimate_costs, iter_json_lines

logger = logging.getLogger(__name__)


def read_prompts(path: Path) -> list[str]:
    """The scored text of each line of a JSONL file: a ``prompt``, or a chat's ``messages`` (the
    OpenAI format, scored by ``scored_text`` as the service scores a chat). Labeled rows and
    logged chat-completion request bodies work as they are: other keys are ignored.

    Raises:
        InvalidData: a missing or unreadable file, a malformed line, an empty prompt or a chat
            without user text (``"{path}:{line}: ..."``), or a file without prompts.
    """
    prompts = [_scored(obj, where) for where, obj in iter_json_lines(path)]
    if not prompts:
        raise InvalidData(f"{path}: no prompts")
    return prompts


def _scored(obj: Any, where: str) -> str:
    if isinstance(obj, dict) and isinstance(obj.get("prompt"), str):
        if not obj["prompt"].strip():
            raise InvalidData(f"{where}: 'prompt' is empty")
        return str(obj["prompt"])
    if isinstance(obj, dict) and isinstance(obj.get("messages"), list):
        try:
            return scored_text([_message(m, where) for m in obj["messages"]])
        except InvalidPrompt as exc:
            raise InvalidData(f"{where}: {exc}") from exc
    raise InvalidData(f"{where}: expected an object with a string 'prompt' or a 'messages' list")


def _message(raw: Any, where: str) -> ChatMessage:
    """One OpenAI-format message; content is a string, a list of parts, or absent (tool calls)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("role"), str):
        raise InvalidData(f"{where}: each message needs a string 'role'")
    content = raw.get("content")
    if content is None:
        return ChatMessage(raw["role"], ())
    if isinstance(content, str):
        return ChatMessage(raw["role"], (ContentPart("text", content),))
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        return ChatMessage(raw["role"], tuple(
            ContentPart(str(p.get("type", "")), p["text"] if isinstance(p.get("text"), str) else "")
            for p in content))
    raise InvalidData(f"{where}: a message's 'content' must be a string or a list of parts")


def _candidates(a: NDArray[np.float64]) -> NDArray[np.float64]:
    """Every knob at which some decision changes: the adequacies below the top tier, and 0."""
    return np.unique(np.concatenate([[0.0], a[:, :-1].ravel()]))


def knob_for_cost_share(
    proba: NDArray[np.floating], costs: NDArray[np.float64], share: float
) -> float:
    """The largest knob whose expected cost is at most ``share`` times the all-top-tier cost.

    ``costs[i, k]`` is row ``i``'s estimated cost at tier ``k``. The cost is non-decreasing in the
    knob, so a binary search over the knobs at which decisions change finds it; when even the
    cheapest decisions exceed the budget the answer is 0 (every row to the cheapest tier).
    """
    top = float(costs[:, -1].sum())
    rows = np.arange(len(costs))

    def within(knob: float) -> bool:
        return float(costs[rows, choose_tiers(proba, knob)].sum()) <= share * top + 1e-12

    if within(1.0):
        return 1.0
    if not within(0.0):
        return 0.0
    # decisions change just above each candidate, so the answer is one of them: the last within
    knobs = _candidates(adequacy(proba))
    lo, hi = 0, len(knobs)  # knobs[lo] is within the budget; knobs[hi:] are not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if within(float(knobs[mid])) else (lo, mid)
    return float(knobs[lo])


def summarise(
    proba: NDArray[np.floating], costs: NDArray[np.float64], knob: float, names: Sequence[str]
) -> dict[str, Any]:
    """What a knob does on these rows: each tier's share of calls and the cost against all-top."""
    chosen = choose_tiers(proba, knob)
    spent = float(costs[np.arange(len(costs)), chosen].sum())
    return {
        "quality": knob,
        "shares": {n: float(np.mean(chosen == k)) for k, n in enumerate(names)},
        "cost_share": spent / float(costs[:, -1].sum()),
        "mean_cost_usd": spent / len(costs),
    }


def fit_knob(
    model_dir: Path, prompts: Sequence[str], *, top_share: float | None, cost_share: float | None
) -> dict[str, Any]:
    """Score ``prompts`` with the bundle and fit the knob to the budget; the report dict.

    Raises:
        ArtifactMismatch: when the bundle cannot be loaded.
        InvalidPrompt: when a prompt is blank.
        ValueError: unless exactly one budget in [0, 1] is given.
    """
    if (top_share is None) == (cost_share is None):
        raise ValueError("give exactly one of top_share and cost_share")
    budget = top_share if top_share is not None else cost_share
    assert budget is not None  # for the type checker: one of them is set
    if not 0.0 <= budget <= 1.0:
        raise ValueError(f"the budget must be within [0, 1], got {budget}")
    for prompt in prompts:
        check_prompt(prompt)
    router = ComplexityRouter.from_artifact(model_dir)
    with tqdm(total=len(prompts), desc="scoring prompts", unit="prompt", leave=False) as bar:
        feats = featurize(prompts, router.featurizer, progress=bar.update)
    proba = router.proba_from_features(feats.matrix)
    costs = estimate_costs(feats.n_tokens, router.tiers)
    knob = (knob_for_top_share(proba, budget) if top_share is not None
            else knob_for_cost_share(proba, costs, budget))
    names = [t.name for t in router.tiers]
    return {
        "model_version": router.model_version,
        "prompts": len(prompts),
        "budget": {"top_share" if top_share is not None else "cost_share": budget},
        "fitted": summarise(proba, costs, knob, names),
        "bundle_default": summarise(proba, costs, router.manifest.threshold, names),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tierwise knob``."""
    # the docstring is reST; --help shows it as plain text
    p = argparse.ArgumentParser(
        prog="tierwise knob", description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="bundle directory")
    p.add_argument("--prompts", type=Path, required=True,
                   help="JSONL, one object per line with a 'prompt' or OpenAI-format 'messages' "
                        "(labeled files and logged chat request bodies work)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--top-share", type=float, help="largest share of calls to the top tier")
    budget.add_argument("--cost-share", type=float,
                        help="largest expected cost as a share of the all-top-tier cost")
    args = p.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    try:
        report = fit_knob(args.model, read_prompts(args.prompts),
                          top_share=args.top_share, cost_share=args.cost_share)
    except (RouterError, ValueError) as exc:
        sys.stderr.write(f"tierwise knob: {exc}\n")
        return 2
    sys.stdout.write(json.dumps(report, indent=1) + "\n")
    return 0
