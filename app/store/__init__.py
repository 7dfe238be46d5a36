"""Storage backends behind one SandboxStore protocol."""

from __future__ import annotations

import hashlib

from app.config import Settings
from app.store.base import (
    ClaimOutcome,
    ClaimResult,
    Page,
    SandboxFilter,
    SandboxStore,
    Transition,
)
from app.store.cursor import CursorCodec

__all__ = [
    "ClaimOutcome",
    "ClaimResult",
    "CursorCodec",
    "Page",
    "SandboxFilter",
    "SandboxStore",
    "Transition",
    "create_store",
]


def _cursor_secret(settings: Settings) -> bytes:
    """CURSOR_SECRET if set, else a key derived from the admin tokens, so every
    replica agrees without another secret to manage."""
    configured = settings.cursor_secret.get_secret_value()
    material = configured or "|".join(sorted(settings.admin_tokens)) or "dev"
    return hashlib.sha256(b"sandbox-broker-cursor:" + material.encode()).digest()


def create_store(settings: Settings) -> SandboxStore:
    """The backend named by BROKER_STORE, not yet opened."""
    cursors = CursorCodec(_cursor_secret(settings))
    if settings.broker_store == "dynamodb":
        from app.store.dynamodb import DynamoStore

        dynamo: SandboxStore = DynamoStore.from_settings(settings, cursors)
        return dynamo
    from app.store.sqlite import SqliteStore
    from app.store.sqlite_batch import BatchingSqliteStore

    kind = BatchingSqliteStore if settings.sqlite_batching else SqliteStore
    return kind(settings.broker_sqlite_path, cursors,
                busy_timeout_ms=settings.sqlite_busy_timeout_ms,
                retry_after=settings.store_unavailable_retry_after_sec)
