"""Cleanup: delete released sandboxes at the provider, then drop their rows.

pending_deletion → deleting (a claim with a deadline) → provider delete → row removed.
A retryable failure goes back to pending_deletion with exponential backoff (honouring
Retry-After) and an attempt count; attempts exhausted → deletion_failed. A crash at
any step leaves a row a later pass picks up: a deleting row whose claim deadline has
passed is returned to pending_deletion, counted as an attempt (so a deletion that
crashes every pass still ends in deletion_failed), and deleting twice is harmless
(404 = gone).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass

from app.domain import Clock, Sandbox, Status
from app.events import EventDraft, EventType
from app.jobs.base import JobSummary, rows_in
from app.providers.base import DeleteOutcome, DeleteResult, Provider
from app.store.base import SandboxStore, Transition

__all__ = ["CleanupJob", "CleanupPolicy", "backoff_seconds"]

log = logging.getLogger("broker.jobs.cleanup")


@dataclass(frozen=True, slots=True)
class CleanupPolicy:
    batch_size: int = 200
    concurrency: int = 8
    rate_per_sec: float = 20.0
    claim_timeout_sec: int = 300
    max_attempts: int = 8
    backoff_base_sec: float = 30.0
    backoff_max_sec: float = 3600.0
    tombstone_sec: int = 86400  # how long sync may not bring a deleted sandbox back


def backoff_seconds(
    attempts: int, policy: CleanupPolicy, retry_after: float | None, rng: random.Random
) -> int:
    """Exponential backoff with full jitter, never sooner than the provider asked."""
    ceiling = min(policy.backoff_max_sec, policy.backoff_base_sec * 2 ** max(0, attempts - 1))
    delay = rng.uniform(ceiling / 2, ceiling)
    return max(1, int(max(delay, retry_after or 0)))


class _Pacer:
    """Spaces provider calls at most `rate` per second across concurrent workers."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            now = time.monotonic()
            delay = self._next - now
            self._next = max(now, self._next) + self._interval
        if delay > 0:
            await asyncio.sleep(delay)


