"""Embedded SQLite store: one file, one writer thread, durable on one machine.

Every call runs as one synchronous unit on a dedicated thread, so a transaction
never interleaves with another task's. Separate processes (--workers N) serialise
through SQLite's own locking (BEGIN IMMEDIATE, waited for in short steps up to the
busy timeout: sqlite_lock.py). The claim is a conditional UPDATE on
status='available'; a partial unique index on the owner of allocated rows makes "one
live lease per owner" a database constraint.
"""

from __future__ import annotations

import asyncio
import builtins
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from app.domain import InvalidInput, Lease, Sandbox, Status, StoreUnavailable, check_transition
from app.events import Event, EventDraft, EventPage, EventType, stamp
from app.store.base import ClaimResult, Page, SandboxFilter, Transition
from app.store.cursor import CursorCodec, timeline_scope
from app.store.sqlite_events import insert_event, select_events
from app.store.sqlite_lock import begin_immediate, execute_when_free
from app.store.sqlite_rows import (
    COLUMNS,
    SELECT,
    WRITABLE,
    claim_available_op,
    claim_op,
    lease_op,
    prefix_range,
    to_domain,
    to_row,
    window_op,
)
from app.store.sqlite_schema import SCHEMA, add_missing_columns

__all__ = ["SqliteStore"]

T = TypeVar("T")


