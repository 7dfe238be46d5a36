"""The SandboxStore event-log contract on every backend: an event commits with its
change or not at all, timelines and the feed page without skips or repeats,
retention purges by age, checkpoints persist.

Events are stamped in the past (the DynamoDB feed hands out settled events only).
"""

from __future__ import annotations

import time

import pytest

from app.domain import InvalidInput, Status
from app.events import Event, EventDraft, EventType
from app.store.base import ClaimOutcome, SandboxStore, Transition
from tests.backends.dynamo import TEST_CURSORS
from tests.contract.test_store_contract import HOUR, NOW, lease, make

pytestmark = pytest.mark.integration

E = EventType


def draft(kind: EventType, at: float, reason: str | None = None) -> EventDraft:
    return EventDraft(kind, "track:test", at, reason)


async def timeline(store: SandboxStore, sandbox_id: str, limit: int = 100,
                   types: frozenset[EventType] | None = None) -> list[Event]:
    events: list[Event] = []
    cursor: str | None = None
    while True:
        page = await store.list_events(sandbox_id, types, cursor, limit)
        events += page.events
        if page.next_cursor is None:
            return events
        cursor = page.next_cursor


async def feed(store: SandboxStore, cursor: str | None, limit: int,
               types: frozenset[EventType] | None = None) -> tuple[list[Event], str]:
    """The feed from `cursor` to its current end, and the cursor to resume from."""
    events: list[Event] = []
    while True:
        page = await store.list_events(None, types, cursor, limit)
        assert page.next_cursor is not None  # a feed consumer can always resume
        cursor = page.next_cursor
        events += page.events
        if not page.events:
            return events, cursor


async def test_events_commit_with_their_change_or_not_at_all(store: SandboxStore) -> None:
    base = time.time() - 600
    a, b = make(2)
    assert await store.add([a, b], draft(E.SYNCED, base)) == 2
    assert await store.add([a], draft(E.SYNCED, base + 1)) == 0  # not new: no event
    claim = await store.claim([a], lease("owner-1"), draft(E.ALLOCATED, base + 2))
    assert claim.outcome is ClaimOutcome.CLAIMED
    again = await store.claim([b], lease("owner-1"), draft(E.ALLOCATED, base + 3))
    assert again.outcome is ClaimOutcome.OWNER_HAS_LEASE
    taken = await store.claim([a], lease("owner-2"), draft(E.ALLOCATED, base + 3.5))
    assert taken.outcome is ClaimOutcome.CONFLICT
    extend = Transition(a.sandbox_id, Status.ALLOCATED, Status.ALLOCATED, owner="owner-1",
                        expected_expires_at=NOW + HOUR, changes={"expires_at": NOW + 2 * HOUR},
                        event=draft(E.EXTENDED, base + 4, "+3600s"))
    assert await store.transition(extend, NOW + 1) is not None
    assert await store.transition(extend, NOW + 2) is None  # stale: no event
    released = await store.transition(
        Transition(a.sandbox_id, Status.ALLOCATED, Status.PENDING_DELETION, owner="owner-1",
                   event=draft(E.RELEASED, base + 5)), NOW + 3)
    assert released is not None
    recorded = await store.record_event(released, draft(E.ADMIN_ACTION, base + 6, "note"))
    assert not await store.remove(b.sandbox_id, Status.STALE, draft(E.DELETED, base + 7))
    assert await store.remove(b.sandbox_id, Status.AVAILABLE, draft(E.DELETED, base + 8))

    events = await timeline(store, a.sandbox_id)
    assert [e.type for e in events] == [E.SYNCED, E.ALLOCATED, E.EXTENDED, E.RELEASED,
                                        E.ADMIN_ACTION]
    assert events[-1] == recorded
    assert [e.at for e in events] == [base, base + 2, base + 4, base + 5, base + 6]
    assert (events[0].owner, events[1].owner, events[1].track_name) == (None, "owner-1",
                                                                        "track-a")
    assert (events[2].reason, events[2].actor) == ("+3600s", "track:test")
    assert len({e.event_id for e in events}) == 5
    assert [e.type for e in await timeline(store, b.sandbox_id)] == [E.SYNCED, E.DELETED]
    typed = await timeline(store, a.sandbox_id, types=frozenset({E.ALLOCATED, E.RELEASED}))
    assert [e.type for e in typed] == [E.ALLOCATED, E.RELEASED]


