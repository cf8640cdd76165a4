"""``tierwise label``: every tier of a gateway config answers a prompt file, a judge grades them.

Reads prompts (JSONL: a ``prompt`` or OpenAI ``messages`` per line), asks each configured tier
through its upstream (non-stream, ``max_tokens`` bounded), has the judge (a tier's name or model)
grade every answer with ``router_model.judge`` (the top tier's answer is the others' reference),
and appends rows of the labeled-data format to ``--out``: ``scores`` (the judge's (N - 1) / 9)
and ``cost`` (USD from the upstream's usage) per tier model, ready for ``tierwise train`` and
``retrain``. Before any call it prints the number of calls and an upper bound of their cost
(tokens bounded by characters, answers by ``max_tokens``, a judge asked twice); ``--max-usd``
stops there when the bound is higher. Calls are retried with backoff on 429, 5xx and transport
errors; a judge reply without a rating is asked once more, then the prompt is skipped and
counted. A rerun skips prompts already in ``--out`` (each row's ``id``). Exit 2 on bad input (a bad
prompt line names file and line; an unknown judge), before any call.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from router_model.errors import InvalidData
from router_model.judge import judge_prompt, load_template, parse_rating, rating_score
from router_model.logs import configure_logging
from router_model.settings import Settings, env_secrets
from router_model.tiers import Tier
from service.gateway.config import GatewayConfig, load_gateway_config
from service.gateway.records import usage_of
from service.gateway.shadow import JUDGE_MAX_TOKENS, JUDGE_TRIES, answer_text
from service.gateway.upstream.pool import retryable_status

logger = logging.getLogger(__name__)

#: Tokens counted per message on top of its characters (role and framing) in the cost bound.
MESSAGE_OVERHEAD = 8


@dataclass(frozen=True)
class Item:
    """One prompt: its id (sha256 of its messages), text shown to the judge, and messages."""

    id: str
    text: str
    messages: list[dict[str, Any]]


@dataclass(frozen=True)
class Job:
    """Everything one run needs."""

    config: GatewayConfig
    judge: Tier
    keys: dict[str, str | None]
    template: str
    max_tokens: int
    retries: int
    concurrency: int


def read_items(path: Path) -> list[Item]:
    """The prompts of a JSONL file.

    Raises:
        InvalidData: naming ``path:line`` for a line that is not a prompt or a chat.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidData(f"{path}: cannot read ({exc})") from exc
    items = []
    for n, line in enumerate(lines, start=1):
        if line.strip():
            items.append(_item(line, f"{path}:{n}"))
    if not items:
        raise InvalidData(f"{path}: no prompts")
    return items


def _item(line: str, where: str) -> Item:
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise InvalidData(f"{where}: not JSON ({exc})") from None
    if isinstance(obj, dict) and isinstance(obj.get("prompt"), str) and obj["prompt"].strip():
        messages = [{"role": "user", "content": obj["prompt"]}]
    elif isinstance(obj, dict) and isinstance(obj.get("messages"), list) and all(
            isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in obj["messages"]) and obj["messages"]:
        messages = [{"role": m["role"], "content": m["content"]} for m in obj["messages"]]
    else:
        raise InvalidData(f"{where}: expected a non-empty string 'prompt' or a 'messages' list "
                          "of {role, content} strings")
    text = messages[0]["content"] if len(messages) == 1 else "\n\n".join(
        f"{m['role']}: {m['content']}" for m in messages)
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()
    return Item(digest[:32], text, messages)


def cost_bound(items: Sequence[Item], job: Job) -> tuple[int, float]:
    """(calls, an upper bound of their USD) for labelling ``items``."""
    tiers = job.config.tier_ladder()
    judge_in = len(job.template) + 2 * job.max_tokens * 4  # answer and reference, 4 chars/token
    calls, usd = 0, 0.0
    for item in items:
        n_in = len(item.text) + MESSAGE_OVERHEAD * len(item.messages)
        for tier in tiers:
            usd += tier.cost(n_in, job.max_tokens)
            usd += JUDGE_TRIES * job.judge.cost(n_in + judge_in, JUDGE_MAX_TOKENS)
        calls += len(tiers) * (1 + JUDGE_TRIES)
    return calls, usd


