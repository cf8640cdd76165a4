"""The gateway's added latency over calling the upstream directly, next to LiteLLM's proxy.

Every server runs as its own process on loopback: the fake OpenAI upstream (``tests/
fake_upstream.py``), ``tierwise gateway`` (routing in process with the full encoder bundle,
traffic committed to SQLite on disk with ``synchronous=FULL`` before each answer) and, when its
separate venv exists, LiteLLM's proxy forwarding to the same upstream, also with tierwise's LiteLLM
hook (``integrations/litellm_tierwise.py``) asking ``tierwise serve`` (the fast bundle, over gRPC)
which of a group's two deployments answers; the router service's own answer time (a gRPC
``Route`` from this client) is reported next to it. One client sends the same
real prompts to each, interleaved round by round; "added" is a percentile through the proxy minus
the same percentile direct. A third gateway runs the same bundle with shadow sampling at 100%
(every routed request also asks the other tier and a judge, the fake upstream's verdict, in the
background); its client p50 is compared with shadow off, same run, interleaved, with a paired
bootstrap interval of the difference. Prints a table; not a test.

    python bench/bench_gateway.py [--model DIR] [--n 300] [--litellm /tmp/litellm-venv]

LiteLLM's venv needs tierwise too, for the hook:
``python -m venv /tmp/litellm-venv && /tmp/litellm-venv/bin/pip install -e '.[litellm]'``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG = "gpt-4-1106-preview"
MASTER_KEY = "sk-bench-master"
CLIENT_KEY = "bench-client"
logger = logging.getLogger("bench_gateway")
SHADOW_OFF = "tierwise routed (tierwise-auto, full encoder)"
SHADOW_ON = "tierwise routed, shadow 100% (same bundle)"


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def serve_upstream(port: int) -> None:
    """Child-process mode: the fake upstream on ``port`` (uvicorn binds it itself)."""
    import uvicorn

    sys.path.insert(0, str(REPO / "tests"))
    from fake_upstream import ANSWER_WORDS, FakeUpstream

    answer = "".join(ANSWER_WORDS)

    # a judge's grading prompt (the shadow gateway's) gets a verdict, any other prompt the answer
    def reply(body: dict[str, Any]) -> str:
        text = str(body["messages"][-1].get("content") or "")
        return "Fair. Rating: [[7]]" if text.startswith("[Instruction]") else answer

    uvicorn.run(FakeUpstream("bench", reply=reply).app(), host="127.0.0.1", port=port,
                log_level="warning", access_log=False)


class Process:
    """A child process whose output lines are collected, so a pattern can be waited for."""

    def __init__(self, args: Sequence[str], env: dict[str, str], name: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            list(args), env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, pattern: str, timeout: float = 120.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := regex.search(line):
                    return match
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        tail = "".join(self.lines[-30:])
        raise RuntimeError(f"{self.name}: no line matching {pattern!r}; output:\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def start_upstream(stack: ExitStack, env: dict[str, str]) -> str:
    port = free_port()
    proc = Process([sys.executable, __file__, "--serve-upstream", str(port)], env, "upstream")
    stack.callback(proc.stop)
    wait_http(f"http://127.0.0.1:{port}/")
    return f"http://127.0.0.1:{port}/v1"


def two_tiers(upstream: str, timeout_s: float = 30) -> list[dict[str, Any]]:
    """The routellm pair (weak Mixtral, strong GPT-4) on ``upstream``, at their list prices."""
    tier = {"base_url": upstream, "api_key_env": "BENCH_UPSTREAM_KEY", "timeout_s": timeout_s}
    return [{"name": "weak", "model": WEAK, "input_price": 0.6, "output_price": 0.6, **tier},
            {"name": "strong", "model": STRONG, "input_price": 10, "output_price": 30, **tier}]


def run_gateway(stack: ExitStack, env: dict[str, str], config: dict[str, Any], path: Path,
                keys: str = CLIENT_KEY, name: str = "tierwise") -> tuple[str, Process]:
    """``tierwise gateway`` with ``config`` (written to ``path``) on a free port, stopped with
    ``stack``; its URL and process once started. Logs at INFO: one line per request."""
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    child = {**env, "BENCH_UPSTREAM_KEY": "sk-fake", "TIERWISE_API_KEYS": keys}
    proc = Process([sys.executable, "-m", "cli.main", "gateway", "--config", str(path),
                    "--port", "0"], child, name)
    stack.callback(proc.stop)
    port = proc.wait_for(r"gateway listening on http://127.0.0.1:(\d+)").group(1)
    proc.wait_for("Application startup complete")
    return f"http://127.0.0.1:{port}", proc


def start_tierwise(stack: ExitStack, env: dict[str, str], upstream: str, model: Path,
                   workdir: Path, shadow: dict[str, Any] | None = None) -> str:
    """``tierwise gateway`` on a free port; its config and traffic DB go in ``workdir``;
    ``shadow`` is its config's shadow section (None: off)."""
    config = {"tiers": two_tiers(upstream), "router": {"bundle": str(model)},
              "default_tier": "strong", "traffic": {"url": f"sqlite:///{workdir / 'bench.db'}"},
              **({"shadow": shadow} if shadow else {})}
    return run_gateway(stack, env, config, workdir / "bench-gateway.yaml")[0]


