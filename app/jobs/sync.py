"""Sync: make the store's pool match what the provider reports, without ever touching
a leased or releasing sandbox, and without mass-staling on a bad answer."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from app.domain import Clock, Sandbox, Status, SyncRefused
from app.events import EventDraft, EventType
from app.jobs.base import JobSummary, rows_in
from app.providers.base import Provider, ProviderSandbox
from app.store.base import SandboxStore, Transition

__all__ = ["ADD_CHUNK", "SyncJob"]

log = logging.getLogger("broker.jobs.sync")
ACTOR = "job:sync"
ADD_CHUNK = 100  # new sandboxes per store call (and per event draft)


def _new_row(listed: ProviderSandbox, now: int) -> Sandbox:
    return Sandbox(
        sandbox_id=listed.sandbox_id, name=listed.name, external_id=listed.external_id,
        sfdc_account_id=listed.sfdc_account_id, created_at=listed.created_at or now,
        updated_at=now,
    )


class SyncJob:
    """new at provider → available; available but missing → stale; stale but back →
    available. Every write is conditional on the status this pass read."""

    name = "sync"
    # Sync and cleanup never overlap: otherwise sync could re-add, as available, a
    # sandbox that cleanup deleted after sync had listed it.
    lease_group = "pool"

    def __init__(
        self, store: SandboxStore, provider: Provider, max_stale_fraction: float, clock: Clock
    ) -> None:
        self._store = store
        self._provider = provider
        self._max_stale_fraction = max_stale_fraction
        self._clock = clock

    async def run_once(self, now: int, *, force: bool = False) -> JobSummary:
        listed = {p.sandbox_id: p for p in await self._provider.list_sandboxes()}
        # Every row, leased ones included: the provider lists those too, and they must
        # be recognised as known (by id, or by account: see _new_accounts).
        rows = [s for status in Status async for page in rows_in(self._store, status)
                for s in page]
        available = [s for s in rows if s.status is Status.AVAILABLE]
        stale = [s for s in rows if s.status is Status.STALE]
        # A row is listed under its own id or, should the portal report the account
        # under another id (a field missing from one answer), under its account.
        accounts = {p.external_id for p in listed.values()}

        def is_listed(row: Sandbox) -> bool:
            return row.sandbox_id in listed or row.external_id in accounts

        missing = [s for s in available if not is_listed(s)]
        # The guard's pool is what sync manages: available and stale rows, and listed
        # accounts no other row holds. Leased (or releasing) sandboxes must not dilute
        # it, as rows or as listed accounts: an answer that lists the leased accounts
        # but leaves out the idle ones is partial, not a retirement. An empty answer is
        # an outage.
        held = [s for s in rows if s.status not in (Status.AVAILABLE, Status.STALE)]
        held_ids = {s.sandbox_id for s in held}
        held_accounts = {s.external_id for s in held if s.external_id}
        unheld = {sandbox_id for sandbox_id, p in listed.items()
                  if sandbox_id not in held_ids and p.external_id not in held_accounts}
        managed = len({s.sandbox_id for s in available + stale} | unheld)
        if missing and not force and (
            not listed or len(missing) > self._max_stale_fraction * managed
        ):
            log.warning("sync refused", extra={"fields": {
                "would_stale": len(missing), "pool": managed, "listed": len(listed)}})
            raise SyncRefused(
                f"the provider's answer would stale {len(missing)} of {managed} sandboxes"
            )
        new_rows = [_new_row(p, now) for p in _new_accounts(listed.values(), rows)]
        added = 0
        for start in range(0, len(new_rows), ADD_CHUNK):
            # A draft per chunk: event ids carry the draft's time, and the DynamoDB feed
            # waits only 30 s for late writes, so the last events of a big first sync
            # must not carry the time the first ones were written.
            added += await self._store.add(
                new_rows[start:start + ADD_CHUNK],
                EventDraft(EventType.SYNCED, ACTOR, self._clock(), "new at the provider"),
            )
        staled = 0
        for sandbox in missing:
            change = Transition(sandbox.sandbox_id, Status.AVAILABLE, Status.STALE,
                                event=EventDraft(EventType.STALED, ACTOR, self._clock(),
                                                 "missing from the provider's list"))
            staled += await self._store.transition(change, now) is not None
        revived = 0
        for sandbox in stale:
            if is_listed(sandbox):
                change = Transition(sandbox.sandbox_id, Status.STALE, Status.AVAILABLE,
                                    event=EventDraft(EventType.SYNCED, ACTOR, self._clock(),
                                                     "listed by the provider again"))
                revived += await self._store.transition(change, now) is not None
        return {"listed": len(listed), "synced": added, "staled": staled, "revived": revived}


def _new_accounts(listed: Iterable[ProviderSandbox], rows: list[Sandbox]) -> list[ProviderSandbox]:
    """The listed sandboxes no row knows, each account once, and none whose account a
    row already holds under another id (the portal left a field out of one answer): a
    second row for one account could lease it twice."""
    known = {s.sandbox_id for s in rows}
    held = {s.external_id: s.sandbox_id for s in rows}
    fresh = [p for p in listed if p.sandbox_id not in known]
    kept = [p for p in fresh
            if held.setdefault(p.external_id, p.sandbox_id) == p.sandbox_id]
    if len(kept) < len(fresh):
        log.warning("sync skipped accounts listed under a new id", extra={"fields": {
            "skipped": len(fresh) - len(kept)}})
    return kept
