"""Forwarding to the tiers' OpenAI-compatible upstreams: failover order and circuit breakers.

A call goes to the chosen tier first. On a 5xx, a 429, a timeout or a refused (or dropped)
connection it is retried on the next tier up, then the next ones up, then those below the chosen
tier, nearest first (``ladder_order``): answering with a better model costs more but keeps
quality, and a cheaper one is the last resort. Only the tiers the request allows are tried (its
``min_tier``, ``max_tier`` and ``allowed_tiers``: ``service.gateway.planning``); when they have all
failed the call fails, even if other tiers are up. Each upstream has a circuit breaker:
``failure_threshold`` consecutive failures open it for ``cooldown_s`` (it is skipped), then one
half-open probe request decides whether it closes again. For streams, failover happens only
before the first byte reaches the client: the first chunk is read from the upstream before the
gateway answers. A stream's outcome for its breaker is known at its end: one the upstream breaks
off later (``broke``: reset, cut, or stalled past the deadline) ends the client's stream with an
error event and is a failure; one that ends is a success (``ended``); one the client leaves is
neither (a half-open probe is answered as soon as the stream starts).

A tier's ``timeout_s`` is a deadline on each attempt: for a non-stream call, the whole answer
(headers and body) must arrive within it; for a stream, the first chunk must, and after that no
gap between chunks may exceed it (a stream may run longer in all: it is already the client's).
Past it the attempt is a ``timeout`` failure and fails over. Connecting has its own, shorter
limit (``failover.connect_timeout_s``).

A success status is not enough: a non-stream answer must be a JSON object shaped like a chat
completion (``choices``, when present, a list of objects, each one's ``message``, when present, an
object: ``completion_problem``), and a stream answer must be ``text/event-stream`` with a first
chunk, or the attempt is a failure (``invalid_body``, counted by the breaker and failed over) like
a 5xx: a proxy's HTML page with status 200 is no completion, nor is a "message" that is a
string. A usable answer whose JSON spells a lone UTF-16 surrogate (``"\\ud800"``) is used with
U+FFFD in its place (``service.gateway.json_text``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from opentelemetry.trace import Span, Status, StatusCode

from router_model.errors import UpstreamError
from router_model.tiers import Tier, ladder_order
from service.gateway.config import FailoverConfig, GatewayConfig
from service.gateway.json_text import may_spell_surrogate, replace_lone_surrogates
from service.gateway.tracing import ATTEMPT, Tracing

logger = logging.getLogger(__name__)


class CircuitBreaker:
    """Closed until ``threshold`` failures in a row, then open for ``cooldown_s``, then one probe.

    Not thread-safe: the gateway uses it from one event loop.
    """

    def __init__(
        self, threshold: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = threshold
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open`` (cool-down over, probe allowed or in flight)."""
        if self._failures < self._threshold:
            return "closed"
        if self._clock() - self._opened_at >= self._cooldown_s:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """Whether a request may go to this upstream now (claims the probe when half-open)."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def success(self) -> None:
        """A request succeeded: close the breaker."""
        self._failures = 0
        self._probing = False

    def started(self) -> None:
        """A stream started: that answers a half-open probe (close the breaker); otherwise the
        stream's end decides (``success`` or ``failure``), so streams cut mid-way add up."""
        if self._probing:
            self.success()

    def failure(self) -> None:
        """A request failed: count it; (re-)open the breaker at the threshold."""
        self._failures += 1
        self._probing = False
        if self._failures >= self._threshold:
            self._opened_at = self._clock()


@dataclass(frozen=True)
class Upstream:
    """One tier's upstream endpoint with its key and timeouts."""

    tier: Tier
    url: str
    api_key: str | None = field(repr=False)
    #: httpx's per-operation limits (connect, and each read); ``deadline_s`` bounds the attempt.
    timeout: httpx.Timeout
    deadline_s: float


@dataclass
class Forwarded:
    """An upstream's answer: for streams the response is still open and ``first`` already read."""

    upstream: Upstream
    response: httpx.Response
    failovers: int
    first: bytes = b""
    rest: AsyncIterator[bytes] | None = None
    #: The JSON object of a successful non-stream answer (None for streams and refusals).
    doc: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.response.status_code < 400

    async def aclose(self) -> None:
        await self.response.aclose()


