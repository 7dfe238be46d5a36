"""`claim_available`, the allocation's single store call, on every backend: it claims
exactly one matching sandbox with its event, or says why not, and many concurrent
callers never get the same sandbox."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path

import pytest

from app.events import EventDraft, EventType
from app.store.base import ClaimOutcome, SandboxStore
from app.store.sqlite import SqliteStore
from app.store.sqlite_rows import claim_statement
from tests.backends.dynamo import TEST_CURSORS
from tests.contract.test_store_contract import CONTENDERS, ids, lease, make
from tests.contract.test_store_events import timeline

pytestmark = pytest.mark.integration


def allocated() -> EventDraft:
    return EventDraft(EventType.ALLOCATED, "track:test", time.time())


async def test_an_empty_pool_or_an_unmatched_prefix_is_exhausted(store: SandboxStore) -> None:
    assert (await store.claim_available(None, 10, lease("o-1"))).outcome is (
        ClaimOutcome.EXHAUSTED)
    await store.add(make(3, "lab-"))
    result = await store.claim_available("dev-", 10, lease("o-1"))
    assert (result.outcome, result.sandbox) == (ClaimOutcome.EXHAUSTED, None)
    assert len(await store.find_available(None, 10)) == 3  # nothing was touched


async def test_claims_one_matching_sandbox_with_its_event(store: SandboxStore) -> None:
    labs, devs = make(4, "lab-"), make(4, "dev-")
    await store.add([*labs, *devs])
    result = await store.claim_available("dev-", 5, lease("o-1", "track-b"), allocated())
    assert result.outcome is ClaimOutcome.CLAIMED and result.sandbox is not None
    won = result.sandbox
    assert won.sandbox_id in ids(devs)
    assert (won.owner, won.track_name, won.expires_at) == ("o-1", "track-b", lease("o").expires_at)
    assert await store.get_lease("o-1") == won
    events = await timeline(store, won.sandbox_id)
    assert [(e.type, e.owner) for e in events] == [(EventType.ALLOCATED, "o-1")]
    assert len(await store.find_available("dev-", 10)) == 3


async def test_an_owner_with_a_live_lease_gets_no_second_sandbox(store: SandboxStore) -> None:
    await store.add(make(5))
    first = await store.claim_available(None, 5, lease("o-1"))
    assert first.outcome is ClaimOutcome.CLAIMED
    again = await store.claim_available(None, 5, lease("o-1"), allocated())
    assert again.outcome is ClaimOutcome.OWNER_HAS_LEASE
    # A store may hand the lease back with the answer (SQLite does); if so, it is the lease.
    assert again.sandbox == (first.sandbox if again.lease_checked else None)
    assert len(await store.find_available(None, 10)) == 4


async def test_a_dry_pool_still_answers_about_the_owners_lease(store: SandboxStore) -> None:
    await store.add(make(1))
    first = await store.claim_available(None, 5, lease("o-1"))
    assert first.outcome is ClaimOutcome.CLAIMED
    holder = await store.claim_available(None, 5, lease("o-1"))
    stranger = await store.claim_available(None, 5, lease("o-2"))
    assert holder.outcome is stranger.outcome is ClaimOutcome.EXHAUSTED
    assert holder.sandbox == (first.sandbox if holder.lease_checked else None)
    assert stranger.sandbox is None


async def test_concurrent_callers_never_share_a_sandbox(store: SandboxStore, backend: str) -> None:
    owners, size = CONTENDERS[backend]
    await store.add(make(size))

    async def allocate(owner: str) -> ClaimOutcome:
        for _ in range(100):  # CONFLICT: every candidate went to someone else; look again
            result = await store.claim_available(None, 10, lease(owner), allocated())
            if result.outcome is not ClaimOutcome.CONFLICT:
                return result.outcome
        raise AssertionError(f"{owner} made no progress")

    outcomes = await asyncio.gather(*(allocate(f"o-{i}") for i in range(owners)))
    assert outcomes.count(ClaimOutcome.CLAIMED) == size
    assert outcomes.count(ClaimOutcome.EXHAUSTED) == owners - size
    leases = [await store.get_lease(f"o-{i}") for i in range(owners)]
    held = [sandbox.sandbox_id for sandbox in leases if sandbox is not None]
    assert len(held) == len(set(held)) == size
    assert await store.integrity_violations() == []


@pytest.mark.parametrize("prefix", [None, "lab-"])
async def test_sqlite_claims_by_index_without_sorting(tmp_path: Path, prefix: str | None) -> None:
    """The claim reads its row off an index: no table scan, no sort of the pool."""
    path = str(tmp_path / "plan.db")
    store = SqliteStore(path, TEST_CURSORS)
    await store.open()
    try:
        await store.add(make(50))
    finally:
        await store.close()
    sql, args = claim_statement(prefix)
    params = ["o-1", "track-a", 0, 0, 0, *args]
    with contextlib.closing(sqlite3.connect(path)) as conn:
        plan = " | ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, plan
    assert "TEMP B-TREE" not in plan and "SCAN sandboxes" not in plan, plan
