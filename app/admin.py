"""Admin verbs over the pool: listing, stats, bulk operations and job triggers.

Bulk operations only ever move rows into pending_deletion with conditional writes,
so deletion always goes through the cleanup pipeline and its provider call: an admin
action never orphans a CSP account.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.domain import Clock, InvalidInput, Status
from app.events import EventDraft, EventPage, EventType
from app.jobs import JobRunner, JobSummary, StaleDeletionJob
from app.jobs.base import rows_in
from app.providers.base import Provider
from app.store.base import Page, SandboxFilter, SandboxStore, Transition

__all__ = ["BULK_DELETABLE", "AdminService"]

BULK_DELETABLE = frozenset(
    {Status.AVAILABLE, Status.STALE, Status.ALLOCATED, Status.DELETION_FAILED}
)


@dataclass
class AdminService:
    store: SandboxStore
    runner: JobRunner
    provider: Provider
    clock: Clock

    async def list_sandboxes(self, where: SandboxFilter, limit: int, cursor: str | None) -> Page:
        return await self.store.list(where, limit, cursor)

    async def stats(self) -> dict[str, Any]:
        """Flat counts by status, the total, and the age of the oldest pending deletion
        (since it was requested: its retries do not make it younger)."""
        counts = await self.store.count_by_status()
        stats: dict[str, Any] = {str(status): n for status, n in counts.items()}
        stats["total"] = sum(counts.values())
        oldest: int | None = None  # every pending row is read: an admin call, not a hot path
        async for page in rows_in(self.store, Status.PENDING_DELETION):
            first = min(s.deletion_requested_at or s.updated_at for s in page)
            oldest = first if oldest is None else min(oldest, first)
        stats["oldest_pending_deletion_age_sec"] = (
            None if oldest is None else int(self.clock()) - oldest)
        return stats

    def job_health(self) -> dict[str, Any]:
        """The last pass of each job in this replica, and the provider's breaker state."""
        jobs = [
            {"job": r.job, "outcome": r.outcome, "started_at": r.started_at,
             "duration_sec": r.duration_sec, "summary": r.summary, "error": r.error}
            for r in self.runner.records.values()
        ]
        return {"jobs": jobs, "provider_breaker": self.provider.breaker_state()}

    async def timeline(self, sandbox_id: str, cursor: str | None, limit: int) -> EventPage:
        """One sandbox's events, oldest first (also after its row is gone)."""
        return await self.store.list_events(sandbox_id, None, cursor, limit)

    async def event_feed(
        self, types: frozenset[EventType] | None, since: str | None, limit: int
    ) -> EventPage:
        """Every event in commit order after `since` (a cursor from an earlier page)."""
        return await self.store.list_events(None, types, since, limit)

    async def run_job(self, name: str, *, force: bool = False) -> JobSummary:
        return await self.runner.trigger(name, force=force)

    async def delete_stale_older_than(self, grace_hours: float) -> JobSummary:
        job = StaleDeletionJob(self.store, int(grace_hours * 3600), self.clock)
        return await self.runner.run_exclusive("stale_deletion", job.run_once)

    async def bulk_delete(
        self, status: Status, *, force: bool, actor: str = "admin"
    ) -> JobSummary:
        """Mark every sandbox in `status` for deletion (allocated needs force)."""
        if status not in BULK_DELETABLE:
            raise InvalidInput(f"bulk delete does not apply to status {status}")
        if status is Status.ALLOCATED and not force:
            raise InvalidInput("deleting allocated sandboxes ends live leases: pass force=true")

        async def mark(now: int) -> JobSummary:
            marked = 0
            async for page in rows_in(self.store, status):
                for row in page:
                    event = EventDraft(EventType.ADMIN_ACTION, actor, self.clock(),
                                       f"bulk delete of {status}")
                    change = Transition(row.sandbox_id, status, Status.PENDING_DELETION,
                                        changes={"next_attempt_at": None,
                                                 "deletion_attempts": 0},
                                        event=event)
                    marked += await self.store.transition(change, now) is not None
            return {"marked": marked}

        return await self.runner.run_exclusive("bulk_delete", mark)

    async def retry_failed(self, actor: str = "admin") -> JobSummary:
        """deletion_failed → pending_deletion with a fresh attempt budget."""
        return await self.bulk_delete(Status.DELETION_FAILED, force=False, actor=actor)
