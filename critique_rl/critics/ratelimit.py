"""Per-minute budgets (requests, tokens) as asyncio token buckets.

A bucket holds one second's worth of budget (at least one unit) and refills continuously, so
requests are spread evenly instead of bursting a minute's budget at once. A request larger
than the bucket waits for a full bucket and leaves it in debt; later requests wait the debt off.

    >>> import asyncio
    >>> asyncio.run(RateLimiter(0).acquire(10**9))   # 0: unlimited, returns at once
"""

from __future__ import annotations

import asyncio
import time


class RateLimiter:
    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0                   # units per second
        self.capacity = max(self.rate, 1.0)
        self.level = self.capacity
        self.updated = time.monotonic()
        self._lock: asyncio.Lock | None = None

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    async def acquire(self, cost: float) -> None:
        """Wait until ``cost`` units may be spent, then spend them; callers are served in order."""
        if self.rate <= 0:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()             # created on the loop that uses it
        async with self._lock:
            self._refill()
            need = min(cost, self.capacity)
            if self.level < need:
                await asyncio.sleep((need - self.level) / self.rate)
                self._refill()
            self.level -= cost

    def settle(self, delta: float) -> None:
        """Correct a spent estimate once the real cost is known (negative ``delta`` refunds)."""
        if self.rate > 0:
            self.level = min(self.capacity, self.level - delta)
