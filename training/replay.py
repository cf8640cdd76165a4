"""``python -m training.replay``: send a labeled file's prompts through a running gateway.

Each prompt goes to ``POST /v1/chat/completions`` (model ``tierwise-auto``, a per-row ``user`` so
the gateway's A/B split is sticky per prompt); the tier that answered is read from the
``x-tierwise-model`` header, and that model's recorded score on the prompt (the labeled file's
``scores``) is posted as feedback (``POST /v1/feedback``). The upstream only has to answer; the
outcome is the one measured offline for that prompt and model, so the whole loop (route, forward,
log, feedback, retrain, A/B report) runs on real outcome data.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from router_model.errors import RouterError
from router_model.logs import configure_logging
from router_model.settings import Settings
from training.data import LabeledRow, read_labeled

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayResult:
    """What a replay sent and got back."""

    sent: int
    answered: int
    feedback: int
    failed: int
    by_tier: dict[str, int] = field(default_factory=dict)
    by_arm: dict[str, int] = field(default_factory=dict)


def replay(rows: Sequence[LabeledRow], client: httpx.Client, user_prefix: str = "replay"
           ) -> ReplayResult:
    """Send every row through the gateway behind ``client`` and post its recorded score.

    Raises:
        httpx.HTTPError: when the gateway cannot be reached.
    """
    answered = feedback = failed = 0
    tiers: Counter[str] = Counter()
    arms: Counter[str] = Counter()
    for i, row in enumerate(rows):
        body = {"model": "tierwise-auto", "user": f"{user_prefix}-{row.id or i}",
                "messages": [{"role": "user", "content": row.prompt}]}
        resp = client.post("/v1/chat/completions", json=body)
        if resp.status_code >= 400:
            failed += 1
            logger.warning("row %d: gateway answered %d", i, resp.status_code)
            continue
        answered += 1
        model = resp.headers.get("x-tierwise-model", "")
        tiers[resp.headers.get("x-tierwise-tier", "")] += 1
        arms[resp.headers.get("x-tierwise-arm", "")] += 1
        score = row.scores.get(model)
        if score is None:
            continue
        fb = client.post("/v1/feedback", json={
            "decision_id": resp.headers["x-tierwise-decision-id"], "score": score})
        feedback += fb.is_success
    return ReplayResult(len(rows), answered, feedback, failed, dict(tiers), dict(arms))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: replay ``--data`` through ``--gateway``; 2 on bad input."""
    # the docstring is reST; --help shows it as plain text
    p = argparse.ArgumentParser(
        prog="python -m training.replay", description=(__doc__ or "").replace("``", ""))
    p.add_argument("--gateway", required=True, help="gateway base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--data", type=Path, required=True, help="labeled JSONL with per-model scores")
    p.add_argument("--key", required=True, help="a client key of the gateway")
    p.add_argument("--limit", type=int, default=None, help="replay only the first N rows")
    args = p.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    try:
        rows = read_labeled(args.data)[: args.limit]
    except RouterError as exc:
        logger.error("replay: %s", exc)
        return 2
    headers = {"authorization": f"Bearer {args.key}"}
    with httpx.Client(base_url=args.gateway, headers=headers, timeout=60) as client:
        try:
            result = replay(rows, client)
        except httpx.HTTPError as exc:
            logger.error("replay: gateway %s unreachable (%s)", args.gateway, exc)
            return 2
    logger.info("replay: %s", result)
    return 0 if result.failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
