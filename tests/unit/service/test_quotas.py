"""Per-key windows of ``service.gateway.quotas`` in memory, on a fixed clock."""

from __future__ import annotations

import asyncio

import pytest

from service.gateway.quotas import QuotaLimits, Quotas, RateLimited


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_tokens_and_spend_are_charged_and_windows_reset() -> None:
    async def run() -> None:
        clock = Clock(120.0)
        quotas = Quotas(QuotaLimits(tokens_per_minute=100, daily_spend_usd=1.0), clock)
        await quotas.admit("a")
        await quotas.charge("a", 100, 0.5)
        with pytest.raises(RateLimited) as err:
            await quotas.admit("a")
        assert "tokens per minute" in str(err.value) and err.value.retry_after_s == 60
        await quotas.admit("b")  # another key is not affected
        clock.now = 180.0  # the next minute: tokens start again, spend does not
        await quotas.admit("a")
        await quotas.charge("a", 1, 0.5)
        with pytest.raises(RateLimited) as err:
            await quotas.admit("a")
        assert "USD per UTC day" in str(err.value)
        assert err.value.retry_after_s == 86_400 - 180

    asyncio.run(run())


def test_no_limits_admit_everything() -> None:
    async def run() -> None:
        quotas = Quotas(QuotaLimits())
        for _ in range(1000):
            await quotas.admit("a")
            await quotas.charge("a", 10**6, 100.0)

    asyncio.run(run())
