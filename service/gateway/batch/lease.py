"""The batch window's heartbeat: a replica renews its lease on jobs while it still works on them.

A claim (queued jobs being uploaded as a batch file) or a poll (a batch's results being read and
settled) holds for ``lease_s``; past it another replica takes the work over, which is right for a
replica that died and wrong for one that is merely slow: it sent every slow upload again. So the
lease is renewed every ``lease_s / RENEWALS_PER_LEASE`` for as long as the work runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

logger = logging.getLogger(__name__)

#: Renewals per lease: two in a row may fail (the store briefly away) before the lease lapses.
RENEWALS_PER_LEASE = 3

#: ``renew(until)``: extend the lease to ``until``; returns how many jobs it still holds.
Renew = Callable[[float], Awaitable[int]]


@asynccontextmanager
async def kept(renew: Renew, lease_s: float, what: str) -> AsyncIterator[None]:
    """Renew a lease in the background until the block ends (or the lease is found lost).

    The caller still checks the lease itself before an irreversible step: a renewal may come
    late. Why the renewing task is stopped and awaited, never cancelled mid-statement: a renewal
    that lands after the caller's next store call would overwrite it (a poll's release time).
    """
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(_renew(renew, lease_s, what, stop),
                                                  name=f"lease {what}")
    try:
        yield
    finally:
        stop.set()
        # at most one renewal is in flight; a store that hangs past a lease is cut off
        _, pending = await asyncio.wait([task], timeout=lease_s)
        for late in pending:
            late.cancel()


async def _renew(renew: Renew, lease_s: float, what: str, stop: asyncio.Event) -> None:
    while True:
        try:
            await asyncio.wait_for(stop.wait(), lease_s / RENEWALS_PER_LEASE)
            return
        except TimeoutError:
            pass
        try:
            held = await renew(time.time() + lease_s)
        except Exception:  # the store may answer the next renewal, before the lease lapses
            logger.warning("lease on %s not renewed; trying again", what, exc_info=True)
            continue
        if not held:  # lost, or the work is done: the caller checks and says which
            logger.debug("lease on %s holds no jobs any more", what)
            return
