"""DESIGN.md §2 invariants 1 and 2, hammered with concurrent requests through the app."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from app.config import Settings
from app.domain import Status
from app.store import SandboxStore
from tests.conftest import make_sandboxes, owner_headers

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(on_backend: Callable[..., Settings]) -> Settings:
    """Every invariant here runs on SQLite and on DynamoDB Local."""
    return on_backend()


async def test_300_owners_100_sandboxes_exactly_100_winners(
    client: httpx.AsyncClient, store: SandboxStore
) -> None:
    await store.add(make_sandboxes(100))
    responses = await asyncio.gather(*(
        client.post("/v1/allocate", headers=owner_headers(f"student-{i}")) for i in range(300)
    ))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 100, 409: 200}, statuses
    winners = [r.json()["sandbox_id"] for r in responses if r.status_code == 201]
    assert len(set(winners)) == 100
    assert await store.integrity_violations() == []


async def test_50_duplicate_allocates_by_one_owner_share_one_sandbox(
    client: httpx.AsyncClient, store: SandboxStore
) -> None:
    await store.add(make_sandboxes(60))
    responses = await asyncio.gather(*(
        client.post("/v1/allocate", headers=owner_headers("same-student")) for _ in range(50)
    ))
    assert {r.status_code for r in responses} <= {200, 201}
    assert sum(r.status_code == 201 for r in responses) == 1
    assert len({r.json()["sandbox_id"] for r in responses}) == 1
    counts = await store.count_by_status()
    assert counts[Status.ALLOCATED] == 1 and counts[Status.AVAILABLE] == 59
    lease = await store.get_lease("same-student")
    assert lease is not None and lease.sandbox_id == responses[0].json()["sandbox_id"]
    assert await store.integrity_violations() == []


async def test_release_racing_replay_never_leaves_two_live_leases(
    client: httpx.AsyncClient, store: SandboxStore
) -> None:
    await store.add(make_sandboxes(200))
    for round_ in range(10):
        owner = f"racer-{round_}"
        lease = (await client.post("/v1/allocate", headers=owner_headers(owner))).json()
        release = client.post(
            f"/v1/sandboxes/{lease['sandbox_id']}/mark-for-deletion", headers=owner_headers(owner)
        )
        replays = [client.post("/v1/allocate", headers=owner_headers(owner)) for _ in range(10)]
        results = await asyncio.gather(release, *replays)
        assert results[0].status_code == 200
        assert all(r.status_code in (200, 201) for r in results[1:])
        live = await store.get_lease(owner)
        new_ids = {r.json()["sandbox_id"] for r in results[1:] if r.status_code == 201}
        assert len(new_ids) <= 1  # at most one fresh lease after the release
        if live is not None:
            assert live.sandbox_id != lease["sandbox_id"]
    assert await store.integrity_violations() == []
