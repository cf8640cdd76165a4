"""The batch window's heartbeat: a lease is renewed while the block runs, and never after."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.gateway.batch.lease import kept


class Lease:
    """A lease in memory: ``renew`` records each renewal; ``held`` jobs, or an error."""

    def __init__(self, held: int = 2, error: Exception | None = None) -> None:
        self.held, self.error = held, error
        self.renewals: list[float] = []

    async def renew(self, until: float) -> int:
        self.renewals.append(until)
        if self.error is not None:
            raise self.error
        return self.held


def test_a_lease_is_renewed_while_the_work_runs_and_not_after() -> None:
    async def run() -> Lease:
        lease = Lease()
        async with kept(lease.renew, 0.09, "test"):
            await asyncio.sleep(0.2)  # over two lease lengths, renewed every 0.03 s
        after = len(lease.renewals)
        await asyncio.sleep(0.1)
        assert len(lease.renewals) == after  # stopped with the block
        return lease

    started = time.time()
    lease = asyncio.run(run())
    assert len(lease.renewals) >= 4
    assert all(until >= started + 0.09 for until in lease.renewals)  # now + lease_s each time


def test_a_lost_lease_stops_renewing_and_a_failing_store_is_retried() -> None:
    async def run(lease: Lease) -> None:
        async with kept(lease.renew, 0.09, "test"):
            await asyncio.sleep(0.15)

    lost = Lease(held=0)
    asyncio.run(run(lost))
    assert len(lost.renewals) == 1  # nothing left to hold: no more renewals
    failing = Lease(error=OSError("store away"))
    asyncio.run(run(failing))
    assert len(failing.renewals) >= 3  # each failure is logged and tried again


def test_the_block_raises_through_and_still_stops_the_heartbeat() -> None:
    async def run() -> Lease:
        lease = Lease()
        with pytest.raises(ValueError):
            async with kept(lease.renew, 0.09, "test"):
                raise ValueError("the upload failed")
        assert all(not t.get_name().startswith("lease ") for t in asyncio.all_tasks())
        return lease

    assert asyncio.run(run()).renewals == []
