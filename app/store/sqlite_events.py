"""The SQLite event log: an append-only table written inside the same transaction as
the state change it records, read back in commit order (its rowid), and small
named checkpoints for feed consumers."""

from __future__ import annotations

import sqlite3
from typing import Any

from app.events import Event, EventType

__all__ = ["EVENT_SCHEMA", "insert_event", "select_events"]

EVENT_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        at REAL NOT NULL,
        type TEXT NOT NULL,
        sandbox_id TEXT NOT NULL,
        owner TEXT,
        track_name TEXT,
        actor TEXT NOT NULL,
        reason TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS events_by_sandbox ON events(sandbox_id, seq)",
    "CREATE INDEX IF NOT EXISTS events_by_time ON events(at)",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        name TEXT PRIMARY KEY, value TEXT NOT NULL
    )""",
)

_FIELDS = ("event_id", "at", "type", "sandbox_id", "owner", "track_name", "actor", "reason")


_INSERT = f"INSERT INTO events ({', '.join(_FIELDS)}) VALUES ({', '.join('?' for _ in _FIELDS)})"


def insert_event(conn: sqlite3.Connection, event: Event) -> None:
    """Append inside the caller's transaction (so it commits or rolls back with it)."""
    conn.execute(_INSERT, (event.event_id, event.at, str(event.type), event.sandbox_id,
                           event.owner, event.track_name, event.actor, event.reason))


def select_events(
    conn: sqlite3.Connection,
    sandbox_id: str | None,
    types: frozenset[EventType] | None,
    after_seq: int,
    limit: int,
) -> tuple[list[Event], int]:
    """Up to `limit` events after `after_seq`, and the seq to resume from."""
    conditions, args = ["seq > ?"], list[Any]([after_seq])
    if sandbox_id is not None:
        conditions.append("sandbox_id = ?")
        args.append(sandbox_id)
    if types:
        conditions.append(f"type IN ({', '.join('?' for _ in types)})")
        args.extend(sorted(str(t) for t in types))
    rows = conn.execute(
        f"SELECT seq, {', '.join(_FIELDS)} FROM events WHERE {' AND '.join(conditions)}"
        " ORDER BY seq LIMIT ?",
        [*args, limit],
    ).fetchall()
    events = [_to_event(row[1:]) for row in rows]
    return events, (rows[-1][0] if rows else after_seq)


def _to_event(row: tuple[Any, ...]) -> Event:
    values = dict(zip(_FIELDS, row, strict=True))
    values["type"] = EventType(values["type"])
    return Event(**values)
