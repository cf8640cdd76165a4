"""One chat completion through the gateway: pick the tier, forward, count usage and cost, record.

``model: "tierwise-auto"`` asks the router (or a fixed A/B arm); a configured tier's model or name
passes through unrouted. Only ``model`` is rewritten in the forwarded body (and the ``tierwise``
extension member removed). The traffic record is committed before the answer leaves: before the
JSON body is returned, and for streams before the final chunk and ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi.responses import JSONResponse, Response, StreamingResponse
from opentelemetry.trace import Span

from router_model.encoder import word_piece_ids
from router_model.errors import PromptTooLarge, UpstreamError
from router_model.records import TrafficRecord
from router_model.tiers import Tier
from service.gateway.config import GatewayConfig
from service.gateway.decisions.source import DecisionSource
from service.gateway.errors import envelope
from service.gateway.levers.ab import ArmAssigner
from service.gateway.levers.budget import BudgetKnob
from service.gateway.levers.cache.response import ResponseCache, replay
from service.gateway.levers.cache.store import Hit
from service.gateway.levers.cascade import Cascade, cascade_wanted, draft_allowed, draft_tier
from service.gateway.levers.trimming import trim_forward
from service.gateway.metrics import GatewayMetrics
from service.gateway.planning import Plan, Planner
from service.gateway.quotas import Quotas
from service.gateway.records import (
    Call,
    Usage,
    answer_text,
    build_record,
    plan_attributes,
    record_attributes,
    usage_of,
)
from service.gateway.requests import ChatRequest, cache_mode, read_chat
from service.gateway.shadow import ShadowLabeler
from service.gateway.tenants import tenant_of
from service.gateway.tracing import (
    CACHE,
    CASCADE,
    ROUTE,
    WRITE,
    Tracing,
    ended_on_error,
    finish,
    trace_id,
)
from service.gateway.upstream.pool import Forwarded, UpstreamPool, body_chunks
from service.gateway.upstream.refusals import sealed_refusal
from service.gateway.upstream.sse import SseTap, data_of, json_event, valid_event, with_member
from service.store.traffic import TrafficStore

logger = logging.getLogger(__name__)

#: Texts longer than this are tokenised off the event loop when usage must be estimated.
INLINE_TOKENIZE_CHARS = 20_000
#: Bodies larger than this are parsed and validated off the event loop (~1 ms of loop time).
INLINE_PARSE_BYTES = 64 * 1024


@dataclass
class Completions:
    """Handles ``POST /v1/chat/completions`` with everything the gateway started."""

    config: GatewayConfig
    decisions: DecisionSource
    assigner: ArmAssigner
    store: TrafficStore
    metrics: GatewayMetrics
    upstreams: UpstreamPool
    tokenizer: Any
    cache: ResponseCache | None = None
    budget: BudgetKnob | None = None
    quotas: Quotas | None = None
    shadow: ShadowLabeler | None = None
    tracing: Tracing = field(default_factory=Tracing)
    _background: set[asyncio.Task[Any]] = field(default_factory=set)
    _big_parses: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    planner: Planner = field(init=False)

    def __post_init__(self) -> None:
        self.planner = Planner(self.config, self.decisions, self.assigner, self.budget)

    @property
    def tiers(self) -> tuple[Tier, ...]:
        return self.config.tier_ladder()

    async def handle(
        self, chat: ChatRequest, headers: Mapping[str, str], plan: Plan | None = None
    ) -> Response:
        """Answer one chat completion request (on ``plan`` when it was already decided).

        Raises:
            BadRequest, ModelNotFound, InvalidPrompt: when the request cannot be used.
            UpstreamError: when every upstream failed (the failure is recorded first).
        """
        span = self.tracing.request(headers)
        if span is None:  # tracing off: not one context manager more on the request path
            return await self._handle(chat, headers, plan, None)
        # the span ends with the request's record (``_finish``: for a stream, at its end)
        with ended_on_error(span), self.tracing.current(span):
            return await self._handle(chat, headers, plan, span)

    async def _handle(self, chat: ChatRequest, headers: Mapping[str, str], plan: Plan | None,
                      span: Span | None) -> Response:
        start = time.perf_counter()
        body, scored = chat.body, chat.scored
        if plan is None:
            with self.tracing.span(ROUTE) as routed:
                plan = await self.planner.plan(body, headers, chat.messages)
                if routed.is_recording():
                    routed.set_attributes(plan_attributes(plan))
        call = Call(body, chat.messages, scored, plan, start, tenant=chat.tenant, span=span)
        forward = call.forward = chat.forward()
        cascade = cascade_wanted(self.config.cascade, body.tierwise, body.stream)
        call.trimmed = await trim_forward(forward, self.config.trim, body.tierwise, self.tokenizer)
        self.metrics.trimmed_tokens.inc(call.trimmed)
        mode = cache_mode(body, headers)
        # streams are neither served nor stored; "off" neither looks up nor stores
        if self.cache is not None and not body.stream and mode != "off":
            call.cache_key = self.cache.key(forward, call.tenant, plan.tier)
            with self.tracing.span(CACHE, {"tierwise.tier": plan.tier}) as looked:
                hit = await self.cache.lookup(call.cache_key, mode)
                looked.set_attribute("tierwise.cache", hit.layer if hit else "miss")
            self.metrics.cache.labels(hit.layer if hit else "miss").inc()
            if hit is not None:
                return await self._replay(call, hit)
        if plan.decision is not None:
            call.features = asyncio.create_task(self.decisions.features(scored))
        try:
            if cascade and plan.source == "router":
                call.answer = await self._cascade(call, forward)
            if call.answer is None:
                call.answer = await self.upstreams.send(forward, plan.tier, stream=body.stream,
                                                       allowed=plan.allowed)
        except UpstreamError:
            await self._finish(call, 502, Usage(0, 0, "upstream"))
            raise
        if body.stream and call.answer.ok:
            return StreamingResponse(
                self._events(call, call.answer), media_type="text/event-stream",
                headers={**self.headers(call), "cache-control": "no-cache"},
            )
        return await self._json(call, call.answer)

    async def read(self, raw: bytes, headers: Mapping[str, str]) -> ChatRequest:
        """The request parsed once, after its tenant's quota admits it (``quotas``).

        A big body is parsed off the event loop, one at a time: the parser holds the GIL, so
        big bodies parsed side by side would starve the loop (every other request).

        Raises:
            RateLimited: when the tenant is over a quota.
            BadRequest, PromptTooLarge: when the request cannot be used.
        """
        if self.quotas is not None:
            await self.quotas.admit(tenant_of(headers))
        if len(raw) <= INLINE_PARSE_BYTES:
            chat = read_chat(raw, headers)
        else:
            async with self._big_parses:
                chat = await asyncio.to_thread(read_chat, raw, headers)
        if len(chat.scored) > self.config.limits.max_scored_chars:
            raise PromptTooLarge(f"the scored text has {len(chat.scored)} characters, limit "
                                 f"{self.config.limits.max_scored_chars}")
        return chat

    async def _cascade(self, call: Call, forward: dict[str, Any]) -> Forwarded | None:
        """The accepted draft of a cascade, or None when the routed tier must answer."""
        plan, decision = call.plan, call.plan.decision
        routed = next(t for t in self.tiers if t.name == plan.tier)
        draft = draft_tier(self.tiers, plan.tier, decision, plan.policy) if decision else None
        if decision is None or draft is None:
            return None

        below = draft_allowed(self.tiers, plan.tier, plan.allowed)

        async def send(body: dict[str, Any], tier: str) -> Forwarded:
            return await self.upstreams.send(body, tier, stream=False, allowed=below)

        async def cost_of(tier: Tier, doc: dict[str, Any]) -> float:
            usage = await self._usage(call, doc.get("usage"), answer_text(doc))
            return tier.cost(usage.input_tokens, usage.output_tokens)

        with self.tracing.span(CASCADE, {"tierwise.draft_tier": draft.name,
                                         "tierwise.tier": routed.name}) as drafted:
            answer, call.cascade = await Cascade(self.config.cascade, self.tiers).first_try(
                forward, routed, draft, decision, send, cost_of)
            drafted.set_attributes({"tierwise.cascade.reason": call.cascade.reason,
                                    "tierwise.cascade.escalated": call.cascade.escalated})
        return answer

    def headers(self, call: Call) -> dict[str, str]:
        """The ``x-tierwise-*`` response headers."""
        answer = call.answer
        return {
            "x-tierwise-decision-id": call.plan.decision_id,
            "x-tierwise-arm": call.plan.arm,
            "x-tierwise-source": call.plan.source,
            "x-tierwise-tier": answer.upstream.tier.name if answer else "",
            "x-tierwise-model": answer.upstream.tier.model if answer else "",
            "x-tierwise-failovers": str(answer.failovers if answer else 0),
        }

    def info(self, call: Call, record: TrafficRecord | None = None) -> dict[str, Any]:
        """The ``tierwise`` member of responses (usage and cost once ``record`` exists)."""
        plan, answer, d = call.plan, call.answer, call.plan.decision
        doc: dict[str, Any] = {
            "decision_id": plan.decision_id, "arm": plan.arm, "source": plan.source,
            "decided_tier": plan.tier,
            "tier": answer.upstream.tier.name if answer else None,
            "model": answer.upstream.tier.model if answer else None,
            "failovers": answer.failovers if answer else 0,
            "fail_open": plan.source == "fail_open", "trimmed_tokens": call.trimmed,
            "router_tier": d.tier if d else None, "cache": None,
            "cascade": call.cascade.info() if call.cascade else None,
            "quality": d.quality if d else None,
            "probabilities": d.probabilities if d else None,
        }
        if record is not None:
            doc.update(
                input_tokens=record.input_tokens, output_tokens=record.output_tokens,
                usage_source=record.usage_source, cost_usd=record.cost_usd,
                top_tier_cost_usd=record.top_tier_cost_usd, savings_usd=record.savings_usd,
                levers=record.levers, routing_savings_usd=record.routing_savings_usd,
            )
        return doc

    async def _json(self, call: Call, answer: Forwarded) -> Response:
        response = answer.response
        if not answer.ok:  # a refusal (400, 401, 404, …): the gateway's own error, body logged
            upstream = answer.upstream
            status, error = sealed_refusal(upstream.tier.name, response.status_code,
                                           response.content, upstream.api_key)
            await self._finish(call, status, Usage(0, 0, "upstream"))
            return JSONResponse(error, status_code=status, headers=self.headers(call))
        doc = answer.doc
        # never for a successful non-stream answer (service.gateway.upstream.pool checks)
        if doc is None:
            await self._finish(call, 502, Usage(0, 0, "upstream"))
            raise UpstreamError(f"upstream {answer.upstream.tier.name} sent no JSON object")
        if call.cascade is not None and call.cascade.strip_logprobs:
            for choice in doc.get("choices") or []:
                if isinstance(choice, dict):
                    choice.pop("logprobs", None)
        usage = await self._usage(call, doc.get("usage"), answer_text(doc))
        doc.setdefault("model", answer.upstream.tier.model)
        record = await self._finish(call, response.status_code, usage)
        if self.cache is not None and call.cache_key is not None and not answer.failovers:
            keys = self.cache.store(call.cache_key, doc, record.cost_usd, answer.upstream.tier.name)
            self.cache.remember(call.plan.decision_id, keys)  # bad feedback on it evicts it
        if self.shadow is not None:
            self.shadow.consider(call, record, answer_text(doc))
        doc["tierwise"] = self.info(call, record)
        return JSONResponse(doc, headers=self.headers(call))

    async def _replay(self, call: Call, hit: Hit) -> Response:
        """A cached answer, forwarded nowhere; recorded as a "cache" row (never a label)."""
        call.hit = hit
        if self.cache is not None:
            self.cache.remember(call.plan.decision_id, hit.keys)
        doc = replay(hit)
        record = await self._finish(call, 200, await self._usage(call, doc.get("usage"),
                                                                 answer_text(doc)))
        saved = record.levers.get("cache", 0.0)  # what this request would have cost upstream
        self.metrics.cache_saved.inc(saved)
        # the response says what the record says: source "cache", the hit's tier and its model
        doc["tierwise"] = {**self.info(call, record), "source": record.source, "tier": record.tier,
                           "model": record.model, "cache": hit.layer,
                           "similarity": hit.similarity, "saved_usd": saved}
        return JSONResponse(doc, headers={**self.headers(call), "x-tierwise-source": record.source,
                                          "x-tierwise-tier": record.tier,
                                          "x-tierwise-model": record.model,
                                          "x-tierwise-cache": hit.layer})

    async def _events(self, call: Call, answer: Forwarded) -> AsyncIterator[bytes]:
        tap, first, done = SseTap(), True, False
        held: bytes | None = None
        status, trailer = 200, b""
        try:
            async for chunk in body_chunks(answer):
                for event in map(valid_event, tap.feed(chunk)):
                    is_done, has_usage = tap.inspect(event)
                    done = done or is_done
                    if done or has_usage:
                        held = event if has_usage else held
                        continue
                    if first and data_of(event) is not None:
                        event, first = with_member(event, "tierwise", self.info(call)), False
                    yield event
            trailer = tap.rest()
        except httpx.HTTPError as exc:  # the upstream broke off: no failover once bytes went
            status = 502
            self.upstreams.broke(answer.upstream, exc)
            trailer = json_event(envelope("the upstream stream broke", 502, code="upstream_error"))
        except (asyncio.CancelledError, GeneratorExit):  # the client went away mid-stream
            if not call.recorded:  # (not the upstream's failure: its breaker is not told)
                call.recorded = True
                self._later(self._abandoned(call, tap))
            raise
        else:
            self.upstreams.ended(answer.upstream)
        finally:
            await answer.aclose()
        record = await self._finish(call, status, await self._usage(
            call, tap.usage, "".join(tap.text)))
        if self.shadow is not None:
            self.shadow.consider(call, record, "".join(tap.text))
        if held is not None:
            yield with_member(held, "tierwise", self.info(call, record))
        if trailer:
            yield trailer
        if done:
            yield b"data: [DONE]\n\n"

    async def _abandoned(self, call: Call, tap: SseTap) -> None:
        """Record a stream the client left (499) with the usage the upstream reported, else the
        tokens of the text relayed so far (the last event may not have reached the client)."""
        await self._finish(call, 499, await self._usage(call, tap.usage, "".join(tap.text)))

    async def _usage(self, call: Call, reported: Any, output_text: str) -> Usage:
        found = usage_of(reported)
        if found is not None:
            return found
        input_text = "\n".join(m.text for m in call.messages)
        n_in, n_out = await self._count_tokens([input_text, output_text])
        return Usage(n_in, n_out, "estimated")

    async def _count_tokens(self, texts: list[str]) -> tuple[int, int]:
        if sum(len(t) for t in texts) > INLINE_TOKENIZE_CHARS:
            ids = await asyncio.to_thread(word_piece_ids, self.tokenizer, texts)
        else:
            ids = word_piece_ids(self.tokenizer, texts)
        return len(ids[0]), len(ids[1])

    async def _finish(self, call: Call, status: int, usage: Usage) -> TrafficRecord:
        """Build, commit (before the caller answers), count and log the request's record."""
        call.recorded = True
        record = await self._record(call, status, usage)
        with self.tracing.span(WRITE, parent=call.span) as written:
            try:
                await self.store.record(record)
            except Exception as exc:  # availability first: the answer still goes out, the loss
                self.metrics.traffic_errors.inc()  # is counted
                written.record_exception(exc)
                logger.exception("traffic record %s was not committed", record.decision_id)
        self.metrics.observe(record)
        if self.quotas is not None:
            await self.quotas.charge(call.tenant, record.input_tokens + record.output_tokens,
                               record.cost_usd)
        logger.info(
            "completion %s arm=%s tier=%s status=%d failovers=%d latency_ms=%.1f",
            record.decision_id, record.arm, record.tier, record.status, record.failovers,
            record.latency_ms,
            extra={"decision_id": record.decision_id, "arm": record.arm, "tier": record.tier,
                   "model": record.model, "status": record.status, "source": record.source,
                   "input_tokens": record.input_tokens, "output_tokens": record.output_tokens,
                   "cost_usd": record.cost_usd, "prompt_sha256": record.prompt_sha256,
                   **({} if call.span is None else {"trace_id": trace_id(call.span)})},
        )
        if call.span is not None:
            finish(call.span, record_attributes(record), error=status >= 500)
        return record

    async def _record(self, call: Call, status: int, usage: Usage) -> TrafficRecord:
        features: list[float] = []
        if call.features is not None:
            try:
                features = await call.features
            except Exception:  # a record without features beats no record
                logger.exception("features of %s could not be computed", call.plan.decision_id)
        return build_record(call, status, usage, self.tiers, features,
                            self.config.traffic.store_prompts)

    def _later(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        """Wait for records still being written for abandoned streams."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