def retryable_status(status: int) -> bool:
    """Whether an upstream status means "try another tier" (5xx and 429)."""
    return status >= 500 or status == 429


class UpstreamPool:
    """Sends chat completions to upstreams with failover across tiers and per-upstream breakers."""

    def __init__(
        self, upstreams: Sequence[Upstream], failover: FailoverConfig, client: httpx.AsyncClient
    ) -> None:
        self._upstreams = tuple(upstreams)
        self._index = {u.tier.name: i for i, u in enumerate(self._upstreams)}
        self._failover = failover
        self._client = client
        self.breakers = {
            u.tier.name: CircuitBreaker(failover.failure_threshold, failover.cooldown_s)
            for u in self._upstreams
        }
        self.on_failure: Callable[[str, str], None] = lambda tier, reason: None
        #: One ``upstream.attempt`` span per attempt when tracing is on (the app sets it).
        self.tracing = Tracing()

    def order(self, tier: str, allowed: Collection[str] | None = None) -> list[Upstream]:
        """The failover order from ``tier`` (``ladder_order``), keeping only ``allowed`` tiers."""
        names = ladder_order([u.tier.name for u in self._upstreams], tier)
        if not self._failover.enabled:
            names = names[:1]
        return [self._upstreams[self._index[n]] for n in names
                if allowed is None or n in allowed]

    async def send(
        self, body: Mapping[str, Any], tier: str, *, stream: bool, allowed: Collection[str]
    ) -> Forwarded:
        """Forward ``body`` (its ``model`` set per tier) starting at ``tier``; fail over among the
        ``allowed`` tiers as needed.

        A non-retryable error status (400, 401, 404, …) is returned as the answer: another tier
        would refuse it too. Its body never reaches the client as it is
        (``service.gateway.upstream.refusals``).

        Raises:
            UpstreamError: when every allowed upstream in the order failed or had its breaker
                open.
        """
        failures: list[str] = []
        for upstream in self.order(tier, allowed):
            breaker = self.breakers[upstream.tier.name]
            if not breaker.allow():
                failures.append(f"{upstream.tier.name}: circuit open")
                continue
            with self.tracing.span(ATTEMPT, {"tierwise.tier": upstream.tier.name,
                                             "tierwise.attempt": len(failures) + 1}) as span:
                reason, answer = await self._attempt(upstream, body, stream, len(failures))
                if span.is_recording():
                    _outcome(span, reason, answer)
            if answer is not None:
                if stream and answer.ok:
                    breaker.started()  # the stream's end tells (``ended`` or ``broke``)
                else:
                    breaker.success()
                return answer
            self._failed(upstream, reason)
            failures.append(f"{upstream.tier.name}: {reason}")
        if len(allowed) < len(self._upstreams):
            only = [u.tier.name for u in self._upstreams if u.tier.name in allowed]
            failures.append(f"the request allows no other tier than {only}")
        raise UpstreamError("every upstream failed: " + "; ".join(failures))

    async def send_once(self, body: Mapping[str, Any], tier: str) -> Forwarded | str:
        """One non-stream attempt on ``tier`` alone (shadow calls): the answer, or why there is
        none. Never fails over and leaves the breakers alone: a background call must not change
        how clients' requests are routed; a tier whose breaker is not closed is not called.
        """
        upstream = self._upstreams[self._index[tier]]
        if self.breakers[tier].state != "closed":
            return "circuit open"
        reason, answer = await self._attempt(upstream, body, False, 0)
        return answer if answer is not None else reason

    def ended(self, upstream: Upstream) -> None:
        """A stream ``send`` returned ended as the upstream meant it to: a success."""
        self.breakers[upstream.tier.name].success()

    def broke(self, upstream: Upstream, exc: Exception) -> None:
        """A stream ``send`` returned broke off upstream (reset, cut, or a gap past the deadline)
        after its first chunk went to the client: too late to fail over, but a failure of that
        upstream all the same (``stream_broken``). A stream the client left is neither."""
        self._failed(upstream, f"stream_broken ({type(exc).__name__})")

    def _failed(self, upstream: Upstream, reason: str) -> None:
        self.breakers[upstream.tier.name].failure()
        self.on_failure(upstream.tier.name, reason.split(" ")[0])
        logger.warning("upstream %s failed (%s)", upstream.tier.name, reason)

    async def _attempt(
        self, upstream: Upstream, body: Mapping[str, Any], stream: bool, failovers: int
    ) -> tuple[str, Forwarded | None]:
        payload = json.dumps({**body, "model": upstream.tier.model}).encode()
        headers = {"content-type": "application/json"}
        if upstream.api_key:
            headers["authorization"] = f"Bearer {upstream.api_key}"
        request = self._client.build_request(
            "POST", upstream.url, content=payload, headers=headers, timeout=upstream.timeout
        )
        response: httpx.Response | None = None
        try:
            async with asyncio.timeout(upstream.deadline_s):  # the answer, or a stream's start
                response = await self._client.send(request, stream=True)
                if retryable_status(response.status_code):
                    await response.aclose()
                    return f"status {response.status_code}", None
                answer = Forwarded(upstream, response, failovers)
                problem = await _read(answer, stream)
            if problem is None:
                return "ok", answer
            reason = f"invalid_body ({problem})"
        except (httpx.TimeoutException, TimeoutError):
            reason = "timeout"
        except httpx.ConnectError:
            reason = "connect_error (refused or unreachable)"
        except httpx.TransportError as exc:
            reason = f"transport_error ({type(exc).__name__})"
        if response is not None:
            await response.aclose()
        return reason, None