class SqliteStore:
    """SandboxStore on a SQLite file (see module docstring)."""

    def __init__(
        self,
        path: str,
        cursors: CursorCodec,
        busy_timeout_ms: int = 5000,
        retry_after: int = 5,
    ) -> None:
        self._path = path
        self._cursors = cursors
        self._busy_timeout_ms = busy_timeout_ms
        self._retry_after = retry_after  # the Retry-After of its 503s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._conn: sqlite3.Connection | None = None
        self._schema_problem: str | None = None
        self._closed = False

    def _unavailable(self, message: str) -> StoreUnavailable:
        return StoreUnavailable(message, retry_after=self._retry_after)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._conn is None:
                raise self._unavailable("the store is not open")
            try:
                return fn(self._conn)
            except sqlite3.DatabaseError as exc:  # locked, I/O error, malformed file, …
                if self._conn.in_transaction:
                    self._conn.rollback()
                raise self._unavailable("the store did not answer") from exc

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except RuntimeError as exc:  # the executor is shut down: the store was closed
            raise self._unavailable("the store is closed") from exc

    async def open(self) -> None:
        """Connect and create the schema; a second call is a no-op."""
        if self._conn is not None:
            return

        def connect() -> None:
            if self._path != ":memory:":
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self._path, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            try:
                # Workers starting together on a new file all switch it to WAL; SQLite
                # answers "locked" at once to all but one, without waiting.
                execute_when_free(conn, "PRAGMA journal_mode = WAL", self._busy_timeout_ms)
                conn.execute("PRAGMA synchronous = NORMAL")
            except sqlite3.DatabaseError as exc:
                conn.close()
                raise self._unavailable("the store could not be opened") from exc
            self._conn = conn

        await asyncio.get_running_loop().run_in_executor(self._executor, connect)
        await self.init_schema()

    async def close(self) -> None:
        """Close the connection and its thread; a second call is a no-op."""
        if self._closed:
            return
        self._closed = True

        def disconnect() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, disconnect)
        self._executor.shutdown(wait=True)

    async def init_schema(self) -> dict[str, Any]:
        def create(conn: sqlite3.Connection) -> None:
            for statement in SCHEMA:
                try:
                    conn.execute(statement)
                except sqlite3.IntegrityError:
                    # Duplicate live owners already in the file: never claim on top of
                    # that; `verify` reports it.
                    self._schema_problem = "the one-live-lease-per-owner index cannot be built"
            with self._transaction(conn):
                add_missing_columns(conn)

        await self._run(create)
        return {"backend": "sqlite", "path": self._path, "schema": list(SCHEMA)}

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1 FROM sandboxes LIMIT 1").fetchall())

    async def _submit(self, op: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run one allocation-path operation: a write in its own transaction.

        The batching subclass overrides this to group concurrent operations.
        """
        if not write:
            return await self._run(op)

        def in_transaction(conn: sqlite3.Connection) -> T:
            with self._transaction(conn):
                return op(conn)

        return await self._run(in_transaction)

    async def find_available(self, name_prefix: str | None, limit: int) -> list[Sandbox]:
        """The first `limit` available sandboxes in pick order (sqlite_rows._available)."""
        return await self._submit(window_op(name_prefix, limit), write=False)

    async def claim(
        self, candidates: Sequence[Sandbox], lease: Lease, event: EventDraft | None = None
    ) -> ClaimResult:
        self._check_integrity()
        ids = [candidate.sandbox_id for candidate in candidates]
        return await self._submit(claim_op(ids, lease, event), write=True)

    async def claim_available(
        self, name_prefix: str | None, window: int, lease: Lease,
        event: EventDraft | None = None,
    ) -> ClaimResult:
        """One trip to the store thread, one statement: the first available sandbox in
        pick order (the window is moot: inside the write transaction nothing conflicts)."""
        self._check_integrity()
        return await self._submit(claim_available_op(name_prefix, lease, event), write=True)

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        """BEGIN IMMEDIATE … COMMIT, rolled back if the body raises."""
        begin_immediate(conn, self._busy_timeout_ms)
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _check_integrity(self) -> None:
        if self._schema_problem:
            raise StoreUnavailable("the store failed its integrity check; run `verify`",
                                   retry_after=60)

    async def get(self, sandbox_id: str) -> Sandbox | None:
        sql = f"{SELECT} WHERE sandbox_id = ?"
        row = await self._run(lambda conn: conn.execute(sql, (sandbox_id,)).fetchone())
        return None if row is None else to_domain(row)

    async def get_lease(self, owner: str) -> Sandbox | None:
        return await self._submit(lease_op(owner), write=False)

    async def transition(self, change: Transition, now: int) -> Sandbox | None:
        if change.new is not change.expected:
            check_transition(change.expected, change.new)
        updates = change.updates(now)
        updates["status"] = str(change.new)
        unknown = set(updates) - WRITABLE
        if unknown:
            raise ValueError(f"not writable: {sorted(unknown)}")
        conditions = ["sandbox_id = ?", "status = ?"]
        args: builtins.list[Any] = [change.sandbox_id, str(change.expected)]
        for column, value, op in (("owner", change.owner, "="),
                                  ("expires_at", change.expires_at_max, "<="),
                                  ("expires_at", change.expected_expires_at, "=")):
            if value is not None:
                conditions.append(f"{column} {op} ?")
                args.append(value)
        sql = (f"UPDATE sandboxes SET {', '.join(f'{c} = ?' for c in updates)}"
               f" WHERE {' AND '.join(conditions)} RETURNING {', '.join(COLUMNS)}")
        params = [*updates.values(), *args]

        def apply(conn: sqlite3.Connection) -> Sandbox | None:
            with self._transaction(conn):
                try:
                    row = conn.execute(sql, params).fetchone()
                except sqlite3.IntegrityError:
                    return None  # e.g. re-allocating for an owner who leased again meanwhile
                if row is None:
                    return None
                changed = to_domain(row)
                if change.event is not None:
                    insert_event(conn, stamp(change.event, changed))
                return changed

        return await self._run(apply)

    async def add(self, sandboxes: Sequence[Sandbox], event: EventDraft | None = None) -> int:
        placeholders = ", ".join("?" for _ in COLUMNS)
        sql = (f"INSERT OR IGNORE INTO sandboxes ({', '.join(COLUMNS)}) SELECT {placeholders}"
               " WHERE NOT EXISTS (SELECT 1 FROM tombstones WHERE sandbox_id = ? AND until > ?)")

        def insert(conn: sqlite3.Connection) -> int:
            added = 0
            with self._transaction(conn):
                for sandbox in sandboxes:
                    args = (*to_row(sandbox), sandbox.sandbox_id, sandbox.updated_at)
                    if conn.execute(sql, args).rowcount:
                        added += 1
                        if event is not None:
                            insert_event(conn, stamp(event, sandbox))
            return added

        return await self._run(insert)

    async def remove(
        self,
        sandbox_id: str,
        expected: Status,
        event: EventDraft | None = None,
        tombstone_until: int | None = None,
    ) -> bool:
        sql = (f"DELETE FROM sandboxes WHERE sandbox_id = ? AND status = ?"
               f" RETURNING {', '.join(COLUMNS)}")
        tomb = "INSERT OR REPLACE INTO tombstones (sandbox_id, until) VALUES (?, ?)"

        def delete(conn: sqlite3.Connection) -> bool:
            with self._transaction(conn):
                row = conn.execute(sql, (sandbox_id, str(expected))).fetchone()
                if row is None:
                    return False
                if event is not None:
                    insert_event(conn, stamp(event, to_domain(row)))
                if tombstone_until is not None:
                    conn.execute(tomb, (sandbox_id, tombstone_until))
                return True

        return await self._run(delete)

    async def list(self, where: SandboxFilter, limit: int, cursor: str | None) -> Page:
        conditions: list[str] = []
        args: list[Any] = []
        for column, value in (("status", where.status and str(where.status)),
                              ("track_name", where.track_name), ("owner", where.owner)):
            if value is not None:
                conditions.append(f"{column} = ?")
                args.append(value)
        if where.name_prefix:
            conditions.append("name >= ? AND name < ?")
            args.extend(prefix_range(where.name_prefix))
        if cursor is not None:
            after = self._cursors.decode(cursor, where.cursor_scope()).get("after")
            if not isinstance(after, str):
                raise InvalidInput("cursor is not valid")
            conditions.append("sandbox_id > ?")
            args.append(after)
        sql = SELECT + (f" WHERE {' AND '.join(conditions)}" if conditions else "")
        sql += " ORDER BY sandbox_id LIMIT ?"
        args.append(limit + 1)
        rows = await self._run(lambda conn: conn.execute(sql, args).fetchall())
        items = [to_domain(row) for row in rows[:limit]]
        more = len(rows) > limit
        next_cursor = self._cursors.encode(
            {"after": items[-1].sandbox_id}, where.cursor_scope()) if more else None
        return Page(items, next_cursor)

    async def count_by_status(self) -> dict[Status, int]:
        sql = "SELECT status, COUNT(*) FROM sandboxes GROUP BY status"
        rows = await self._run(lambda conn: conn.execute(sql).fetchall())
        counts = dict.fromkeys(Status, 0)
        counts.update({Status(status): count for status, count in rows})
        return counts

    async def acquire_job_lease(self, job: str, holder: str, ttl_sec: float, now: float) -> bool:
        sql = (
            "INSERT INTO job_leases (job, holder, expires_at) VALUES (?, ?, ?)"
            " ON CONFLICT(job) DO UPDATE SET holder = excluded.holder,"
            " expires_at = excluded.expires_at"
            " WHERE job_leases.holder = excluded.holder OR job_leases.expires_at <= ?"
        )
        count = await self._run(
            lambda conn: conn.execute(sql, (job, holder, now + ttl_sec, now)).rowcount
        )
        return bool(count)

    async def release_job_lease(self, job: str, holder: str) -> None:
        sql = "DELETE FROM job_leases WHERE job = ? AND holder = ?"
        await self._run(lambda conn: conn.execute(sql, (job, holder)))

    async def integrity_violations(self) -> builtins.list[str]:
        def scan(conn: sqlite3.Connection) -> builtins.list[str]:
            problems = [self._schema_problem] if self._schema_problem else []
            problems += [
                f"owner {owner!r} holds {count} live leases"
                for owner, count in conn.execute(
                    "SELECT owner, COUNT(*) FROM sandboxes WHERE status = 'allocated'"
                    " AND owner IS NOT NULL GROUP BY owner HAVING COUNT(*) > 1"
                )
            ]
            problems += [
                f"sandbox {sid!r} is allocated without an owner or expiry"
                for (sid,) in conn.execute(
                    "SELECT sandbox_id FROM sandboxes WHERE status = 'allocated'"
                    " AND (owner IS NULL OR expires_at IS NULL)"
                )
            ]
            return problems

        return await self._run(scan)

    async def record_event(self, sandbox: Sandbox, event: EventDraft) -> Event:
        full = stamp(event, sandbox)
        await self._submit(lambda conn: insert_event(conn, full), write=True)
        return full

    async def list_events(
        self,
        sandbox_id: str | None,
        types: frozenset[EventType] | None,
        cursor: str | None,
        limit: int,
    ) -> EventPage:
        scope = timeline_scope(sandbox_id)
        after = self._cursors.decode(cursor, scope).get("seq") if cursor else 0
        if not isinstance(after, int):  # e.g. a listing cursor of an earlier release
            raise InvalidInput("cursor is not valid")
        events, last = await self._run(
            lambda conn: select_events(conn, sandbox_id, types, after, limit)
        )
        ended = sandbox_id is not None and len(events) < limit
        return EventPage(events, None if ended else self._cursors.encode({"seq": last}, scope))

    async def purge_events(self, before: float) -> int:
        """Drop old events, and tombstones that have run out (same housekeeping pass)."""

        def purge(conn: sqlite3.Connection) -> int:
            with self._transaction(conn):
                conn.execute("DELETE FROM tombstones WHERE until < ?", (before,))
                return int(conn.execute("DELETE FROM events WHERE at < ?", (before,)).rowcount)

        return await self._run(purge)

    async def get_checkpoint(self, name: str) -> str | None:
        sql = "SELECT value FROM checkpoints WHERE name = ?"
        row = await self._run(lambda conn: conn.execute(sql, (name,)).fetchone())
        return None if row is None else str(row[0])

    async def put_checkpoint(self, name: str, value: str) -> None:
        sql = ("INSERT INTO checkpoints (name, value) VALUES (?, ?)"
               " ON CONFLICT(name) DO UPDATE SET value = excluded.value")
        await self._run(lambda conn: conn.execute(sql, (name, value)))
