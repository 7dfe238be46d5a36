"""The embedded store's schema: CREATE statements run (idempotently) at every open,
then the columns a file made by an older release lacks are added.

Older files stay readable by older releases: columns and indexes they expect are kept
even where this release no longer uses them, and added columns are nullable.
"""

from __future__ import annotations

import sqlite3

from app.store.sqlite_events import EVENT_SCHEMA

__all__ = ["ADDED_COLUMNS", "SANDBOX_SCHEMA", "SCHEMA", "add_missing_columns"]

SANDBOX_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS sandboxes (
        sandbox_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        external_id TEXT,
        sfdc_account_id TEXT,
        owner TEXT,
        track_name TEXT,
        allocated_at INTEGER,
        expires_at INTEGER,
        extensions INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        deletion_attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER,
        last_error TEXT,
        -- unused since claims go in rowid order; kept so an older release can still open
        -- the file (it indexes this column)
        pick_key INTEGER NOT NULL DEFAULT (abs(random()) % 1000000007),
        deletion_requested_at INTEGER
    )""",
    """CREATE UNIQUE INDEX IF NOT EXISTS one_live_lease_per_owner
        ON sandboxes(owner) WHERE status = 'allocated'""",
    "CREATE INDEX IF NOT EXISTS by_status_name ON sandboxes(status, name)",
    # (status, rowid): available rows in rowid (roughly insertion) order, for the claim
    # (sqlite_rows._available).
    "CREATE INDEX IF NOT EXISTS available_first ON sandboxes(status)",
    # Files made before available_first picked at random by pick_key; that index only
    # slows every claim down now. (An older release recreates it if it opens the file.)
    "DROP INDEX IF EXISTS by_status_pick",
    """CREATE TABLE IF NOT EXISTS job_leases (
        job TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS tombstones (
        sandbox_id TEXT PRIMARY KEY, until INTEGER NOT NULL
    )""",
)
SCHEMA = SANDBOX_SCHEMA + EVENT_SCHEMA

ADDED_COLUMNS = {"sandboxes": {"deletion_requested_at": "INTEGER"}}
"""Columns later releases added to a table, with their types (all nullable)."""


def add_missing_columns(conn: sqlite3.Connection) -> None:
    """Add each ADDED_COLUMNS column the file lacks; the caller holds the write lock,
    so two workers opening an older file together do not both add it."""
    for table, columns in ADDED_COLUMNS.items():
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for column, kind in columns.items():
            if column not in present:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
