"""The serving processes' garbage-collector settings (app/gc_tuning.py)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from app.gc_tuning import YOUNG_THRESHOLD, settle_heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_settle_heap_freezes_start_up_objects_and_raises_the_young_threshold(
    restored_gc: None,
) -> None:
    gc.unfreeze()
    built_at_start_up = [[index] for index in range(1000)]
    _, middle, old = gc.get_threshold()

    settle_heap()

    assert gc.get_freeze_count() >= len(built_at_start_up)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, middle, old)


def test_cycles_made_after_settling_are_still_collected_automatically(
    restored_gc: None,
) -> None:
    settle_heap()
    gc.collect()  # an empty young generation to start from

    class Node:
        partner: object

    first, second = Node(), Node()
    first.partner, second.partner = second, first
    probe = weakref.ref(first)
    del first, second
    assert probe() is not None  # reference counting alone never frees a cycle

    churn = [[index] for index in range(YOUNG_THRESHOLD + 1)]  # crosses the threshold

    assert probe() is None, "no young collection ran"
    assert len(churn) > YOUNG_THRESHOLD
