"""Event ids: time first, then a per-process prefix and a counter; unique, ordered
within a process, and different in a forked child."""

from __future__ import annotations

import itertools
import os
import re

from app.events import EventDraft, EventType, stamp
from tests.conftest import make_sandboxes

SANDBOX = make_sandboxes(1)[0]


def _id(at: float = 1_700_000_000.123) -> str:
    return stamp(EventDraft(EventType.ALLOCATED, "track:x", at), SANDBOX).event_id


def test_ids_have_the_documented_shape_and_sort_by_time() -> None:
    assert re.fullmatch(r"1700000000123-[0-9a-f]{16}", _id())
    assert _id(1_700_000_000.5) < _id(1_700_000_001.0) < _id(1_700_000_002.0)


def test_ids_of_one_process_are_unique_and_in_creation_order() -> None:
    ids = [_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    # In creation order, but for at most one wrap of the 32-bit counter (random start).
    assert sum(earlier > later for earlier, later in itertools.pairwise(ids)) <= 1


def test_a_forked_child_draws_a_new_prefix() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report one id and leave without running pytest's teardown
        os.write(write, _id().encode())
        os._exit(0)
    os.close(write)
    try:
        child = os.read(read, 100).decode()
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    parent = _id()
    assert child and child[14:22] != parent[14:22]
