"""Shadow labels: after a sampled routed request is answered, ask the other tiers and a judge.

A share (``shadow.rate``) of routed ``tierwise-auto`` requests that the client got an answer to
(streams included) becomes a ``Sample``: the forwarded body made non-stream, the conversation,
the tier that answered and its text. ``ShadowLabeler.consider`` only puts it on a bounded queue
(full: dropped, counted), so nothing here delays, changes or fails a client's request. Workers
(``shadow.concurrency``) send the body to every other allowed tier once (``UpstreamPool.send_once``:
no failover, breakers untouched, each call under ``shadow.timeout_s``), then have the judge grade
every answer (``router_model.judge``; the top tier's answer is the reference of the others), and
store one ``JudgeLabel`` per tier with the decision (a judge call that fails drops the sample,
counted ``judge_failed``). A judge reply without a rating is asked once
more, then the sample is dropped and counted (``unparseable``): no score is ever made up. A tier
that fails or times out is left unlabelled (counted ``tier_failed``); a sample with no other
answer stores nothing. Spend (shadow and judge calls at list prices, tokens from the upstream's
usage or the router's tokenizer) is capped per UTC day (``max_usd_per_day``): samples taken once
the day's cap is reached are dropped (``over_budget``); calls already in flight may pass it by
their own cost. The prompt lives only in memory until its sample is done (``store_prompts``
false keeps it out of the store).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from router_model.encoder import word_piece_ids
from router_model.judge import judge_prompt, load_template, parse_rating, rating_score
from router_model.records import JudgeLabel, TrafficRecord
from router_model.tiers import Tier
from service.gateway.config import GatewayConfig
from service.gateway.metrics import GatewayMetrics
from service.gateway.records import Call, usage_of
from service.gateway.upstream.pool import Forwarded, UpstreamPool
from service.store.traffic import TrafficStore

logger = logging.getLogger(__name__)

#: The judge's answer length bound: its explanation and the verdict.
JUDGE_MAX_TOKENS = 1024
#: Tries of the judge per answer: a reply without a rating is asked once more.
JUDGE_TRIES = 2
#: How long a worker waits before working on a sample it took. A sample is queued while its
#: request's answer is still being written to the client on the same event loop; a worker that
#: started at once (building and sending the shadow call) ran ahead of that write and added
#: ~3 ms to the client's p50 (bench/bench_gateway.py, shadow 100% vs off).
START_DELAY_S = 0.01


@dataclass(frozen=True)
class Sample:
    """One answered request to label in the background."""

    decision_id: str
    body: dict[str, Any]
    question: str
    answered: str
    answer: str
    allowed: tuple[str, ...]


@dataclass(frozen=True)
class Answer:
    """A tier's answer to a sample and what the call cost."""

    text: str
    cost_usd: float


