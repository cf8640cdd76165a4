"""The response cache's precision: false hits on distinct questions, hits on reformatted repeats.

Not a test. ``python bench/bench_cache_precision.py [--per-kind N] [--quick]``. Every request goes
through a real gateway (in process, on loopback, the shipped ``data/models/routellm`` full bundle,
the semantic layer on) to the fake upstream (``tests/fake_upstream.py``); a hit is what the
response's ``tierwise.cache`` says. Each pair gets a scope of its own (a distinct ``seed``), so a
second question can only be answered with the first's entry. Pairs, from the shipped MMLU
prompts (``data/sources/routellm/mmlu``):

- ``near_duplicate``: two distinct questions of one subject, character 3-5-gram TF-IDF cosine
  >= 0.75; ``reordered``: the same question with options A and B swapped; ``number``: one number
  changed; ``negated``: "not" put into the stem; ``templated``: one translation system prompt of
  about 150 tokens and 200 distinct short business sentences in one scope. Any hit is false.
- ``repeat``: the same question as another client would send it (lower case, options "(a)", no
  "Answer:"). A hit is right.

Prints, per kind, the false-hit (or hit) rate with its Wilson 95% interval at the default
similarity (0.95) and over a sweep (a semantic hit counts at threshold t when its similarity is
>= t; the gateway runs at the sweep's lowest threshold), and the lookup's cost at 100,000 entries.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import math
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from fake_upstream import FakeUpstream, start_server  # noqa: E402

from router_model.encoder import EMBEDDING_DIM, SentenceEncoder  # noqa: E402
from service.gateway.app import create_gateway_app  # noqa: E402
from service.gateway.assembly import GatewayOptions  # noqa: E402
from service.gateway.config import parse_gateway_config  # noqa: E402
from service.gateway.levers.cache.equivalence import mismatch  # noqa: E402
from service.gateway.levers.cache.response import ResponseCache  # noqa: E402
from service.gateway.levers.cache.store import CacheSettings, Stored  # noqa: E402

MMLU = REPO / "data" / "sources" / "routellm" / "mmlu"
BUNDLE = REPO / "data" / "models" / "routellm"
STRONG = "gpt-4-1106-preview"
KEY = "tw-bench-key"
THRESHOLDS = (0.85, 0.90, 0.93, 0.95, 0.97, 0.99)
DEFAULT = 0.95
_OPTION = re.compile(r"^([A-J])\. (.*)$", re.MULTILINE)
_NUMBER = re.compile(r"(?<![\w.])\d+(?![\d.])")
SYSTEM = (
    "You are a professional translator working for an international logistics company. Translate "
    "the user's message from English into formal business French. Keep the meaning, tone and "
    "level of politeness of the original exactly. Do not add greetings, explanations, notes or "
    "alternatives, and do not answer any question the message asks: translate it. Keep product "
    "names, order numbers, amounts, dates and e-mail addresses exactly as written. If the message "
    "is already in French, return it unchanged. Use the formal 'vous' form throughout, and the "
    "company's usual terms: 'livraison' for delivery, 'commande' for order, 'facture' for "
    "invoice, 'devis' for quote. Answer with the translation only, on one line."
)
_SUBJECTS = ("Your order", "The invoice", "Our team", "The shipment", "Your account", "The quote",
             "The meeting", "The contract", "Your refund", "The delivery")
_VERBS = ("has been confirmed", "will arrive tomorrow", "is delayed by two days",
          "was sent this morning", "needs your signature", "has been cancelled",
          "is ready for review", "was updated yesterday", "cannot be processed yet",
          "has been approved", "is on hold", "will be reviewed on Monday",
          "was received in good order", "requires one more document", "has been paid",
          "is now available online", "was moved to Friday", "is being prepared",
          "has been shipped", "must be renewed this month")


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def load() -> dict[str, list[str]]:
    """Distinct MMLU prompts by subject."""
    csv.field_size_limit(10**8)
    found: dict[str, list[str]] = {}
    for path in sorted(MMLU.glob("*.csv")):
        with path.open(encoding="utf-8", newline="") as f:
            found[path.stem] = sorted({r["prompt"] for r in csv.DictReader(f)})
    return found


def reformat(prompt: str) -> str:
    text = prompt.removesuffix("Answer:").rstrip()
    return _OPTION.sub(lambda m: f"({m.group(1).lower()}) {m.group(2)}", text).lower()


def reorder(prompt: str) -> str | None:
    options = _OPTION.findall(prompt)
    if len(options) < 2 or options[0][1] == options[1][1]:
        return None
    swapped = {"A": options[1][1], "B": options[0][1]}
    return _OPTION.sub(lambda m: f"{m.group(1)}. {swapped.get(m.group(1), m.group(2))}", prompt)


def renumber(prompt: str) -> str | None:
    stem = prompt.split("\nA. ")[0]
    m = _NUMBER.search(stem)
    if m is None:
        return None
    return prompt[:m.start()] + str(int(m.group(0)) + 1) + prompt[m.end():]


def negate(prompt: str) -> str | None:
    stem = prompt.split("\nA. ")[0]
    for word in (" is ", " are ", " was ", " does ", " can "):
        at = stem.find(word)
        if at >= 0:
            return prompt[:at] + word + "not " + prompt[at + len(word):]
    return None


def near_duplicates(by_subject: dict[str, list[str]], limit: int) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for prompts in by_subject.values():
        if len(prompts) < 2:
            continue
        tfidf = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5)).fit_transform(prompts)
        sims = (tfidf @ tfidf.T).toarray()
        np.fill_diagonal(sims, 0.0)
        for i, j in zip(*np.nonzero(np.triu(sims) >= 0.75), strict=True):
            pairs.append((prompts[int(i)], prompts[int(j)]))
    return pairs[:limit]


def variants(prompts: list[str], make: Callable[[str], str | None], limit: int
             ) -> list[tuple[str, str]]:
    pairs = [(p, v) for p in prompts if (v := make(p)) is not None and v != p]
    return pairs[:limit]


def templated(n: int) -> list[str]:
    texts = [f"{s} {v}." for v in _VERBS for s in _SUBJECTS]
    return texts[:n]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


class Client:
    """Posts chats to the gateway; each answer's (layer, similarity)."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=60,
                                 headers={"authorization": f"Bearer {KEY}"})

    def ask(self, messages: list[dict[str, str]], scope: int) -> tuple[str | None, float]:
        r = self.http.post("/v1/chat/completions", json={
            "model": STRONG, "messages": messages, "seed": scope})
        r.raise_for_status()
        info = r.json()["tierwise"]
        return info["cache"], float(info.get("similarity") or 0.0)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def counts_at(results: list[tuple[str | None, float]], t: float) -> int:
    return sum(1 for layer, sim in results
               if layer in ("exact", "canonical") or (layer == "semantic" and sim >= t))


