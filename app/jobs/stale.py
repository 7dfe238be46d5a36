"""Stale deletion: drop records of sandboxes the provider has not listed for a while."""

from __future__ import annotations

from app.domain import Clock, Status
from app.events import EventDraft, EventType
from app.jobs.base import JobSummary, rows_in
from app.store.base import SandboxStore

__all__ = ["StaleDeletionJob"]


class StaleDeletionJob:
    """Removes stale rows whose last change is older than the grace (conditional on
    still being stale, so a sandbox revived by sync meanwhile stays)."""

    name = "stale_deletion"
    # Never overlaps sync: a pass that read a row as stale, then saw sync revive it
    # and the provider list it again, could otherwise drop a row sync just kept (sync
    # skips rows it already knows, so it would be gone until sync's next pass).
    lease_group = "pool"

    def __init__(self, store: SandboxStore, grace_seconds: int, clock: Clock) -> None:
        self._store = store
        self.grace_seconds = grace_seconds
        self._clock = clock

    async def run_once(self, now: int, *, force: bool = False) -> JobSummary:
        return await self.remove_older_than(now, self.grace_seconds)

    async def remove_older_than(self, now: int, grace_seconds: int) -> JobSummary:
        removed = 0
        async for page in rows_in(self._store, Status.STALE):
            for row in page:
                if row.updated_at + grace_seconds <= now:
                    event = EventDraft(EventType.DELETED, "job:stale_deletion", self._clock(),
                                       "stale record removed")
                    removed += await self._store.remove(row.sandbox_id, Status.STALE, event)
        return {"removed": removed}
