"""`on_backend`: a settings factory for the app on each store backend — the SQLite file
and a fresh table on Amazon's DynamoDB Local — so invariant tests run on both."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from app.config import Settings
from tests.backends.dynamo import dynamodb_local, open_dynamo_store, unique_table_name

__all__ = ["dynamodb_local", "on_backend", "store_backend"]

SettingsFactory = Callable[..., Settings]


@pytest.fixture(params=["sqlite", "dynamodb_local"])
def store_backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def on_backend(
    store_backend: str, make_settings: SettingsFactory, request: pytest.FixtureRequest
) -> AsyncIterator[SettingsFactory]:
    """make_settings, pointed at the backend; the DynamoDB table exists for the test."""
    if store_backend == "sqlite":
        yield make_settings
        return
    endpoint = request.getfixturevalue("dynamodb_local").endpoint
    table = unique_table_name()

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"broker_store": "dynamodb", "ddb_endpoint_url": endpoint,
                                  "ddb_table_name": table, "store_timeout_sec": 5.0}
        return make_settings(**{**values, **overrides})

    async with open_dynamo_store(build(), create=True, drop=True):
        yield build
