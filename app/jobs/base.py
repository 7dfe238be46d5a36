"""What every background job is: a name and one `run_once(now)` pass returning counts."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from typing import Protocol

from app.domain import Sandbox, Status
from app.store.base import SandboxFilter, SandboxStore

__all__ = ["Job", "JobSummary", "rows_in"]

JobSummary = dict[str, int]


class Job(Protocol):
    """One pass of a background job. `force` overrides the job's own safety guard
    (only sync has one). Raises on failure; the runner records it."""

    name: str

    async def run_once(self, now: int, *, force: bool = False) -> JobSummary: ...


async def rows_in(
    store: SandboxStore, status: Status, page_size: int = 100
) -> AsyncIterator[builtins.list[Sandbox]]:
    """Every row in `status`, a page at a time (jobs never read the whole table at once)."""
    cursor: str | None = None
    while True:
        page = await store.list(SandboxFilter(status=status), page_size, cursor)
        if page.items:
            yield page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor
