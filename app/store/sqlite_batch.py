"""SqliteStore with group commit on the allocation path.

`find_available`, `claim` and `get_lease` calls that arrive while the store thread is busy are
queued, and the next trip to the thread runs all of them, in arrival order, inside
one `BEGIN IMMEDIATE … COMMIT`. Every caller gets its own answer, exactly what it
would have got alone (each claim is the same conditional UPDATE, run after the
claims queued before it), but a batch of N calls costs one transaction, one fsync
at most (WAL, synchronous=NORMAL) and one thread hand-off each way instead of N.

Answers are released only after the COMMIT succeeds; if it fails, every call of
the batch fails with StoreUnavailable and nothing of it is visible. Other methods
use the same single thread (the parent's executor), so they serialise with batches.
"""

from __future__ import annotations

import asyncio
import builtins
import sqlite3
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from app.domain import Lease, Sandbox, StoreUnavailable
from app.events import EventDraft, stamp
from app.store.base import ClaimOutcome, ClaimResult
from app.store.sqlite import _COLUMNS, _PICK_SPACE, _SELECT, SqliteStore, _to_domain, prefix_range
from app.store.sqlite_events import insert_event

__all__ = ["BatchingSqliteStore"]

_CLAIM_SQL = (
    "UPDATE sandboxes SET status = 'allocated', owner = ?, track_name = ?,"
    " allocated_at = ?, expires_at = ?, extensions = 0, updated_at = ?"
    f" WHERE sandbox_id = ? AND status = 'available' RETURNING {', '.join(_COLUMNS)}"
)

# An operation runs on the store thread inside the batch transaction; it returns the
# caller's answer or raises (the exception goes to that caller only, except an
# OperationalError, which aborts the whole batch).
_Op = Callable[[sqlite3.Connection], Any]


class BatchingSqliteStore(SqliteStore):
    """SqliteStore whose allocation calls share transactions (module docstring)."""

    def __init__(self, *args: Any, max_batch: int = 256, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_batch = max_batch
        self._pending: builtins.list[tuple[_Op, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        await super().close()

    async def _batched(self, op: _Op) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                outcomes = await self._run(partial(_execute, batch=batch))
            except BaseException as exc:  # StoreUnavailable, or cancellation at shutdown
                error = exc if isinstance(exc, StoreUnavailable) else StoreUnavailable(
                    "the store did not answer", retry_after=1)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():  # the caller was cancelled meanwhile
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    async def find_available(self, name_prefix: str | None, limit: int) -> list[Sandbox]:
        where, args = "status = 'available'", builtins.list[Any]()
        if name_prefix:
            where += " AND name >= ? AND name < ?"
            args.extend(prefix_range(name_prefix))
        pivot = self._rng.randrange(_PICK_SPACE)
        upper = f"{_SELECT} WHERE {where} AND pick_key >= ? ORDER BY pick_key LIMIT ?"
        lower = f"{_SELECT} WHERE {where} AND pick_key < ? ORDER BY pick_key LIMIT ?"

        def window(conn: sqlite3.Connection) -> builtins.list[Sandbox]:
            rows = conn.execute(upper, [*args, pivot, limit]).fetchall()
            if len(rows) < limit:
                rows += conn.execute(lower, [*args, pivot, limit - len(rows)]).fetchall()
            return [_to_domain(row) for row in rows]

        result: list[Sandbox] = await self._batched(window)
        return result

    async def claim(
        self, candidates: Sequence[Sandbox], lease: Lease, event: EventDraft | None = None
    ) -> ClaimResult:
        if self._schema_problem:
            raise StoreUnavailable("the store failed its integrity check; run `verify`")
        ids = [candidate.sandbox_id for candidate in candidates]
        fixed = (lease.owner, lease.track_name, lease.allocated_at, lease.expires_at,
                 lease.allocated_at)

        def claim_first(conn: sqlite3.Connection) -> ClaimResult:
            # A savepoint per claim: an owner conflict (or a failed event insert) undoes
            # this claim only, never the other claims of the batch.
            conn.execute("SAVEPOINT claim")
            try:
                for conflicts, sandbox_id in enumerate(ids):
                    row = conn.execute(_CLAIM_SQL, (*fixed, sandbox_id)).fetchone()
                    if row is not None:
                        claimed = _to_domain(row)
                        if event is not None:
                            insert_event(conn, stamp(event, claimed))
                        conn.execute("RELEASE claim")
                        return ClaimResult(ClaimOutcome.CLAIMED, claimed, conflicts)
            except sqlite3.IntegrityError:
                conn.execute("ROLLBACK TO claim")
                conn.execute("RELEASE claim")
                return ClaimResult(ClaimOutcome.OWNER_HAS_LEASE)
            conn.execute("RELEASE claim")
            return ClaimResult(ClaimOutcome.CONFLICT, None, len(ids))

        result: ClaimResult = await self._batched(claim_first)
        return result

    async def get_lease(self, owner: str) -> Sandbox | None:
        sql = f"{_SELECT} WHERE owner = ? AND status = 'allocated'"

        def read(conn: sqlite3.Connection) -> Sandbox | None:
            row = conn.execute(sql, (owner,)).fetchone()
            return None if row is None else _to_domain(row)

        result: Sandbox | None = await self._batched(read)
        return result


def _execute(
    conn: sqlite3.Connection, batch: Sequence[tuple[_Op, asyncio.Future[Any]]]
) -> builtins.list[tuple[bool, Any]]:
    """Run the batch in one transaction on the store thread; (ok, value) per op."""
    outcomes: builtins.list[tuple[bool, Any]] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for op, _ in batch:
            try:
                outcomes.append((True, op(conn)))
            except sqlite3.OperationalError:
                raise  # the connection or the lock is in trouble: abort the whole batch
            except Exception as exc:
                outcomes.append((False, exc))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    return outcomes
