"""Security: keys are checked on every route, secrets and prompts never reach the logs of real
processes, and the upstream a request goes to comes only from the config.

The OpenAI SDK's view of bad keys and the in-process (caplog) log scan are in
``tests/integration/test_gateway_routing.py``; here both servers run as subprocesses at DEBUG.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fake_upstream import FakeUpstream, start_server
from gateway_support import (
    ADMIN_KEY,
    CLIENT_KEY,
    KEY_ENV,
    STRONG,
    UPSTREAM_KEY,
    WEAK,
    Upstreams,
    config_doc,
)
from reliability_servers import ROUTER_ADMIN_KEY, ServerProcess, start_gateway_process, start_router

CHAT = {"model": "tierwise-auto", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.reliability(
    scenario="Requests without or with wrong keys",
    action="every client and admin route of the gateway, and the router's admin reload, called "
           "with no key, a wrong key, a key with a suffix, and the other role's key",
    expected="gateway 401 (OpenAI envelope) on every client and admin route; router reload "
             "401; nothing forwarded upstream")
def test_keys_are_checked_everywhere(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams, router_process: ServerProcess,
    observed: Any,
) -> None:
    gw = make_gateway(fast_bundle)
    client_routes = [("POST", "/v1/chat/completions", CHAT), ("GET", "/v1/models", None),
                     ("POST", "/v1/feedback", {"decision_id": "x", "thumbs": "up"})]
    checked = 0
    for key in (None, "wrong", CLIENT_KEY + "x", ADMIN_KEY):
        with gw.http(key) as http:
            for method, path, body in client_routes:
                r = http.request(method, path, json=body)
                assert r.status_code == 401, (key, path)
                assert r.json()["error"]["type"] == "authentication_error"
                checked += 1
    for key in (None, "wrong", CLIENT_KEY, ADMIN_KEY + "x"):
        with gw.http(key) as http:
            assert http.get("/v1/admin/savings").status_code == 401
            checked += 1
    assert upstreams.weak.requests == upstreams.strong.requests == []
    for key in (None, "wrong", ROUTER_ADMIN_KEY + "x", CLIENT_KEY):
        headers = {"authorization": f"Bearer {key}"} if key else {}
        r = httpx.post(router_process.http_url + "/v1/admin/reload", headers=headers,
                       json={"path": str(fast_bundle)}, timeout=10)
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"
        checked += 1
    observed(f"{checked}/{checked} refused with 401; upstreams received 0 requests")


SECRET_PROMPT = "quokka-saxophone-9931 what is the airspeed of an unladen swallow"
SECRETS = {
    "client key": "tw-client-SECRET-a1b2c3",
    "gateway admin key": "tw-admin-SECRET-d4e5f6",
    "upstream key": "sk-upstream-SECRET-778899",
    "router admin key": "tw-router-admin-SECRET-0a0b",
    "wrong key sent by a client": "tw-client-WRONG-SECRET-5566",
    "prompt text": "quokka-saxophone",
}


@pytest.fixture()
def logged_servers(
    upstreams: Upstreams, fast_bundle: Path, tmp_path: Path
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    # JSON lines carry every ``extra=`` field too, so the scan sees all that is logged
    env = {**os.environ, "TIERWISE_LOG_LEVEL": "DEBUG", "TIERWISE_LOG_FORMAT": "json",
           "TIERWISE_SERVICE__ADMIN_KEY": SECRETS["router admin key"],
           "TIERWISE_API_KEYS": SECRETS["client key"],
           "TIERWISE_GATEWAY__ADMIN_KEY": SECRETS["gateway admin key"],
           KEY_ENV: SECRETS["upstream key"]}
    router = start_router(fast_bundle, env, tmp_path / "router.log")
    doc = config_doc(upstreams, tmp_path, router={"address": router.grpc_target, "timeout_s": 5})
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    try:
        gateway = start_gateway_process(config, env, tmp_path / "gateway.log")
    except BaseException:
        router.stop()
        raise
    yield router, gateway
    gateway.stop()
    router.stop()


def _traffic(router: ServerProcess, gateway: ServerProcess, upstreams: Upstreams) -> int:
    """Every kind of request, good and bad, that could make a server log something."""
    good = {"authorization": f"Bearer {SECRETS['client key']}"}
    chat = {"model": "tierwise-auto", "messages": [{"role": "user", "content": SECRET_PROMPT}]}
    sent = 0
    with httpx.Client(base_url=gateway.http_url, timeout=20) as http:
        for body in (chat, {**chat, "stream": True}, {**chat, "model": "strong"},
                     {**chat, "tierwise": {"quality": 2}}, {**chat, "messages": "x"}):
            http.post("/v1/chat/completions", json=body, headers=good)
            sent += 1
        upstreams.weak.mode = upstreams.strong.mode = "fail"  # upstream errors get logged
        assert http.post("/v1/chat/completions", json=chat, headers=good).status_code == 502
        upstreams.reset()
        bad = {"authorization": f"Bearer {SECRETS['wrong key sent by a client']}"}
        assert http.post("/v1/chat/completions", json=chat, headers=bad).status_code == 401
        admin = {"authorization": f"Bearer {SECRETS['gateway admin key']}"}
        assert http.get("/v1/admin/savings", headers=admin).status_code == 200
        sent += 3
    with httpx.Client(base_url=router.http_url, timeout=20) as http:
        http.post("/v1/route", json={"prompt": SECRET_PROMPT})
        http.post("/v1/route", json={"prompt": SECRET_PROMPT, "policy": {"quality": 7}})
        admin = {"authorization": f"Bearer {SECRETS['router admin key']}"}
        http.post("/v1/admin/reload", json={"path": "/nonexistent/bundle"},
                  headers=admin)
        http.post("/v1/admin/reload", json={"path": "/x"},
                  headers={"authorization": f"Bearer {SECRETS['wrong key sent by a client']}"})
        sent += 4
    return sent


@pytest.mark.slow
@pytest.mark.reliability(
    scenario="Keys and prompt text never reach the logs",
    action="tierwise serve + tierwise gateway (router: address) as subprocesses, JSON logs "
           "at DEBUG, known secret keys; routed, streamed, passthrough, invalid, upstream-failing, "
           "wrong-key and admin requests with a distinctive prompt; all stdout/stderr scanned",
    expected="none of the 5 keys and no prompt text in either log")
def test_no_secrets_in_process_logs(
    logged_servers: tuple[ServerProcess, ServerProcess], upstreams: Upstreams, observed: Any
) -> None:
    router, gateway = logged_servers
    sent = _traffic(router, gateway, upstreams)
    logs = {"router": router.logs(), "gateway": gateway.logs()}
    assert "completion " in logs["gateway"] and "request_id" in logs["router"]  # they did log
    leaks = [(what, name) for name, text in logs.items() for what, secret in SECRETS.items()
             if secret in text]
    assert leaks == []
    lines = sum(text.count("\n") for text in logs.values())
    observed(f"{sent} requests; {lines} log lines scanned (router + gateway, JSON at DEBUG): "
             f"0 of {len(SECRETS)} secrets found")


@pytest.fixture()
def evil() -> Iterator[tuple[FakeUpstream, str]]:
    upstream = FakeUpstream("evil")
    server = start_server(upstream.app())
    yield upstream, server.url + "/v1"
    server.stop()


@pytest.mark.reliability(
    scenario="Upstream URL only from config",
    action="requests whose body sets base_url / api_base / api_key / url and whose headers "
           "set x-upstream-url, x-forwarded-host, openai-base-url to a third (attacker) server",
    expected="the attacker server receives nothing; the configured upstream gets the call "
             "with the configured key, and none of the client's headers")
def test_upstream_url_comes_only_from_config(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams,
    evil: tuple[FakeUpstream, str], observed: Any,
) -> None:
    attacker, url = evil
    gw = make_gateway(fast_bundle)
    injected_body = {"base_url": url, "api_base": url, "api_key": "sk-evil", "url": url,
                     "tierwise": {"quality": 0.0}}
    headers = {"x-upstream-url": url, "x-forwarded-host": url.split("//")[1],
               "openai-base-url": url, "x-tierwise-upstream": url}
    with gw.http() as http:
        for model in ("tierwise-auto", WEAK, "strong", STRONG):
            for stream in (False, True):
                r = http.post("/v1/chat/completions", headers=headers,
                              json={**CHAT, **injected_body, "model": model, "stream": stream})
                assert r.status_code == 200
    assert attacker.requests == []
    forwarded = upstreams.weak.headers + upstreams.strong.headers
    assert len(forwarded) == 8
    assert all(h["authorization"] == f"Bearer {UPSTREAM_KEY}" for h in forwarded)
    assert not any(set(headers) & set(h) for h in forwarded)
    observed("8/8 answered by the configured upstreams with the configured key; attacker "
             "server received 0 requests; no client header forwarded")