def start_router(stack: ExitStack, env: dict[str, str], model: Path) -> str:
    """``tierwise serve`` on free ports; its gRPC address."""
    proc = Process([sys.executable, "-m", "cli.main", "serve", "--model", str(model),
                    "--http-port", "0", "--grpc-port", "0"], env, "router")
    stack.callback(proc.stop)
    port = proc.wait_for(r"grpc listening on [\d.]+:(\d+)").group(1)
    proc.wait_for(r"http listening on")
    return f"127.0.0.1:{port}"


HOOK = """from integrations.litellm_tierwise import TierwiseOptions, TierwiseProxyHook

proxy_hook = TierwiseProxyHook(TierwiseOptions(
    router="grpc://{router}", groups=("auto",), fail_open="auto-strong", timeout_s=0.5))
"""


def start_litellm(stack: ExitStack, env: dict[str, str], upstream: str, venv: Path,
                  tmp: Path, router: str | None = None) -> str | None:
    """LiteLLM's proxy: group ``weak`` plain; with ``router``, group ``auto`` (a weak and a
    strong deployment) routed by tierwise's hook."""
    exe = venv / "bin" / "litellm"
    if not exe.exists():
        emit(f"  LiteLLM: not installed at {venv} (see the module docstring); skipped")
        return None
    config: dict[str, Any] = {
        "model_list": [{"model_name": "weak", "litellm_params": {
            "model": f"openai/{WEAK}", "api_base": upstream, "api_key": "sk-fake"}}],
        "general_settings": {"master_key": MASTER_KEY},
    }
    if router is not None:
        config["model_list"] += [
            {"model_name": "auto", "litellm_params": {
                "model": f"openai/{model}", "api_base": upstream, "api_key": "sk-fake"},
             "model_info": {"id": f"auto-{tier}", "tierwise_tier": tier}}
            for tier, model in (("weak", WEAK), ("strong", STRONG))]
        config["litellm_settings"] = {"callbacks": ["tierwise_hook.proxy_hook"]}
        (tmp / "tierwise_hook.py").write_text(HOOK.format(router=router), encoding="utf-8")
    path = tmp / "litellm.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    child = {**env, "LITELLM_MASTER_KEY": MASTER_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
             "DISABLE_SCHEMA_UPDATE": "True", "PYTHONPATH": str(REPO)}
    port = free_port()
    proc = Process([str(exe), "--config", str(path), "--host", "127.0.0.1", "--port", str(port),
                    "--num_workers", "1"], child, "litellm")
    stack.callback(proc.stop)
    # LiteLLM moves to another port without saying so when its port is busy: read the real one
    bound = proc.wait_for(r"Uvicorn running on http://[\d.]+:(\d+)", timeout=180).group(1)
    url = f"http://127.0.0.1:{bound}"
    wait_http(url + "/health/liveliness")
    return url


