"""A broker killed with SIGKILL mid-load loses no event and records none twice: every
lease in the store has exactly one `allocated` event, read back through the feed by a
consumer that itself stops half-way and resumes from its saved cursor."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN, ADMIN_TOKEN, TRACK_TOKEN
from tests.support.processes import broker_env, run_cli, serve

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def _allocate_until_killed(url: str, process_kill: asyncio.Event) -> list[httpx.Response]:
    answered: list[httpx.Response] = []

    async def one(client: httpx.AsyncClient, owner: str) -> None:
        try:
            r = await client.post("/v1/allocate", headers={
                "Authorization": f"Bearer {TRACK_TOKEN}", "X-Instruqt-Sandbox-ID": owner})
            answered.append(r)
        except httpx.HTTPError:
            pass  # in flight when the process died
        if len(answered) == 60:
            process_kill.set()

    async with httpx.AsyncClient(base_url=url, timeout=10,
                                 limits=httpx.Limits(max_connections=20)) as client:
        await asyncio.gather(*(one(client, f"k-{i}") for i in range(200)))
    return answered


async def _read_feed(url: str, cursor: str | None, pages: int | None) -> tuple[list[dict], str]:
    events: list[dict] = []
    async with httpx.AsyncClient(base_url=url, headers=ADMIN) as client:
        while pages is None or pages > 0:
            params = {"limit": 7, **({"since": cursor} if cursor else {})}
            page = (await client.get("/v1/admin/events", params=params)).json()
            events += page["events"]
            cursor = page["next_cursor"]
            if pages is not None:
                pages -= 1
            if len(page["events"]) < 7:
                break
    assert cursor is not None
    return events, cursor


async def _leases(url: str) -> set[str]:
    held: set[str] = set()
    cursor: str | None = None
    async with httpx.AsyncClient(base_url=url, headers=ADMIN) as client:
        while True:
            params: dict[str, str | int] = {"status": "allocated", "limit": 100}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get("/v1/admin/sandboxes", params=params)).json()
            held |= {row["sandbox_id"] for row in page["sandboxes"]}
            cursor = page["next_cursor"]
            if cursor is None:
                return held


async def test_sigkill_mid_load_loses_and_duplicates_no_event(tmp_path: Path) -> None:
    env = broker_env(
        BROKER_ENV="production", BROKER_API_TOKEN=TRACK_TOKEN, BROKER_ADMIN_TOKEN=ADMIN_TOKEN,
        BROKER_SQLITE_PATH=str(tmp_path / "broker.db"), BROKER_SIMULATED_POOL_SIZE="0",
        SYNC_ENABLED="false", CLEANUP_ENABLED="false", AUTO_EXPIRY_ENABLED="false",
        STALE_DELETION_ENABLED="false", RATE_LIMIT_ENABLED="false",
    )
    assert run_cli("seed", "--count", "150", env=env).returncode == 0
    kill = asyncio.Event()
    with serve(env, tmp_path) as server:
        load = asyncio.create_task(_allocate_until_killed(server.url, kill))
        await kill.wait()
        server.process.send_signal(signal.SIGKILL)
        answered = await load
    winners = {r.json()["sandbox_id"] for r in answered if r.status_code == 201}
    assert len(winners) >= 60

    with serve(env, tmp_path) as server:
        first, saved = await _read_feed(server.url, None, pages=3)  # consumer stops here
        rest, _ = await _read_feed(server.url, saved, pages=None)  # …and resumes
        held = await _leases(server.url)
    events = first + rest
    assert len({e["event_id"] for e in events}) == len(events)  # nothing twice
    allocated = Counter(e["sandbox_id"] for e in events if e["type"] == "allocated")
    assert winners <= held  # every answered lease survived the crash…
    assert set(allocated) == held  # …and every lease in the store has its event…
    assert all(n == 1 for n in allocated.values())  # …exactly once
    assert run_cli("verify", env=env).returncode == 0
