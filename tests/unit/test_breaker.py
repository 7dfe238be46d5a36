"""The circuit breaker's state machine, driven by a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from app.providers.breaker import BreakerOpen, BreakerState, CircuitBreaker
from tests.conftest import FakeClock  # the shared `clock` fixture is one of these

pytestmark = pytest.mark.unit

RESET = 30.0


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=3, reset_timeout_sec=RESET, clock=clock)


def succeed(breaker: CircuitBreaker) -> None:
    with breaker.guard():
        pass


def fail(breaker: CircuitBreaker) -> None:
    with breaker.guard() as verdict:
        verdict.failure()


def trip(breaker: CircuitBreaker, times: int = 3) -> None:
    for _ in range(times):
        fail(breaker)
    assert breaker.state() is BreakerState.OPEN


def test_starts_closed_and_admits_calls(breaker: CircuitBreaker) -> None:
    assert breaker.state() is BreakerState.CLOSED
    succeed(breaker)
    assert breaker.state() is BreakerState.CLOSED


def test_opens_after_threshold_consecutive_failures(breaker: CircuitBreaker) -> None:
    fail(breaker)
    fail(breaker)
    assert breaker.state() is BreakerState.CLOSED
    fail(breaker)
    assert breaker.state() is BreakerState.OPEN


def test_a_success_resets_the_failure_count(breaker: CircuitBreaker) -> None:
    fail(breaker)
    fail(breaker)
    succeed(breaker)
    fail(breaker)
    fail(breaker)
    assert breaker.state() is BreakerState.CLOSED


def test_open_rejects_with_time_until_half_open(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(10)
    with pytest.raises(BreakerOpen) as rejected, breaker.guard():
        pytest.fail("an open breaker must not run the call")
    assert rejected.value.retry_after == pytest.approx(RESET - 10)
    assert breaker.seconds_until_half_open() == pytest.approx(RESET - 10)


def test_half_open_after_reset_timeout(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(RESET - 0.001)
    assert breaker.state() is BreakerState.OPEN
    clock.advance(0.001)
    assert breaker.state() is BreakerState.HALF_OPEN
    assert breaker.seconds_until_half_open() == 0.0


def test_half_open_admits_one_probe_and_rejects_the_rest(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    trip(breaker)
    clock.advance(RESET)
    with breaker.guard():
        assert breaker.state() is BreakerState.HALF_OPEN
        with pytest.raises(BreakerOpen) as rejected, breaker.guard():
            pytest.fail("a second probe must not run")
        assert rejected.value.retry_after == 0.0
    assert breaker.state() is BreakerState.CLOSED


def test_successful_probe_closes_and_clears_failures(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    trip(breaker)
    clock.advance(RESET)
    succeed(breaker)
    assert breaker.state() is BreakerState.CLOSED
    fail(breaker)
    fail(breaker)
    assert breaker.state() is BreakerState.CLOSED  # the count started again from zero


def test_failed_probe_reopens_for_a_full_reset_timeout(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    trip(breaker)
    clock.advance(RESET + 5)
    fail(breaker)
    assert breaker.state() is BreakerState.OPEN
    assert breaker.seconds_until_half_open() == pytest.approx(RESET)


def test_probe_failing_by_exception_with_a_verdict_reopens(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    trip(breaker)
    clock.advance(RESET)
    with pytest.raises(TimeoutError), breaker.guard() as verdict:
        verdict.failure()
        raise TimeoutError
    assert breaker.state() is BreakerState.OPEN


def test_abandoned_probe_frees_the_slot_without_a_verdict(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    trip(breaker)
    clock.advance(RESET)
    with pytest.raises(asyncio.CancelledError), breaker.guard():
        raise asyncio.CancelledError
    assert breaker.state() is BreakerState.HALF_OPEN
    succeed(breaker)  # the next caller becomes the probe
    assert breaker.state() is BreakerState.CLOSED


def test_late_answers_from_before_opening_are_ignored(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    with breaker.guard():  # admitted while closed, answers after the breaker opened
        trip(breaker)
    assert breaker.state() is BreakerState.OPEN
    clock.advance(RESET / 2)
    assert breaker.seconds_until_half_open() == pytest.approx(RESET / 2)


def test_threshold_of_one_opens_on_first_failure(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout_sec=RESET, clock=clock)
    fail(breaker)
    assert breaker.state() is BreakerState.OPEN


@pytest.mark.parametrize(("threshold", "reset"), [(0, 1.0), (1, -1.0)])
def test_rejects_nonsense_settings(threshold: int, reset: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=threshold, reset_timeout_sec=reset)
