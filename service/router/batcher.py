"""Micro-batching: concurrent requests gathered into one scoring call on one worker thread."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from router_model.errors import ModelNotReady, Overloaded

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class BatchConfig:
    """Bounds of the batcher: batch size, wait for a batch to fill, queued items."""

    max_size: int
    max_wait_s: float
    max_queue: int


@dataclass(frozen=True)
class _Job(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    enqueued: float


class MicroBatcher(Generic[T, R]):
    """Runs ``score(items) -> results`` on batches of concurrently submitted items.

    One batch runs at a time, on one dedicated thread, so the event loop stays free; a second
    concurrent batch would only contend with the first for the cores onnxruntime already uses.
    Items submitted while a batch runs queue up and form the next batch (at most ``max_size``).
    An item that finds the batcher idle runs at once, so a lone client pays no batching delay;
    only after a batch of more than one item (evidence of concurrency) does the worker wait up to
    ``max_wait_s`` for the next batch to fill, letting the clients just answered rejoin it.

    ``score`` returns one result or exception per item. When ``inline(items)`` says a call is
    cheap and the batcher is idle, it runs on the caller's thread: for hand-feature bundles the
    thread hop would cost as much as the scoring. The batcher serves one event loop at a time.
    """

    def __init__(
        self,
        score: Callable[[list[T]], list[R | Exception]],
        config: BatchConfig,
        *,
        inline: Callable[[Sequence[T]], bool] | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._score = score
        self._config = config
        self._inline = inline
        self._on_batch = on_batch
        self._queue: deque[_Job[T, R]] = deque()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tierwise-score")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._busy = False
        self._last_size = 0
        self._last_end = 0.0

    @property
    def depth(self) -> int:
        """Items waiting for a batch."""
        return len(self._queue)

    def try_inline(self, item: T) -> R | Exception | None:
        """Score one item on the caller's thread when ``submit`` would (idle batcher, ``inline``
        says it is cheap): its result or exception, or ``None`` when it must be submitted.

        ``submit`` without its future: for a single cheap item the future's creation, settling
        and reading cost about a tenth of the scoring itself. ``R`` must not include ``None``.
        """
        return self._run_batch([item])[0] if self._can_inline((item,)) else None

    def submit(self, items: Sequence[T]) -> list[asyncio.Future[R]]:
        """Queue items for scoring; returns one future per item. Call from the event loop.

        Raises:
            Overloaded: when the queue would exceed ``max_queue`` items.
        """
        loop = self._bind()
        if self._can_inline(items):
            return [_settled(loop, r) for r in self._run_batch(list(items))]
        if len(self._queue) + len(items) > self._config.max_queue:
            raise Overloaded(
                f"{len(self._queue)} prompts queued, limit {self._config.max_queue}; retry later"
            )
        now = loop.time()
        jobs = [_Job[T, R](item, loop.create_future(), now) for item in items]
        self._queue.extend(jobs)
        self._wakeup.set()
        return [j.future for j in jobs]

    async def aclose(self) -> None:
        """Stop the worker, fail queued items with ``ModelNotReady`` and release the thread."""
        if self._worker is not None and self._loop is asyncio.get_running_loop():
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        while self._queue:
            job = self._queue.popleft()
            if not job.future.done():
                job.future.set_exception(ModelNotReady("the service is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _can_inline(self, items: Sequence[T]) -> bool:
        return (not self._busy and not self._queue and self._inline is not None
                and self._inline(items))

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._worker is not None and not self._worker.done():
            return loop
        if self._loop is not None and self._loop is not loop and not self._loop.is_closed():
            if self._queue or self._busy:
                raise RuntimeError("this batcher is busy on another event loop")
            if self._worker is not None:
                self._loop.call_soon_threadsafe(self._worker.cancel)
        self._loop = loop
        self._wakeup = asyncio.Event()
        self._worker = loop.create_task(self._work(), name="tierwise-batcher")
        return loop

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self._last_size > 1:
                await self._fill(loop)
            jobs = self._take()
            if not jobs:
                continue
            self._busy = True
            try:
                results = await loop.run_in_executor(
                    self._executor, self._run_batch, [j.item for j in jobs]
                )
            except asyncio.CancelledError:
                _fail(jobs, ModelNotReady("the service is shutting down"))
                raise
            except Exception as exc:  # a bug in scoring: fail this batch, keep serving
                logger.exception("scoring a batch of %d failed", len(jobs))
                results = [exc] * len(jobs)
            finally:
                self._busy = False
            self._last_size = len(jobs)
            self._last_end = loop.time()
            for job, result in zip(jobs, results, strict=True):
                _settle(job.future, result)

    async def _fill(self, loop: asyncio.AbstractEventLoop) -> None:
        # counted from the later of the oldest item's arrival and the end of the last batch, so
        # that the clients that batch just answered can send their next request into this one
        deadline = max(self._queue[0].enqueued, self._last_end) + self._config.max_wait_s
        while len(self._queue) < self._config.max_size:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                return

    def _take(self) -> list[_Job[T, R]]:
        jobs: list[_Job[T, R]] = []
        while self._queue and len(jobs) < self._config.max_size:
            job = self._queue.popleft()
            if not job.future.done():  # done here means cancelled: its caller gave up
                jobs.append(job)
        return jobs

    def _run_batch(self, items: list[T]) -> list[R | Exception]:
        if self._on_batch is not None:
            self._on_batch(len(items))
        return self._score(items)


def _settle(future: asyncio.Future[R], result: R | Exception) -> None:
    if future.done():
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)


def _settled(loop: asyncio.AbstractEventLoop, result: R | Exception) -> asyncio.Future[R]:
    future: asyncio.Future[R] = loop.create_future()
    _settle(future, result)
    return future


def _fail(jobs: list[_Job[T, R]], exc: Exception) -> None:
    for job in jobs:
        _settle(job.future, exc)
