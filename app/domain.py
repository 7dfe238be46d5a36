"""The sandbox lifecycle: states, allowed transitions, leases and domain errors.

Pure: no I/O, no framework imports. Every other layer speaks these types.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "DELETION_QUEUE",
    "LIVE_STATUSES",
    "TRANSITIONS",
    "Clock",
    "Contention",
    "DomainError",
    "ExtensionLimit",
    "InvalidInput",
    "InvalidTransition",
    "JobRunning",
    "Lease",
    "LeaseNotActive",
    "NotSandboxOwner",
    "PoolExhausted",
    "Sandbox",
    "SandboxNotFound",
    "Status",
    "StoreUnavailable",
    "SyncRefused",
    "check_transition",
    "is_expired",
]

Clock = Callable[[], float]
"""Returns the current time as epoch seconds; injected so tests control time."""


class Status(StrEnum):
    """Where a sandbox is in its life. The value is what the wire and the stores carry."""

    AVAILABLE = "available"  # in the pool, free to lease
    ALLOCATED = "allocated"  # leased to exactly one owner until expires_at
    PENDING_DELETION = "pending_deletion"  # released or expired; waits for cleanup
    DELETING = "deleting"  # claimed by one cleanup pass; provider delete in flight
    STALE = "stale"  # missing from the provider's last answer; may come back
    DELETION_FAILED = "deletion_failed"  # delete attempts exhausted; an admin may retry


TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.AVAILABLE: frozenset({Status.ALLOCATED, Status.STALE, Status.PENDING_DELETION}),
    Status.ALLOCATED: frozenset({Status.PENDING_DELETION}),
    Status.PENDING_DELETION: frozenset({Status.DELETING}),
    Status.DELETING: frozenset({Status.PENDING_DELETION, Status.DELETION_FAILED}),
    Status.STALE: frozenset({Status.AVAILABLE, Status.PENDING_DELETION}),
    Status.DELETION_FAILED: frozenset({Status.PENDING_DELETION}),
}
"""Every allowed state change. Removing the row is the end of DELETING and STALE."""

LIVE_STATUSES = frozenset({Status.ALLOCATED})
"""Statuses in which a sandbox counts as an owner's live lease."""

DELETION_QUEUE = frozenset({Status.PENDING_DELETION, Status.DELETING, Status.DELETION_FAILED})
"""Statuses of a sandbox whose lease ended and that waits for (or failed) its deletion."""


@dataclass(frozen=True, slots=True)
class Sandbox:
    """One pre-created sandbox and, while leased, its lease."""

    sandbox_id: str
    name: str
    status: Status = Status.AVAILABLE
    external_id: str | None = None
    sfdc_account_id: str | None = None
    owner: str | None = None
    track_name: str | None = None
    allocated_at: int | None = None
    expires_at: int | None = None
    extensions: int = 0
    created_at: int = 0
    updated_at: int = 0
    deletion_attempts: int = 0
    next_attempt_at: int | None = None
    last_error: str | None = None
    # When it entered the deletion queue (released, expired or marked by an admin); kept
    # through every retry, so a deletion's age is not reset by its own retries.
    deletion_requested_at: int | None = None

    def evolve(self, **changes: Any) -> Sandbox:
        """A copy with `changes` applied (the domain objects are immutable)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Lease:
    """What an allocation writes onto the sandbox it claims."""

    owner: str
    track_name: str | None
    allocated_at: int
    expires_at: int


def check_transition(current: Status, new: Status) -> None:
    """Raise InvalidTransition unless `current -> new` is in TRANSITIONS."""
    if new not in TRANSITIONS[current]:
        raise InvalidTransition(f"cannot move a sandbox from {current} to {new}")


def is_expired(sandbox: Sandbox, now: float, grace_seconds: int = 0) -> bool:
    """True when an allocated lease is past its stored expires_at plus the grace."""
    if sandbox.status is not Status.ALLOCATED or sandbox.expires_at is None:
        return False
    return now >= sandbox.expires_at + grace_seconds


class DomainError(Exception):
    """Base of every error the core raises; the API maps `code` to a status."""

    code = "DOMAIN_ERROR"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class SandboxNotFound(DomainError):
    code = "SANDBOX_NOT_FOUND"


class NotSandboxOwner(DomainError):
    code = "NOT_SANDBOX_OWNER"


class PoolExhausted(DomainError):
    code = "POOL_EXHAUSTED"


class Contention(DomainError):
    code = "CONTENTION"


class StoreUnavailable(DomainError):
    code = "STORE_UNAVAILABLE"


class InvalidTransition(DomainError):
    code = "INVALID_TRANSITION"


class InvalidInput(DomainError):
    code = "INVALID_INPUT"


class JobRunning(DomainError):
    code = "JOB_RUNNING"


class ExtensionLimit(DomainError):
    code = "EXTENSION_LIMIT"


class LeaseNotActive(DomainError):
    """The lease has ended (expired or released): it can no longer be extended."""

    code = "LEASE_NOT_ACTIVE"


class SyncRefused(DomainError):
    """The provider's answer would stale too much of the pool: treated as an outage."""

    code = "SYNC_REFUSED"
