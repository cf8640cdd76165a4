"""A tier's OpenAI Batch API: upload a JSONL file, create a batch, poll it, read its result files.

The wire format is OpenAI's: ``POST {base_url}/files`` (multipart, ``purpose=batch``), each line
``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}``; ``POST
{base_url}/batches``; ``GET {base_url}/batches/{id}``; ``POST {base_url}/batches/{id}/cancel``;
``GET {base_url}/files/{id}/content``. Uploading and creating are two calls so that the caller can
check it still holds its jobs before the batch (the part that is paid) is created.
Any transport failure or error status is an ``UpstreamError``. A result line whose JSON spells a
lone UTF-16 surrogate is read with U+FFFD in its place (``service.gateway.json_text``), as a chat
answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from router_model.errors import UpstreamError
from service.gateway.json_text import may_spell_surrogate, replace_lone_surrogates

logger = logging.getLogger(__name__)

CHAT_ENDPOINT = "/v1/chat/completions"
#: Batch states after which no more output will come.
FINAL_STATES = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass(frozen=True)
class BatchLine:
    """One request of a batch file: the job id as ``custom_id`` and the chat body."""

    custom_id: str
    body: dict[str, Any]


@dataclass(frozen=True)
class BatchOutcome:
    """What a finished batch gave each ``custom_id``: a completion, or an error message."""

    state: str
    completions: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    #: Why the whole batch failed (``failed``, ``expired``, ``cancelled``), else "".
    reason: str = ""


@dataclass(frozen=True)
class BatchApi:
    """The batch endpoints of one tier's upstream."""

    client: httpx.AsyncClient
    base_url: str
    api_key: str | None = field(repr=False)
    timeout: httpx.Timeout

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = self.base_url.rstrip("/") + path
        try:
            response = await self.client.request(method, url, headers=self._headers(),
                                                 timeout=self.timeout, **kwargs)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"batch {method} {path}: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            raise UpstreamError(f"batch {method} {path}: status {response.status_code} "
                                f"{response.text[:200]}")
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._call(method, path, **kwargs)
        try:
            doc = response.json()
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise UpstreamError(f"batch {method} {path}: the answer is not a JSON object")
        return doc

    async def upload(self, lines: Sequence[BatchLine]) -> str:
        """Upload a batch file (nothing is paid yet); returns its file id.

        Raises:
            UpstreamError: when the upload fails.
        """
        content = "".join(
            json.dumps({"custom_id": line.custom_id, "method": "POST", "url": CHAT_ENDPOINT,
                        "body": line.body}) + "\n"
            for line in lines
        ).encode()
        upload = await self._json(
            "POST", "/files", data={"purpose": "batch"},
            files={"file": ("tierwise-batch.jsonl", content, "application/jsonl")},
        )
        return _str(upload, "id")

    async def create(self, file_id: str, metadata: dict[str, str]) -> str:
        """Create the batch of an uploaded file; returns the upstream batch id.

        Raises:
            UpstreamError: when the creation fails.
        """
        batch = await self._json("POST", "/batches", json={
            "input_file_id": file_id, "endpoint": CHAT_ENDPOINT,
            "completion_window": "24h", "metadata": metadata,
        })
        return _str(batch, "id")

    async def cancel(self, batch_id: str) -> None:
        """Cancel a batch (requests not yet run are not paid).

        Raises:
            UpstreamError: when the upstream refuses or cannot be reached.
        """
        await self._json("POST", f"/batches/{batch_id}/cancel")

    async def outcome(self, batch_id: str) -> BatchOutcome | None:
        """The results of a finished batch, None while it still runs.

        Raises:
            UpstreamError: when the batch or its files cannot be read.
        """
        batch = await self._json("GET", f"/batches/{batch_id}")
        state = str(batch.get("status"))
        if state not in FINAL_STATES:
            return None
        out = BatchOutcome(state, reason="" if state == "completed" else _reason(batch))
        for key in ("output_file_id", "error_file_id"):  # expired batches keep partial output
            file_id = batch.get(key)
            if isinstance(file_id, str) and file_id:
                await self._read_file(file_id, out)
        return out

    async def _read_file(self, file_id: str, out: BatchOutcome) -> None:
        text = (await self._call("GET", f"/files/{file_id}/content")).text
        for raw in text.splitlines():
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                if isinstance(line, dict) and may_spell_surrogate(raw):
                    replace_lone_surrogates(line)  # stored, served and counted as text
                custom_id = str(line["custom_id"])
            except (ValueError, KeyError, TypeError):
                logger.warning("batch file %s: a line that is not a batch result", file_id)
                continue
            response = line.get("response") or {}
            body = response.get("body") if isinstance(response, dict) else None
            status = response.get("status_code") if isinstance(response, dict) else None
            if status == 200 and isinstance(body, dict) and not line.get("error"):
                out.completions[custom_id] = body
            else:
                out.errors[custom_id] = _line_error(line, status, body)


def _str(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise UpstreamError(f"batch API answer has no {key!r}")
    return value


def _reason(batch: dict[str, Any]) -> str:
    """Why a whole batch ended without answers, with the upstream's own messages."""
    errors = batch.get("errors")
    data = errors.get("data") if isinstance(errors, dict) else None
    messages = [str(e.get("message")) for e in data or [] if isinstance(e, dict)]
    reason = f"upstream batch {batch.get('status')}"
    return f"{reason}: {'; '.join(messages)}" if messages else reason


def _line_error(line: dict[str, Any], status: Any, body: Any) -> str:
    error = line.get("error")
    if not error and isinstance(body, dict):
        error = body.get("error")
    message = error.get("message") if isinstance(error, dict) else error
    return f"upstream status {status}: {message or 'no answer'}"
