"""SqliteStore with group commit on the allocation path.

`claim_available`, `find_available`, `claim`, `get_lease` and `record_event` calls
that arrive while the store thread is busy are queued, and the next trip to the
thread runs all of them, in arrival order, inside one `BEGIN IMMEDIATE … COMMIT`.
Every caller gets its own answer, exactly what it would have got alone (each claim
is the same conditional UPDATE, run after the claims queued before it), but a batch
of N calls costs one transaction, one fsync at most (WAL, synchronous=NORMAL) and
one thread hand-off each way instead of N.

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
from typing import Any, TypeVar

from app.domain import StoreUnavailable
from app.store.sqlite import SqliteStore
from app.store.sqlite_lock import begin_immediate

__all__ = ["BatchingSqliteStore"]

T = TypeVar("T")

# An operation runs on the store thread inside the batch transaction; it returns the
# caller's answer or raises (the exception goes to that caller only, except a
# DatabaseError, which aborts the whole batch).
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
                outcomes = await self._run(
                    partial(_execute, batch=batch, busy_timeout_ms=self._busy_timeout_ms))
            except BaseException as exc:  # StoreUnavailable, or cancellation at shutdown
                error = exc if isinstance(exc, StoreUnavailable) else self._unavailable(
                    "the store did not answer")
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

    async def _submit(self, op: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Queue the operation for the next batch (reads too: they see earlier claims)."""
        result: T = await self._batched(op)
        return result


def _execute(
    conn: sqlite3.Connection, batch: Sequence[tuple[_Op, asyncio.Future[Any]]],
    busy_timeout_ms: int,
) -> builtins.list[tuple[bool, Any]]:
    """Run the batch in one transaction on the store thread; (ok, value) per op."""
    outcomes: builtins.list[tuple[bool, Any]] = []
    begin_immediate(conn, busy_timeout_ms)
    try:
        for op, _ in batch:
            try:
                outcomes.append((True, op(conn)))
            except sqlite3.DatabaseError:
                raise  # the connection or the lock is in trouble: abort the whole batch
            except Exception as exc:
                outcomes.append((False, exc))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    return outcomes
