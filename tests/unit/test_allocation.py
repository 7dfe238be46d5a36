"""The allocation core over a real SQLite file, with a store wrapper that makes
claims lose races on purpose so the retry paths always run."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from app.allocation import AllocationPolicy, AllocationRequest, Allocator
from app.domain import (
    Contention,
    Lease,
    NotSandboxOwner,
    PoolExhausted,
    SandboxNotFound,
    Status,
)
from app.events import EventDraft
from app.store.base import ClaimResult, SandboxStore, find_then_claim
from app.store.cursor import CursorCodec
from app.store.sqlite import SqliteStore
from tests.conftest import FakeClock, make_sandboxes

pytestmark = pytest.mark.unit


class StealingStore:
    """Delegates to a real store, but before each of the first `steals` claims a rival
    owner takes every candidate, so the caller's conditional writes all conflict."""

    def __init__(self, inner: SqliteStore, steals: int) -> None:
        self._inner = inner
        self.steals = steals
        self.rivals = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def claim(
        self, candidates: Sequence[object], lease: Lease, event: object = None
    ) -> ClaimResult:
        if self.steals > 0:
            self.steals -= 1
            for candidate in candidates:
                self.rivals += 1
                rival = Lease(f"rival-{self.rivals}", None, lease.allocated_at, lease.expires_at)
                await self._inner.claim([candidate], rival)  # type: ignore[list-item]
        return await self._inner.claim(candidates, lease, event)  # type: ignore[arg-type]

    async def claim_available(
        self, name_prefix: str | None, window: int, lease: Lease, event: EventDraft | None = None
    ) -> ClaimResult:
        """Find, then claim through the stealing `claim` above (two steps, so rivals fit
        in between, as they do on DynamoDB)."""
        return await find_then_claim(
            self, name_prefix, window, lease, event, random.Random(7))  # type: ignore[arg-type]


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(str(tmp_path / "a.db"), CursorCodec(b"k"))
    await store.open()
    yield store
    await store.close()


def allocator(store: object, clock: FakeClock, k: int = 3, rounds: int = 3) -> Allocator:
    policy = AllocationPolicy(lab_duration_sec=3600, k_candidates=k, claim_rounds=rounds)
    return Allocator(store, policy, clock)  # type: ignore[arg-type]


async def test_lost_round_fetches_fresh_candidates(
    sqlite_store: SqliteStore, clock: FakeClock
) -> None:
    await sqlite_store.add(make_sandboxes(10))
    store = StealingStore(sqlite_store, steals=1)
    result = await allocator(store, clock).allocate(AllocationRequest("me"))
    assert result.created and result.sandbox.owner == "me"
    assert result.conflicts == 3  # the whole first round lost
    assert result.sandbox.expires_at == int(clock.now) + 3600


class SlowStealingStore(StealingStore):
    """A StealingStore in a brownout: every claim takes `seconds` of the clock."""

    def __init__(self, inner: SqliteStore, steals: int, clock: FakeClock, seconds: float):
        super().__init__(inner, steals)
        self._clock, self._seconds = clock, seconds

    async def claim(
        self, candidates: Sequence[object], lease: Lease, event: object = None
    ) -> ClaimResult:
        self._clock.advance(self._seconds)
        return await super().claim(candidates, lease, event)


async def test_the_event_carries_the_time_of_the_round_that_won(
    sqlite_store: SqliteStore, clock: FakeClock
) -> None:
    await sqlite_store.add(make_sandboxes(10))
    store = SlowStealingStore(sqlite_store, steals=1, clock=clock, seconds=40)
    started = clock.now
    result = await allocator(store, clock).allocate(AllocationRequest("me"))
    # Its id must not be older than the round that wrote it (the DynamoDB feed waits
    # 30 s for late writes), so not the time the first, lost round began.
    page = await sqlite_store.list_events(result.sandbox.sandbox_id, None, None, 10)
    assert [event.at for event in page.events] == [started + 40]


async def test_every_round_lost_is_contention(
    sqlite_store: SqliteStore, clock: FakeClock
) -> None:
    await sqlite_store.add(make_sandboxes(20))
    store = StealingStore(sqlite_store, steals=99)
    with pytest.raises(Contention) as caught:
        await allocator(store, clock, k=3, rounds=2).allocate(AllocationRequest("me"))
    assert caught.value.retry_after == 1


async def test_pool_lost_to_rivals_is_exhausted(
    sqlite_store: SqliteStore, clock: FakeClock
) -> None:
    await sqlite_store.add(make_sandboxes(3))
    store = StealingStore(sqlite_store, steals=1)
    with pytest.raises(PoolExhausted) as caught:
        await allocator(store, clock, k=3).allocate(AllocationRequest("me"))
    assert caught.value.retry_after == 30


async def test_exhausted_pool_still_replays_owner(
    sqlite_store: SqliteStore, clock: FakeClock
) -> None:
    await sqlite_store.add(make_sandboxes(1))
    core = allocator(sqlite_store, clock)
    first = await core.allocate(AllocationRequest("me", track_name="t"))
    again = await core.allocate(AllocationRequest("me"))
    assert not again.created and again.sandbox == first.sandbox


async def test_expired_lease_ends_and_owner_gets_a_new_one(
    sqlite_store: SqliteStore, clock: FakeClock
) -> None:
    await sqlite_store.add(make_sandboxes(2))
    core = allocator(sqlite_store, clock)
    first = await core.allocate(AllocationRequest("me"))
    clock.advance(3600)
    second = await core.allocate(AllocationRequest("me"))
    assert second.created and second.sandbox.sandbox_id != first.sandbox.sandbox_id
    old = await sqlite_store.get(first.sandbox.sandbox_id)
    assert old is not None and old.status is Status.PENDING_DELETION


async def test_get_and_release_rules(sqlite_store: SqliteStore, clock: FakeClock) -> None:
    await sqlite_store.add(make_sandboxes(2))
    core = allocator(sqlite_store, clock)
    lease = (await core.allocate(AllocationRequest("me"))).sandbox
    with pytest.raises(SandboxNotFound):
        await core.get("missing", "me")
    with pytest.raises(NotSandboxOwner):
        await core.release(lease.sandbox_id, "someone-else")
    released = await core.release(lease.sandbox_id, "me")
    assert released.status is Status.PENDING_DELETION
    assert (await core.release(lease.sandbox_id, "me")) == released
    assert await sqlite_store.get_lease("me") is None


async def test_store_protocol_is_satisfied(sqlite_store: SqliteStore) -> None:
    assert isinstance(sqlite_store, SandboxStore)