def shadow_counts(url: str) -> dict[str, float]:
    """A gateway's shadow counters (``/metrics``): samples by result, and ``cost_usd``."""
    out: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith('tierwise_gateway_shadow_samples_total{result="'):
            out[line.split('"')[1]] = float(line.split()[-1])
        elif line.startswith("tierwise_gateway_shadow_cost_usd_total "):
            out["cost_usd"] = float(line.split()[-1])
    return out


class RouteCaller:
    """Seconds per gRPC ``Route`` of one chat: the router service's answer time, as the hook
    sees it (same transport, same process boundary)."""

    def __init__(self, target: str) -> None:
        import grpc

        from protos.tierwise.v1 import router_pb2, router_pb2_grpc

        self._pb = router_pb2
        self._channel = grpc.insecure_channel(target)
        self._stub = router_pb2_grpc.RouterStub(self._channel)  # type: ignore[no-untyped-call]

    def __enter__(self) -> RouteCaller:
        return self

    def __exit__(self, *exc: object) -> None:
        self._channel.close()

    def __call__(self, prompt: str) -> float:
        pb = self._pb
        request = pb.RouteRequest(messages=[pb.ChatMessage(
            role="user", content=[pb.ContentPart(type="text", text=prompt)])])
        start = time.perf_counter()
        self._stub.Route(request, timeout=30)
        return time.perf_counter() - start


def prompts() -> list[str]:
    """Real prompts of the shipped fixtures (RouteLLM's MMLU rows), short and long."""
    path = REPO / "data" / "fixtures" / "routellm_small.jsonl"
    return [str(json.loads(line)["prompt"]) for line in path.read_text("utf-8").splitlines()]


def call(client: httpx.Client, url: str, key: str | None, model: str, prompt: str) -> float:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    start = time.perf_counter()
    response = client.post(url + "/chat/completions", json=body, headers=headers)
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"{url}: {response.status_code} {response.text[:300]}")
    return elapsed


def measure(targets: dict[str, Callable[[str], float]], texts: list[str],
            n: int) -> dict[str, list[float]]:
    """Seconds per call for each target, interleaved round-robin (drift hits all alike)."""
    for fn in targets.values():
        for text in texts[:10]:
            fn(f"{text}\n\n(warm-up)")  # connections, encoder, allocator
    samples: dict[str, list[float]] = {name: [] for name in targets}
    for i in range(n):
        # every request is a new text, as in real traffic: no cache anywhere can answer it
        text = f"{texts[i % len(texts)]}\n\n(request {i})"
        for name, fn in targets.items():
            samples[name].append(fn(text))
    return samples


def report(samples: dict[str, list[float]]) -> None:
    direct = np.asarray(samples["direct (fake upstream)"]) * 1000
    base50, base99 = np.percentile(direct, 50), np.percentile(direct, 99)
    emit(f"  {'path':<44} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'added p99':>10}")
    for name, values in samples.items():
        ms = np.asarray(values) * 1000
        p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
        emit(f"  {name:<44} {p50:8.2f} {p99:8.2f} {p50 - base50:10.2f} {p99 - base99:10.2f}")
    hook, plain = "litellm proxy + tierwise hook (hand features)", "litellm proxy 1.108.7"
    if hook in samples:
        added = np.percentile(samples[hook], 50) * 1000 - np.percentile(samples[plain], 50) * 1000
        route = np.percentile(samples["router service Route alone (gRPC)"], 50) * 1000
        emit(f"  tierwise hook adds {added:.2f} ms p50 to LiteLLM's proxy; the router service's "
             f"Route alone takes {route:.2f} ms p50: {added - route:+.2f} ms beyond it "
             "(target: at most +1 ms)")


