"""A consecutive-failure circuit breaker for asyncio callers, with an injectable clock.

Written here rather than taken from pybreaker/aiobreaker because those let every
concurrent caller through in half-open (we need exactly one probe), count failures
only through raised exceptions, and read the wall clock directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum

__all__ = ["BreakerOpen", "BreakerState", "CircuitBreaker", "Verdict"]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerOpen(Exception):
    """The breaker rejected a call; `retry_after` is seconds until it will admit a probe
    (0.0 when it is half-open and another caller holds the probe)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"circuit breaker open; retry in {retry_after:.1f}s")
        self.retry_after = retry_after


class Verdict:
    """Handed to the caller inside `CircuitBreaker.guard()` to mark the call as failed."""

    __slots__ = ("failed",)

    def __init__(self) -> None:
        self.failed = False

    def failure(self) -> None:
        self.failed = True


class CircuitBreaker:
    """Opens after `failure_threshold` consecutive failures; after `reset_timeout_sec`
    admits one probe, which closes it on success and reopens it on failure.

    Not thread-safe: meant for one event loop, where admission (synchronous) cannot
    interleave with another caller's."""

    def __init__(
        self,
        failure_threshold: int,
        reset_timeout_sec: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_timeout_sec < 0:
            raise ValueError("reset_timeout_sec must not be negative")
        self._threshold = failure_threshold
        self._reset_timeout = reset_timeout_sec
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_in_flight = False

    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._probe_in_flight or self.seconds_until_half_open() == 0.0:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def seconds_until_half_open(self) -> float:
        """0.0 unless open and still cooling down."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self._reset_timeout - self._clock())

    @contextmanager
    def guard(self) -> Iterator[Verdict]:
        """Admit one call or raise BreakerOpen. The call counts as a success unless
        `verdict.failure()` was called; one that ends in an exception without a verdict
        (e.g. cancellation) counts as neither but gives the probe slot back."""
        is_probe = self._admit()
        verdict = Verdict()
        try:
            yield verdict
        except BaseException:
            if verdict.failed:
                self._record(is_probe, ok=False)
            elif is_probe:
                self._probe_in_flight = False
            raise
        self._record(is_probe, ok=not verdict.failed)

    def _admit(self) -> bool:
        """True when the admitted call is the half-open probe."""
        state = self.state()
        if state is BreakerState.CLOSED:
            return False
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        raise BreakerOpen(self.seconds_until_half_open())

    def _record(self, is_probe: bool, *, ok: bool) -> None:
        if is_probe:
            self._probe_in_flight = False
            if ok:
                self._failures, self._opened_at = 0, None
            else:
                self._opened_at = self._clock()
        elif self._opened_at is None:
            # Late answers to calls admitted before the breaker opened are ignored.
            self._failures = 0 if ok else self._failures + 1
            if self._failures >= self._threshold:
                self._opened_at = self._clock()
