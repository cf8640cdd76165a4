"""Fair share per client key: requests and tokens per minute, spend per UTC day (``limits:``).

Each tenant (``service.gateway.tenants.tenant_of``: a hash of the client key) has fixed windows:
the current minute for requests and tokens, the current UTC day for spend. A request is admitted
while its tenant is under every configured limit (``admit``, before any work: parsing,
tokenising, routing); its tokens and cost are charged when it is recorded (``charge``), so a
request that pushes a tenant over a limit is answered and the next one is refused. A refusal is
``RateLimited`` (429 with ``Retry-After``: the seconds until the window that is full ends, in
OpenAI's ``rate_limit_exceeded`` shape).

When the traffic store is PostgreSQL the counts are shared by every replica
(``service.store.quota_pg``: one atomic upsert per request); on SQLite they live in this
replica's memory, and with N replicas behind a balancer a key gets up to N times its limits.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import ClassVar

import psycopg

from router_model.errors import Overloaded
from router_model.traffic_schema import store_location
from service.gateway.config import LimitsConfig
from service.store.quota_pg import NO_LIMIT, PgQuotaCounts, Windows

logger = logging.getLogger(__name__)

_MINUTE = 60.0
_DAY = 86_400.0


class RateLimited(Overloaded):
    """A client key is over one of its limits (429, ``Retry-After``)."""

    code: ClassVar[str] = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, math.ceil(retry_after_s))


@dataclass(frozen=True)
class QuotaLimits:
    """Per-key limits (None: no limit)."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    daily_spend_usd: float | None = None

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.requests_per_minute, self.tokens_per_minute,
                                           self.daily_spend_usd))


def quota_limits(limits: LimitsConfig) -> QuotaLimits:
    """The per-key limits of the config's ``limits:`` section."""
    return QuotaLimits(limits.requests_per_minute, limits.tokens_per_minute,
                       limits.daily_spend_usd)


@dataclass
class _Usage:
    minute: int = -1
    requests: int = 0
    tokens: int = 0
    day: int = -1
    spend_usd: float = 0.0


@dataclass
class Quotas:
    """The per-tenant windows: in this replica's memory, or shared (``PgQuotaCounts``)."""

    limits: QuotaLimits
    clock: Callable[[], float] = time.time
    shared: PgQuotaCounts | None = None
    _usage: dict[str, _Usage] = field(default_factory=dict)

    def _current(self, tenant: str) -> tuple[_Usage, float]:
        now = self.clock()
        usage = self._usage.setdefault(tenant, _Usage())
        minute, day = int(now // _MINUTE), int(now // _DAY)
        if usage.minute != minute:
            usage.minute, usage.requests, usage.tokens = minute, 0, 0
        if usage.day != day:
            usage.day, usage.spend_usd = day, 0.0
        return usage, now

    def _windows(self, now: float) -> Windows:
        lim = self.limits
        return Windows(int(now // _MINUTE), int(now // _DAY),
                       lim.requests_per_minute or NO_LIMIT, lim.tokens_per_minute or NO_LIMIT)

    async def admit(self, tenant: str) -> None:
        """Count one request of ``tenant`` if it is under every limit. When the shared store is
        unreachable the request is admitted (availability first) and the failure logged.

        Raises:
            RateLimited: naming the limit that is full and when its window ends.
        """
        if not self.limits.any:
            return
        if self.shared is None:
            usage, now = self._current(tenant)
            self._check(now, usage.requests, usage.tokens, usage.spend_usd)
            usage.requests += 1
            return
        now = self.clock()
        w = self._windows(now)
        try:
            spent = await self.shared.spend(tenant, w.day) if self.limits.daily_spend_usd else 0.0
            self._check(now, 0, 0, spent)
            refused = await self.shared.admit(tenant, w)
        except psycopg.Error as exc:
            logger.warning("quota store unreachable, request admitted: %s", type(exc).__name__)
            return
        if refused is not None:
            self._check(now, *refused, spent)

    def _check(self, now: float, requests: int, tokens: int, spent: float) -> None:
        lim = self.limits
        minute_left = _MINUTE - now % _MINUTE
        if lim.requests_per_minute is not None and requests >= lim.requests_per_minute:
            raise RateLimited(f"rate limit reached: {lim.requests_per_minute} requests per "
                              "minute for this key", minute_left)
        if lim.tokens_per_minute is not None and tokens >= lim.tokens_per_minute:
            raise RateLimited(f"rate limit reached: {lim.tokens_per_minute} tokens per minute "
                              "for this key", minute_left)
        if lim.daily_spend_usd is not None and spent >= lim.daily_spend_usd:
            raise RateLimited(f"spend limit reached: {lim.daily_spend_usd:g} USD per UTC day "
                              "for this key", _DAY - now % _DAY)

    async def charge(self, tenant: str, tokens: int, cost_usd: float) -> None:
        """Add a recorded request's tokens and cost to ``tenant``'s windows."""
        if not self.limits.any:
            return
        if self.shared is not None:
            try:
                await self.shared.charge(tenant, self._windows(self.clock()), tokens, cost_usd)
            except psycopg.Error as exc:
                logger.warning("quota store unreachable, usage not counted: %s",
                               type(exc).__name__)
            return
        usage, _ = self._current(tenant)
        usage.tokens += tokens
        usage.spend_usd += cost_usd
        if len(self._usage) > 100_000:  # keys seen long ago: drop their stale windows
            stale = [t for t, u in self._usage.items() if u.minute != usage.minute]
            for t in stale:
                del self._usage[t]


async def open_quotas(limits: LimitsConfig, traffic_url: str, stack: AsyncExitStack) -> Quotas:
    """The gateway's quotas: shared through PostgreSQL when the traffic store is there.

    Raises:
        InvalidData: when the PostgreSQL store cannot be opened.
    """
    quotas = Quotas(quota_limits(limits))
    if quotas.limits.any and store_location(traffic_url)[0] == "postgres":
        shared = PgQuotaCounts(store_location(traffic_url)[1])
        await shared.open(int(time.time() // _DAY))
        stack.push_async_callback(shared.close)
        quotas.shared = shared
    return quotas
