"""The SandboxStore contract, run on every backend (sqlite, moto, dynamodb_local).

Each test gets a fresh, empty store. The DynamoDB-only checks (call budget, error
mapping, the table's redundancy) live in test_dynamodb_store.py.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import pytest

from app.domain import InvalidTransition, Lease, Sandbox, Status
from app.store.base import ClaimOutcome, ClaimResult, SandboxStore, Transition

pytestmark = pytest.mark.integration

NOW = 1_800_000_000
HOUR = 3600


def make(count: int, prefix: str = "lab-", start: int = 1) -> list[Sandbox]:
    return [
        Sandbox(sandbox_id=f"sbx-{prefix}{i:04d}", name=f"{prefix}{i:04d}",
                external_id=f"identity/accounts/{prefix}{i:04d}", sfdc_account_id=f"SF{i}",
                created_at=NOW - 100, updated_at=NOW - 100)
        for i in range(start, start + count)
    ]


def lease(owner: str, track: str | None = "track-a", now: int = NOW) -> Lease:
    return Lease(owner=owner, track_name=track, allocated_at=now, expires_at=now + HOUR)


def ids(sandboxes: Sequence[Sandbox]) -> set[str]:
    return {s.sandbox_id for s in sandboxes}


async def claimed(store: SandboxStore, candidate: Sandbox, owner: str,
                  track: str | None = "track-a") -> Sandbox:
    result = await store.claim([candidate], lease(owner, track))
    assert result.outcome is ClaimOutcome.CLAIMED and result.sandbox is not None
    return result.sandbox


# -- schema, reads, the pool -----------------------------------------------------------

async def test_init_schema_is_idempotent_and_ping_answers(store: SandboxStore) -> None:
    first = await store.init_schema()
    assert first and await store.init_schema() == first
    await store.ping()
    assert await store.get("sbx-missing") is None
    assert await store.get_lease("nobody") is None
    assert await store.integrity_violations() == []


async def test_find_available_honours_limit_prefix_and_status(store: SandboxStore) -> None:
    labs, devs = make(6), make(4, "dev-")
    assert await store.add(labs + devs) == 10
    everything = await store.find_available(None, 100)
    assert {s.sandbox_id: s for s in everything} == {s.sandbox_id: s for s in labs + devs}
    assert len(await store.find_available(None, 3)) == 3
    assert len(await store.find_available(None, 10)) == 10
    assert ids(await store.find_available("lab-", 100)) == ids(labs)
    assert ids(await store.find_available("dev-0", 2)) <= ids(devs)
    assert await store.find_available("nope-", 10) == []
    await claimed(store, labs[0], "owner-1")
    assert ids(await store.find_available("lab-", 100)) == ids(labs[1:])


# -- the claim ----------------------------------------------------------------------------

async def test_claim_leases_the_first_available_candidate(store: SandboxStore) -> None:
    pool = make(3)
    await store.add(pool)
    result = await store.claim(pool, lease("owner-1"))
    assert result.outcome is ClaimOutcome.CLAIMED and result.conflicts == 0
    assert result.sandbox == pool[0].evolve(
        status=Status.ALLOCATED, owner="owner-1", track_name="track-a", allocated_at=NOW,
        expires_at=NOW + HOUR, extensions=0, updated_at=NOW,
    )
    assert await store.get(pool[0].sandbox_id) == result.sandbox
    assert await store.get_lease("owner-1") == result.sandbox


async def test_claim_skips_taken_candidates_and_counts_conflicts(store: SandboxStore) -> None:
    a, b, c = make(3)
    await store.add([a, b, c])
    ghost = make(1, "ghost-")[0]  # never added: as good as taken
    await claimed(store, a, "first")
    second = await store.claim([ghost, a, b], lease("second"))
    assert second.outcome is ClaimOutcome.CLAIMED and second.conflicts == 2
    assert second.sandbox is not None and second.sandbox.sandbox_id == b.sandbox_id
    third = await store.claim([a, b], lease("third"))
    assert third == ClaimResult(ClaimOutcome.CONFLICT, None, 2)
    assert await store.claim([], lease("fourth")) == ClaimResult(ClaimOutcome.CONFLICT, None, 0)
    assert await store.get(ghost.sandbox_id) is None
    assert (await store.get(c.sandbox_id)) == c
    assert await store.get_lease("third") is None


async def test_claim_refuses_an_owner_who_holds_a_lease(store: SandboxStore) -> None:
    a, b = make(2)
    await store.add([a, b])
    held = await claimed(store, a, "owner-1")
    again = await store.claim([b], lease("owner-1"))
    assert again.outcome is ClaimOutcome.OWNER_HAS_LEASE and again.sandbox is None
    assert await store.get(b.sandbox_id) == b
    assert await store.get_lease("owner-1") == held


# -- transitions ------------------------------------------------------------------------

async def test_transition_applies_only_from_the_expected_status(store: SandboxStore) -> None:
    (a,) = make(1)
    await store.add([a])
    sid = a.sandbox_id
    assert await store.transition(Transition(sid, Status.STALE, Status.AVAILABLE), NOW) is None
    stale = await store.transition(
        Transition(sid, Status.AVAILABLE, Status.STALE, changes={"last_error": "gone"}), NOW + 5)
    assert stale == a.evolve(status=Status.STALE, last_error="gone", updated_at=NOW + 5)
    assert await store.get(sid) == stale
    assert await store.find_available(None, 10) == []
    back = await store.transition(
        Transition(sid, Status.STALE, Status.AVAILABLE, changes={"last_error": None}), NOW + 6)
    assert back == a.evolve(updated_at=NOW + 6)
    assert await store.find_available("lab-", 10) == [back]
    missing = Transition("sbx-missing", Status.AVAILABLE, Status.STALE)
    assert await store.transition(missing, NOW) is None


async def test_transition_refuses_moves_outside_the_lifecycle(store: SandboxStore) -> None:
    (a,) = make(1)
    await store.add([a])
    with pytest.raises(InvalidTransition):
        await store.transition(Transition(a.sandbox_id, Status.AVAILABLE, Status.DELETING), NOW)
    for bad in ({"bogus": 1}, {"sandbox_id": "other"}):
        with pytest.raises(ValueError, match="not writable"):
            await store.transition(
                Transition(a.sandbox_id, Status.AVAILABLE, Status.STALE, changes=bad), NOW)
    assert await store.get(a.sandbox_id) == a


async def test_transition_conditions_on_owner_and_expiry(store: SandboxStore) -> None:
    (a,) = make(1)
    await store.add([a])
    held = await claimed(store, a, "owner-1")
    sid, expires = a.sandbox_id, NOW + HOUR
    refused = [
        Transition(sid, Status.ALLOCATED, Status.PENDING_DELETION, owner="intruder"),
        Transition(sid, Status.ALLOCATED, Status.PENDING_DELETION, expires_at_max=expires - 1),
        Transition(sid, Status.ALLOCATED, Status.ALLOCATED, expected_expires_at=expires + 1,
                   changes={"expires_at": expires + HOUR}),
    ]
    for change in refused:
        assert await store.transition(change, NOW + 1) is None
    assert await store.get(sid) == held
    extend = Transition(sid, Status.ALLOCATED, Status.ALLOCATED, owner="owner-1",
                        expected_expires_at=expires,
                        changes={"expires_at": expires + HOUR, "extensions": 1})
    extended = await store.transition(extend, NOW + 2)
    assert extended == held.evolve(expires_at=expires + HOUR, extensions=1, updated_at=NOW + 2)
    assert await store.get_lease("owner-1") == extended
    assert await store.transition(extend, NOW + 3) is None  # optimistic: already moved on
    expire = Transition(sid, Status.ALLOCATED, Status.PENDING_DELETION,
                        expires_at_max=expires + HOUR)
    expired = await store.transition(expire, NOW + 4)
    assert expired == extended.evolve(status=Status.PENDING_DELETION, updated_at=NOW + 4,
                                      deletion_requested_at=NOW + 4)
    assert await store.get_lease("owner-1") is None


async def test_a_release_records_when_deletion_was_requested(store: SandboxStore) -> None:
    a, b = make(2)
    await store.add([a, b])
    leased = await claimed(store, a, "o-1")
    assert leased.deletion_requested_at is None
    released = await store.transition(
        Transition(a.sandbox_id, Status.ALLOCATED, Status.PENDING_DELETION), NOW + 5)
    assert released is not None and released.deletion_requested_at == NOW + 5
    staled = await store.transition(Transition(b.sandbox_id, Status.AVAILABLE, Status.STALE),
                                    NOW + 6)
    assert staled is not None and staled.deletion_requested_at is None


async def test_leaving_allocated_frees_the_owner(store: SandboxStore) -> None:
    a, b, c = make(3)
    await store.add([a, b, c])
    await claimed(store, a, "owner-1")
    release = Transition(a.sandbox_id, Status.ALLOCATED, Status.PENDING_DELETION, owner="owner-1")
    released = await store.transition(release, NOW + 1)
    assert released is not None and released.owner == "owner-1"  # history stays on the row
    assert await store.get_lease("owner-1") is None
    second = await claimed(store, b, "owner-1")
    assert await store.get_lease("owner-1") == second
    # An admin/expiry release that does not name the owner frees it just the same.
    assert await store.transition(
        Transition(b.sandbox_id, Status.ALLOCATED, Status.PENDING_DELETION), NOW + 2)
    assert await store.get_lease("owner-1") is None
    await claimed(store, c, "owner-1")
    assert await store.integrity_violations() == []


async def test_deletion_lifecycle_to_removal(store: SandboxStore) -> None:
    (a,) = make(1)
    await store.add([a])
    sid = a.sandbox_id
    steps = [
        (Status.AVAILABLE, Status.PENDING_DELETION, None),
        (Status.PENDING_DELETION, Status.DELETING, None),
        (Status.DELETING, Status.PENDING_DELETION,
         {"deletion_attempts": 1, "next_attempt_at": NOW + 60, "last_error": "HTTP 503"}),
        (Status.PENDING_DELETION, Status.DELETING, None),
        (Status.DELETING, Status.DELETION_FAILED, {"deletion_attempts": 2}),
        (Status.DELETION_FAILED, Status.PENDING_DELETION, None),
        (Status.PENDING_DELETION, Status.DELETING, None),
    ]
    for at, (expected, new, changes) in enumerate(steps):
        row = await store.transition(Transition(sid, expected, new, changes=changes), NOW + at)
        assert row is not None and row.status is new and row.updated_at == NOW + at
        # Requested once, when it entered the queue; retries do not move that time.
        assert row.deletion_requested_at == NOW
    final = await store.get(sid)
    assert final is not None
    assert (final.deletion_attempts, final.next_attempt_at, final.last_error) == (
        2, NOW + 60, "HTTP 503")
    assert final.deletion_requested_at == NOW
    assert await store.remove(sid, Status.DELETING)
    assert await store.get(sid) is None


# -- add, remove ---------------------------------------------------------------------------

async def test_add_inserts_only_new_sandboxes(store: SandboxStore) -> None:
    first = make(5)
    assert await store.add(first) == 5
    assert await store.add(first[:3] + make(2, start=6)) == 2
    assert await store.add([]) == 0
    held = await claimed(store, first[0], "owner-1")
    assert await store.add([first[0]]) == 0  # never overwrites an existing row
    assert await store.get(first[0].sandbox_id) == held
    assert len(await store.find_available(None, 100)) == 6


async def test_remove_is_conditional_on_status(store: SandboxStore) -> None:
    a, b, c = make(3)
    await store.add([a, b, c])
    assert not await store.remove(a.sandbox_id, Status.STALE)
    assert await store.remove(a.sandbox_id, Status.AVAILABLE)
    assert await store.get(a.sandbox_id) is None
    assert not await store.remove(a.sandbox_id, Status.AVAILABLE)
    await claimed(store, b, "owner-1")
    assert await store.remove(b.sandbox_id, Status.ALLOCATED)  # the lease goes with it
    assert await store.get_lease("owner-1") is None
    await claimed(store, c, "owner-1")
    assert await store.integrity_violations() == []


# -- counting (listing: test_store_listing.py) ------------------------------------------

async def test_count_by_status_is_zero_filled(store: SandboxStore) -> None:
    assert await store.count_by_status() == dict.fromkeys(Status, 0)
    pool = make(5)
    await store.add(pool)
    await claimed(store, pool[0], "owner-1")
    await store.transition(Transition(pool[1].sandbox_id, Status.AVAILABLE, Status.STALE), NOW)
    expected = dict.fromkeys(Status, 0) | {
        Status.AVAILABLE: 3, Status.ALLOCATED: 1, Status.STALE: 1}
    assert await store.count_by_status() == expected


# -- concurrency -----------------------------------------------------------------------------

CONTENDERS = {
    "sqlite": (300, 100),
    "sqlite_batch": (300, 100),
    "moto": (60, 20),
    "dynamodb_local": (300, 100),
}
"""(owners, sandboxes) per backend; moto is slow, so its run is small."""


async def allocate(store: SandboxStore, owner: str, rng: random.Random) -> Sandbox | None:
    """What the allocator does: K candidates, shuffled, claim; again until the pool is dry."""
    for _ in range(1000):
        candidates = await store.find_available(None, 10)
        if not candidates:
            return None
        rng.shuffle(candidates)
        result = await store.claim(candidates, lease(owner))
        if result.outcome is ClaimOutcome.CLAIMED:
            return result.sandbox
        if result.outcome is ClaimOutcome.OWNER_HAS_LEASE:
            return await store.get_lease(owner)
    raise AssertionError(f"{owner} made no progress")


async def test_concurrent_claims_never_double_allocate(store: SandboxStore, backend: str) -> None:
    owners, size = CONTENDERS[backend]
    await store.add(make(size))
    rng = random.Random(7)
    results = await asyncio.gather(*(allocate(store, f"o-{i}", rng) for i in range(owners)))
    winners = {f"o-{i}": s for i, s in enumerate(results) if s is not None}
    assert len(winners) == size  # every sandbox leased, each to one owner
    assert len({s.sandbox_id for s in winners.values()}) == size
    for owner, sandbox in winners.items():
        assert sandbox.owner == owner
        assert await store.get_lease(owner) == sandbox
    counts = await store.count_by_status()
    assert (counts[Status.ALLOCATED], counts[Status.AVAILABLE]) == (size, 0)
    assert await store.integrity_violations() == []


async def test_concurrent_claims_by_one_owner_lease_one_sandbox(store: SandboxStore) -> None:
    pool = make(10)
    await store.add(pool)
    rng = random.Random(11)
    orders = [rng.sample(pool, len(pool)) for _ in range(30)]
    results = await asyncio.gather(*(store.claim(order, lease("solo")) for order in orders))
    outcomes = [r.outcome for r in results]
    assert outcomes.count(ClaimOutcome.CLAIMED) == 1
    assert set(outcomes) <= {ClaimOutcome.CLAIMED, ClaimOutcome.OWNER_HAS_LEASE,
                             ClaimOutcome.CONFLICT}
    (won,) = [r.sandbox for r in results if r.outcome is ClaimOutcome.CLAIMED]
    assert await store.get_lease("solo") == won
    assert (await store.count_by_status())[Status.ALLOCATED] == 1
    assert await store.integrity_violations() == []
