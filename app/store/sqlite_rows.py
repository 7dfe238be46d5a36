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
    "PICK_SPACE",
    "SELECT",
    "WRITABLE",
    "claim_op",
    "lease_op",
    "prefix_range",
    "to_domain",
    "to_row",
    "window_op",
]

COLUMNS = tuple(Sandbox.__dataclass_fields__)
PICK_SPACE = 1_000_000_007  # pick_key: a random position, so callers spread over the pool
SELECT = f"SELECT {', '.join(COLUMNS)} FROM sandboxes"
WRITABLE = frozenset(COLUMNS) - {"sandbox_id"}
_CLAIM = (
    "UPDATE sandboxes SET status = 'allocated', owner = ?, track_name = ?,"
    " allocated_at = ?, expires_at = ?, extensions = 0, updated_at = ?"
    f" WHERE sandbox_id = ? AND status = 'available' RETURNING {', '.join(COLUMNS)}"
)


def to_domain(row: Sequence[Any]) -> Sandbox:
    values = dict(zip(COLUMNS, row, strict=True))
    values["status"] = Status(values["status"])
    return Sandbox(**values)


def to_row(sandbox: Sandbox) -> tuple[Any, ...]:
    return tuple(
        str(getattr(sandbox, c)) if c == "status" else getattr(sandbox, c) for c in COLUMNS
    )


def prefix_range(prefix: str) -> tuple[str, str]:
    """[low, high) bounds of the names starting with `prefix` (index-friendly)."""
    head = prefix.rstrip("\U0010ffff")  # the last code point has no successor
    if not head:
        return prefix, "\U0010ffff" * (len(prefix) + 1)
    return prefix, head[:-1] + chr(ord(head[-1]) + 1)


def window_op(
    name_prefix: str | None, limit: int, pivot: int
) -> Callable[[sqlite3.Connection], list[Sandbox]]:
    """Up to `limit` available sandboxes from pick_key `pivot` on, wrapping around."""
    where, args = "status = 'available'", list[Any]()
    if name_prefix:
        where += " AND name >= ? AND name < ?"
        args.extend(prefix_range(name_prefix))
    upper = f"{SELECT} WHERE {where} AND pick_key >= ? ORDER BY pick_key LIMIT ?"
    lower = f"{SELECT} WHERE {where} AND pick_key < ? ORDER BY pick_key LIMIT ?"

    def window(conn: sqlite3.Connection) -> list[Sandbox]:
        rows = conn.execute(upper, [*args, pivot, limit]).fetchall()
        if len(rows) < limit:
            rows += conn.execute(lower, [*args, pivot, limit - len(rows)]).fetchall()
        return [to_domain(row) for row in rows]

    return window


def claim_op(
    candidates: Sequence[Sandbox], lease: Lease, event: EventDraft | None
) -> Callable[[sqlite3.Connection], ClaimResult]:
    """Claim the first candidate still available, with its event, under a savepoint:
    an owner conflict undoes this claim only (the unique index on live owners)."""
    ids = [candidate.sandbox_id for candidate in candidates]
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
                        insert_event(conn, stamp(event, claimed))
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