def report(kind: str, results: list[tuple[str | None, float]], good: bool) -> None:
    n = len(results)
    what = "hit rate" if good else "false hits"
    layers = {name: sum(1 for layer, _ in results if layer == name)
              for name in ("exact", "canonical", "semantic")}
    cells = []
    for t in THRESHOLDS:
        k = counts_at(results, t)
        lo, hi = wilson(k, n)
        mark = "*" if t == DEFAULT else " "
        cells.append(f"{t:.2f}{mark}{k:4d}/{n} {k / max(n, 1):6.1%} [{lo:5.1%},{hi:5.1%}]")
    out(f"{kind:15s} {what} by layer {layers}")
    for cell in cells:
        out(f"{'':15s}   {cell}")


def run_pairs(client: Client, pairs: list[tuple[str, str]], first_scope: int
              ) -> list[tuple[str | None, float]]:
    results = []
    for i, (a, b) in enumerate(pairs):
        client.ask(user(a), first_scope + i)
        results.append(client.ask(user(b), first_scope + i))
    return results


def start_gateway(tmp: Path, similarity: float) -> tuple[str, list[Any]]:
    upstream = start_server(FakeUpstream("strong").app())
    doc = {
        "tiers": [
            {"name": "weak", "model": "mistralai/Mixtral-8x7B-Instruct-v0.1",
             "base_url": upstream.url + "/v1", "api_key_env": "BENCH_KEY",
             "input_price": 0.6, "output_price": 0.6},
            {"name": "strong", "model": STRONG, "base_url": upstream.url + "/v1",
             "api_key_env": "BENCH_KEY", "input_price": 10.0, "output_price": 30.0},
        ],
        "default_tier": "weak", "router": {"bundle": str(BUNDLE)},
        "traffic": {"url": f"sqlite:///{tmp / 'traffic.db'}", "store_prompts": False},
        "cache": {"enabled": True, "semantic": True, "similarity": similarity,
                  "max_entries": 1_000_000},
    }
    app = create_gateway_app(parse_gateway_config(doc), GatewayOptions(
        client_keys=(KEY,), upstream_keys={"BENCH_KEY": "sk-bench"}))
    gateway = start_server(app, lifespan="on")
    return gateway.url, [gateway, upstream]


