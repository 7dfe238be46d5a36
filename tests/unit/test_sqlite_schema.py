"""A SQLite file made by an older release opens, gains the columns added since, and
keeps its rows; a worker opening it while another adds a column does not add it twice."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from app.domain import Status
from app.store.base import Transition
from app.store.cursor import CursorCodec
from app.store.sqlite import SqliteStore
from app.store.sqlite_schema import ADDED_COLUMNS, SANDBOX_SCHEMA, SCHEMA

pytestmark = pytest.mark.unit

NOW = 1_800_000_000


def older_file(path: Path) -> None:
    """A WAL file as releases before `deletion_requested_at` made it, with one row."""
    create = SANDBOX_SCHEMA[0]
    older = create.replace(",\n        deletion_requested_at INTEGER", "")
    assert older != create
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        for statement in (older, *SCHEMA[1:]):
            conn.execute(statement)
        conn.execute("INSERT INTO sandboxes (sandbox_id, name, status, created_at, updated_at)"
                     " VALUES ('sbx-1', 'lab-1', 'allocated', ?, ?)", (NOW, NOW))


def columns(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as conn:
        return [row[1] for row in conn.execute("PRAGMA table_info(sandboxes)")]


async def test_an_older_file_gains_the_new_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    older_file(path)
    store = SqliteStore(str(path), CursorCodec(b"k" * 32))
    await store.open()
    try:
        row = await store.get("sbx-1")
        assert row is not None and row.deletion_requested_at is None
        released = await store.transition(
            Transition("sbx-1", Status.ALLOCATED, Status.PENDING_DELETION), NOW + 9)
        assert released is not None and released.deletion_requested_at == NOW + 9
    finally:
        await store.close()
    assert set(ADDED_COLUMNS["sandboxes"]) <= set(columns(path))


async def test_a_worker_opening_while_another_adds_the_column_waits_and_skips_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    older_file(path)
    other_worker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other_worker.execute("BEGIN IMMEDIATE")  # mid-way through its own open
    other_worker.execute("ALTER TABLE sandboxes ADD COLUMN deletion_requested_at INTEGER")
    store = SqliteStore(str(path), CursorCodec(b"k" * 32), busy_timeout_ms=5000)
    opening = asyncio.create_task(store.open())
    await asyncio.sleep(0.3)
    assert not opening.done()  # the check waits for the write lock…
    other_worker.execute("COMMIT")
    other_worker.close()
    await asyncio.wait_for(opening, 5)  # …and then finds the column there: no second ADD
    try:
        row = await store.get("sbx-1")
        assert row is not None and row.deletion_requested_at is None
    finally:
        await store.close()
    assert columns(path).count("deletion_requested_at") == 1
