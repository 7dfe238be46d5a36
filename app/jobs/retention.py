"""Event retention for stores without native expiry (SQLite); DynamoDB uses TTL."""

from __future__ import annotations

from app.jobs.base import JobSummary
from app.store.base import SandboxStore

__all__ = ["EventPurgeJob"]


class EventPurgeJob:
    name = "event_purge"

    def __init__(self, store: SandboxStore, retention_sec: float) -> None:
        self._store = store
        self._retention = retention_sec

    async def run_once(self, now: int, *, force: bool = False) -> JobSummary:
        return {"purged": await self._store.purge_events(now - self._retention)}