async def test_a_timeline_pages_then_ends(store: SandboxStore) -> None:
    base = time.time() - 600
    (a,) = make(1)
    await store.add([a])
    recorded = [await store.record_event(a, draft(E.REPLAYED, base + i)) for i in range(5)]
    sizes: list[int] = []
    cursor: str | None = None
    while True:
        page = await store.list_events(a.sandbox_id, None, cursor, 2)
        sizes.append(len(page.events))
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sizes == [2, 2, 1]
    assert await timeline(store, a.sandbox_id, limit=2) == recorded
    assert await timeline(store, a.sandbox_id, limit=5) == recorded  # then an empty last page
    assert await timeline(store, "sbx-never-seen") == []


async def test_the_feed_resumes_without_skips_or_repeats(store: SandboxStore) -> None:
    base = time.time() - 600
    pool = make(4)
    await store.add(pool)
    kinds = (E.EXTENDED, E.REPLAYED)
    recorded = [await store.record_event(pool[i % 4], draft(kinds[i % 2], base + i))
                for i in range(10)]
    events, cursor = await feed(store, None, 3)
    assert events == recorded
    later = [await store.record_event(pool[0], draft(E.RELEASED, base + 20 + i))
             for i in range(2)]
    more, cursor = await feed(store, cursor, 3)
    assert more == later
    assert (await feed(store, cursor, 3))[0] == []
    extended, _ = await feed(store, None, 2, frozenset({E.EXTENDED}))
    assert extended == recorded[::2]
    for bad in (cursor[:10] + ("A" if cursor[10] != "A" else "B") + cursor[11:], "junk"):
        with pytest.raises(InvalidInput):
            await store.list_events(None, None, bad, 3)


async def test_an_event_cursor_resumes_only_where_it_was_issued(store: SandboxStore) -> None:
    base = time.time() - 600
    a, b = make(2)
    await store.add([a, b])
    for i in range(3):
        await store.record_event(a, draft(E.REPLAYED, base + i))
        await store.record_event(b, draft(E.REPLAYED, base + i))
    of_a = (await store.list_events(a.sandbox_id, None, None, 1)).next_cursor
    of_feed = (await store.list_events(None, None, None, 1)).next_cursor
    assert of_a is not None and of_feed is not None
    for sandbox_id, foreign in ((b.sandbox_id, of_a), (None, of_a), (a.sandbox_id, of_feed)):
        with pytest.raises(InvalidInput):
            await store.list_events(sandbox_id, None, foreign, 1)
    # A feed cursor is a position in the whole log, whatever the type filter.
    assert await store.list_events(None, frozenset({E.REPLAYED}), of_feed, 1)
    # A cursor that passes the feed's tag check but holds a listing position (as an
    # earlier release's listing cursors do): refused, not read as "from the start".
    with pytest.raises(InvalidInput):
        await store.list_events(None, None, TEST_CURSORS.encode({"after": "sbx-1"}), 1)


async def test_purge_drops_only_older_events(store: SandboxStore) -> None:
    base = time.time() - 600
    (a,) = make(1)
    await store.add([a])
    recorded = [await store.record_event(a, draft(E.REPLAYED, base + i)) for i in range(4)]
    assert await store.purge_events(base + 2) == 2
    assert await timeline(store, a.sandbox_id) == recorded[2:]
    assert (await feed(store, None, 10))[0] == recorded[2:]
    assert await store.purge_events(base + 2) == 0


async def test_checkpoints_persist_and_overwrite(store: SandboxStore) -> None:
    assert await store.get_checkpoint("webhook") is None
    await store.put_checkpoint("webhook", "position-1")
    assert await store.get_checkpoint("webhook") == "position-1"
    await store.put_checkpoint("webhook", "position-2")
    assert await store.get_checkpoint("webhook") == "position-2"
    assert await store.get_checkpoint("other") is None
