"""The embedded store's schema: CREATE statements run (idempotently) at every open.

Older files stay readable by older releases: columns and indexes they expect are kept
even where this release no longer uses them.
"""

from __future__ import annotations

from app.store.sqlite_events import EVENT_SCHEMA

__all__ = ["SANDBOX_SCHEMA", "SCHEMA"]

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
        pick_key INTEGER NOT NULL DEFAULT (abs(random()) % 1000000007)
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
