"""Auto-expiry: leases past their stored expires_at plus the grace are released."""

from __future__ import annotations

from app.domain import Clock, Status
from app.events import EventDraft, EventType
from app.jobs.base import JobSummary, rows_in
from app.store.base import SandboxStore, Transition

__all__ = ["ExpiryJob"]


class ExpiryJob:
    """allocated → pending_deletion when now ≥ expires_at + grace. The write is
    conditional on the status, owner and expires_at read, so a lease extended or
    released meanwhile is left alone."""

    name = "auto_expire"

    def __init__(self, store: SandboxStore, grace_seconds: int, clock: Clock) -> None:
        self._store = store
        self._grace = grace_seconds
        self._clock = clock

    async def run_once(self, now: int, *, force: bool = False) -> JobSummary:
        cutoff = now - self._grace
        expired = 0
        async for page in rows_in(self._store, Status.ALLOCATED):
            for lease in page:
                if lease.expires_at is None or lease.expires_at > cutoff:
                    continue
                change = Transition(
                    lease.sandbox_id, Status.ALLOCATED, Status.PENDING_DELETION,
                    owner=lease.owner, expires_at_max=cutoff,
                    event=EventDraft(EventType.EXPIRED, "job:auto_expire", self._clock(),
                                     f"expired at {lease.expires_at}"),
                )
                expired += await self._store.transition(change, now) is not None
        return {"expired": expired}
