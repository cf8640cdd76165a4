"""``MicroBatcher``: batches concurrent submissions, bounds size and queue, isolates failures."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from router_model.errors import ModelNotReady, Overloaded
from service.router.batcher import BatchConfig, MicroBatcher

UNLUCKY = 1013


class Scorer:
    """Doubles numbers slowly enough for a queue to build; fails on negative numbers."""

    def __init__(self, delay_s: float = 0.02) -> None:
        self.delay_s = delay_s
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()

    def __call__(self, items: list[int]) -> list[int | Exception]:
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        if UNLUCKY in items:
            raise RuntimeError("unlucky batch")
        time.sleep(self.delay_s)
        return [ValueError(f"negative {i}") if i < 0 else 2 * i for i in items]


def config(max_size: int = 8, max_wait_s: float = 0.005, max_queue: int = 64) -> BatchConfig:
    return BatchConfig(max_size=max_size, max_wait_s=max_wait_s, max_queue=max_queue)


async def _submit_all(batcher: MicroBatcher[int, int], items: Sequence[int]) -> list[int]:
    async def one(i: int) -> int:
        return await batcher.submit([i])[0]

    return list(await asyncio.gather(*(one(i) for i in items)))


def test_concurrent_items_share_batches_on_the_worker_thread() -> None:
    scorer = Scorer()
    batcher: MicroBatcher[int, int] = MicroBatcher(scorer, config(max_size=8))

    async def main() -> list[int]:
        out = await _submit_all(batcher, range(20))
        await batcher.aclose()
        return out

    assert asyncio.run(main()) == [2 * i for i in range(20)]
    assert sum(len(b) for b in scorer.batches) == 20
    assert max(len(b) for b in scorer.batches) == 8 and len(scorer.batches) <= 5
    assert scorer.threads == {"tierwise-score_0"}


def test_a_lone_request_does_not_wait() -> None:
    scorer = Scorer(delay_s=0)
    batcher: MicroBatcher[int, int] = MicroBatcher(scorer, config(max_wait_s=1.0))

    async def main() -> float:
        start = time.perf_counter()
        for i in range(5):
            assert await batcher.submit([i])[0] == 2 * i
        await batcher.aclose()
        return time.perf_counter() - start

    assert asyncio.run(main()) < 0.5
    assert scorer.batches == [[0], [1], [2], [3], [4]]


def test_errors_reach_only_their_own_items_and_the_worker_survives() -> None:
    scorer = Scorer()
    batcher: MicroBatcher[int, int] = MicroBatcher(scorer, config())

    async def main() -> None:
        futures = batcher.submit([1, -2, 3])
        assert await futures[0] == 2 and await futures[2] == 6
        with pytest.raises(ValueError, match="negative -2"):
            await futures[1]
        with pytest.raises(RuntimeError, match="unlucky"):
            await batcher.submit([UNLUCKY])[0]
        assert await batcher.submit([4])[0] == 8
        await batcher.aclose()

    asyncio.run(main())


def test_full_queue_is_overloaded() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(Scorer(), config(max_queue=4))

    async def main() -> None:
        futures = batcher.submit([1, 2, 3])
        with pytest.raises(Overloaded):
            batcher.submit([4, 5])
        assert [await f for f in futures] == [2, 4, 6]
        await batcher.aclose()

    asyncio.run(main())


def test_inline_calls_run_on_the_callers_thread_when_idle() -> None:
    scorer = Scorer(delay_s=0)
    batcher: MicroBatcher[int, int] = MicroBatcher(scorer, config(), inline=lambda items: True)

    async def main() -> int:
        value = await batcher.submit([21])[0]
        await batcher.aclose()
        return value

    assert asyncio.run(main()) == 42
    assert scorer.threads == {threading.current_thread().name}


def test_try_inline_scores_one_item_as_a_batch_of_one_and_returns_its_error() -> None:
    scorer, sizes = Scorer(delay_s=0), []
    batcher: MicroBatcher[int, int] = MicroBatcher(
        scorer, config(), inline=lambda items: True, on_batch=sizes.append
    )
    assert batcher.try_inline(21) == 42
    failed = batcher.try_inline(-1)
    assert isinstance(failed, ValueError) and str(failed) == "negative -1"
    assert scorer.batches == [[21], [-1]] and sizes == [1, 1]
    assert scorer.threads == {threading.current_thread().name}


def test_try_inline_declines_what_inline_calls_costly() -> None:
    scorer = Scorer(delay_s=0)
    batcher: MicroBatcher[int, int] = MicroBatcher(scorer, config(), inline=lambda items: False)
    assert batcher.try_inline(21) is None
    assert scorer.batches == []


def test_try_inline_declines_while_a_batch_runs_or_items_wait() -> None:
    # only 0 is cheap: 1 and 2 queue up, and 0 must then wait its turn like them
    batcher: MicroBatcher[int, int] = MicroBatcher(
        Scorer(delay_s=0.2), config(max_size=1), inline=lambda items: items[0] == 0
    )

    async def main() -> list[int | Exception | None]:
        futures = batcher.submit([1, 2])
        seen = [batcher.try_inline(0)]  # both queued
        await asyncio.sleep(0.05)
        seen.append(batcher.try_inline(0))  # the first is being scored
        await asyncio.gather(*futures)
        seen.append(batcher.try_inline(0))
        await batcher.aclose()
        return seen

    assert asyncio.run(main()) == [None, None, 0]


def test_close_fails_queued_items() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(Scorer(delay_s=0.2), config(max_size=1))

    async def main() -> None:
        first, second = batcher.submit([1, 2])
        await asyncio.sleep(0.05)  # the first is being scored, the second waits
        await batcher.aclose()
        with pytest.raises(ModelNotReady):
            await second
        with pytest.raises(ModelNotReady):
            await first

    asyncio.run(main())


def test_serves_a_new_event_loop_once_idle() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(Scorer(delay_s=0), config())

    async def once(i: int) -> int:
        return await batcher.submit([i])[0]

    assert asyncio.run(once(1)) == 2
    assert asyncio.run(once(2)) == 4