def precision(per_kind: int, n_templated: int) -> None:
    by_subject = load()
    prompts = [p for ps in by_subject.values() for p in ps]
    rng = np.random.default_rng(0)
    rng.shuffle(prompts)
    kinds: dict[str, list[tuple[str, str]]] = {
        "near_duplicate": near_duplicates(by_subject, per_kind),
        "reordered": variants(prompts, reorder, per_kind),
        "number": variants(prompts, renumber, per_kind),
        "negated": variants(prompts, negate, per_kind),
        "repeat": variants(prompts, reformat, per_kind),
    }
    with tempfile.TemporaryDirectory() as tmp:
        url, servers = start_gateway(Path(tmp), min(THRESHOLDS))
        try:
            client = Client(url)
            out(f"gateway at similarity {min(THRESHOLDS)}; * marks the default {DEFAULT}")
            for k, (kind, pairs) in enumerate(kinds.items()):
                report(kind, run_pairs(client, pairs, 1_000_000 * (k + 1)), kind == "repeat")
            turns = templated(n_templated)
            results = [client.ask([{"role": "system", "content": SYSTEM}, *user(t)], 0)
                       for t in turns]
            report("templated", results, False)
            metrics = client.http.get("/metrics").text.splitlines()
            refused = [m for m in metrics if m.startswith("tierwise_gateway_cache_rejections")]
            out("semantic candidates refused by the equivalence check (all kinds): "
                + (", ".join(r.split("reason=")[-1] for r in refused) or "none"))
        finally:
            for server in servers:
                server.stop()


def latency(entries: int, probes: int, scopes: int) -> None:
    """p50 of a missing lookup: exact alone, then exact + canonical + semantic with its check
    (``entries`` spread over ``scopes`` tenants, the probe searching one), and the embedding
    the semantic layer adds."""
    encoder = SentenceEncoder.load()
    cache = ResponseCache(CacheSettings(semantic=True, max_entries=entries), encoder)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((entries, EMBEDDING_DIM))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    doc = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}}]}
    for i in range(entries):
        key = cache.key({"messages": user(f"stored question {i}")}, f"t{i % scopes}", "strong")
        doc_i = {**doc, "tierwise": {"keys": [key.exact], "prompt": f"stored question {i}"}}
        cache.backend.put(key, Stored(doc_i, 0.0, "strong"), vectors[i])
    times: dict[str, list[float]] = {"exact": [], "all": [], "embed": []}

    async def probe(i: int) -> None:
        key = cache.key({"messages": user(f"What is asked in probe {i}?")}, "t0", "strong")
        t0 = time.perf_counter()
        await cache.backend.exact(key)
        t1 = time.perf_counter()
        await cache.backend.exact(key)
        await cache.backend.canonical(key)
        near = await cache.backend.nearest(key, vectors[i % entries])  # a stored neighbour
        if near is not None and key.prompt is not None:
            mismatch(near[0].doc["tierwise"]["prompt"], key.prompt)
        t2 = time.perf_counter()
        assert key.text is not None
        cache._embed(key.text)
        t3 = time.perf_counter()
        times["exact"].append(t1 - t0)
        times["all"].append(t2 - t1)
        times["embed"].append(t3 - t2)

    async def run() -> None:
        for i in range(probes):
            await probe(i)

    asyncio.run(run())
    exact, full, embed = (1000 * float(np.median(times[k])) for k in ("exact", "all", "embed"))
    out(f"lookup at {entries:,} entries in {scopes:,} scope(s), p50 of {probes}: "
        f"exact {exact:.3f} ms, exact+canonical+semantic search+check {full:.3f} ms "
        f"(+{full - exact:.3f} ms); "
        f"embedding the turn {embed:.2f} ms")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-kind", type=int, default=300)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="a few pairs, 1,000 entries")
    args = parser.parse_args(argv)
    if args.quick:
        args.per_kind, args.entries = 3, 1_000
    precision(args.per_kind, 10 if args.quick else 200)
    for scopes in (1, 1000):
        latency(args.entries, 20 if args.quick else 200, scopes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
