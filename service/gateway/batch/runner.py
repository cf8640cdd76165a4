"""The batch window's background task (one per replica): flush due windows, poll open batches.

Every ``poll_interval_s`` a replica (1) re-queues jobs whose claim lapsed (a replica died before
submitting them), (2) for each tier with a batch price, when its oldest queued job has waited
``window_s`` or ``max_requests`` are waiting, claims them and sends one batch file, and (3) polls
the open batches no other replica is polling. When a job finishes, its ``TrafficRecord`` (cost at
the discounted price) is committed first, then its result (or error) to the job store, so a
client that sees a finished job finds its record.

A replica renews its claim, and its poll, while it works on them (``service.gateway.batch.lease``),
so a
slow upload is never taken over; it checks the claim again before creating the batch (the paid
step), and a batch created under a claim lost anyway (a replica stalled past ``lease_s``) is
cancelled upstream, logged and counted (step ``claim_lost``).

Delivery limits: a replica that dies after creating an upstream batch but before recording it
leaves its jobs claimed; after ``lease_s`` they are queued again and sent a second time (the
Batch API has no idempotency key). A replica that dies between committing a job's record and
finishing the job leaves it open: the next poll settles it again (the record is not written
twice). Finished jobs stay in the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter

from router_model.encoder import word_piece_ids
from router_model.errors import UpstreamError
from router_model.records import TrafficRecord
from service.gateway.batch.jobs import Job, JobStore
from service.gateway.batch.lease import kept
from service.gateway.batch.upstream import BatchApi, BatchLine, BatchOutcome
from service.gateway.config import GatewayConfig, TierConfig
from service.gateway.records import baseline_tier
from service.store.traffic import TrafficStore

logger = logging.getLogger(__name__)

#: How long a stopping replica lets its current round finish before cutting it off.
STOP_GRACE_S = 30.0


class BatchMetrics:
    """The batch window's counters, on the gateway's registry (each replica counts its own)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.jobs = Counter(
            "tierwise_gateway_batch_jobs", "Non-urgent requests by step: queued (this replica "
            "took it), submitted, completed, failed (this replica settled it), claim_lost (this "
            "replica lost its claim mid-submission: no batch, or its batch cancelled).", ["step"],
            registry=registry,
        )
        self.saved = Counter(
            "tierwise_gateway_batch_saved_usd", "USD the batch discount saved on completed jobs.",
            registry=registry,
        )


@dataclass(frozen=True)
class Price:
    """What a batched answer cost, and what it would have cost without each lever."""

    input_tokens: int
    output_tokens: int
    usage_source: str
    cost_usd: float
    top_tier_cost_usd: float
    levers: dict[str, float]


