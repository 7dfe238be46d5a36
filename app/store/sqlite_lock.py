"""Taking SQLite's write lock without SQLite's own busy handler.

With `--workers N` the processes take turns at the write lock (BEGIN IMMEDIATE). SQLite's
busy handler waits for it by sleeping in growing steps of up to 100 ms, so a worker
could sleep ~0.6 s for a lock that was held for a few milliseconds (the 2-worker max
latency in docs/performance.md). `begin_immediate` turns the handler off while it asks
for the lock, polls in short steps (0.1-2 ms, the GIL released) up to the store's busy
timeout, and turns it back on for the transaction's other statements.
"""

from __future__ import annotations

import sqlite3
import time

__all__ = ["begin_immediate", "execute_when_free"]

_FIRST_STEP, _LONGEST_STEP = 0.0001, 0.002  # seconds


def begin_immediate(conn: sqlite3.Connection, timeout_ms: int) -> None:
    """BEGIN IMMEDIATE, waiting for another process's write lock in short steps."""
    execute_when_free(conn, "BEGIN IMMEDIATE", timeout_ms)


def execute_when_free(conn: sqlite3.Connection, statement: str, timeout_ms: int) -> None:
    """Run `statement`, waiting for another process's lock in short steps; raises the
    last "database is locked" once `timeout_ms` (the connection's busy timeout, restored
    afterwards) has passed. Also for statements SQLite's busy handler never waits for,
    such as the switch to WAL while another process opens the same new file."""
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        deadline = time.monotonic() + timeout_ms / 1000
        step = _FIRST_STEP
        while True:
            try:
                conn.execute(statement)
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(step)
            step = min(step * 2, _LONGEST_STEP)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout_ms)}")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF == sqlite3.SQLITE_BUSY)
    return "locked" in str(exc)
