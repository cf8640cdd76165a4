"""OpenTelemetry traces of a real gateway on loopback: the span tree (in-memory exporter), spans
arriving at a real OTLP/HTTP receiver, and a dead collector that fails no request."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from gateway_support import (  # noqa: F401  (fixtures)
    HARD,
    Gateway,
    Upstreams,
    config_doc,
    start_gateway,
    upstreams_fixture,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

#: quality 1.0 routes to the top tier, so the cascade drafts on the weak one.
TOP = {"quality": 1.0, "cascade": True}
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture(name="ups")
def ups_fixture(upstreams: Upstreams) -> Iterator[Upstreams]:
    upstreams.reset()
    yield upstreams
    upstreams.reset()


def ask(gw: Gateway, headers: dict[str, str] | None = None, stream: bool = False
        ) -> dict[str, Any]:
    body = {"model": "tierwise-auto", "messages": [{"role": "user", "content": HARD}],
            "tierwise": {"quality": 1.0} if stream else TOP, "stream": stream}
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json=body, headers=headers or {})
    assert response.status_code == 200, response.text
    if stream:
        return {"decision_id": response.headers["x-tierwise-decision-id"]}
    doc: dict[str, Any] = response.json()["tierwise"]
    return doc


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def test_a_request_is_one_span_tree_and_its_log_line_has_the_trace_id(
    ups: Upstreams, fast_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = InMemorySpanExporter()
    doc = config_doc(ups, tmp_path, router={"bundle": str(fast_bundle)},
                     cascade={"min_prior": 0.0}, cache={"enabled": True})
    gw, server = start_gateway(doc, span_exporter=exporter)
    caplog.set_level(logging.INFO, logger="service.gateway.completions")
    ups.weak.content = ""  # an empty draft: escalated to the routed tier
    try:
        info = ask(gw, {"traceparent": TRACEPARENT})
    finally:
        server.stop()
    spans = list(exporter.get_finished_spans())
    (root,) = [s for s in spans if s.name == "chat.completions"]
    assert root.context is not None and root.parent is not None
    assert f"{root.context.trace_id:032x}" == TRACEPARENT.split("-")[1]  # the client's trace
    assert {s.context.trace_id for s in spans if s.context} == {root.context.trace_id}
    attrs = dict(root.attributes or {})
    assert attrs["tierwise.decision_id"] == info["decision_id"]
    assert (attrs["tierwise.tier"], attrs["http.response.status_code"]) == ("strong", 200)
    assert root.status.status_code != StatusCode.ERROR
    by_name = {s.name: s for s in children(spans, root)}
    assert set(by_name) == {"route", "cache.lookup", "cascade.draft", "upstream.attempt",
                            "traffic.write"}
    route = dict(by_name["route"].attributes or {})
    assert (route["tierwise.tier"], route["tierwise.source"]) == ("strong", "router")
    assert route["tierwise.decision_id"] == info["decision_id"]
    assert (by_name["cache.lookup"].attributes or {})["tierwise.cache"] == "miss"
    draft = by_name["cascade.draft"]
    assert dict(draft.attributes or {})["tierwise.cascade.reason"] == "empty"
    (drafted,) = children(spans, draft)  # the draft's own attempt, on the weak tier
    assert (drafted.name, (drafted.attributes or {})["tierwise.tier"]) == (
        "upstream.attempt", "weak")
    assert (by_name["upstream.attempt"].attributes or {})["tierwise.tier"] == "strong"
    logged = [r for r in caplog.records if getattr(r, "decision_id", None) == info["decision_id"]]
    assert [getattr(r, "trace_id", None) for r in logged] == [f"{root.context.trace_id:032x}"]


def test_a_stream_span_ends_with_its_record_and_failed_attempts_are_errors(
    ups: Upstreams, fast_bundle: Path, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    doc = config_doc(ups, tmp_path, router={"bundle": str(fast_bundle)})
    gw, server = start_gateway(doc, span_exporter=exporter)
    ups.strong.mode = "fail"  # 500: fails over to the weak tier
    try:
        info = ask(gw, stream=True)
        time.sleep(0.2)  # the record is committed as the stream ends
    finally:
        server.stop()
    spans = list(exporter.get_finished_spans())
    (root,) = [s for s in spans if s.name == "chat.completions"]
    assert dict(root.attributes or {})["tierwise.decision_id"] == info["decision_id"]
    assert dict(root.attributes or {})["tierwise.tier"] == "weak"
    attempts = [s for s in children(spans, root) if s.name == "upstream.attempt"]
    assert [(dict(s.attributes or {})["tierwise.tier"], s.status.status_code) for s in attempts
            ] == [("strong", StatusCode.ERROR), ("weak", StatusCode.UNSET)]
    assert "traffic.write" in {s.name for s in children(spans, root)}


class Receiver(BaseHTTPRequestHandler):
    """A tiny OTLP/HTTP trace receiver: each POST /v1/traces body decoded into ``received``."""

    received: list[ExportTraceServiceRequest] = []

    def do_POST(self) -> None:  # noqa: N802  (http.server's name)
        body = self.rfile.read(int(self.headers["content-length"]))
        if self.path != "/v1/traces":
            self.send_response(404)
        else:
            self.received.append(ExportTraceServiceRequest.FromString(body))
            self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # quiet


def test_spans_arrive_at_an_otlp_receiver(ups: Upstreams, fast_bundle: Path,
                                          tmp_path: Path) -> None:
    Receiver.received = []
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}/v1/traces"
    doc = config_doc(ups, tmp_path, router={"bundle": str(fast_bundle)},
                     tracing={"endpoint": endpoint, "service_name": "gw-test"})
    gw, server = start_gateway(doc)
    try:
        info = ask(gw)
    finally:
        server.stop()  # the lifespan's end exports what is queued
        receiver.shutdown()
        thread.join()
        receiver.server_close()
    spans = [(dict((a.key, a.value) for a in rs.resource.attributes), span)
             for req in Receiver.received for rs in req.resource_spans
             for ss in rs.scope_spans for span in ss.spans]
    assert {res["service.name"].string_value for res, _ in spans} == {"gw-test"}
    names = {s.name for _, s in spans}
    assert {"chat.completions", "route", "upstream.attempt", "traffic.write"} <= names
    (root,) = [s for _, s in spans if s.name == "chat.completions"]
    attrs = {a.key: a.value for a in root.attributes}
    assert attrs["tierwise.decision_id"].string_value == info["decision_id"]


def test_a_dead_collector_fails_no_request(ups: Upstreams, fast_bundle: Path,
                                           tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    doc = config_doc(ups, tmp_path, router={"bundle": str(fast_bundle)},
                     tracing={"endpoint": f"http://127.0.0.1:{port}/v1/traces",
                              "timeout_s": 0.5})
    gw, server = start_gateway(doc)
    try:
        answers = [ask(gw)["decision_id"] for _ in range(3)]
    finally:
        started = time.perf_counter()
        server.stop()  # the export fails at shutdown: bounded by timeout_s, then dropped
        stop_s = time.perf_counter() - started
    assert len(set(answers)) == 3
    assert stop_s < 5.0
