"""The contract suite's `store` fixture: one fresh store per test on each backend.

Backends: `sqlite` and `sqlite_batch` (SqliteStore and its group-commit variant, on a
file under tmp_path), `moto` (a moto server process) and
`dynamodb_local` (Amazon DynamoDB Local); the DynamoDB ones get a fresh table each.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.store.base import SandboxStore
from app.store.sqlite import SqliteStore
from app.store.sqlite_batch import BatchingSqliteStore
from tests.backends.dynamo import (
    TEST_CURSORS,
    dynamo_settings,
    dynamodb_local,
    moto_server,
    open_dynamo_store,
)

__all__ = ["backend", "dynamodb_local", "moto_server", "store"]

BACKENDS = ("sqlite", "sqlite_batch", "moto", "dynamodb_local")
DYNAMO_BACKENDS = ("moto", "dynamodb_local")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend's name (the param id), for tests that size their load by backend."""
    name: str = request.param
    return name


@pytest.fixture
async def store(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SandboxStore]:
    if backend.startswith("sqlite"):
        kind = BatchingSqliteStore if backend == "sqlite_batch" else SqliteStore
        sqlite = kind(str(tmp_path / "contract.db"), TEST_CURSORS)
        await sqlite.open()
        try:
            yield sqlite
        finally:
            await sqlite.close()
        return
    if backend == "moto":
        # moto answers a query in time linear in the table, one request at a time: two
        # shards still exercise every cross-shard path, with a quarter of the queries.
        settings = dynamo_settings(request.getfixturevalue("moto_server").endpoint,
                                   ddb_availability_shards=2)
    else:
        settings = dynamo_settings(request.getfixturevalue("dynamodb_local").endpoint)
    async with open_dynamo_store(settings) as dynamo:
        yield dynamo
