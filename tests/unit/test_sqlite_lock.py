"""begin_immediate on a real SQLite file shared by two connections: it waits for the
other connection's write lock, gives up after the busy timeout, and leaves the
connection's busy timeout as it found it. The store's open() waits the same way for a
new file another process is still creating (workers starting together)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from app.domain import StoreUnavailable
from app.store.cursor import CursorCodec
from app.store.sqlite import SqliteStore
from app.store.sqlite_lock import begin_immediate

pytestmark = pytest.mark.unit


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[sqlite3.Connection, sqlite3.Connection]]:
    path = tmp_path / "lock.db"
    first = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    first.execute("PRAGMA journal_mode = WAL")
    first.execute("CREATE TABLE t (n INTEGER)")
    second = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    yield first, second
    first.close()
    second.close()


def test_waits_for_the_holder_then_writes(
    pair: tuple[sqlite3.Connection, sqlite3.Connection],
) -> None:
    holder, waiter = pair
    waiter.execute("PRAGMA busy_timeout = 5000")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    began = threading.Event()

    def write() -> None:
        begin_immediate(waiter, 5000)
        began.set()
        waiter.execute("INSERT INTO t VALUES (2)")
        waiter.execute("COMMIT")

    thread = threading.Thread(target=write)
    thread.start()
    assert not began.wait(0.2)  # the lock is held: the waiter must not get it
    holder.execute("COMMIT")
    thread.join(5)
    assert began.is_set()
    assert sorted(n for (n,) in holder.execute("SELECT n FROM t")) == [1, 2]
    assert waiter.execute("PRAGMA busy_timeout").fetchone() == (5000,)


def test_gives_up_after_the_busy_timeout(
    pair: tuple[sqlite3.Connection, sqlite3.Connection],
) -> None:
    holder, waiter = pair
    waiter.execute("PRAGMA busy_timeout = 50")
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        begin_immediate(waiter, 50)
    assert not waiter.in_transaction
    assert waiter.execute("PRAGMA busy_timeout").fetchone() == (50,)
    holder.execute("COMMIT")
    begin_immediate(waiter, 50)  # free again: taken at once
    assert waiter.in_transaction
    waiter.execute("ROLLBACK")


def creating(path: Path) -> sqlite3.Connection:
    """Another process half-way through creating a new (rollback-journal) file."""
    creator = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    creator.execute("BEGIN IMMEDIATE")
    creator.execute("CREATE TABLE t (n INTEGER)")
    return creator


async def test_open_waits_for_a_new_file_another_process_is_creating(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    creator = creating(path)
    store = SqliteStore(str(path), CursorCodec(b"k" * 32), busy_timeout_ms=5000)
    opening = asyncio.create_task(store.open())
    await asyncio.sleep(0.2)
    assert not opening.done()  # switching to WAL needs the other process's lock
    creator.execute("COMMIT")
    await asyncio.wait_for(opening, 5)
    with closing(sqlite3.connect(path)) as check:
        assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    await store.ping()
    creator.close()
    await store.close()


async def test_open_gives_up_as_store_unavailable_after_the_busy_timeout(
    tmp_path: Path,
) -> None:
    path = tmp_path / "new.db"
    creator = creating(path)
    store = SqliteStore(str(path), CursorCodec(b"k" * 32), busy_timeout_ms=100)
    with pytest.raises(StoreUnavailable) as refused:
        await store.open()
    assert str(path) not in str(refused.value)
    creator.execute("COMMIT")
    await store.open()  # the file is free now: a later start opens it
    await store.ping()
    creator.close()
    await store.close()