class Labeler:
    """Runs the calls of one ``Job`` over an httpx client."""

    def __init__(self, job: Job, client: httpx.AsyncClient) -> None:
        self.job, self.client = job, client
        self.counts: Counter[str] = Counter()

    async def call(self, tier: Tier, messages: list[dict[str, Any]],
                   max_tokens: int) -> tuple[str, float]:
        """A tier's answer text and its cost; retried with backoff on 429/5xx/transport errors.

        Raises:
            InvalidData: when the tier refuses the request or every try failed.
        """
        cfg = next(t for t in self.job.config.tiers if t.name == tier.name)
        key = self.job.keys.get(cfg.api_key_env)
        headers = {"authorization": f"Bearer {key}"} if key else {}
        body = {"model": tier.model, "messages": messages, "max_tokens": max_tokens,
                "temperature": 0}
        why = ""
        for attempt in range(self.job.retries + 1):
            if attempt:
                await asyncio.sleep(min(0.5 * 2 ** (attempt - 1), 30.0))
            try:
                response = await self.client.post(cfg.base_url.rstrip("/") + "/chat/completions",
                                                   json=body, headers=headers,
                                                   timeout=cfg.timeout_s)
            except httpx.HTTPError as exc:
                why = type(exc).__name__
                continue
            if retryable_status(response.status_code):
                why = f"status {response.status_code}"
                continue
            if response.status_code >= 400:
                raise InvalidData(f"tier {tier.name} refused: status {response.status_code}")
            doc = response.json()
            usage = usage_of(doc.get("usage"))
            cost = tier.cost(usage.input_tokens, usage.output_tokens) if usage else 0.0
            return answer_text(doc), cost
        raise InvalidData(f"tier {tier.name} failed {self.job.retries + 1} times ({why})")

    async def grade(self, question: str, answer: str, reference: str | None) -> int | None:
        """The judge's rating (asked at most ``JUDGE_TRIES`` times), None without one."""
        prompt = judge_prompt(question, answer, reference, self.job.template)
        for _ in range(JUDGE_TRIES):
            reply, _ = await self.call(self.job.judge, [{"role": "user", "content": prompt}],
                                       JUDGE_MAX_TOKENS)
            rating = parse_rating(reply)
            if rating is not None:
                return rating
        return None

    async def row(self, item: Item) -> dict[str, Any] | None:
        """The labeled row of one prompt, None when skipped (counted)."""
        tiers = self.job.config.tier_ladder()
        try:
            answers = await asyncio.gather(*(self.call(t, item.messages, self.job.max_tokens)
                                             for t in tiers))
            reference = answers[-1][0]
            ratings = await asyncio.gather(*(self.grade(
                item.text, a[0], None if i == len(tiers) - 1 else reference)
                for i, a in enumerate(answers)))
        except InvalidData as exc:
            logger.warning("prompt %s skipped: %s", item.id, exc)
            self.counts["upstream_failed"] += 1
            return None
        if any(r is None for r in ratings):
            self.counts["unparseable"] += 1
            return None
        self.counts["labeled"] += 1
        return {"prompt": item.text, "id": item.id,
                "scores": {t.model: rating_score(r) for t, r in zip(tiers, ratings, strict=True)
                           if r is not None},
                "cost": {t.model: a[1] for t, a in zip(tiers, answers, strict=True)}}


async def run(job: Job, items: Sequence[Item], out: Path) -> Counter[str]:
    """Label ``items`` into ``out`` (one whole line per prompt, appended); the counts."""
    gate = asyncio.Semaphore(job.concurrency)
    done = 0
    async with httpx.AsyncClient() as client:
        labeler = Labeler(job, client)
        with out.open("a", encoding="utf-8") as sink:

            async def one(item: Item) -> None:
                nonlocal done
                async with gate:
                    row = await labeler.row(item)
                if row is not None:
                    sink.write(json.dumps(row) + "\n")
                    sink.flush()
                done += 1
                sys.stderr.write(f"\rlabel: {done}/{len(items)}")

            await asyncio.gather(*(one(i) for i in items))
    sys.stderr.write("\n")
    return labeler.counts


def done_ids(out: Path) -> set[str]:
    """Ids of the rows already in ``out`` (a rerun skips them)."""
    if not out.is_file():
        return set()
    ids = set()
    for line in out.read_text(encoding="utf-8").splitlines():
        try:
            ids.add(str(json.loads(line)["id"]))
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line of an interrupted run: that prompt is labelled again
    return ids


def _job(args: argparse.Namespace) -> Job:
    config = load_gateway_config(args.config)
    judge = next((t for t in config.tier_ladder() if args.judge in (t.name, t.model)), None)
    if judge is None:
        raise InvalidData(f"--judge {args.judge!r} is not a tier's name or model of {args.config}")
    keys = {k: (v.get_secret_value() if v else None)
            for k, v in env_secrets(config.api_key_envs()).items()}
    missing = sorted(k for k, v in keys.items() if v is None)
    if missing:
        raise InvalidData(f"upstream key variables not set: {', '.join(missing)}")
    return Job(config, judge, keys, load_template(args.template), args.max_tokens, args.retries,
               args.concurrency)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tierwise label``: 0 when done, 2 on bad input or over ``--max-usd``."""
    p = argparse.ArgumentParser(prog="tierwise label", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=Path, required=True, help="JSONL: prompt or messages")
    p.add_argument("--config", type=Path, required=True, help="gateway YAML (tiers, upstreams)")
    p.add_argument("--judge", required=True, help="a tier's name or model that grades answers")
    p.add_argument("--out", type=Path, required=True, help="labeled JSONL (appended, resumable)")
    p.add_argument("--max-usd", type=float, help="stop before any call when the bound is higher")
    p.add_argument("--max-tokens", type=int, default=1024, help="answer length per tier call")
    p.add_argument("--concurrency", type=int, default=4, help="prompts labelled at once")
    p.add_argument("--retries", type=int, default=3, help="retries of a call on 429/5xx")
    p.add_argument("--template", type=Path, help="judge template file (router_model.judge)")
    args = p.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        job = _job(args)
        seen = done_ids(args.out)
        items = [i for i in read_items(args.prompts) if i.id not in seen]
    except InvalidData as exc:
        logger.error("label: %s", exc)
        return 2
    calls, bound = cost_bound(items, job)
    sys.stdout.write(f"{len(items)} prompts to label ({len(seen)} already in {args.out}): "
                     f"{calls} calls, at most ${bound:.4f}\n")
    if args.max_usd is not None and bound > args.max_usd:
        logger.error("label: the bound $%.4f exceeds --max-usd %.4f: nothing called", bound,
                     args.max_usd)
        return 2
    counts = asyncio.run(run(job, items, args.out))
    sys.stdout.write(f"labeled {counts['labeled']}, skipped: unparseable judge reply "
                     f"{counts['unparseable']}, upstream failed {counts['upstream_failed']}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
