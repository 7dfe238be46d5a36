"""Shared fixtures: settings on a real SQLite file, the app with its lifespan, and an
httpx client speaking ASGI to it."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.domain import Sandbox
from app.main import create_app
from app.services import Services
from app.store import SandboxStore

pytest_plugins = ["tests.fakes.csp_fixture"]

TRACK_TOKEN = "track-token-for-tests-0123456789abcdef"
ADMIN_TOKEN = "admin-token-for-tests-0123456789abcdef"
TRACK = {"Authorization": f"Bearer {TRACK_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def owner_headers(owner: str, **extra: str) -> dict[str, str]:
    """Track auth plus the owner header (and any extra headers)."""
    return {**TRACK, "X-Instruqt-Sandbox-ID": owner, **extra}


def make_sandboxes(count: int, prefix: str = "lab-", now: int = 1_700_000_000) -> list[Sandbox]:
    return [
        Sandbox(sandbox_id=f"sbx-{prefix}{i:04d}", name=f"{prefix}{i:04d}",
                external_id=f"identity/accounts/{prefix}{i:04d}", sfdc_account_id=f"SF{i}",
                created_at=now, updated_at=now)
        for i in range(1, count + 1)
    ]


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings on a fresh SQLite file; keyword overrides win."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "broker_env": "production",
            "broker_api_token": TRACK_TOKEN,
            "broker_admin_token": ADMIN_TOKEN,
            "broker_store": "sqlite",
            "broker_sqlite_path": str(tmp_path / "broker.db"),
            "broker_provider": "simulated",
            "broker_simulated_pool_size": 0,
            # Jobs run only where a test asks for them (or triggers them via admin).
            "sync_enabled": False,
            "cleanup_enabled": False,
            "auto_expiry_enabled": False,
            "stale_deletion_enabled": False,
            # Concurrency tests send hundreds of requests with one token; the limiter has
            # its own tests.
            "rate_limit_enabled": False,
        }
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)


async def started(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and yield an ASGI client for it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://broker") as client:
            yield client


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async for c in started(app):
        yield c


@pytest.fixture
def store(app: FastAPI, client: httpx.AsyncClient) -> SandboxStore:
    """The running app's store (opened by the client fixture's lifespan)."""
    services: Services = app.state.services
    return services.store


@pytest.fixture
async def seeded(client: httpx.AsyncClient, store: SandboxStore) -> httpx.AsyncClient:
    """The client, with 10 sandboxes lab-0001..lab-0010 and 3 dev-0001..dev-0003."""
    await store.add(make_sandboxes(10) + make_sandboxes(3, prefix="dev-"))
    return client
