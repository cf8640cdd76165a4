"""Assertions shared by the router's HTTP tests: problem bodies, and a service still serving."""

from __future__ import annotations

from typing import Any

import httpx

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "code"}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The RFC 9457 body of ``response``, checked to be a ``status`` problem with ``code``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    doc: dict[str, Any] = response.json()
    assert PROBLEM_KEYS <= doc.keys()
    assert (doc["status"], doc["code"]) == (status, code)
    assert doc["type"].endswith(code)
    return doc


def assert_still_serves(http: httpx.Client) -> None:
    """The router behind ``http`` still answers a plain route request."""
    response = http.post("/v1/route", json={"prompt": "What is the capital of France?"})
    assert response.status_code == 200, response.text
