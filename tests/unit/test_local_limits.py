"""The in-process rate-limit counters, strategy by strategy, on a controlled clock, and
the `limits` adapter used for shared storages (run here on `limits`' own memory storage,
since CI has no redis)."""

from __future__ import annotations

import time

import pytest
from limits import parse
from slowapi import Limiter
from slowapi.util import get_remote_address

from app.api.local_limits import LocalCounter, Strategy
from app.api.ratelimit import LimitsCounter

pytestmark = pytest.mark.unit

T0 = 1_800_000_000.0  # a multiple of 10 s: aligned windows start here


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def spend(counter: LocalCounter, limit: str, times: int, key: str = "k") -> list[bool]:
    item = parse(limit)
    return [counter.hit(item, "ip", key)[0] for _ in range(times)]


@pytest.mark.parametrize("strategy", ["moving-window", "fixed-window", "sliding-window-counter"])
def test_every_strategy_admits_the_budget_then_refuses(strategy: Strategy) -> None:
    clock = Clock()
    counter = LocalCounter(strategy, clock)
    item = parse("3/10 seconds")
    answers = [counter.hit(item, "ip", "a") for _ in range(4)]
    assert [(allowed, left) for allowed, left, _ in answers] == [
        (True, 2), (True, 1), (True, 0), (False, 0)]
    assert all(T0 < reset <= T0 + 10 for _, _, reset in answers)
    assert counter.hit(item, "ip", "b")[:2] == (True, 2)  # keys are separate budgets
    assert counter.hit(item, "principal", "a")[:2] == (True, 2)  # and so are budgets


def test_moving_window_frees_each_unit_one_period_after_it_was_spent() -> None:
    clock = Clock()
    counter = LocalCounter("moving-window", clock)
    item = parse("2/10 seconds")
    assert counter.hit(item, "ip", "k") == (True, 1, T0 + 10)
    clock.now = T0 + 4
    assert counter.hit(item, "ip", "k") == (True, 0, T0 + 10)
    clock.now = T0 + 9.9
    assert counter.hit(item, "ip", "k") == (False, 0, T0 + 10)  # Reset told the truth
    clock.now = T0 + 10
    assert counter.hit(item, "ip", "k") == (True, 0, T0 + 14)  # the first unit came back
    assert counter.hit(item, "ip", "k")[0] is False  # the second not yet


def test_moving_window_allows_the_burst_then_the_sustained_rate() -> None:
    """The README's promise for 200/4 seconds: a burst of 200, then 50/s."""
    clock = Clock()
    counter = LocalCounter("moving-window", clock)
    assert spend(counter, "200/4 seconds", 201) == [True] * 200 + [False]
    admitted = 0
    for step in range(1, 41):  # the next 4 s, every 0.1 s, 10 requests each time
        clock.now = T0 + 4 + step / 10
        admitted += sum(spend(counter, "200/4 seconds", 10))
    assert admitted == 200  # no 4 s stretch admits more than 200


def test_fixed_window_starts_at_its_first_request() -> None:
    clock = Clock()
    clock.now = T0 + 3
    counter = LocalCounter("fixed-window", clock)
    assert spend(counter, "2/10 seconds", 3) == [True, True, False]
    clock.now = T0 + 12.9
    assert counter.hit(parse("2/10 seconds"), "ip", "k") == (False, 0, T0 + 13)
    clock.now = T0 + 13
    assert counter.hit(parse("2/10 seconds"), "ip", "k") == (True, 1, T0 + 23)


def test_sliding_window_counter_weighs_the_previous_window() -> None:
    clock = Clock()
    counter = LocalCounter("sliding-window-counter", clock)
    assert spend(counter, "10/10 seconds", 11) == [True] * 10 + [False]
    clock.now = T0 + 15  # half of the previous window still counts: 5 of its 10
    assert spend(counter, "10/10 seconds", 6) == [True] * 5 + [False]
    clock.now = T0 + 25  # now the 5 of the previous window weigh 2.5
    allowed, remaining, reset = counter.hit(parse("10/10 seconds"), "ip", "k")
    assert (allowed, remaining) == (True, 7)
    assert T0 + 25 < reset <= T0 + 30


def test_idle_keys_are_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.api.local_limits._SWEEP_EVERY", 5)
    for strategy in ("moving-window", "fixed-window", "sliding-window-counter"):
        clock = Clock()
        counter = LocalCounter(strategy, clock)  # type: ignore[arg-type]
        spend(counter, "9/10 seconds", 4, key="idle")
        clock.now = T0 + 25  # every window of "idle" has passed
        spend(counter, "9/10 seconds", 1, key="busy")
        tracked = {k[2] for k in (*counter._logs, *counter._windows, *counter._counts)}
        assert tracked == {"ip/busy"}, strategy


@pytest.mark.parametrize("strategy", ["moving-window", "fixed-window", "sliding-window-counter"])
def test_the_limits_adapter_answers_the_same_figures(strategy: str) -> None:
    counter = LimitsCounter(Limiter(key_func=get_remote_address, strategy=strategy,
                                    storage_uri="memory://"))
    item = parse("3/minute")
    started = time.time()
    answers = [counter.hit(item, "ip", "a") for _ in range(4)]
    assert [(allowed, left) for allowed, left, _ in answers] == [
        (True, 2), (True, 1), (True, 0), (False, 0)]
    assert all(started <= reset <= time.time() + 60 for _, _, reset in answers)
