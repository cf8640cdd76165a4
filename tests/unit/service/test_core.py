"""``RouteService`` in process: router parity, limits, batching, deadlines, reload."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from router_model.chat import ChatMessage, ContentPart, scored_text
from router_model.errors import (
    ArtifactMismatch,
    InvalidPrompt,
    ModelNotReady,
    Overloaded,
    PromptTooLarge,
)
from router_model.policy import Policy
from router_model.router import ComplexityRouter
from router_model.settings import ServiceSettings
from service.router.core import INLINE_MAX_CHARS, RouteInput, RouteService
from service.shared.errors import DeadlineExceeded, TiersChanged

REPO = Path(__file__).resolve().parents[3]
T = TypeVar("T")


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    doc = json.loads((REPO / "data" / "fixtures" / "golden_prompts.json").read_text("utf-8"))
    return [item["prompt"] for item in doc]


def run(service: RouteService, coro: Coroutine[Any, Any, T]) -> T:
    async def main() -> T:
        try:
            return await coro
        finally:
            await service.aclose()

    return asyncio.run(main())


def test_decisions_equal_the_routers(fast_bundle: Path, prompts: list[str]) -> None:
    service = RouteService.from_path(ServiceSettings(), fast_bundle)
    router = ComplexityRouter.from_artifact(fast_bundle)
    policy = Policy(quality=0.7)
    results = run(service, service.route_batch(
        [RouteInput(prompt=p, policy=policy) for p in prompts], transport="test"))
    assert [r.decision for r in results] == [router.route(p, policy=policy) for p in prompts]
    assert len({r.decision_id for r in results}) == len(prompts)


def test_short_prompts_are_scored_inline_with_the_routers_decision(
    fast_bundle: Path, prompts: list[str]
) -> None:
    service = RouteService.from_path(ServiceSettings(), fast_bundle)
    router = ComplexityRouter.from_artifact(fast_bundle)
    short = [p for p in prompts if len(p) <= INLINE_MAX_CHARS]
    policy = Policy(quality=0.6)

    async def main() -> list[Any]:
        return [await service.route(RouteInput(prompt=p, policy=policy), transport="test")
                for p in short]

    results = run(service, main())
    assert short and [r.decision for r in results] == [router.route(p, policy=policy)
                                                        for p in short]
    # each one a batch of one, on the caller's thread: counted like any other batch
    registry = service.metrics.registry
    assert registry.get_sample_value("tierwise_batch_size_count") == len(short)
    assert registry.get_sample_value("tierwise_batch_size_sum") == len(short)


def test_decisions_are_counted_after_the_caller_has_them(
    fast_bundle: Path, prompts: list[str]
) -> None:
    service = RouteService.from_path(ServiceSettings(), fast_bundle)
    registry = service.metrics.registry

    def counted() -> float:
        return sum(registry.get_sample_value("tierwise_decisions_total", {"tier": t.name,
                   "transport": "test"}) or 0.0 for t in service.tiers)

    async def main() -> list[float]:
        seen = []
        await service.route(RouteInput(prompt=prompts[0]), transport="test")
        seen.append(counted())  # not yet: the record waits for the loop's next turn
        await asyncio.sleep(0)
        seen.append(counted())
        await service.route_batch([RouteInput(prompt=p) for p in prompts[1:4]], transport="test")
        seen.append(counted())
        await asyncio.sleep(0)
        seen.append(counted())
        return seen

    assert run(service, main()) == [0.0, 1.0, 1.0, 4.0]


def test_messages_are_scored_by_scored_text(fast_bundle: Path, prompts: list[str]) -> None:
    service = RouteService.from_path(ServiceSettings(), fast_bundle)
    chat = (ChatMessage("system", (ContentPart("text", "Answer briefly."),)),
            ChatMessage("user", (ContentPart("text", prompts[1]),)))

    async def both() -> tuple[Any, Any]:
        a = await service.route(RouteInput(messages=chat), transport="test")
        b = await service.route(RouteInput(prompt=scored_text(chat)), transport="test")
        return a, b

    by_chat, by_text = run(service, both())
    assert by_chat.decision == by_text.decision


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (RouteInput(), InvalidPrompt),
        (RouteInput(prompt=""), InvalidPrompt),
        (RouteInput(prompt="hi", messages=(ChatMessage("user", ()),)), InvalidPrompt),
        (RouteInput(prompt="hi", policy=Policy(quality=2.0)), InvalidPrompt),
        (RouteInput(prompt="hi", policy=Policy(min_tier="nope")), InvalidPrompt),
        (RouteInput(prompt="x" * 101), PromptTooLarge),
    ],
)
def test_limits(fast_bundle: Path, request_: RouteInput, error: type[Exception]) -> None:
    service = RouteService.from_path(ServiceSettings(max_prompt_chars=100), fast_bundle)
    with pytest.raises(error):
        run(service, service.route(request_, transport="test"))


def test_without_a_bundle_nothing_is_ready() -> None:
    service = RouteService(ServiceSettings())
    assert not service.ready
    with pytest.raises(ModelNotReady):
        run(service, service.route(RouteInput(prompt="hi"), transport="test"))
    with pytest.raises(ModelNotReady):
        assert service.tiers


def test_concurrent_requests_are_batched_and_a_bad_one_fails_alone(
    fast_bundle: Path, prompts: list[str]
) -> None:
    service = RouteService.from_path(ServiceSettings(batch_max_wait_ms=5), fast_bundle)
    long = [p for p in prompts if len(p) > INLINE_MAX_CHARS][0]
    inputs = [RouteInput(prompt=long + f" ({i})") for i in range(12)]
    inputs[5] = RouteInput(prompt=long, policy=Policy(max_tier="nope"))

    async def main() -> list[Any]:
        calls = [service.route(i, transport="test") for i in inputs]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    results = run(service, main())
    assert isinstance(results[5], InvalidPrompt)
    assert all(not isinstance(r, Exception) for i, r in enumerate(results) if i != 5)
    batches = service.metrics.registry.get_sample_value("tierwise_batch_size_count")
    assert batches is not None and batches < 11


def test_deadline_and_overload(fast_bundle: Path, prompts: list[str]) -> None:
    long = [p for p in prompts if len(p) > INLINE_MAX_CHARS][0]
    hasty = RouteService.from_path(ServiceSettings(request_timeout_s=1e-9), fast_bundle)
    with pytest.raises(DeadlineExceeded):
        run(hasty, hasty.route(RouteInput(prompt=long), transport="test"))
    small = RouteService.from_path(ServiceSettings(max_queue=2), fast_bundle)
    with pytest.raises(Overloaded):
        run(small, small.route_batch([RouteInput(prompt=long)] * 3, transport="test"))


def test_reload_swaps_or_keeps_the_old_bundle(fast_bundle: Path, tmp_path: Path) -> None:
    service = RouteService.from_path(ServiceSettings(), fast_bundle)
    old = service.manifest.model_version
    with pytest.raises(ArtifactMismatch):
        run(service, service.reload(tmp_path / "missing"))
    assert service.manifest.model_version == old
    copy = shutil.copytree(fast_bundle, tmp_path / "copy")
    manifest = json.loads((copy / "manifest.json").read_text("utf-8"))
    (copy / "manifest.json").write_text(json.dumps({**manifest, "name": "v2"}), "utf-8")
    assert run(service, service.reload(copy)) == old
    assert service.manifest.model_version.startswith("v2:")


def test_watch_reloads_a_changed_bundle_and_survives_a_bad_one(
    fast_bundle: Path, tmp_path: Path
) -> None:
    bundle = shutil.copytree(fast_bundle, tmp_path / "watched")
    service = RouteService.from_path(ServiceSettings(), bundle)
    manifest = json.loads((bundle / "manifest.json").read_text("utf-8"))

    def reloads(outcome: str) -> float:
        value = service.metrics.registry.get_sample_value(
            "tierwise_reloads_total", {"outcome": outcome})
        return value or 0.0

    async def wait_for(outcome: str) -> str:
        for _ in range(300):
            await asyncio.sleep(0.01)
            if reloads(outcome):
                break
        return service.manifest.model_version

    async def main() -> tuple[str, str]:
        watcher = asyncio.create_task(service.watch(bundle, 0.01))
        await asyncio.sleep(0.05)
        (bundle / "manifest.json").write_text(json.dumps({**manifest, "name": "bad",
                                                          "feature_version": 999}), "utf-8")
        bad = await wait_for("refused")
        (bundle / "manifest.json").write_text(json.dumps({**manifest, "name": "v3"}), "utf-8")
        good = await wait_for("ok")
        watcher.cancel()
        return bad, good

    bad, good = run(service, main())
    assert bad.startswith(manifest["name"] + ":") and good.startswith("v3:")


def with_tier_names(manifest: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """A manifest whose tiers are renamed (prices and models kept): still a valid bundle."""
    tiers = [{**t, "name": n} for t, n in zip(manifest["tiers"], names, strict=True)]
    return {**manifest, "tiers": tiers, "classes": names}


def test_reload_and_watch_refuse_other_tier_names(fast_bundle: Path, tmp_path: Path) -> None:
    bundle = shutil.copytree(fast_bundle, tmp_path / "watched")
    service = RouteService.from_path(ServiceSettings(), bundle)
    served, names = service.manifest.model_version, [t.name for t in service.tiers]
    manifest = json.loads((bundle / "manifest.json").read_text("utf-8"))
    others = {"renamed": ["small", "large"], "reordered": names[::-1]}
    for dest, tier_names in others.items():
        copy = shutil.copytree(fast_bundle, tmp_path / dest)
        doc = with_tier_names({**manifest, "name": dest}, tier_names)
        (copy / "manifest.json").write_text(json.dumps(doc), "utf-8")

    def refused() -> float:
        value = service.metrics.registry.get_sample_value(
            "tierwise_reloads_total", {"outcome": "refused"})
        return value or 0.0

    async def main() -> None:
        for dest in others:
            with pytest.raises(TiersChanged, match="changing tiers needs a restart"):
                await service.reload(tmp_path / dest)
        watcher = asyncio.create_task(service.watch(bundle, 0.01))
        await asyncio.sleep(0.05)
        doc = with_tier_names({**manifest, "name": "v4"}, ["small", "large"])
        (bundle / "manifest.json").write_text(json.dumps(doc), "utf-8")
        for _ in range(300):
            await asyncio.sleep(0.01)
            if refused() == 3:
                break
        watcher.cancel()

    run(service, main())
    assert refused() == 3
    assert service.manifest.model_version == served
    assert [t.name for t in service.tiers] == names


def test_loading_a_first_bundle_makes_the_service_ready(fast_bundle: Path) -> None:
    service = RouteService(ServiceSettings())
    seen: list[bool] = []

    async def listener(ready: bool) -> None:
        seen.append(ready)

    service.add_readiness_listener(listener)

    async def main() -> None:
        await service.reload(fast_bundle)
        await service.drain()

    run(service, main())
    assert seen == [True, False] and service.draining and not service.ready
