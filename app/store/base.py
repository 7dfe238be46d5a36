"""The storage contract every backend implements, and the small types it speaks.

Every state change is a conditional write on the state the caller expects; a store
never overwrites a row it did not check (DESIGN.md §2, invariant 3).
"""

from __future__ import annotations

import builtins
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, runtime_checkable

from app.domain import DELETION_QUEUE, Lease, Sandbox, Status
from app.events import Event, EventDraft, EventPage, EventType
from app.store.cursor import scope_of

__all__ = [
    "ClaimOutcome",
    "ClaimResult",
    "Page",
    "SandboxFilter",
    "SandboxStore",
    "Transition",
    "find_then_claim",
]


class ClaimOutcome(Enum):
    CLAIMED = "claimed"  # one candidate is now leased to the owner
    CONFLICT = "conflict"  # every candidate was taken by someone else first
    OWNER_HAS_LEASE = "owner_has_lease"  # the owner already holds a live lease
    EXHAUSTED = "exhausted"  # nothing (matching the prefix) was available to claim


@dataclass(frozen=True, slots=True)
class ClaimResult:
    outcome: ClaimOutcome
    sandbox: Sandbox | None = None  # CLAIMED: the claim; otherwise the owner's lease, if known
    conflicts: int = 0
    # The store already read the owner's live lease for this answer: `sandbox` is it, and
    # None means there is none (saves the allocator a second trip when the pool is dry).
    lease_checked: bool = False


@dataclass(frozen=True, slots=True)
class Transition:
    """A conditional state change: applied only if every condition still holds.

    `owner` requires the current owner to match; `expires_at_max` requires
    expires_at <= it (auto-expiry); `expected_expires_at` requires it to be
    unchanged (optimistic update of a lease). `changes` are extra columns to set.
    """

    sandbox_id: str
    expected: Status
    new: Status
    owner: str | None = None
    expires_at_max: int | None = None
    expected_expires_at: int | None = None
    changes: Mapping[str, Any] | None = None
    event: EventDraft | None = None  # recorded in the same atomic write as the change

    def updates(self, now: int) -> dict[str, Any]:
        """Every column the change writes: its `changes`, the status, updated_at, and
        deletion_requested_at when the sandbox enters the deletion queue from outside
        it (a retry or an admin's retry keeps the first request's time)."""
        updates: dict[str, Any] = {**(self.changes or {}), "status": self.new,
                                   "updated_at": now}
        if self.new is Status.PENDING_DELETION and self.expected not in DELETION_QUEUE:
            updates.setdefault("deletion_requested_at", now)
        return updates


@dataclass(frozen=True, slots=True)
class SandboxFilter:
    status: Status | None = None
    name_prefix: str | None = None
    track_name: str | None = None
    owner: str | None = None

    def cursor_scope(self) -> str:
        """The scope of this listing's cursors: only the same filter resumes them."""
        return scope_of("sandboxes", self.status, self.name_prefix, self.track_name,
                        self.owner)


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Sandbox]
    next_cursor: str | None


@runtime_checkable
class SandboxStore(Protocol):
    """Async storage of sandboxes, leases and job leases.

    Errors: backends raise `StoreUnavailable` when the store cannot answer, and
    `InvalidInput` for a cursor they did not issue; nothing else escapes.
    """

    async def open(self) -> None:
        """Connect; embedded backends also create their schema."""

    async def close(self) -> None: ...

    async def init_schema(self) -> dict[str, Any]:
        """Create tables/indexes idempotently; return the definition."""

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers."""

    async def find_available(self, name_prefix: str | None, limit: int) -> list[Sandbox]:
        """Up to `limit` available sandboxes whose name starts with the prefix."""

    async def claim(
        self, candidates: Sequence[Sandbox], lease: Lease, event: EventDraft | None = None
    ) -> ClaimResult:
        """Lease the first candidate that is still available, in the given order.

        The write is conditional on status='available' and on the owner holding
        no live lease, atomically, together with the event if one is given.
        """

    async def claim_available(
        self, name_prefix: str | None, window: int, lease: Lease,
        event: EventDraft | None = None,
    ) -> ClaimResult:
        """Find up to `window` available sandboxes and claim one of them: the
        allocation's one store round trip. EXHAUSTED when none matched; CONFLICT when
        every candidate was taken first (the caller may retry with a wider window).
        Stores without a cheaper way use `find_then_claim`."""

    async def get(self, sandbox_id: str) -> Sandbox | None: ...

    async def get_lease(self, owner: str) -> Sandbox | None:
        """The sandbox the owner holds a live lease on, if any."""

    async def transition(self, change: Transition, now: int) -> Sandbox | None:
        """Apply the change if its conditions hold; the new row, else None."""

    async def add(self, sandboxes: Sequence[Sandbox], event: EventDraft | None = None) -> int:
        """Insert sandboxes that do not exist yet (one event each); return how many.

        A sandbox whose tombstone is still in force at its `updated_at` is not added.
        """

    async def remove(
        self,
        sandbox_id: str,
        expected: Status,
        event: EventDraft | None = None,
        tombstone_until: int | None = None,
    ) -> bool:
        """Delete the row if it is still in `expected`; True if it was deleted.

        With `tombstone_until`, atomically leave a tombstone that keeps `add` from
        bringing the sandbox back before then (it was deleted at the provider, which
        may still list it for a while).
        """

    async def list(self, where: SandboxFilter, limit: int, cursor: str | None) -> Page:
        """One page of sandboxes in a stable order, resumable from `cursor`."""

    async def count_by_status(self) -> dict[Status, int]: ...

    async def acquire_job_lease(self, job: str, holder: str, ttl_sec: float, now: float) -> bool:
        """Take or renew the named job lease unless another holder's is unexpired."""

    async def release_job_lease(self, job: str, holder: str) -> None: ...

    async def integrity_violations(self) -> builtins.list[str]:
        """Scan everything; describe every broken invariant (for `verify`)."""

    async def record_event(self, sandbox: Sandbox, event: EventDraft) -> Event:
        """Append an event that goes with no state change (a replay)."""

    async def list_events(
        self,
        sandbox_id: str | None,
        types: frozenset[EventType] | None,
        cursor: str | None,
        limit: int,
    ) -> EventPage:
        """Events in commit order, after `cursor`: one sandbox's timeline, or the feed.

        The feed's `next_cursor` is never None, so a consumer can always resume;
        events are neither skipped nor repeated across resumptions.
        """

    async def purge_events(self, before: float) -> int:
        """Drop events older than `before` (retention); how many went."""

    async def get_checkpoint(self, name: str) -> str | None:
        """A consumer's saved position (e.g. a webhook subscriber's feed cursor)."""

    async def put_checkpoint(self, name: str, value: str) -> None: ...


async def find_then_claim(
    store: SandboxStore, name_prefix: str | None, window: int, lease: Lease,
    event: EventDraft | None, rng: random.Random,
) -> ClaimResult:
    """`claim_available` as two calls: the candidates, shuffled so concurrent callers
    spread out, then a conditional claim of the first one still available."""
    candidates = await store.find_available(name_prefix, window)
    if not candidates:
        return ClaimResult(ClaimOutcome.EXHAUSTED)
    rng.shuffle(candidates)
    return await store.claim(candidates, lease, event)
