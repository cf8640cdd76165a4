"""A fake OpenAI upstream with the Batch API (files, batches, file content), and its fixtures.

``FakeBatchUpstream`` is ``FakeUpstream`` plus OpenAI's batch endpoints on the same real server:
``POST /v1/files`` (multipart, ``purpose=batch``), ``POST /v1/batches``, ``GET /v1/batches/{id}``
(``in_progress`` for ``polls_to_finish - 1`` polls, then final), ``POST /v1/batches/{id}/cancel``
and ``GET /v1/files/{id}/content``. ``batch_mode``: ``ok``, ``fail`` (the batch ends ``failed``),
``upload_fail`` (500 on upload); ``fail_ids`` get an error line instead of an answer;
``upload_delay_s`` and ``create_delay_s`` slow the answer to an upload (the file is stored first, a
large file on a slow link) and to a batch creation (the batch exists, and is paid, first).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import pytest
from fake_upstream import FakeUpstream, ServerThread, start_server
from gateway_support import Gateway, Upstreams, config_doc, start_gateway
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

CHAT = "/v1/chat/completions"


@dataclass
class FakeBatchUpstream(FakeUpstream):
    """An OpenAI-compatible upstream that also runs batches."""

    batch_mode: str = "ok"
    polls_to_finish: int = 2
    fail_ids: set[str] = field(default_factory=set)
    files: dict[str, bytes] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    polls: dict[str, int] = field(default_factory=dict)
    #: Every ``custom_id`` of every batch created, in order (a repeat is a double submission).
    submitted: list[str] = field(default_factory=list)
    lines: list[dict[str, Any]] = field(default_factory=list)
    #: The ``authorization`` header of every upload and batch creation.
    batch_auth: list[str] = field(default_factory=list)
    upload_delay_s: float = 0.0
    create_delay_s: float = 0.0
    #: The ids of the batches cancelled, in order.
    cancelled: list[str] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route(CHAT, self.chat, methods=["POST"]),
            Route("/v1/files", self.upload, methods=["POST"]),
            Route("/v1/files/{file_id}/content", self.file_content, methods=["GET"]),
            Route("/v1/batches", self.create_batch, methods=["POST"]),
            Route("/v1/batches/{batch_id}", self.retrieve, methods=["GET"]),
            Route("/v1/batches/{batch_id}/cancel", self.cancel, methods=["POST"]),
        ])

    def reset_batches(self) -> None:
        self.batch_mode, self.polls_to_finish = "ok", 2
        self.upload_delay_s = self.create_delay_s = 0.0
        for store in (self.fail_ids, self.files, self.batches, self.polls):
            store.clear()
        for log in (self.submitted, self.lines, self.batch_auth, self.cancelled):
            log.clear()

    async def upload(self, request: Request) -> Response:
        self.batch_auth.append(request.headers.get("authorization", ""))
        if self.batch_mode == "upload_fail":
            return _error("upload storage is down", 500)
        head = f"content-type: {request.headers['content-type']}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + await request.body())
        if not message.is_multipart():
            return _error("expected multipart/form-data", 400)
        parts = {p.get_param("name", header="content-disposition"): p.get_payload(decode=True)
                 for p in message.iter_parts()}
        if parts.get("purpose") != b"batch" or not isinstance(parts.get("file"), bytes):
            return _error("need purpose=batch and a file", 400)
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = parts["file"]
        await asyncio.sleep(self.upload_delay_s)
        return JSONResponse({"id": file_id, "object": "file", "purpose": "batch",
                             "bytes": len(parts["file"]), "created_at": int(time.time())})

    async def create_batch(self, request: Request) -> Response:
        self.batch_auth.append(request.headers.get("authorization", ""))
        doc = await request.json()
        data = self.files.get(doc.get("input_file_id", ""))
        if data is None or doc.get("endpoint") != CHAT or doc.get("completion_window") != "24h":
            return _error("bad batch request", 400)
        lines = [json.loads(x) for x in data.decode().splitlines() if x.strip()]
        if any(x.get("method") != "POST" or x.get("url") != CHAT for x in lines):
            return _error("every line must be POST /v1/chat/completions", 400)
        batch_id = f"batch_{len(self.batches) + 1}"
        self.submitted += [x["custom_id"] for x in lines]
        self.lines += lines
        self.batches[batch_id] = {"id": batch_id, "object": "batch", "endpoint": CHAT,
                                  "input_file_id": doc["input_file_id"], "status": "validating",
                                  "output_file_id": None, "error_file_id": None,
                                  "_lines": lines}
        await asyncio.sleep(self.create_delay_s)
        return JSONResponse(_public(self.batches[batch_id]))

    async def cancel(self, request: Request) -> Response:
        batch = self.batches.get(request.path_params["batch_id"])
        if batch is None:
            return _error("no such batch", 404)
        if batch["status"] not in ("validating", "in_progress"):
            return _error(f"a {batch['status']} batch cannot be cancelled", 400)
        batch["status"] = "cancelled"  # OpenAI says "cancelling" first, for up to 10 minutes
        self.cancelled.append(batch["id"])
        return JSONResponse(_public(batch))

    async def retrieve(self, request: Request) -> Response:
        batch = self.batches.get(request.path_params["batch_id"])
        if batch is None:
            return _error("no such batch", 404)
        self.polls[batch["id"]] = self.polls.get(batch["id"], 0) + 1
        if batch["status"] in ("validating", "in_progress"):
            batch["status"] = "in_progress"
            if self.polls[batch["id"]] >= self.polls_to_finish:
                self._finish(batch)
        return JSONResponse(_public(batch))

    def _finish(self, batch: dict[str, Any]) -> None:
        if self.batch_mode == "fail":
            batch["status"] = "failed"
            batch["errors"] = {"object": "list", "data": [
                {"code": "invalid_model", "message": "the model is not available for batch"}]}
            return
        out, err = [], []
        for i, line in enumerate(batch["_lines"]):
            cid = line["custom_id"]
            if cid in self.fail_ids:
                err.append({"id": f"r{i}", "custom_id": cid, "response": {
                    "status_code": 400, "request_id": f"q{i}", "body": {"error": {
                        "message": "content policy", "type": "invalid_request_error"}}},
                    "error": None})
                continue
            self.requests.append(line["body"])
            out.append({"id": f"r{i}", "custom_id": cid, "error": None, "response": {
                "status_code": 200, "request_id": f"q{i}", "body": self.completion(line["body"])}})
        batch["status"] = "completed"
        for key, rows in (("output_file_id", out), ("error_file_id", err)):
            if rows:
                file_id = f"file-{len(self.files) + 1}"
                self.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                batch[key] = file_id

    async def file_content(self, request: Request) -> Response:
        data = self.files.get(request.path_params["file_id"])
        if data is None:
            return _error("no such file", 404)
        return PlainTextResponse(data.decode(), media_type="application/jsonl")


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if not k.startswith("_")}


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error",
                                   "param": None, "code": None}}, status)


@pytest.fixture(name="batch_upstreams", scope="module")
def batch_upstreams_fixture() -> Iterator[Upstreams]:
    """Weak and strong fake upstreams that both speak the Batch API."""
    weak, strong = FakeBatchUpstream("weak"), FakeBatchUpstream("strong")
    servers: list[ServerThread] = [start_server(weak.app()), start_server(strong.app())]
    yield Upstreams(weak, strong, servers[0].url + "/v1", servers[1].url + "/v1")
    for s in servers:
        s.stop()


def batch_doc(ups: Upstreams, tmp: Path, batch: dict[str, Any], **overrides: Any
              ) -> dict[str, Any]:
    """The test config with ``batch:`` on; only the strong tier has a batch price (half)."""
    doc = config_doc(ups, tmp, **overrides)
    doc["tiers"][1]["batch_discount"] = 0.5
    doc["batch"] = {"enabled": True, "window_s": 600, "max_requests": 100,
                    "poll_interval_s": 0.02, **batch}
    return doc


@pytest.fixture(name="make_batch_gateway")
def make_batch_gateway_fixture(batch_upstreams: Upstreams, tmp_path: Path) -> Iterator[Any]:
    """``make_batch_gateway(batch={...}, bundle=None, **config_overrides)`` -> ``Gateway``."""
    started: list[ServerThread] = []
    gateways: list[Gateway] = []
    for u in (batch_upstreams.weak, batch_upstreams.strong):
        assert isinstance(u, FakeBatchUpstream)
        u.reset_batches()
    batch_upstreams.reset()

    def make(batch: dict[str, Any] | None = None, bundle: Path | None = None,
             **overrides: Any) -> Gateway:
        doc = batch_doc(batch_upstreams, tmp_path, batch or {}, **overrides)
        if bundle is not None:
            doc["router"] = {"bundle": str(bundle)}
        gateway, st = start_gateway(doc)
        started.append(st)
        gateways.append(gateway)
        return gateway

    yield make
    for client in (c for g in gateways for c in g.clients.values()):
        client.close()
    for st in started:
        st.stop()
