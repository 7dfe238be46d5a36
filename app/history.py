"""Pool counts over the last hours, for the dashboard's chart.

An in-memory ring of samples per replica, fed by a sampler task that reads
`store.count_by_status()`. Every replica reads the same store, so any replica's ring
tells the same story from the moment it started; nothing is persisted, and a restart
starts an empty chart. That is the trade: no new table or store verb for a chart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from app.domain import Clock, Status
from app.store.base import SandboxStore

__all__ = ["PoolHistory", "Sample"]

log = logging.getLogger("broker.history")


@dataclass(frozen=True, slots=True)
class Sample:
    """Counts by status (every status present, zero-filled) at epoch second `at`."""

    at: int
    counts: Mapping[str, int]


class PoolHistory:
    """A bounded ring of samples taken every `interval_sec`, covering `window_sec`.

    `sample()` takes one sample now (the sampler calls it; tests may too);
    `start()`/`stop()` run the sampler from the app's lifespan.
    """

    def __init__(
        self,
        store: SandboxStore,
        clock: Clock,
        *,
        interval_sec: float = 60.0,
        window_sec: float = 6 * 3600.0,
    ) -> None:
        if interval_sec <= 0 or window_sec < interval_sec:
            raise ValueError("need 0 < interval_sec <= window_sec")
        self._store = store
        self._clock = clock
        self.interval_sec = interval_sec
        self.window_sec = window_sec
        # One extra slot so a full window still has a sample at its left edge.
        self._samples: deque[Sample] = deque(maxlen=math.ceil(window_sec / interval_sec) + 1)
        self._task: asyncio.Task[None] | None = None

    async def sample(self) -> Sample:
        """Read the counts now and keep them. Raises what the store raises."""
        counts = await self._store.count_by_status()
        sample = Sample(int(self._clock()), {str(s): counts.get(s, 0) for s in Status})
        self._samples.append(sample)
        return sample

    def samples(self, window_sec: float | None = None) -> list[Sample]:
        """Samples no older than `window_sec` (capped at the ring's window), oldest first."""
        window = self.window_sec if window_sec is None else min(window_sec, self.window_sec)
        since = self._clock() - window
        return [s for s in self._samples if s.at >= since]

    def start(self) -> None:
        """Start the sampler (idempotent); its first sample is taken at once."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="pool-history")

    async def stop(self) -> None:
        """Cancel the sampler and wait for it, so shutdown never leaves it running."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            try:
                await self.sample()
            except Exception:  # a missed sample is a gap in a chart, never a dead sampler
                log.warning("pool history sample failed", exc_info=True)
            await asyncio.sleep(self.interval_sec)
