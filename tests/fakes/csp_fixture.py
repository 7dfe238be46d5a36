"""Pytest fixtures for testing against the fake CSP.

Register with `pytest_plugins = ["tests.fakes.csp_fixture"]` (a test module or the root
conftest). Every provider built by `make_provider` is closed before the fake stops, so
no client or server thread outlives its test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from app.domain import Sandbox
from app.providers.csp import CspProvider
from tests.fakes.csp_server import FakeCsp

__all__ = [
    "READ_TIMEOUT", "SLOW_SEC", "MakeProvider", "calls", "fake_csp", "make_provider",
    "provider", "sandbox_for",
]

SLOW_SEC = 0.5  # the fake's answer delay in timeout tests
READ_TIMEOUT = 0.2  # the client's read timeout in timeout tests

MakeProvider = Callable[..., CspProvider]


@pytest.fixture
def fake_csp() -> Iterator[FakeCsp]:
    """A fresh fake CSP per test: it starts in milliseconds, so no shared state to reset."""
    server = FakeCsp()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def calls() -> list[tuple[str, str]]:
    """What providers built by `make_provider` reported through on_call, in order."""
    return []


@pytest.fixture
async def make_provider(
    fake_csp: FakeCsp, calls: list[tuple[str, str]]
) -> AsyncIterator[Callable[..., CspProvider]]:
    """Build CspProviders pointed at the fake; keyword arguments override the defaults."""
    made: list[CspProvider] = []

    def make(**overrides: Any) -> CspProvider:
        kwargs: dict[str, Any] = {
            "base_url": fake_csp.base_url,
            "api_token": fake_csp.token,
            "connect_timeout": 1.0,
            "read_timeout": 2.0,
            "failure_threshold": 3,
            "reset_timeout_sec": 0.2,
            "on_call": lambda op, outcome: calls.append((op, outcome)),
        } | overrides
        provider = CspProvider(**kwargs)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.close()


@pytest.fixture
def provider(make_provider: MakeProvider) -> CspProvider:
    """A provider with the defaults of `make_provider`."""
    return make_provider()


def sandbox_for(row: dict[str, Any] | None, sandbox_id: str = "sb-1") -> Sandbox:
    """A broker-side Sandbox pointing at a fake CSP row (None: no external_id)."""
    external_id = None if row is None else row["id"]
    return Sandbox(sandbox_id=sandbox_id, name="lab-0001", external_id=external_id)
