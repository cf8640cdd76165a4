"""OpenTelemetry tracing of chat completions: ``open_tracing(config)`` and the spans' names.

Off unless ``tracing.endpoint`` is set (or the app is given a span exporter): then ``Tracing``
holds no tracer and every call here is a shared no-op context, so the request path pays a
function call and an ``if``. On: a span per chat request (``chat.completions``, a child of the
client's W3C ``traceparent`` when it sends one) with children ``route``, ``cache.lookup``,
``cascade.draft``, ``upstream.attempt`` (one per attempt, under the draft when it is one) and
``traffic.write``. Spans go to an OTLP/HTTP collector from a ``BatchSpanProcessor`` thread: an
export that fails (collector down, slow, refusing) is dropped and logged by the SDK; no request
waits for one or fails because of one. The provider is this app's own, never the process-global
one, so that two gateways in one process (tests) keep their spans apart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from service.gateway.config import TracingConfig

logger = logging.getLogger(__name__)

#: The instrumentation scope of every span the gateway makes.
SCOPE = "tierwise.gateway"
REQUEST, ROUTE, CACHE, CASCADE, ATTEMPT, WRITE = (
    "chat.completions", "route", "cache.lookup", "cascade.draft", "upstream.attempt",
    "traffic.write")

Attributes = Mapping[str, str | bool | int | float]
_OFF: AbstractContextManager[Span] = nullcontext(trace.INVALID_SPAN)  # reusable, stateless
_PROPAGATOR = TraceContextTextMapPropagator()


class Tracing:
    """The gateway's tracer, or nothing (``enabled`` False: every method is a no-op)."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer(SCOPE) if provider is not None else None
        self.enabled = self._tracer is not None

    def request(self, headers: Mapping[str, str]) -> Span | None:
        """A started, not current, request span (None when off); ``finish`` ends it."""
        if self._tracer is None:
            return None
        parent = _PROPAGATOR.extract(headers) if "traceparent" in headers else None
        return self._tracer.start_span(REQUEST, context=parent, kind=SpanKind.SERVER)

    def current(self, span: Span | None) -> AbstractContextManager[Any]:
        """Make ``span`` the parent of spans started inside (an exception marks it an error)."""
        if span is None:
            return _OFF
        return trace.use_span(span, end_on_exit=False)

    def span(self, name: str, attributes: Attributes | None = None,
             parent: Span | None = None) -> AbstractContextManager[Span]:
        """A child span of ``parent`` (default: the current span) for the ``with`` block; an
        exception leaving the block is recorded on it and marks it an error."""
        if self._tracer is None:
            return _OFF
        context = trace.set_span_in_context(parent) if parent is not None else None
        return self._tracer.start_as_current_span(name, context=context, attributes=attributes)

    async def aclose(self) -> None:
        """Export what is queued (at most the export deadline) and stop, off the event loop."""
        if self.provider is not None:
            await asyncio.to_thread(self.provider.shutdown)


def finish(span: Span | None, attributes: Attributes, error: bool) -> None:
    """Set a request span's last attributes and end it (``error``: an error status)."""
    if span is None:
        return
    span.set_attributes(attributes)
    if error:
        span.set_status(Status(StatusCode.ERROR))
    span.end()


@contextmanager
def ended_on_error(span: Span | None) -> Iterator[None]:
    """End ``span`` when the block raises (the request will not reach ``finish``)."""
    try:
        yield
    except BaseException as exc:
        if span is not None and span.is_recording():
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            span.end()
        raise


def trace_id(span: Span | None) -> str | None:
    """The span's trace id as 32 hex digits, as collectors and log queries show it."""
    if span is None:
        return None
    return trace.format_trace_id(span.get_span_context().trace_id)


def open_tracing(config: TracingConfig, exporter: SpanExporter | None = None) -> Tracing:
    """The app's tracing: off without ``config.endpoint`` and ``exporter``.

    ``exporter`` replaces the OTLP exporter and is fed synchronously (tests: an in-memory
    exporter sees each span as it ends); the OTLP one is fed by a batching thread.
    """
    if config.endpoint is None and exporter is None:
        return Tracing()
    provider = TracerProvider(
        resource=Resource.create({"service.name": config.service_name}),
        sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
        shutdown_on_exit=False,  # the lifespan shuts it down
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        otlp = OTLPSpanExporter(endpoint=config.endpoint, timeout=config.timeout_s)
        provider.add_span_processor(BatchSpanProcessor(
            otlp, export_timeout_millis=int(config.timeout_s * 1000)))
        logger.info("tracing on: OTLP/HTTP to %s, %.0f%% of requests", config.endpoint,
                    100 * config.sample_ratio)
    return Tracing(provider)
