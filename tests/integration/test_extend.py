"""Lease extension: bounds, idempotent refusal after the end, and races with expiry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.domain import Status
from app.jobs import ExpiryJob
from app.main import create_app
from app.store import SandboxStore, Transition
from tests.conftest import FakeClock, make_sandboxes, owner_headers, started

pytestmark = pytest.mark.integration


@pytest.fixture
def ext_app(on_backend: Callable[..., Settings], clock: FakeClock) -> FastAPI:
    settings = on_backend(lab_duration_hours=2, max_extension_hours=2, max_lease_hours=6,
                             max_extensions=3, grace_period_minutes=0)
    return create_app(settings, clock=clock)


@pytest.fixture
async def ext(ext_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async for client in started(ext_app):
        await ext_app.state.services.store.add(make_sandboxes(5))
        yield client


async def lease(client: httpx.AsyncClient, owner: str = "s") -> dict[str, Any]:
    body: dict[str, Any] = (await client.post("/v1/allocate", headers=owner_headers(owner))).json()
    return body


async def extend(client: httpx.AsyncClient, sandbox_id: str, hours: Any,
                 owner: str = "s") -> httpx.Response:
    return await client.post(f"/v1/sandboxes/{sandbox_id}/extend",
                             headers=owner_headers(owner), json={"hours": hours})


async def test_extend_moves_expiry_and_counts_down(ext: httpx.AsyncClient) -> None:
    held = await lease(ext)
    r = await extend(ext, held["sandbox_id"], 1.5)
    assert r.status_code == 200
    assert r.json()["expires_at"] == held["expires_at"] + 5400
    assert r.json()["extensions_left"] == 2
    replay = await ext.post("/v1/allocate", headers=owner_headers("s"))
    assert replay.json()["expires_at"] == held["expires_at"] + 5400  # stored, single truth


@pytest.mark.parametrize(
    ("steps", "limit"),
    [
        pytest.param([3], "MAX_EXTENSION_HOURS", id="one-too-long"),
        pytest.param([2, 2, 0.5], "MAX_LEASE_HOURS", id="total-too-long"),
        pytest.param([0.5, 0.5, 0.5, 0.5], "MAX_EXTENSIONS", id="too-many"),
    ],
)
async def test_each_bound_is_409_naming_it(
    ext: httpx.AsyncClient, steps: list[float], limit: str
) -> None:
    held = await lease(ext)
    *fine, last = steps
    for hours in fine:
        assert (await extend(ext, held["sandbox_id"], hours)).status_code == 200
    refused = await extend(ext, held["sandbox_id"], last)
    assert refused.status_code == 409
    assert refused.json()["detail"]["code"] == "EXTENSION_LIMIT"
    assert limit in refused.json()["detail"]["message"]


@pytest.mark.parametrize("hours", [0, -1, "x", None, 10_000])
async def test_bad_hours_is_422(ext: httpx.AsyncClient, hours: Any) -> None:
    held = await lease(ext)
    assert (await extend(ext, held["sandbox_id"], hours)).status_code == 422


async def test_other_owner_and_unknown(ext: httpx.AsyncClient) -> None:
    held = await lease(ext)
    assert (await extend(ext, held["sandbox_id"], 1, owner="mallory")).status_code == 403
    assert (await extend(ext, "missing", 1)).status_code == 404


async def test_ended_lease_is_refused(ext: httpx.AsyncClient, clock: FakeClock) -> None:
    held = await lease(ext)
    clock.advance(2 * 3600)
    refused = await extend(ext, held["sandbox_id"], 1)
    assert refused.status_code == 409 and refused.json()["detail"]["code"] == "LEASE_NOT_ACTIVE"
    released = await lease(ext, "t")
    await ext.post(f"/v1/sandboxes/{released['sandbox_id']}/mark-for-deletion",
                   headers=owner_headers("t"))
    assert (await extend(ext, released["sandbox_id"], 1, owner="t")).status_code == 409


class ExpireFirst:
    """Delegates to the store, but runs an expiry pass just before the first lease
    update: the interleaving where expiry wins between extend's read and write."""

    def __init__(self, inner: SandboxStore, expiry: ExpiryJob, clock: FakeClock) -> None:
        self._inner, self._expiry, self._clock = inner, expiry, clock
        self.raced = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def transition(self, change: Transition, now: int) -> Any:
        if not self.raced and change.new is Status.ALLOCATED:
            self.raced = True
            self._clock.advance(3600)  # the lease runs out meanwhile
            assert (await self._expiry.run_once(int(self._clock.now)))["expired"] == 1
        return await self._inner.transition(change, now)