@dataclass
class BatchRunner:
    """Sends queued jobs through the tiers' batch endpoints and collects their results."""

    config: GatewayConfig
    jobs: JobStore
    traffic: TrafficStore
    apis: Mapping[str, BatchApi]
    tokenizer: Any
    metrics: BatchMetrics
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _stop: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    def start(self) -> None:
        """Start the background loop on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batch-runner")

    async def aclose(self) -> None:
        """Stop after the current round; open batches stay in the store for any replica's poll.

        Why not cancel at once: a round cut between creating an upstream batch and recording it
        would leave its jobs claimed, and re-queued after the lease: sent twice.
        """
        if self._task is None:
            return
        self._stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_GRACE_S)
        except TimeoutError:
            logger.warning("batch window round still running after %.0f s: cut off", STOP_GRACE_S)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                await self.tick(time.time())
            except Exception:  # one bad round (store or upstream down) must not end the loop
                logger.exception("batch window round failed; trying again next interval")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.config.batch.poll_interval_s)

    async def tick(self, now: float) -> None:
        """One round: release lapsed claims, drop expired answers, send due batches, poll."""
        released = await self.jobs.release_expired(now)
        if released:
            logger.warning("%d batch jobs re-queued: their claim lapsed before submission",
                           released)
        purged = await self.jobs.purge(now - self.config.batch.retention_s)
        if purged:
            logger.info("%d finished batch jobs deleted after retention_s", purged)
        for tier in self.config.tiers:
            if tier.name in self.apis:
                await self._flush(tier, now)
        for batch_id, tier_name in await self.jobs.open_batches(now):
            await self._poll(batch_id, tier_name, time.time())

    async def _flush(self, tier: TierConfig, now: float) -> None:
        cfg = self.config.batch
        count, oldest = await self.jobs.queued(tier.name)
        while count and (count >= cfg.max_requests
                         or (oldest is not None and oldest <= now - cfg.window_s)):
            token = "claim-" + uuid.uuid4().hex
            claimed = await self.jobs.claim(tier.name, cfg.max_requests, token,
                                            time.time() + cfg.lease_s)
            if not claimed:
                return
            async with kept(functools.partial(self.jobs.renew, token), cfg.lease_s, token):
                await self._submit(tier, claimed, token)
            count, oldest = await self.jobs.queued(tier.name)

    async def _submit(self, tier: TierConfig, jobs: list[Job], token: str) -> None:
        """Upload the jobs' batch file and create the batch, while the claim is still held."""
        api, lease_s = self.apis[tier.name], self.config.batch.lease_s
        lines = [BatchLine(j.id, {**j.request, "model": tier.model}) for j in jobs]
        try:
            file_id = await self._upload(api, lines)
            # the batch is the paid step: never create it for jobs another replica now holds
            if await self.jobs.renew(token, time.time() + lease_s) < len(jobs):
                self._claim_lost(tier, len(jobs), "file %s uploaded, no batch created", file_id)
                return
            batch_id = await api.create(file_id, {"tierwise_claim": token})
        except UpstreamError as exc:
            logger.warning("batch of %d jobs for tier %s not submitted: %s", len(jobs),
                           tier.name, exc)
            if await self.jobs.renew(token, time.time() + lease_s) < len(jobs):
                self._claim_lost(tier, len(jobs), "left to their new holder")
                return
            for job in jobs:
                await self._fail(job, f"the batch could not be submitted: {exc}")
            return
        moved = await self.jobs.submitted(token, batch_id)
        self.metrics.jobs.labels("submitted").inc(moved)
        logger.info("batch %s sent to tier %s with %d jobs", batch_id, tier.name, moved)
        if moved < len(jobs):
            await self._orphaned(api, tier, batch_id, len(jobs) - moved, moved)

    async def _upload(self, api: BatchApi, lines: list[BatchLine]) -> str:
        """The upload, within ``upload_timeout_s`` in all (each HTTP read or write has its own)."""
        limit = self.config.batch.upload_timeout_s
        try:
            async with asyncio.timeout(limit):
                return await api.upload(lines)
        except TimeoutError as exc:
            raise UpstreamError(f"batch upload took longer than {limit:g} s") from exc

    def _claim_lost(self, tier: TierConfig, count: int, what: str, *args: object) -> None:
        self.metrics.jobs.labels("claim_lost").inc(count)
        logger.warning("claim on %d jobs for tier %s lost mid-submission (another replica took "
                       "them over after lease_s): " + what, count, tier.name, *args)

    async def _orphaned(self, api: BatchApi, tier: TierConfig, batch_id: str, lost: int,
                        moved: int) -> None:
        """A batch created after (part of) its claim was lost: those jobs may be sent again.

        With none of its jobs left it is a paid duplicate: cancel it. With some left it is
        still their batch: keep it (the lost jobs' answers in it are ignored).
        """
        self._claim_lost(tier, lost, "batch %s already created", batch_id)
        if moved:
            return
        try:
            await api.cancel(batch_id)
        except UpstreamError as exc:
            logger.error("duplicate batch %s of tier %s not cancelled, cancel it by hand: %s",
                         batch_id, tier.name, exc)
            return
        logger.warning("duplicate batch %s of tier %s cancelled", batch_id, tier.name)

    async def _poll(self, batch_id: str, tier_name: str, now: float) -> None:
        lease_s = self.config.batch.lease_s
        jobs = await self.jobs.lease_batch(batch_id, now, now + lease_s)
        api = self.apis.get(tier_name)
        if not jobs or api is None:
            return
        renew = functools.partial(self.jobs.renew_batch, batch_id)
        async with kept(renew, lease_s, f"poll of batch {batch_id}"):
            try:
                outcome = await api.outcome(batch_id)
            except UpstreamError as exc:
                logger.warning("batch %s not polled: %s", batch_id, exc)
                outcome = None
            if outcome is not None:
                for job in jobs:
                    await self._settle(job, outcome)
        if outcome is None:  # still running: the next poll, by any replica, after an interval
            await self.jobs.release_batch(batch_id, time.time() + self.config.batch.poll_interval_s)
            return
        logger.info("batch %s %s: %d answers, %d errors", batch_id, outcome.state,
                    len(outcome.completions), len(outcome.errors))

    async def _settle(self, job: Job, outcome: BatchOutcome) -> None:
        body = outcome.completions.get(job.id)
        if body is None:
            await self._fail(job, outcome.errors.get(job.id)
                             or outcome.reason or "the job is missing from the batch's output")
            return
        tier = self._tier(job.tier)
        price = await self._price(job, tier, body)
        record = self._record(job, tier, 200, price)
        result = dict(body)
        result.setdefault("model", tier.model)
        result["tierwise"] = {
            "job_id": job.id, "decision_id": record.decision_id, "arm": record.arm,
            "source": record.source, "decided_tier": record.decided_tier, "tier": tier.name,
            "model": tier.model, "batch": True, "batch_discount": tier.batch_discount,
            "trimmed_tokens": job.draft.get("trimmed_tokens", 0),
            "input_tokens": price.input_tokens, "output_tokens": price.output_tokens,
            "usage_source": price.usage_source, "cost_usd": price.cost_usd,
            "top_tier_cost_usd": price.top_tier_cost_usd, "savings_usd": record.savings_usd,
            "batch_saved_usd": price.levers["batch"],
        }
        await self._commit(record)
        if await self.jobs.finish(job, result, None, time.time()):
            self.metrics.jobs.labels("completed").inc()
            self.metrics.saved.inc(price.levers["batch"])

    async def _fail(self, job: Job, error: str) -> None:
        record = self._record(job, None, 502, Price(0, 0, "upstream", 0.0, 0.0, {}))
        await self._commit(record)
        if await self.jobs.finish(job, None, error, time.time()):
            self.metrics.jobs.labels("failed").inc()

    def _tier(self, name: str) -> TierConfig:
        return next(t for t in self.config.tiers if t.name == name)

    async def _price(self, job: Job, tier: TierConfig, body: dict[str, Any]) -> Price:
        """Usage from the answer (else counted with the router's tokenizer), then the costs.

        The levers split the saving exactly: trimming saved the dropped input tokens at the
        tier's list price, batching the discount on what was sent; the top tier's list price (the
        named tier's, for a pass-through request) on the untrimmed request is the baseline.
        """
        usage = body.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
            out = usage.get("completion_tokens")
            n_in, n_out = usage["prompt_tokens"], out if isinstance(out, int) else 0
            source = "upstream"
        else:
            n_in, n_out = await asyncio.to_thread(_count, self.tokenizer, job, body)
            source = "estimated"
        trimmed = int(job.draft.get("trimmed_tokens", 0))
        listed = tier.tier().cost(n_in, n_out)
        paid = listed * (1.0 - (tier.batch_discount or 0.0))
        ladder = self.config.tier_ladder()
        baseline = baseline_tier(str(job.draft.get("source")), tier.name, ladder)
        top = baseline.cost(n_in + trimmed, n_out)
        levers = {"batch": listed - paid}
        if trimmed:
            levers["trim"] = tier.tier().cost(n_in + trimmed, n_out) - listed
        return Price(n_in, n_out, source, paid, top, levers)

    def _record(self, job: Job, tier: TierConfig | None, status: int,
                price: Price) -> TrafficRecord:
        draft = {k: v for k, v in job.draft.items() if k != "trimmed_tokens"}
        return TrafficRecord(
            **draft, tier=tier.name if tier else "", model=tier.model if tier else "",
            status=status, stream=False, input_tokens=price.input_tokens,
            output_tokens=price.output_tokens,
            usage_source="upstream" if price.usage_source == "upstream" else "estimated",
            cost_usd=price.cost_usd, top_tier_cost_usd=price.top_tier_cost_usd,
            latency_ms=max(0.0, (time.time() - job.created_at) * 1000.0),
            levers=price.levers, tenant=job.tenant,
        )

    async def _commit(self, record: TrafficRecord) -> None:
        """Commit a settled job's record once, before the job shows as finished.

        Why the lookup: a replica that died after this commit but before finishing the job
        leaves it open; the next poll settles it again and must not record it twice.
        """
        try:
            if await self.traffic.get(record.decision_id) is None:
                await self.traffic.record(record)
        except Exception:  # the job's answer is stored either way; the lost record is logged
            logger.exception("traffic record %s of a batch job was not committed",
                             record.decision_id)


def _count(tokenizer: Any, job: Job, body: dict[str, Any]) -> tuple[int, int]:
    """Input and output tokens with the router's tokenizer (an upstream that sent no usage)."""
    texts = [str(m.get("content") or "") for m in job.request.get("messages") or []
             if isinstance(m, dict)]
    answers = [str((c.get("message") or {}).get("content") or "")
               for c in body.get("choices") or [] if isinstance(c, dict)]
    ids = word_piece_ids(tokenizer, ["\n".join(texts), "".join(answers)])
    return len(ids[0]), len(ids[1])


def batch_apis(config: GatewayConfig, keys: Mapping[str, str | None],
               client: httpx.AsyncClient) -> dict[str, BatchApi]:
    """One ``BatchApi`` per tier with a batch price; ``keys`` maps ``api_key_env`` to keys."""
    return {
        t.name: BatchApi(client, t.base_url, keys.get(t.api_key_env),
                         httpx.Timeout(max(t.timeout_s, 60.0),
                                       connect=config.failover.connect_timeout_s))
        for t in config.tiers if t.batch_discount is not None
    }