class CleanupJob:
    name = "cleanup"
    lease_group = "pool"  # never overlaps sync (see SyncJob)

    def __init__(
        self,
        store: SandboxStore,
        provider: Provider,
        policy: CleanupPolicy,
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._provider = provider
        self._policy = policy
        self._clock = clock
        self._rng = rng or random.Random()

    async def run_once(self, now: int, *, force: bool = False) -> JobSummary:
        counts = await self._reclaim_abandoned(now)
        due = await self._due(now)
        gate = asyncio.Semaphore(self._policy.concurrency)
        pacer = _Pacer(self._policy.rate_per_sec)

        async def one(sandbox: Sandbox) -> None:
            async with gate:
                if self._provider.breaker_state() == "open":
                    counts["not_attempted"] += 1
                    return  # no call would be made, so no attempt is spent
                await pacer.wait()
                counts[await self._delete(sandbox, now)] += 1

        # Every delete finishes (or fails) before the pass ends and its lease is freed.
        results = await asyncio.gather(*(one(s) for s in due), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            log.warning("cleanup pass had errors", extra={"fields": {"errors": len(errors)}})
            raise errors[0]
        return {key: counts[key] for key in
                ("deleted", "retried", "failed", "reclaimed", "not_attempted", "lost")}

    def _event(self, kind: EventType, reason: str) -> EventDraft:
        return EventDraft(kind, "job:cleanup", self._clock(), reason)

    async def _reclaim_abandoned(self, now: int) -> Counter[str]:
        """Deleting rows whose claim deadline passed belonged to a pass that died.

        Each counts as an attempt: a deletion that kills the process every time (or
        outlives every claim) must reach deletion_failed like one the provider refuses,
        not loop for ever. It is retried in this pass (the deadline was its backoff).
        """
        counts: Counter[str] = Counter()
        reason = "an earlier pass died mid-deletion"
        async for page in rows_in(self._store, Status.DELETING):
            for row in page:
                if row.next_attempt_at is None or row.next_attempt_at > now:
                    continue
                attempts = row.deletion_attempts + 1
                if attempts >= self._policy.max_attempts:
                    counts["failed"] += await self._give_up(row, attempts, reason, now)
                    continue
                change = Transition(row.sandbox_id, Status.DELETING, Status.PENDING_DELETION,
                                    changes={"deletion_attempts": attempts, "last_error": reason,
                                             "next_attempt_at": None},
                                    event=self._event(EventType.DELETION_RETRY, reason))
                counts["reclaimed"] += await self._store.transition(change, now) is not None
        return counts

    async def _due(self, now: int) -> list[Sandbox]:
        due: list[Sandbox] = []
        async for page in rows_in(self._store, Status.PENDING_DELETION):
            due += [s for s in page if s.next_attempt_at is None or s.next_attempt_at <= now]
            if len(due) >= self._policy.batch_size:
                break
        return due[: self._policy.batch_size]

    async def _delete(self, sandbox: Sandbox, now: int) -> str:
        claim = Transition(sandbox.sandbox_id, Status.PENDING_DELETION, Status.DELETING,
                           changes={"next_attempt_at": now + self._policy.claim_timeout_sec})
        claimed = await self._store.transition(claim, now)
        if claimed is None:
            return "lost"  # someone else moved it (admin, another pass)
        result = await self._provider.delete_sandbox(claimed)
        if result.outcome in (DeleteOutcome.DELETED, DeleteOutcome.ALREADY_GONE):
            event = self._event(EventType.DELETED, result.outcome.value)
            removed = await self._store.remove(claimed.sandbox_id, Status.DELETING, event,
                                               tombstone_until=now + self._policy.tombstone_sec)
            # Not removed: a pass that took this claim for abandoned moved the row on;
            # it will find the sandbox gone at the provider and count the deletion then.
            return "deleted" if removed else "lost"
        return await self._record_failure(claimed, result, now)

    async def _record_failure(self, sandbox: Sandbox, result: DeleteResult, now: int) -> str:
        if not result.attempted:  # refused before any request: put it back, unspent
            delay = max(1, int(result.retry_after or 1))
            change = Transition(sandbox.sandbox_id, Status.DELETING, Status.PENDING_DELETION,
                                changes={"next_attempt_at": now + delay})
            await self._store.transition(change, now)
            return "not_attempted"
        attempts = sandbox.deletion_attempts + 1
        reason = result.reason or result.outcome.value
        permanent = result.outcome is DeleteOutcome.FAILED
        if permanent or attempts >= self._policy.max_attempts:
            await self._give_up(sandbox, attempts, reason, now)
            return "failed"
        delay = backoff_seconds(attempts, self._policy, result.retry_after, self._rng)
        change = Transition(sandbox.sandbox_id, Status.DELETING, Status.PENDING_DELETION,
                            changes={"deletion_attempts": attempts, "last_error": reason,
                                     "next_attempt_at": now + delay},
                            event=self._event(EventType.DELETION_RETRY,
                                         f"attempt {attempts} failed: {reason}"))
        await self._store.transition(change, now)
        return "retried"

    async def _give_up(self, sandbox: Sandbox, attempts: int, reason: str, now: int) -> bool:
        """deleting → deletion_failed (an admin's retry starts it over); False if the row
        had moved on meanwhile."""
        change = Transition(sandbox.sandbox_id, Status.DELETING, Status.DELETION_FAILED,
                            changes={"deletion_attempts": attempts, "last_error": reason,
                                     "next_attempt_at": None},
                            event=self._event(EventType.DELETION_FAILED, reason))
        moved = await self._store.transition(change, now) is not None
        if moved:
            log.warning("deletion failed", extra={"fields": {
                "sandbox_id": sandbox.sandbox_id, "attempts": attempts, "reason": reason}})
        return moved
