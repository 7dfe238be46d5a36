"""Rate-limit counting for RATE_LIMIT_STORAGE_URI=memory://, inside the process.

`limits`' MemoryStorage, behind its strategies, cost ~16-20 µs per request for our two
budgets (key strings rebuilt per call, a lock and expiry bookkeeping per operation, two
operations per budget to get the headers' figures): a quarter of an allocation's CPU
(docs/performance.md). These counters implement the same three strategies, answer
allowed/remaining/reset in one step, and cost ~1 µs. Shared storages (redis://, …) keep
going through `limits`, whose network round trip dominates anyway.

Not thread-safe by design: memory:// budgets are checked on the event loop thread.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

from limits import RateLimitItem

__all__ = ["Count", "LocalCounter", "Strategy"]

Strategy = Literal["moving-window", "sliding-window-counter", "fixed-window"]
Count = tuple[bool, int, float]  # allowed, remaining after this request, reset (epoch s)
_Key = tuple[int, int, str]  # (amount, period in seconds, budget key)
_SWEEP_EVERY = 10_000  # hits between sweeps of keys whose windows have all passed


class LocalCounter:
    """One budget counter per (limit, key), for the configured strategy:

    - moving-window: no `period` holds more than `amount` admitted requests (a log of
      admission times per key, at most `amount` long); reset: when the oldest admission
      in the window leaves it;
    - fixed-window: `amount` per window, the window starting at its first request;
      reset: the window's end;
    - sliding-window-counter: the previous aligned window's count, weighted by how much
      of it still overlaps, plus the current one's (`limits`' formula); reset as
      `limits` computes it (the sooner of the previous window's next unit and the
      current window's end), except that it is never "now" at a window's exact start.
    """

    def __init__(self, strategy: Strategy, clock: Callable[[], float] = time.time) -> None:
        self._hit = {
            "moving-window": self._moving, "fixed-window": self._fixed,
            "sliding-window-counter": self._sliding,
        }[strategy]
        self._clock = clock
        self._logs: dict[_Key, deque[float]] = {}  # admission times, oldest first
        self._windows: dict[_Key, list[float]] = {}  # [count, end]
        self._counts: dict[tuple[int, int, str, int], int] = {}  # (*key, window index)
        self._hits = 0

    def hit(self, item: RateLimitItem, budget: str, key: str) -> Count:
        """Spend one unit of `item` for `key` of `budget` if there is one left."""
        now = self._clock()
        self._hits += 1
        if self._hits % _SWEEP_EVERY == 0:
            self._sweep(now)
        return self._hit((item.amount, item.get_expiry(), f"{budget}/{key}"), now)

    def _moving(self, key: _Key, now: float) -> Count:
        amount, period, _ = key
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = deque(maxlen=amount)
        horizon = now - period
        while log and log[0] <= horizon:
            log.popleft()
        allowed = len(log) < amount
        if allowed:
            log.append(now)
        return allowed, amount - len(log), log[0] + period if log else now + period

    def _fixed(self, key: _Key, now: float) -> Count:
        amount, period, _ = key
        window = self._windows.get(key)
        if window is None or window[1] <= now:
            window = self._windows[key] = [0, now + period]
        allowed = window[0] < amount
        if allowed:
            window[0] += 1
        return allowed, amount - int(window[0]), window[1]

    def _sliding(self, key: _Key, now: float) -> Count:
        amount, period, _ = key
        index = int(now // period)
        current = self._counts.get((*key, index), 0)
        previous = self._counts.get((*key, index - 1), 0)
        overlap = (1 - (now / period) % 1) * period  # seconds of the previous window still counted
        weighted = previous * overlap / period + current
        allowed = math.floor(weighted) + 1 <= amount
        if allowed:
            current += 1
            self._counts[(*key, index)] = current
            weighted += 1
        remaining = max(0, amount - math.floor(weighted))
        reset_in = math.inf
        if previous:
            reset_in = overlap % (period / previous)
        if current:  # its hits start to weigh less when it ends
            reset_in = min(reset_in, overlap)
        return allowed, remaining, now + (0 if reset_in == math.inf else reset_in)

    def _sweep(self, now: float) -> None:
        """Forget keys whose windows have all passed. Runs every _SWEEP_EVERY hits, so
        memory stays bounded by the keys seen between sweeps plus those still counting."""
        self._logs = {k: log for k, log in self._logs.items() if log and log[-1] > now - k[1]}
        self._windows = {k: w for k, w in self._windows.items() if w[1] > now}
        self._counts = {k: c for k, c in self._counts.items() if k[3] >= int(now // k[1]) - 1}