def _outcome(span: Span, reason: str, answer: Forwarded | None) -> None:
    """An attempt span's outcome: the upstream's status, or why the attempt failed (an error)."""
    span.set_attribute("tierwise.outcome", reason.split(" ")[0])
    if answer is not None:
        span.set_attribute("http.response.status_code", answer.response.status_code)
    else:
        span.set_status(Status(StatusCode.ERROR, reason))


async def _read(answer: Forwarded, stream: bool) -> str | None:
    """Read a non-stream answer whole (a stream's first chunk); what makes it unusable, if any.

    A refusal (a non-retryable 4xx) is usable: it is passed on to the client as it is.
    """
    response = answer.response
    if not answer.ok or not stream:
        await response.aread()
        if not answer.ok:
            return None
        try:
            doc = json.loads(response.content)
        except (ValueError, RecursionError):
            doc = None
        if not isinstance(doc, dict):
            return "not a JSON object"
        problem = completion_problem(doc)
        if problem is not None:
            return problem
        if may_spell_surrogate(response.content):
            replace_lone_surrogates(doc)  # valid JSON, but no text: relayed, cached, counted
        answer.doc = doc
        return None
    kind = response.headers.get("content-type", "").lower()
    if not kind.startswith("text/event-stream"):
        return f"content-type {kind[:40]!r}, not an event stream"
    answer.rest = response.aiter_raw()
    answer.first = await anext(answer.rest, b"")
    return None if answer.first else "an empty event stream"


def completion_problem(doc: dict[str, Any]) -> str | None:
    """What makes a JSON object no chat completion to relay, count and cache (None: nothing).

    Only the members the gateway reads are checked (``choices`` and each choice's ``message``);
    the rest is the client's to read.
    """
    choices = doc.get("choices", [])
    if not isinstance(choices, list):
        return "choices is not a list"
    for choice in choices:
        if not isinstance(choice, dict):
            return "a choice is not an object"
        if "message" in choice and not isinstance(choice["message"], dict):
            return "a choice's message is not an object"
    return None


def build_upstreams(config: GatewayConfig, keys: Mapping[str, str | None]) -> list[Upstream]:
    """One ``Upstream`` per configured tier; ``keys`` maps ``api_key_env`` names to their values."""
    out = []
    for t in config.tiers:
        timeout = httpx.Timeout(
            t.timeout_s, connect=min(config.failover.connect_timeout_s, t.timeout_s)
        )
        url = t.base_url.rstrip("/") + "/chat/completions"
        out.append(Upstream(t.tier(), url, keys.get(t.api_key_env), timeout, t.timeout_s))
    return out


async def body_chunks(answer: Forwarded) -> AsyncIterator[bytes]:
    """The bytes of a forwarded answer: its first chunk, then the rest of the stream."""
    if answer.first:
        yield answer.first
    if answer.rest is not None:
        async for chunk in answer.rest:
            yield chunk
