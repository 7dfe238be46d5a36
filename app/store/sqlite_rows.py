"""SQLite row mapping and the allocation-path operations, shared by SqliteStore and
its batching variant. Each operation is a function of a connection, run on the store
thread inside a transaction the caller opened."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from app.domain import Lease, Sandbox, Status
from app.events import EventDraft, stamp
from app.store.base import ClaimOutcome, ClaimResult
from app.store.sqlite_events import insert_event

__all__ = [
    "COLUMNS",
    "SELECT",
    "WRITABLE",
    "claim_available_op",
    "claim_op",
    "claim_statement",
    "lease_op",
    "prefix_range",
    "to_domain",
    "to_row",
    "window_op",
]

COLUMNS = tuple(Sandbox.__dataclass_fields__)
SELECT = f"SELECT {', '.join(COLUMNS)} FROM sandboxes"
WRITABLE = frozenset(COLUMNS) - {"sandbox_id"}
_CLAIM_SET = (
    "UPDATE sandboxes SET status = 'allocated', owner = ?, track_name = ?,"
    " allocated_at = ?, expires_at = ?, extensions = 0, updated_at = ?"
)
_RETURNING = f" RETURNING {', '.join(COLUMNS)}"
_CLAIM = f"{_CLAIM_SET} WHERE sandbox_id = ? AND status = 'available'{_RETURNING}"


_STATUS_AT = COLUMNS.index("status")


def to_domain(row: Sequence[Any]) -> Sandbox:
    """A Sandbox from a row of SELECT (COLUMNS are the dataclass's fields, in order;
    positional, as this runs for every claimed row: half the cost of keywords)."""
    values = list(row)
    values[_STATUS_AT] = Status(values[_STATUS_AT])
    return Sandbox(*values)


def to_row(sandbox: Sandbox) -> tuple[Any, ...]:
    return tuple(
        str(getattr(sandbox, c)) if c == "status" else getattr(sandbox, c) for c in COLUMNS
    )


def prefix_range(prefix: str) -> tuple[str, str]:
    """[low, high) bounds of the names starting with `prefix` (index-friendly)."""
    head = prefix.rstrip("\U0010ffff")  # the last code point has no successor
    if not head:
        return prefix, "\U0010ffff" * (len(prefix) + 1)
    successor = ord(head[-1]) + 1
    if 0xD800 <= successor <= 0xDFFF:  # surrogates cannot be stored: U+D7FF is followed
        successor = 0xE000             # by U+E000 in every string SQLite holds
    return prefix, head[:-1] + chr(successor)


def _available(name_prefix: str | None) -> tuple[str, list[Any]]:
    """The WHERE/ORDER BY of available rows in pick order, and its arguments: rowid
    order, roughly oldest first (read off `available_first`, i.e. (status, rowid)), or
    by name within a prefix (a range of `by_status_name`). Either way an index walk,
    never a sort."""
    if name_prefix:
        return ("status = 'available' AND name >= ? AND name < ? ORDER BY name",
                [*prefix_range(name_prefix)])
    return "status = 'available' ORDER BY rowid", []


def window_op(
    name_prefix: str | None, limit: int
) -> Callable[[sqlite3.Connection], list[Sandbox]]:
    """The first `limit` available sandboxes in pick order."""
    where, args = _available(name_prefix)
    sql = f"{SELECT} WHERE {where} LIMIT ?"
    return lambda conn: [to_domain(row) for row in conn.execute(sql, [*args, limit])]


def claim_statement(name_prefix: str | None) -> tuple[str, list[Any]]:
    """The one-statement claim of the first available sandbox in pick order, and its
    trailing (prefix) arguments; the lease's five values come first."""
    where, args = _available(name_prefix)
    inner = f"SELECT rowid FROM sandboxes WHERE {where} LIMIT 1"
    # The outer status check is the conditional write every state change makes.
    return (f"{_CLAIM_SET} WHERE rowid = ({inner}) AND status = 'available'{_RETURNING}",
            args)


def claim_available_op(
    name_prefix: str | None, lease: Lease, event: EventDraft | None
) -> Callable[[sqlite3.Connection], ClaimResult]:
    """Find and claim in one statement, inside the caller's write transaction, so no
    one can take the row in between: there is nothing to retry and nothing to spread.
    An owner who already holds a live lease gets it back in the result."""
    sql, args = claim_statement(name_prefix)
    params = (lease.owner, lease.track_name, lease.allocated_at, lease.expires_at,
              lease.allocated_at, *args)
    read_lease = lease_op(lease.owner)

    def claim_first_available(conn: sqlite3.Connection) -> ClaimResult:
        try:
            row = conn.execute(sql, params).fetchone()
        except sqlite3.IntegrityError:  # one live lease per owner; the statement is undone
            return ClaimResult(ClaimOutcome.OWNER_HAS_LEASE, read_lease(conn),
                               lease_checked=True)
        if row is None:  # a dry pool: the owner may still hold a lease to replay
            return ClaimResult(ClaimOutcome.EXHAUSTED, read_lease(conn), lease_checked=True)
        try:
            claimed = to_domain(row)
        except Exception as exc:  # the claim must not commit with its caller told "error"
            raise sqlite3.DatabaseError("the claimed row could not be read") from exc
        if event is not None:
            _record(conn, event, claimed)
        return ClaimResult(ClaimOutcome.CLAIMED, claimed)

    return claim_first_available


def _record(conn: sqlite3.Connection, event: EventDraft, sandbox: Sandbox) -> None:
    """Insert the event; any failure aborts the whole transaction (DatabaseError), so a
    claim never commits without its event."""
    try:
        insert_event(conn, stamp(event, sandbox))
    except sqlite3.DatabaseError:
        raise
    except Exception as exc:
        raise sqlite3.DatabaseError("the event could not be recorded") from exc


def claim_op(
    ids: Sequence[str], lease: Lease, event: EventDraft | None
) -> Callable[[sqlite3.Connection], ClaimResult]:
    """Claim the first of `ids` still available, with its event, under a savepoint:
    an owner conflict undoes this claim only (the unique index on live owners)."""
    fixed = (lease.owner, lease.track_name, lease.allocated_at, lease.expires_at,
             lease.allocated_at)

    def claim_first(conn: sqlite3.Connection) -> ClaimResult:
        conn.execute("SAVEPOINT claim")
        try:
            for conflicts, sandbox_id in enumerate(ids):
                row = conn.execute(_CLAIM, (*fixed, sandbox_id)).fetchone()
                if row is not None:
                    claimed = to_domain(row)
                    if event is not None:
                        _record(conn, event, claimed)
                    conn.execute("RELEASE claim")
                    return ClaimResult(ClaimOutcome.CLAIMED, claimed, conflicts)
        except sqlite3.IntegrityError:
            conn.execute("ROLLBACK TO claim")
            conn.execute("RELEASE claim")
            return ClaimResult(ClaimOutcome.OWNER_HAS_LEASE)
        except BaseException:  # nothing of a failed claim may commit with the batch
            conn.execute("ROLLBACK TO claim")
            conn.execute("RELEASE claim")
            raise
        conn.execute("RELEASE claim")
        return ClaimResult(ClaimOutcome.CONFLICT, None, len(ids))

    return claim_first


def lease_op(owner: str) -> Callable[[sqlite3.Connection], Sandbox | None]:
    sql = f"{SELECT} WHERE owner = ? AND status = 'allocated'"

    def read(conn: sqlite3.Connection) -> Sandbox | None:
        row = conn.execute(sql, (owner,)).fetchone()
        return None if row is None else to_domain(row)

    return read
