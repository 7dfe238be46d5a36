"""The event log's types: what happened to a sandbox, who did it, and why.

Pure, like the domain: stores persist events in the same atomic write as the change
they describe, the API reads them back, webhooks deliver them.
"""

from __future__ import annotations

import itertools
import os
import secrets
from dataclasses import dataclass
from enum import StrEnum

from app.domain import Sandbox

__all__ = ["Event", "EventDraft", "EventPage", "EventType", "stamp"]


class EventType(StrEnum):
    ALLOCATED = "allocated"  # a new lease
    REPLAYED = "replayed"  # the owner asked again and got its live lease
    EXTENDED = "extended"  # expires_at moved forward
    RELEASED = "released"  # the owner marked it for deletion
    EXPIRED = "expired"  # auto-expiry ended the lease
    SYNCED = "synced"  # sync added it, or brought it back from stale
    STALED = "staled"  # missing from the provider's answer
    DELETION_RETRY = "deletion_retry"  # a provider delete failed; will retry (reason)
    DELETED = "deleted"  # deleted at the provider; the row is gone
    DELETION_FAILED = "deletion_failed"  # attempts exhausted
    ADMIN_ACTION = "admin_action"  # an admin moved it (bulk delete, retry-failed, …)


@dataclass(frozen=True, slots=True)
class EventDraft:
    """What the caller knows; the store completes it with the row it changed."""

    type: EventType
    actor: str  # "track:<token id>", "admin:<token id>" or "job:<name>"
    at: float
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str  # time-ordered and unique: "<epoch ms, 13 digits>-<16 hex digits>"
    at: float
    type: EventType
    sandbox_id: str
    owner: str | None
    track_name: str | None
    actor: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[Event]
    next_cursor: str | None  # resume here; None only when a sandbox timeline has ended


class _Suffixes:
    """The part of an event id after its time: a random 32-bit per-process prefix
    (renewed in a forked child) and a 32-bit counter from a random start. Two processes
    collide only with equal prefixes and counters in the same millisecond; ids are in
    order within a process (but for the counter's wrap, once in 2**32 events); and no
    system call per event, as uuid4 made."""

    def __init__(self) -> None:
        self.renew()
        os.register_at_fork(after_in_child=self.renew)

    def renew(self) -> None:
        self._prefix = secrets.token_hex(4)
        self._counter = itertools.count(secrets.randbits(32))

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFF:08x}"


_suffixes = _Suffixes()


def stamp(draft: EventDraft, sandbox: Sandbox) -> Event:
    """The full event for `draft` about `sandbox` (as it is after the change).

    The id sorts by the draft's time, so callers stamp `at` when they write (not when
    a long job pass began): a feed ordered by id must not receive old ids late.
    """
    return Event(
        event_id=f"{int(draft.at * 1000):013d}-{_suffixes.next()}",
        at=draft.at,
        type=draft.type,
        sandbox_id=sandbox.sandbox_id,
        owner=sandbox.owner,
        track_name=sandbox.track_name,
        actor=draft.actor,
        reason=draft.reason,
    )