def report_shadow(off: list[float], on: list[float], seed: int = 0) -> None:
    """Shadow on minus off: p50 difference with a 95% bootstrap interval over paired rounds."""
    a, b = np.asarray(off) * 1000, np.asarray(on) * 1000
    rows = np.random.default_rng(seed).integers(0, len(a), size=(2000, len(a)))
    diffs = np.percentile(b[rows], 50, axis=1) - np.percentile(a[rows], 50, axis=1)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    p_on, p_off = np.percentile(b, 50), np.percentile(a, 50)
    emit(f"  shadow 100% vs off, same bundle, interleaved: p50 {p_on:.2f} vs {p_off:.2f} ms, "
         f"difference {p_on - p_off:+.2f} ms (95% CI [{lo:+.2f}, {hi:+.2f}])")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, default=REPO / "data" / "models" / "routellm")
    parser.add_argument("--fast-model", type=Path,
                        default=REPO / "data" / "models" / "routellm_fast",
                        help="hand-feature bundle, also reported when it exists")
    parser.add_argument("--n", type=int, default=300, help="requests per path")
    parser.add_argument("--litellm", type=Path, default=Path("/tmp/litellm-venv"))
    parser.add_argument("--traffic-dir", type=Path, default=None,
                        help="where the traffic DB goes (default: a temp dir on disk)")
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true",
                        help="10 requests per path, no LiteLLM (a smoke run, no figures)")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.litellm = 10, Path("/nonexistent-litellm-venv")
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return 0
    logging.basicConfig(level=logging.WARNING)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERWISE_")}
    texts = prompts()
    # /tmp is on the same disk here: the traffic store's fsyncs are real
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        upstream = start_upstream(stack, env)
        gateway = start_tierwise(stack, env, upstream, args.model, args.traffic_dir or tmp)
        gateway += "/v1"
        fast = None
        if (args.fast_model / "manifest.json").exists():
            fast_dir = Path(tempfile.mkdtemp(dir=args.traffic_dir or tmp))
            fast = start_tierwise(stack, env, upstream, args.fast_model, fast_dir) + "/v1"
        shadow_dir = Path(tempfile.mkdtemp(dir=args.traffic_dir or tmp))
        # the same bundle with shadow sampling at 100%: every routed request also asks the other
        # tier and the judge (the fake upstream's verdict) in the background
        shadowed = start_tierwise(stack, env, upstream, args.model, shadow_dir, shadow={
            "rate": 1.0, "judge": "strong", "queue": 1000, "concurrency": 2}) + "/v1"
        router = None
        if (args.litellm / "bin" / "litellm").exists() and fast is not None:
            router = start_router(stack, env, args.fast_model)
        litellm = start_litellm(stack, env, upstream, args.litellm, tmp, router)
        client = stack.enter_context(httpx.Client(timeout=30))
        targets: dict[str, Callable[[str], float]] = {
            "direct (fake upstream)": lambda t: call(client, upstream, None, WEAK, t),
            "tierwise pass-through (model=weak)": lambda t: call(
                client, gateway, CLIENT_KEY, "weak", t),
            SHADOW_OFF: lambda t: call(
                client, gateway, CLIENT_KEY, "tierwise-auto", t),
        }
        targets[SHADOW_ON] = lambda t: call(client, shadowed, CLIENT_KEY, "tierwise-auto", t)
        if fast is not None:
            targets["tierwise routed (tierwise-auto, hand features)"] = lambda t: call(
                client, fast, CLIENT_KEY, "tierwise-auto", t)
        if litellm is not None:
            targets["litellm proxy 1.108.7"] = lambda t: call(client, litellm, MASTER_KEY,
                                                              "weak", t)
        if litellm is not None and router is not None:
            targets["litellm proxy + tierwise hook (hand features)"] = lambda t: call(
                client, litellm, MASTER_KEY, "auto", t)
            route = stack.enter_context(RouteCaller(router))
            targets["router service Route alone (gRPC)"] = route
        emit(f"bench_gateway: {args.n} requests per path, {len(texts)} real prompts, "
             f"bundle {args.model.name}, {os.cpu_count()} CPUs")
        samples = measure(targets, texts, args.n)
        report(samples)
        report_shadow(samples[SHADOW_OFF], samples[SHADOW_ON])
        counts = shadow_counts(shadowed.removesuffix("/v1"))
        emit(f"  shadow samples: {', '.join(f'{k} {v:g}' for k, v in sorted(counts.items()))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
