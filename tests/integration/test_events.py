"""The event log: one atomic record per state change, a timeline per sandbox, and a
feed that resumes from a cursor without loss or duplicates."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from tests.conftest import ADMIN, FakeClock, owner_headers, started

pytestmark = pytest.mark.integration


@pytest.fixture
def ev_app(make_settings: Callable[..., Settings], clock: FakeClock) -> FastAPI:
    return create_app(make_settings(broker_simulated_pool_size=3, event_retention_days=1),
                      clock=clock)


@pytest.fixture
async def ev(ev_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async for client in started(ev_app):
        assert (await client.post("/v1/admin/sync", headers=ADMIN)).status_code == 200
        yield client


async def feed(client: httpx.AsyncClient, limit: int = 3, **params: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {**params, "limit": limit, **({"since": cursor} if cursor else {})}
        page = (await client.get("/v1/admin/events", headers=ADMIN, params=query)).json()
        events += page["events"]
        assert page["next_cursor"]  # the feed can always be resumed
        if len(page["events"]) < limit:
            return events
        cursor = page["next_cursor"]


async def test_scripted_lifecycle_gives_the_expected_timeline(ev: httpx.AsyncClient) -> None:
    lease = (await ev.post("/v1/allocate", headers=owner_headers("stu"))).json()
    sid = lease["sandbox_id"]
    assert (await ev.post("/v1/allocate", headers=owner_headers("stu"))).status_code == 200
    assert (await ev.post(f"/v1/sandboxes/{sid}/extend", headers=owner_headers("stu"),
                          json={"hours": 1})).status_code == 200
    await ev.post(f"/v1/sandboxes/{sid}/mark-for-deletion", headers=owner_headers("stu"))
    assert (await ev.post("/v1/admin/cleanup", headers=ADMIN)).json()["summary"]["deleted"] == 1
    timeline = (await ev.get(f"/v1/admin/sandboxes/{sid}/events", headers=ADMIN)).json()
    assert [e["type"] for e in timeline["events"]] == [
        "synced", "allocated", "replayed", "extended", "released", "deleted"]
    assert timeline["next_cursor"] is None
    actors = [e["actor"] for e in timeline["events"]]
    assert actors[0] == "job:sync" and actors[-1] == "job:cleanup"
    assert all(a.startswith("track:") for a in actors[1:5])
    assert "token-for-tests" not in str(timeline)  # actors are token ids, never tokens
    assert {e["owner"] for e in timeline["events"][1:]} == {"stu"}
    everything = await feed(ev)
    assert [e["type"] for e in everything].count("synced") == 3
    assert [e for e in everything if e["sandbox_id"] == sid] == timeline["events"]
    assert len({e["event_id"] for e in everything}) == len(everything)
    only = await feed(ev, type=["allocated", "deleted"])
    assert [e["type"] for e in only] == ["allocated", "deleted"]


async def test_resuming_from_a_saved_cursor_skips_and_repeats_nothing(
    ev: httpx.AsyncClient,
) -> None:
    for i in range(3):
        await ev.post("/v1/allocate", headers=owner_headers(f"u{i}"))
    first = (await ev.get("/v1/admin/events", headers=ADMIN, params={"limit": 4})).json()
    saved = first["next_cursor"]  # the consumer dies here, after acknowledging 4
    await ev.post("/v1/admin/bulk-delete", headers=ADMIN,
                  params={"status": "allocated", "force": "true"})
    rest = (await ev.get("/v1/admin/events", headers=ADMIN,
                         params={"since": saved, "limit": 100})).json()["events"]
    combined = first["events"] + rest
    assert combined == await feed(ev, limit=100)
    assert [e["type"] for e in rest].count("admin_action") == 3


async def test_bad_feed_input(ev: httpx.AsyncClient) -> None:
    assert (await ev.get("/v1/admin/events", headers=ADMIN,
                         params={"since": "forged"})).status_code == 400
    assert (await ev.get("/v1/admin/events", headers=ADMIN,
                         params={"type": "nonsense"})).status_code == 422
    assert (await ev.get("/v1/admin/events", headers=owner_headers("x"))).status_code == 403


async def test_retention_purges_old_events(ev_app: FastAPI, ev: httpx.AsyncClient,
                                           clock: FakeClock) -> None:
    assert len(await feed(ev)) == 3
    clock.advance(86400 + 1)
    summary = await ev_app.state.admin.runner.trigger("event_purge")
    assert summary == {"purged": 3}
    assert await feed(ev) == []
