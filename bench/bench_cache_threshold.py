"""Offline check of the semantic cache's threshold: hits on repeats, false hits on other questions.

Not a test. ``python bench/bench_cache_threshold.py [--per-domain N] [--seed S]``. Texts are
embedded exactly as the gateway's cache embeds them (``ResponseCache.key(...).text`` through the
router's ``SentenceEncoder``; chats past the encoder's window are skipped, as the cache skips them).

Positives: the MMLU prompts shipped twice in ``data/sources/routellm/mmlu`` (94), verbatim and
reformatted (the "Answer:" cue dropped, options lettered "(a)" instead of "A.", lower case), so
the exact layer cannot catch them. Negatives: different questions of the same MMLU subject, which
must never share an answer: every pair among ``--per-domain`` sampled questions of each subject,
and, as a cache would see them, each question against all the others of its subject (a false hit
if any is at or above the threshold). Hard negatives: questions with the same stem and different
options ("Which of the following statements is true?").
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from router_model.encoder import MAX_TOKENS, SentenceEncoder  # noqa: E402
from service.gateway.levers.cache.response import ResponseCache  # noqa: E402
from service.gateway.levers.cache.store import CacheSettings  # noqa: E402

MMLU = REPO / "data" / "sources" / "routellm" / "mmlu"
THRESHOLDS = (0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99)
_OPTION = re.compile(r"^([A-J])\. ", re.MULTILINE)


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def load() -> dict[str, list[str]]:
    """MMLU prompts by subject, in file order."""
    by_domain: dict[str, list[str]] = {}
    csv.field_size_limit(10**8)
    for path in sorted(MMLU.glob("*.csv")):
        with path.open(encoding="utf-8", newline="") as f:
            by_domain[path.stem.removeprefix("mmlu_")] = [r["prompt"] for r in csv.DictReader(f)]
    return by_domain


def reformat(prompt: str) -> str:
    """The same question as another client might send it."""
    text = prompt.removesuffix("Answer:").rstrip()
    text = _OPTION.sub(lambda m: f"({m.group(1).lower()}) ", text)
    return text.lower()


def embed(encoder: SentenceEncoder, cache: ResponseCache, prompts: Sequence[str]) -> tuple[
    NDArray[np.float32], NDArray[np.bool_]
]:
    """Unit vectors of the cache's texts, and which fit the window (the rest are never cached)."""
    texts = [cache.key({"messages": [{"role": "user", "content": p}]}, "t", "weak").text or ""
             for p in prompts]
    ids = encoder.token_ids(texts)
    fits = np.array([len(x) <= MAX_TOKENS - 2 for x in ids])
    return encoder.encode_ids(ids), fits


def positives(encoder: SentenceEncoder, cache: ResponseCache, prompts: list[str]) -> None:
    counts: dict[str, int] = defaultdict(int)
    for p in prompts:
        counts[p] += 1
    dups = sorted(p for p, n in counts.items() if n > 1)
    vectors, fits = embed(encoder, cache, dups + [reformat(p) for p in dups])
    a, b = vectors[: len(dups)], vectors[len(dups):]
    ok = fits[: len(dups)] & fits[len(dups):]
    sims = np.sum(a * b, axis=1)[ok]
    out(f"positives: {len(dups)} duplicated prompts, {int(ok.sum())} fit the encoder window")
    out(f"  verbatim repeats: exact layer, cosine {float(np.min(np.sum(a * a, axis=1))):.4f}+")
    out(f"  reformatted repeats: cosine median {np.median(sims):.4f}, min {np.min(sims):.4f}")
    for t in THRESHOLDS:
        out(f"  threshold {t:.2f}: hit rate on reformatted repeats {np.mean(sims >= t):7.2%}")


def negatives(
    encoder: SentenceEncoder, cache: ResponseCache, by_domain: dict[str, list[str]],
    per_domain: int, rng: np.random.Generator,
) -> None:
    pair_sims: list[NDArray[np.float32]] = []
    nearest: list[NDArray[np.float32]] = []
    for prompts in by_domain.values():
        distinct = sorted(set(prompts))
        pick = rng.choice(len(distinct), size=min(per_domain, len(distinct)), replace=False)
        vectors, fits = embed(encoder, cache, [distinct[i] for i in pick])
        vectors = vectors[fits]
        sims = vectors @ vectors.T
        upper = np.triu_indices(len(vectors), k=1)
        pair_sims.append(sims[upper])
        np.fill_diagonal(sims, -1.0)
        nearest.append(sims.max(axis=1))
    pairs, near = np.concatenate(pair_sims), np.concatenate(nearest)
    out(f"negatives: {len(pairs)} same-subject pairs of distinct questions, "
        f"{len(near)} questions each against its subject's {per_domain - 1} others")
    out(f"  pair cosine median {np.median(pairs):.4f}, p99.9 {np.percentile(pairs, 99.9):.4f}, "
        f"max {pairs.max():.4f}")
    for t in THRESHOLDS:
        out(f"  threshold {t:.2f}: false-hit rate per pair {np.mean(pairs >= t):9.4%}, "
            f"per question vs its subject {np.mean(near >= t):7.2%}")


def hard_negatives(
    encoder: SentenceEncoder, cache: ResponseCache, by_domain: dict[str, list[str]]
) -> None:
    stems: dict[str, set[str]] = defaultdict(set)
    for prompts in by_domain.values():
        for p in prompts:
            stems[" ".join(p.split("\nA.")[0].split()).lower()].add(p)
    groups = [sorted(g) for g in stems.values() if len(g) > 1]
    sims: list[float] = []
    for g in groups:
        vectors, fits = embed(encoder, cache, g)
        v = vectors[fits]
        s = v @ v.T
        sims += [float(x) for x in s[np.triu_indices(len(v), k=1)]]
    arr = np.asarray(sims)
    out(f"hard negatives: {len(groups)} shared stems, {len(arr)} pairs with different options")
    for t in THRESHOLDS:
        out(f"  threshold {t:.2f}: false-hit rate {np.mean(arr >= t):7.2%}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--per-domain", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="two subjects that hold repeats, 10 questions each (a smoke run)")
    args = parser.parse_args(argv)
    encoder = SentenceEncoder.load()
    cache = ResponseCache(CacheSettings(max_entries=1), encoder)
    by_domain = load()
    if args.quick:
        repeats = [d for d, ps in by_domain.items() if len(ps) != len(set(ps))]
        by_domain = {d: by_domain[d] for d in repeats[:2]}
        args.per_domain = min(args.per_domain, 10)
    positives(encoder, cache, [p for ps in by_domain.values() for p in ps])
    negatives(encoder, cache, by_domain, args.per_domain, np.random.default_rng(args.seed))
    hard_negatives(encoder, cache, by_domain)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