async def test_extension_racing_expiry_is_refused_not_half_applied(
    on_backend: Callable[..., Settings], clock: FakeClock
) -> None:
    settings = on_backend(lab_duration_hours=1, grace_period_minutes=0)
    base = create_app(settings, clock=clock)
    async for _ in started(base):
        inner = base.state.services.store
        await inner.add(make_sandboxes(2))
        racing = ExpireFirst(inner, ExpiryJob(inner, 0, clock), clock)
        async for client in started(create_app(settings, store=racing, clock=clock)):
            held = await lease(client)
            refused = await extend(client, held["sandbox_id"], 1)
            assert refused.status_code == 409
            assert refused.json()["detail"]["code"] == "LEASE_NOT_ACTIVE"
            row = await inner.get(held["sandbox_id"])
            assert row.status is Status.PENDING_DELETION and row.extensions == 0
            assert row.expires_at == held["expires_at"]


async def test_expiry_after_extension_leaves_the_lease(
    ext_app: FastAPI, ext: httpx.AsyncClient, clock: FakeClock
) -> None:
    store: SandboxStore = ext_app.state.services.store
    held = await lease(ext)
    stale_cutoff = held["expires_at"]  # what an expiry pass read before the extension
    assert (await extend(ext, held["sandbox_id"], 1)).status_code == 200
    late = Transition(held["sandbox_id"], Status.ALLOCATED, Status.PENDING_DELETION,
                      owner="s", expires_at_max=stale_cutoff)
    assert await store.transition(late, int(clock.now)) is None  # the condition saved it
    assert (await store.get(held["sandbox_id"])).status is Status.ALLOCATED


async def test_concurrent_extensions_each_land_or_meet_a_bound(ext: httpx.AsyncClient) -> None:
    """Ten at once against MAX_EXTENSIONS=3: three land, the rest are told the bound
    (409), none is told to retry (503): a lost write only means another one landed."""
    held = await lease(ext)
    answers = await asyncio.gather(*(extend(ext, held["sandbox_id"], 1) for _ in range(10)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * 3 + [409] * 7, [a.text for a in answers]
    assert {a.json()["detail"]["code"] for a in answers if a.status_code == 409} == {
        "EXTENSION_LIMIT"}
    latest = await ext.get(f"/v1/sandboxes/{held['sandbox_id']}", headers=owner_headers("s"))
    assert latest.json()["expires_at"] == held["expires_at"] + 3 * 3600


async def test_concurrent_extensions_below_every_bound_all_land(
    on_backend: Callable[..., Settings], clock: FakeClock
) -> None:
    settings = on_backend(lab_duration_hours=2, max_lease_hours=24, max_extensions=20)
    app = create_app(settings, clock=clock)
    async for client in started(app):
        await app.state.services.store.add(make_sandboxes(1))
        held = await lease(client)
        answers = await asyncio.gather(*(extend(client, held["sandbox_id"], 0.5)
                                         for _ in range(8)))
        assert [a.status_code for a in answers] == [200] * 8
        assert sorted(a.json()["extensions_left"] for a in answers) == list(range(12, 20))


async def test_no_lease_is_asked_for_beyond_max_lease_hours(ext: httpx.AsyncClient) -> None:
    """MAX_LEASE_HOURS=6 caps X-Lab-Duration-Hours too (MAX_LAB_DURATION_HOURS is 24)."""
    too_long = await ext.post("/v1/allocate", headers=owner_headers(
        "long", **{"X-Lab-Duration-Hours": "7"}))
    assert too_long.status_code == 422
    assert "(0, 6]" in too_long.json()["detail"]["errors"][0]["msg"]
