"""``RouteService``: the one core behind every transport (limits, batching, timing, decision log).

Transports convert their request into ``RouteInput`` values, await ``route``/``route_batch`` and
convert the ``RouteResult`` back; everything else about a decision happens here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from router_model.artifact import MANIFEST_FILE, Manifest
from router_model.chat import ChatMessage, scored_text
from router_model.errors import (
    ArtifactMismatch,
    InvalidPrompt,
    ModelNotReady,
    PromptTooLarge,
    RouterError,
)
from router_model.policy import Policy, policy_fields
from router_model.router import ComplexityRouter, RouteDecision, check_prompt, prompt_digest
from router_model.settings import ServiceSettings
from router_model.tiers import Tier
from service.router.batcher import BatchConfig, MicroBatcher
from service.router.bundles import allowed_bundle, file_stamp, load_router
from service.router.metrics import ServiceMetrics
from service.shared.errors import DeadlineExceeded, error_code

logger = logging.getLogger(__name__)

#: Hand-feature bundles score prompts up to this many characters (in one call) on the event loop:
#: ~0.25 us per character, so at most ~0.3 ms of loop time against a 0.1-0.5 ms thread hop saved.
INLINE_MAX_CHARS = 1024

ReadinessListener = Callable[[bool], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RouteInput:
    """One request as the core sees it: exactly one of ``prompt`` and ``messages``, a policy."""

    prompt: str | None = None
    messages: tuple[ChatMessage, ...] = ()
    policy: Policy | None = None


@dataclass(frozen=True, slots=True)
class RouteResult:
    """A decision with its id and the time it took in the core."""

    decision: RouteDecision
    decision_id: str
    latency_ms: float


@dataclass(frozen=True, slots=True)
class _Job:
    text: str
    policy: Policy | None


@dataclass(frozen=True)
class _Served:
    """The bundle being served, with its validated tier ladder (swapped as one value)."""

    router: ComplexityRouter
    tiers: tuple[Tier, ...]


class RouteService:
    """Routes requests with the served bundle; owns limits, batching, metrics and reloads."""

    def __init__(
        self,
        settings: ServiceSettings,
        router: ComplexityRouter | None = None,
        *,
        encoder_threads: int = 0,
    ) -> None:
        self._settings = settings
        self._encoder_threads = encoder_threads
        self._served = _Served(router, router.tiers) if router is not None else None
        self._draining = False
        self._listeners: list[ReadinessListener] = []
        self.metrics = ServiceMetrics()
        self._batcher: MicroBatcher[_Job, RouteDecision] = MicroBatcher(
            self._score,
            BatchConfig(
                settings.batch_max_size, settings.batch_max_wait_ms / 1000, settings.max_queue
            ),
            inline=self._cheap,
            on_batch=self.metrics.observe_batch,
        )
        self.metrics.track_queue(lambda: self._batcher.depth)
        if router is not None:
            self.metrics.set_model(router.model_version, router.manifest.feature_version)

    @classmethod
    def from_path(
        cls, settings: ServiceSettings, path: Path, *, encoder_threads: int = 0
    ) -> RouteService:
        """A service serving the bundle at ``path``.

        Raises:
            ArtifactMismatch: when the bundle cannot be served.
        """
        router = load_router(path, encoder_threads=encoder_threads)
        return cls(settings, router, encoder_threads=encoder_threads)

    @property
    def ready(self) -> bool:
        """Whether a bundle is loaded and the service is not shutting down."""
        return self._served is not None and not self._draining

    @property
    def draining(self) -> bool:
        """Whether shutdown has begun (readiness stays false from then on)."""
        return self._draining

    @property
    def manifest(self) -> Manifest:
        """The served bundle's manifest.

        Raises:
            ModelNotReady: when no bundle is loaded.
        """
        return self._require().router.manifest

    @property
    def tiers(self) -> tuple[Tier, ...]:
        """The served tier ladder, cheapest first.

        Raises:
            ModelNotReady: when no bundle is loaded.
        """
        return self._require().tiers

    async def route(
        self, request: RouteInput, *, transport: str, timeout_s: float | None = None
    ) -> RouteResult:
        """Decide the tier for one request.

        Raises:
            InvalidPrompt: empty or both/neither prompt and messages, bad policy.
            PromptTooLarge: the scored text is over ``max_prompt_chars``.
            Overloaded: the batch queue is full.
            DeadlineExceeded: no decision within the deadline.
            ModelNotReady: no bundle is loaded.
        """
        start = time.perf_counter()
        try:
            job = self._prepare(request, self._require())
            # hand features: scored on the event loop, nothing to wait for or to time out
            decision = self._batcher.try_inline(job)
            if decision is None:
                decision = (await self._await_all(self._batcher.submit((job,)), timeout_s))[0]
            elif isinstance(decision, Exception):
                raise decision
        except Exception as exc:
            self.metrics.errors.labels(transport, error_code(exc)).inc()
            raise
        result = RouteResult(decision, _decision_id(), (time.perf_counter() - start) * 1000.0)
        asyncio.get_running_loop().call_soon(self._record, [job], [result], transport)
        return result

    async def route_batch(
        self, requests: Sequence[RouteInput], *, transport: str, timeout_s: float | None = None
    ) -> list[RouteResult]:
        """Decide tiers for several requests; all succeed or the first error is raised.

        Raises:
            PromptTooLarge: more than ``max_batch_items`` requests, or one is too large.
            InvalidPrompt, Overloaded, DeadlineExceeded, ModelNotReady: as ``route`` does.
        """
        return await self._route_many(requests, transport, timeout_s)

    async def reload(self, path: Path) -> str | None:
        """Load the bundle at ``path`` off the event loop and swap it in; returns the old version.

        A refused bundle leaves the served one untouched. Concurrent reloads: the last one wins.

        Raises:
            ArtifactMismatch: when the new bundle cannot be served.
        """
        old = self._served
        try:
            router = await asyncio.to_thread(
                load_router, path, encoder_threads=self._encoder_threads,
                previous=old.router if old is not None else None,
            )
        except ArtifactMismatch:
            self.metrics.reloads.labels("refused").inc()
            raise
        self._served = _Served(router, router.tiers)
        self.metrics.reloads.labels("ok").inc()
        self.metrics.set_model(router.model_version, router.manifest.feature_version)
        previous = old.router.model_version if old is not None else None
        logger.info("serving %s (was %s) from %s", router.model_version, previous, path)
        if old is None and not self._draining:
            await self._notify(True)
        return previous

    async def admin_reload(self, requested: str) -> str | None:
        """``reload`` of a path an admin sent, once found under the bundle roots. Raises:
            BundleNotAllowed (``service.router.bundles.allowed_bundle``), ArtifactMismatch.
        """
        return await self.reload(allowed_bundle(requested, self._settings.bundle_roots))

    async def watch(self, path: Path, interval_s: float) -> None:
        """Reload ``path`` whenever its manifest.json changes (runs until cancelled).

        A refused bundle is logged and the served one kept; the next change is tried again.
        """
        manifest = path / MANIFEST_FILE
        seen = file_stamp(manifest)
        while True:
            await asyncio.sleep(interval_s)
            stamp = file_stamp(manifest)
            if stamp is None or stamp == seen:
                continue  # unchanged, or mid-replacement (write_bundle renames directories)
            seen = stamp
            try:
                await self.reload(path)
            except ArtifactMismatch as exc:
                logger.warning("changed bundle at %s refused, still serving the old one: %s",
                               path, exc)

    def add_readiness_listener(self, listener: ReadinessListener) -> None:
        """Call ``await listener(ready)`` whenever readiness changes (health checking)."""
        self._listeners.append(listener)

    async def drain(self) -> None:
        """Report not-ready (health NOT_SERVING) ahead of shutdown; requests are still served."""
        self._draining = True
        await self._notify(False)

    async def _notify(self, ready: bool) -> None:
        for listener in self._listeners:
            await listener(ready)

    async def aclose(self) -> None:
        """Stop batching; queued requests fail with ``ModelNotReady``."""
        await self._batcher.aclose()

    async def _route_many(
        self, requests: Sequence[RouteInput], transport: str, timeout_s: float | None
    ) -> list[RouteResult]:
        start = time.perf_counter()
        try:
            jobs = self._prepare_all(requests)
            # scored inline (hand features) when cheap: settled, so no timer is armed
            decisions = await self._await_all(self._batcher.submit(jobs), timeout_s)
        except Exception as exc:
            self.metrics.errors.labels(transport, error_code(exc)).inc()
            raise
        latency_ms = (time.perf_counter() - start) * 1000.0
        results = [RouteResult(d, _decision_id(), latency_ms) for d in decisions]
        asyncio.get_running_loop().call_soon(self._record, jobs, results, transport)
        return results

    def _prepare_all(self, requests: Sequence[RouteInput]) -> list[_Job]:
        if len(requests) > self._settings.max_batch_items:
            raise PromptTooLarge(
                f"batch has {len(requests)} requests, limit {self._settings.max_batch_items}"
            )
        if not requests:
            raise InvalidPrompt("a batch needs at least one request")
        served = self._require()
        jobs = []
        for i, request in enumerate(requests):
            try:
                jobs.append(self._prepare(request, served))
            except InvalidPrompt as exc:
                raise type(exc)(f"requests[{i}]: {exc}") from exc
        return jobs

    def _prepare(self, request: RouteInput, served: _Served) -> _Job:
        if request.prompt is not None and request.messages:
            raise InvalidPrompt("give either prompt or messages, not both")
        if request.prompt is None and not request.messages:
            raise InvalidPrompt("give a prompt or messages")
        text = request.prompt if request.prompt is not None else scored_text(request.messages)
        if len(text) > self._settings.max_prompt_chars:
            raise PromptTooLarge(
                f"prompt has {len(text)} characters, limit {self._settings.max_prompt_chars}"
            )
        check_prompt(text)
        # checked before batching, so that one bad policy cannot fail the other requests it is
        # batched with
        served.router.resolve(request.policy)
        return _Job(text, request.policy)

    async def _await_all(
        self, futures: list[asyncio.Future[RouteDecision]], timeout_s: float | None
    ) -> list[RouteDecision]:
        if all(f.done() and not f.cancelled() for f in futures):
            return _results(futures)
        timeout = self._settings.request_timeout_s
        if timeout_s is not None:
            timeout = min(timeout, timeout_s)
        try:
            async with asyncio.timeout(timeout):
                return [await f for f in futures]
        except TimeoutError as exc:
            raise DeadlineExceeded(f"no decision within {timeout * 1000:.0f} ms") from exc
        finally:
            for f in futures:
                if not f.done():
                    f.cancel()
                elif not f.cancelled():
                    f.exception()  # mark retrieved: the first error is the one raised

    def _score(self, jobs: list[_Job]) -> list[RouteDecision | Exception]:
        """Score a batch on one snapshot of the served bundle (runs on the scoring thread)."""
        router = self._require().router
        if len(jobs) == 1:
            return [self._score_one(router, jobs[0])]
        policies = [j.policy for j in jobs]
        try:
            return list(router.route_batch([j.text for j in jobs], policies))
        except RouterError:
            # a reload between validation and scoring can make one policy invalid (its tier
            # gone): score one by one so that only that request fails
            return [self._score_one(router, j) for j in jobs]

    @staticmethod
    def _score_one(router: ComplexityRouter, job: _Job) -> RouteDecision | Exception:
        try:
            return router.route(job.text, policy=job.policy)
        except RouterError as exc:
            return exc

    def _cheap(self, jobs: Sequence[_Job]) -> bool:
        served = self._served
        if served is None or served.router.manifest.feature_set != "hand":
            return False
        if len(jobs) == 1:
            return len(jobs[0].text) <= INLINE_MAX_CHARS
        return sum(len(j.text) for j in jobs) <= INLINE_MAX_CHARS

    def _require(self) -> _Served:
        served = self._served
        if served is None:
            raise ModelNotReady("no model bundle is loaded")
        return served

    def _record(self, jobs: Sequence[_Job], results: Sequence[RouteResult], transport: str) -> None:
        """Log and count decisions; called on the loop's next turn, once the caller has them.

        Both transports hand an answer to the socket before their handler next yields to the
        loop, so this record (a log record and two metric updates: 70 us, twice that with the
        caches cold after an encoder batch, measured on 2 cores) is not part of the round trip.
        Nothing is dropped: the callback runs before the loop handles its next I/O event.
        """
        for job, result in zip(jobs, results, strict=True):
            d = result.decision
            self.metrics.observe_decision(transport, d.tier, result.latency_ms / 1000.0)
            if not logger.isEnabledFor(logging.INFO):
                continue
            logger.info(
                "decision %s transport=%s tier=%s latency_ms=%.3f",
                result.decision_id, transport, d.tier, result.latency_ms,
                extra={
                    "request_id": result.decision_id,
                    "transport": transport,
                    "tier": d.tier,
                    "model": d.model,
                    "probabilities": d.probabilities,
                    "policy": policy_fields(d.policy),
                    "model_version": d.model_version,
                    "feature_version": d.feature_version,
                    "latency_ms": round(result.latency_ms, 3),
                    "prompt_chars": len(job.text),
                    "prompt_sha256": prompt_digest(job.text),
                },
            )


def _results(futures: list[asyncio.Future[RouteDecision]]) -> list[RouteDecision]:
    """The results of settled futures; the first error is raised, every error is retrieved."""
    errors = [exc for f in futures if (exc := f.exception()) is not None]
    if errors:
        raise errors[0]
    return [f.result() for f in futures]


def _decision_id() -> str:
    """A random (version 4) UUID as 32 hex digits, like ``uuid.uuid4().hex`` at half the cost."""
    b = bytearray(os.urandom(16))
    b[6] = b[6] & 0x0F | 0x40  # version 4
    b[8] = b[8] & 0x3F | 0x80  # RFC 4122 variant
    return b.hex()
