"""The pool-history ring: zero-filled samples, a bounded window, and a sampler that
survives store errors and stops when asked."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from app.domain import Status, StoreUnavailable
from app.history import PoolHistory
from app.store.base import SandboxStore
from tests.conftest import FakeClock

pytestmark = pytest.mark.unit


class CountingStore:
    """Answers count_by_status() with `counts`; fails while `down` is set."""

    def __init__(self) -> None:
        self.counts: dict[Status, int] = {Status.AVAILABLE: 3}
        self.down = False
        self.calls = 0
        self._called = asyncio.Event()

    async def count_by_status(self) -> dict[Status, int]:
        self.calls += 1
        self._called.set()
        if self.down:
            raise StoreUnavailable("store down")
        return dict(self.counts)

    async def next_call(self) -> None:
        """Wait until the sampler reads the counts once more."""
        self._called.clear()
        await asyncio.wait_for(self._called.wait(), timeout=5)


def history_over(store: CountingStore, clock: FakeClock, **kwargs: float) -> PoolHistory:
    return PoolHistory(cast(SandboxStore, store), clock, **kwargs)


async def test_a_sample_has_every_status_zero_filled(clock: FakeClock) -> None:
    history = history_over(CountingStore(), clock)
    sample = await history.sample()
    assert sample.at == int(clock.now)
    assert sample.counts == {str(s): (3 if s is Status.AVAILABLE else 0) for s in Status}
    assert history.samples() == [sample]


async def test_the_ring_keeps_one_window_and_filters_by_age(clock: FakeClock) -> None:
    store = CountingStore()
    history = history_over(store, clock, interval_sec=60, window_sec=600)
    for minute in range(30):
        store.counts = {Status.ALLOCATED: minute}
        await history.sample()
        clock.advance(60)
    kept = history.samples()
    assert [s.counts["allocated"] for s in kept] == list(range(20, 30))  # the last 10 min
    assert [s.counts["allocated"] for s in history.samples(150)] == [28, 29]
    assert history.samples(10_000) == kept  # never more than the window


@pytest.mark.parametrize(("interval", "window"), [(0, 60), (-1, 60), (120, 60)],
                         ids=["zero-interval", "negative-interval", "window-shorter"])
def test_a_nonsense_cadence_is_refused(clock: FakeClock, interval: float, window: float) -> None:
    with pytest.raises(ValueError):
        history_over(CountingStore(), clock, interval_sec=interval, window_sec=window)


async def test_the_sampler_outlives_store_errors_and_stops(clock: FakeClock) -> None:
    store = CountingStore()
    history = history_over(store, clock, interval_sec=0.01, window_sec=60)
    store.down = True
    history.start()
    history.start()  # idempotent: still one sampler
    for _ in range(3):
        await store.next_call()
    assert history.samples() == []
    store.down = False
    await store.next_call()
    assert len(history.samples()) == 1
    await history.stop()
    calls = store.calls
    await asyncio.sleep(0.05)
    assert store.calls == calls  # stopped means stopped
    await history.stop()  # and stopping twice is harmless