class ShadowLabeler:
    """The sampler, its bounded queue and workers; ``start`` and ``aclose`` bracket its life."""

    def __init__(self, config: GatewayConfig, pool: UpstreamPool, store: TrafficStore,
                 metrics: GatewayMetrics, tokenizer: Any,
                 rng: Callable[[], float] = random.random) -> None:
        self._cfg = config.shadow
        self._tiers = config.tier_ladder()
        self._judge = next(t for t in self._tiers if t.name == config.judge_tier())
        self._template = load_template(self._cfg.template)
        self._pool, self._store, self._metrics = pool, store, metrics
        self._tokenizer, self._rng = tokenizer, rng
        self._queue: asyncio.Queue[Sample] = asyncio.Queue(self._cfg.queue)
        self._workers: list[asyncio.Task[None]] = []
        self._spent: tuple[date, float] = (datetime.now(UTC).date(), 0.0)

    def start(self) -> None:
        """Start the workers."""
        self._workers = [asyncio.create_task(self._work(), name=f"shadow-{i}")
                         for i in range(self._cfg.concurrency)]

    async def aclose(self) -> None:
        """Stop the workers; samples still queued are dropped (labels are never owed)."""
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    def consider(self, call: Call, record: TrafficRecord, text: str) -> None:
        """Queue a sample of this answered request when it is routed and drawn (never raises
        past counting: a full queue drops the sample)."""
        if (record.status >= 400 or record.source not in ("router", "fixed_arm")
                or call.forward is None or self._rng() >= self._cfg.rate):
            return
        body = {k: v for k, v in call.forward.items() if k not in ("stream", "stream_options")}
        question = call.messages[0].text if len(call.messages) == 1 else "\n\n".join(
            f"{m.role}: {m.text}" for m in call.messages)
        sample = Sample(record.decision_id, body, question, record.tier, text,
                        tuple(call.plan.allowed))
        try:
            self._queue.put_nowait(sample)
        except asyncio.QueueFull:
            self._count("dropped_full")
            return
        self._count("queued")

    def spent_today(self) -> float:
        """Shadow USD spent this UTC day."""
        day, usd = self._spent
        return usd if day == datetime.now(UTC).date() else 0.0

    def _spend(self, usd: float) -> None:
        self._spent = (datetime.now(UTC).date(), self.spent_today() + usd)
        self._metrics.shadow_spend(usd)

    def _count(self, result: str) -> None:
        self._metrics.shadow_samples.labels(result).inc()

    async def _work(self) -> None:
        while True:
            sample = await self._queue.get()
            try:
                await asyncio.sleep(START_DELAY_S)
                self._count(await self._label(sample))
            except Exception:  # a background failure must never reach a client: count, go on
                self._count("failed")
                logger.exception("shadow label of %s failed", sample.decision_id)
            finally:
                self._queue.task_done()

    async def _label(self, sample: Sample) -> str:
        """Label one sample; the result counted (``labeled`` or why not)."""
        if self.spent_today() >= self._cfg.max_usd_per_day:
            return "over_budget"
        answers = {sample.answered: Answer(sample.answer, 0.0)}
        others = [t for t in self._tiers if t.name in sample.allowed and t.name != sample.answered]
        got = await asyncio.gather(*(self._ask(sample.body, t) for t in others))
        for tier, answer in zip(others, got, strict=True):
            if answer is None:
                self._count("tier_failed")
            else:
                answers[tier.name] = answer
        if len(answers) < 2:
            return "no_other_answer"
        top = max(answers, key=lambda name: [t.name for t in self._tiers].index(name))
        reference = answers[top].text
        names = list(answers)
        grades = await asyncio.gather(*(self._grade(
            sample.question, answers[n].text, None if n == top else reference) for n in names))
        failed = next((g for g in grades if isinstance(g, str)), None)
        if failed is not None:
            return failed
        models = {t.name: t.model for t in self._tiers}
        labels = [JudgeLabel(decision_id=sample.decision_id, tier=n, model=models[n],
                             score=rating_score(g[0]), rating=g[0], judge=self._judge.model,
                             cost_usd=answers[n].cost_usd, judge_cost_usd=g[1])
                  for n, g in zip(names, grades, strict=True) if not isinstance(g, str)]
        await self._store.add_judge_labels(labels)
        return "labeled"

    async def _ask(self, body: dict[str, Any], tier: Tier) -> Answer | None:
        """One tier's answer (None when it failed or timed out); its cost is spent."""
        try:
            async with asyncio.timeout(self._cfg.timeout_s):
                found = await self._pool.send_once(body, tier.name)
        except TimeoutError:
            found = "timeout"
        if isinstance(found, str) or not found.ok or found.doc is None:
            logger.warning("shadow call to %s failed (%s)", tier.name,
                           found if isinstance(found, str) else found.response.status_code)
            return None
        text = answer_text(found.doc)
        cost = await self._cost(tier, body, found, text)
        self._spend(cost)
        return Answer(text, cost)

    async def _grade(self, question: str, answer: str,
                     reference: str | None) -> tuple[int, float] | str:
        """The judge's rating of one answer and what asking cost, or why there is none
        (``judge_failed``: the call failed; ``unparseable``: no rating twice)."""
        prompt = judge_prompt(question, answer, reference, self._template)
        body = {"messages": [{"role": "user", "content": prompt}], "temperature": 0,
                "max_tokens": JUDGE_MAX_TOKENS}
        cost = 0.0
        for _ in range(JUDGE_TRIES):
            reply = await self._ask(body, self._judge)
            if reply is None:
                return "judge_failed"
            cost += reply.cost_usd
            rating = parse_rating(reply.text)
            if rating is not None:
                return rating, cost
        logger.warning("shadow judge gave no rating twice")
        return "unparseable"

    async def _cost(self, tier: Tier, body: dict[str, Any], answer: Forwarded, text: str) -> float:
        usage = usage_of(answer.doc.get("usage") if answer.doc else None)
        if usage is not None:
            return tier.cost(usage.input_tokens, usage.output_tokens)
        prompt = "\n".join(str(m.get("content") or "") for m in body.get("messages") or []
                           if isinstance(m, dict))
        ids = await asyncio.to_thread(word_piece_ids, self._tokenizer, [prompt, text])
        return tier.cost(len(ids[0]), len(ids[1]))


def answer_text(doc: dict[str, Any]) -> str:
    """The first choice's message content of a chat completion ("" when it has none)."""
    choices = doc.get("choices") or []
    message = choices[0].get("message") if choices and isinstance(choices[0], dict) else None
    return str(message.get("content") or "") if isinstance(message, dict) else ""
