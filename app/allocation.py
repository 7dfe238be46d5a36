"""The allocation core: allocate, read, release and extend leases.

Allocation asks the store to claim one of K available candidates (server-side
prefix filter) with a conditional write. DynamoDB fetches them and tries them in a
shuffled order so concurrent callers spread out; if all K were taken meanwhile
(CONFLICT) the allocator tries again, in a wider window each round, a bounded number
of rounds, then answers CONTENTION. SQLite finds and claims in one statement inside
its write transaction, so it never answers CONFLICT.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.domain import (
    DELETION_QUEUE,
    Clock,
    Contention,
    ExtensionLimit,
    Lease,
    LeaseNotActive,
    NotSandboxOwner,
    PoolExhausted,
    Sandbox,
    SandboxNotFound,
    Status,
    is_expired,
)
from app.events import EventDraft, EventType
from app.store.base import ClaimOutcome, ClaimResult, SandboxStore, Transition

__all__ = ["AllocationPolicy", "AllocationRequest", "AllocationResult", "Allocator"]

MAX_WINDOW = 100
# Outcomes after which the owner may already hold a lease to replay.
_LOOK_FOR_LEASE = frozenset({ClaimOutcome.OWNER_HAS_LEASE, ClaimOutcome.EXHAUSTED})


@dataclass(frozen=True, slots=True)
class AllocationPolicy:
    lab_duration_sec: int
    max_extension_sec: int = 4 * 3600
    max_lease_sec: int = 24 * 3600
    max_extensions: int = 3
    k_candidates: int = 10
    claim_rounds: int = 3
    exhausted_retry_after: int = 30
    contention_retry_after: int = 1


@dataclass(frozen=True, slots=True)
class AllocationRequest:
    owner: str
    track_name: str | None = None
    name_prefix: str | None = None
    duration_sec: int | None = None
    actor: str = "track"  # who asks, for the event log (a token id, never the token)


@dataclass(frozen=True, slots=True)
class AllocationResult:
    sandbox: Sandbox
    created: bool  # False for a replay of the owner's live lease
    conflicts: int = 0


class Allocator:
    """Domain verbs over a SandboxStore. Raises the domain errors, nothing else."""

    def __init__(
        self,
        store: SandboxStore,
        policy: AllocationPolicy,
        clock: Clock,
    ) -> None:
        self._store = store
        self._policy = policy
        self._clock = clock

    async def allocate(self, request: AllocationRequest) -> AllocationResult:
        """A new lease (created=True) or the owner's live lease (created=False).

        Raises PoolExhausted when nothing matches, Contention when every round
        lost its candidates to other callers.
        """
        conflicts = 0
        lease = self._lease_for(request)
        rounds, round_ = self._policy.claim_rounds, 0
        while round_ < rounds:
            # Each lost round looks wider: near exhaustion every caller's window holds
            # the same few sandboxes, and a wider one still finds the last free ones.
            window = min(self._policy.k_candidates << round_, MAX_WINDOW)
            round_ += 1
            # A draft per round: its time becomes the event id's, which must be at most
            # one round old when written (the DynamoDB feed waits 30 s for late writes).
            allocated = self._event(EventType.ALLOCATED, request.actor)
            result = await self._store.claim_available(
                request.name_prefix, window, lease, allocated)
            conflicts += result.conflicts
            if result.outcome is ClaimOutcome.CLAIMED and result.sandbox is not None:
                return AllocationResult(result.sandbox, created=True, conflicts=conflicts)
            if result.outcome in _LOOK_FOR_LEASE:
                existing = await self._live_lease(request.owner, result)
                if existing is not None:
                    return await self._replay(existing, request, conflicts)
                if result.outcome is ClaimOutcome.EXHAUSTED:
                    raise PoolExhausted(
                        "no sandbox is available" + _prefix_note(request.name_prefix),
                        retry_after=self._policy.exhausted_retry_after,
                    )
                # The owner's lease ended (it had expired, or ended between the claim and
                # the read): nothing was lost to other callers, so that round is given
                # back, once.
                if rounds == self._policy.claim_rounds:
                    rounds += 1
        raise Contention(
            "too many concurrent allocations; retry shortly",
            retry_after=self._policy.contention_retry_after,
        )

    async def get(self, sandbox_id: str, owner: str) -> Sandbox:
        """The sandbox, if `owner` holds (or held) it. SandboxNotFound / NotSandboxOwner."""
        sandbox = await self._store.get(sandbox_id)
        if sandbox is None:
            raise SandboxNotFound(f"sandbox {sandbox_id} does not exist")
        if sandbox.owner != owner:
            raise NotSandboxOwner("this sandbox is not leased to you")
        return sandbox

    async def release(self, sandbox_id: str, owner: str, actor: str = "track") -> Sandbox:
        """End the owner's lease: allocated -> pending_deletion. Idempotent for the owner."""
        sandbox = await self.get(sandbox_id, owner)
        if sandbox.status in DELETION_QUEUE:
            return sandbox
        released = await self._store.transition(
            Transition(sandbox_id, Status.ALLOCATED, Status.PENDING_DELETION, owner=owner,
                       event=self._event(EventType.RELEASED, actor)),
            self._now(),
        )
        if released is not None:
            return released
        again = await self.get(sandbox_id, owner)  # raced another release or expiry
        if again.status in DELETION_QUEUE:
            return again
        if again.status is Status.ALLOCATED:  # still ours: it kept changing under us
            raise Contention("the lease changed while releasing; retry",
                             retry_after=self._policy.contention_retry_after)
        raise NotSandboxOwner("this sandbox is not leased to you")

    async def extend(
        self, sandbox_id: str, owner: str, seconds: int, actor: str = "track"
    ) -> Sandbox:
        """Move the owner's expires_at forward within the policy's bounds.

        The write is conditional on the expires_at read, so it either lands before an
        auto-expiry or a concurrent extension, or is re-evaluated; an ended lease is
        refused (LeaseNotActive), a bound exceeded is ExtensionLimit.
        """
        # A lost write means the lease changed: another extension (it counts towards
        # MAX_EXTENSIONS, so the bound ends the loop as a 409), or its end (a 409 too).
        for _ in range(self._policy.max_extensions + 3):
            lease = await self.get(sandbox_id, owner)
            now = self._now()
            if lease.status is not Status.ALLOCATED or lease.expires_at is None or (
                now >= lease.expires_at
            ):
                raise LeaseNotActive("the lease has ended and can no longer be extended")
            self._check_extension_bounds(lease, seconds)
            change = Transition(
                sandbox_id, Status.ALLOCATED, Status.ALLOCATED, owner=owner,
                expected_expires_at=lease.expires_at,
                changes={"expires_at": lease.expires_at + seconds,
                         "extensions": lease.extensions + 1},
                event=self._event(EventType.EXTENDED, actor, f"+{seconds}s"),
            )
            extended = await self._store.transition(change, now)
            if extended is not None:
                return extended
        raise Contention("the lease changed while extending; retry",
                         retry_after=self._policy.contention_retry_after)

    def extensions_left(self, sandbox: Sandbox) -> int:
        return max(0, self._policy.max_extensions - sandbox.extensions)

    def _check_extension_bounds(self, lease: Sandbox, seconds: int) -> None:
        policy = self._policy
        if seconds > policy.max_extension_sec:
            raise ExtensionLimit(
                f"one extension may add at most {policy.max_extension_sec / 3600:g} h "
                "(MAX_EXTENSION_HOURS)")
        if lease.extensions >= policy.max_extensions:
            raise ExtensionLimit(
                f"the lease was already extended {policy.max_extensions} times (MAX_EXTENSIONS)")
        assert lease.expires_at is not None and lease.allocated_at is not None
        if lease.expires_at + seconds - lease.allocated_at > policy.max_lease_sec:
            raise ExtensionLimit(
                f"a lease may last at most {policy.max_lease_sec / 3600:g} h from allocation "
                "(MAX_LEASE_HOURS)")

    async def _live_lease(
        self, owner: str, answer: ClaimResult | None = None
    ) -> Sandbox | None:
        """The owner's lease if still within expires_at; an expired one is ended first.
        A claim `answer` that already read the lease spares the second read."""
        if answer is not None and answer.lease_checked:
            lease = answer.sandbox
        else:
            lease = await self._store.get_lease(owner)
        if lease is None or not is_expired(lease, self._clock()):
            return lease
        await self._store.transition(
            Transition(lease.sandbox_id, Status.ALLOCATED, Status.PENDING_DELETION,
                       owner=owner, expires_at_max=int(self._clock()),
                       event=self._event(EventType.EXPIRED, "track", "expired at re-allocation")),
            self._now(),
        )
        return await self._live_lease(owner)

    async def _replay(
        self, lease: Sandbox, request: AllocationRequest, conflicts: int
    ) -> AllocationResult:
        await self._store.record_event(lease, self._event(EventType.REPLAYED, request.actor))
        return AllocationResult(lease, created=False, conflicts=conflicts)

    def _event(self, kind: EventType, actor: str, reason: str | None = None) -> EventDraft:
        return EventDraft(kind, actor, self._clock(), reason)

    def _lease_for(self, request: AllocationRequest) -> Lease:
        now = self._now()
        duration = request.duration_sec or self._policy.lab_duration_sec
        return Lease(request.owner, request.track_name, now, now + duration)

    def _now(self) -> int:
        return int(self._clock())


def _prefix_note(prefix: str | None) -> str:
    return f" with a name starting with {prefix!r}" if prefix else ""
