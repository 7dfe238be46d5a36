"""Background jobs against the fake CSP on 127.0.0.1 and a real SQLite file, driven
through the admin API with a fake clock (DESIGN.md §2 invariants 3, 5, 6)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.domain import Status
from app.jobs import cleanup_policy
from app.jobs.cleanup import CleanupJob
from app.jobs.sync import ADD_CHUNK
from app.main import create_app
from app.services import Services
from app.store import SandboxStore, Transition
from tests.conftest import ADMIN, FakeClock, owner_headers, started
from tests.fakes.csp_server import DELETE_ROUTE, FakeCsp

pytestmark = pytest.mark.integration


@pytest.fixture
def csp_settings(on_backend: Callable[..., Settings], fake_csp: FakeCsp) -> Settings:
    """Every job test runs on SQLite and on DynamoDB Local."""
    return on_backend(
        broker_provider="csp", csp_base_url=fake_csp.base_url, csp_api_token=fake_csp.token,
        csp_read_timeout_sec=1.0, csp_breaker_failures=3, csp_breaker_reset_sec=0.05,
        deletion_backoff_base_sec=30, deletion_retry_max_attempts=4, cleanup_rate_per_sec=1000,
    )


@pytest.fixture
def app(csp_settings: Settings, clock: FakeClock) -> FastAPI:
    """The shared `client` and `store` fixtures then run this app, with the fake CSP."""
    return create_app(csp_settings, clock=clock)


class TickingClock(FakeClock):
    """A clock a second later at every reading."""

    def __call__(self) -> float:
        self.now += 1
        return self.now


async def admin_post(client: httpx.AsyncClient, path: str, **params: Any) -> dict[str, Any]:
    response = await client.post(f"/v1/admin/{path}", headers=ADMIN, params=params)
    assert response.status_code == 200, response.text
    summary: dict[str, Any] = response.json()["summary"]
    return summary


async def stats(client: httpx.AsyncClient) -> dict[str, Any]:
    result: dict[str, Any] = (await client.get("/v1/admin/stats", headers=ADMIN)).json()
    return result


async def test_sync_adds_stales_and_revives_but_never_touches_leases(
    client: httpx.AsyncClient, fake_csp: FakeCsp
) -> None:
    accounts = [fake_csp.add_account(f"lab-{i:02d}") for i in range(6)]
    assert (await admin_post(client, "sync"))["synced"] == 6
    lease = (await client.post("/v1/allocate", headers=owner_headers("s1"))).json()
    leased_uuid = lease["external_id"].rsplit("/", 1)[-1]
    gone = next(a for a in accounts if a["id"] != lease["external_id"])
    fake_csp.remove_account(gone["id"].rsplit("/", 1)[-1])
    fake_csp.remove_account(leased_uuid)  # the leased one vanishes at the CSP too
    summary = await admin_post(client, "sync")
    assert summary == {"listed": 4, "synced": 0, "staled": 1, "revived": 0}
    counts = await stats(client)
    assert (counts["available"], counts["allocated"], counts["stale"]) == (4, 1, 1)
    fake_csp.add_row(gone)
    assert (await admin_post(client, "sync"))["revived"] == 1
    assert (await stats(client))["stale"] == 0


async def test_empty_answer_stales_nothing_unless_forced(
    client: httpx.AsyncClient, fake_csp: FakeCsp
) -> None:
    for i in range(10):
        fake_csp.add_account(f"lab-{i:02d}")
    await admin_post(client, "sync")
    fake_csp.empty_list = True
    refused = await client.post("/v1/admin/sync", headers=ADMIN)
    assert refused.status_code == 409 and refused.json()["detail"]["code"] == "SYNC_REFUSED"
    assert (await stats(client))["available"] == 10
    assert (await admin_post(client, "sync", force="true"))["staled"] == 10


async def _pool_mostly_leased(client: httpx.AsyncClient, fake: FakeCsp) -> set[str]:
    """10 sandboxes synced from the portal, 8 of them leased: the leased names."""
    for i in range(10):
        fake.add_account(f"lab-{i:02d}")
    await admin_post(client, "sync")
    answers = [await client.post("/v1/allocate", headers=owner_headers(f"busy-{i}"))
               for i in range(8)]
    return {answer.json()["name"] for answer in answers}


async def test_empty_answer_with_most_of_the_pool_leased_stales_nothing(
    client: httpx.AsyncClient, fake_csp: FakeCsp
) -> None:
    await _pool_mostly_leased(client, fake_csp)
    fake_csp.empty_list = True
    refused = await client.post("/v1/admin/sync", headers=ADMIN)
    assert refused.status_code == 409  # 2 of 10 looked small, but empty is an outage
    assert (await stats(client))["available"] == 2


async def test_an_answer_listing_only_the_leased_accounts_stales_nothing(
    client: httpx.AsyncClient, fake_csp: FakeCsp
) -> None:
    leased = await _pool_mostly_leased(client, fake_csp)
    idle = [row for row in fake_csp.rows if row["name"] not in leased]
    assert len(idle) == 2
    for row in idle:  # a partial answer: the leased accounts, none of the idle ones
        fake_csp.remove_account(row["id"].rsplit("/", 1)[-1])
    refused = await client.post("/v1/admin/sync", headers=ADMIN)
    assert refused.status_code == 409  # 2 of 2 idle sandboxes, not 2 of 10
    assert (await stats(client))["available"] == 2


async def test_an_account_listed_under_another_id_is_not_a_second_sandbox(
    client: httpx.AsyncClient, fake_csp: FakeCsp
) -> None:
    """The portal drops `csp_id` from a listing (the id falls back to the account's
    external id): still one sandbox per account, never two leases on one account."""
    leased, free = (fake_csp.add_account(f"lab-{i}") for i in range(2))
    await admin_post(client, "sync")
    lease = (await client.post("/v1/allocate", headers=owner_headers("first"))).json()
    for row in (leased, free):
        row["csp_id"] = None
    summary = await admin_post(client, "sync")
    assert (summary["synced"], summary["staled"]) == (0, 0)
    counts = await stats(client)
    assert (counts["total"], counts["allocated"], counts["available"]) == (2, 1, 1)
    second = (await client.post("/v1/allocate", headers=owner_headers("second"))).json()
    assert second["external_id"] != lease["external_id"]
    third = await client.post("/v1/allocate", headers=owner_headers("third"))
    assert third.status_code == 409  # both accounts are leased: nothing else to hand out


async def test_sync_cleanup_and_stale_deletion_never_overlap(
    client: httpx.AsyncClient, store: SandboxStore
) -> None:
    assert await store.acquire_job_lease("run:pool", "a-running-cleanup", 60, 1e12)
    for path in ("sync", "cleanup", "auto-delete-stale?grace_period_hours=0"):
        r = await client.post(f"/v1/admin/{path}", headers=ADMIN)
        assert r.status_code == 409 and r.json()["detail"]["code"] == "JOB_RUNNING"
        assert "(sync, cleanup, stale_deletion) is running" in r.json()["detail"]["message"]
    assert (await client.post("/v1/admin/auto-expire", headers=ADMIN)).status_code == 200


async def test_provider_outage_on_sync_is_503_not_500(
    client: httpx.AsyncClient, fake_csp: FakeCsp
) -> None:
    fake_csp.fail_next(1, status=502)
    r = await client.post("/v1/admin/sync", headers=ADMIN)
    assert r.status_code == 503 and r.json()["detail"]["code"] == "PROVIDER_UNAVAILABLE"
    assert fake_csp.token not in r.text


async def test_expiry_then_cleanup_deletes_at_the_provider(
    client: httpx.AsyncClient, fake_csp: FakeCsp, clock: FakeClock
) -> None:
    fake_csp.add_account("lab-01")
    await admin_post(client, "sync")
    lease = (await client.post(
        "/v1/allocate", headers=owner_headers("s1", **{"X-Lab-Duration-Hours": "1"}))).json()
    clock.advance(3600 + 14 * 60)  # inside the 15-minute grace
    assert (await admin_post(client, "auto-expire"))["expired"] == 0
    clock.advance(60)
    assert (await admin_post(client, "auto-expire"))["expired"] == 1
    summary = await admin_post(client, "cleanup")
    assert summary["deleted"] == 1 and fake_csp.count(DELETE_ROUTE) == 1
    gone = await client.get(f"/v1/sandboxes/{lease['sandbox_id']}",
                                  headers=owner_headers("s1"))
    assert gone.status_code == 404


async def test_a_lagging_provider_list_does_not_bring_a_deleted_sandbox_back(
    client: httpx.AsyncClient, fake_csp: FakeCsp, clock: FakeClock
) -> None:
    account = fake_csp.add_account("lab-01")
    await admin_post(client, "sync")
    lease = (await client.post("/v1/allocate", headers=owner_headers("s1"))).json()
    await client.post(f"/v1/sandboxes/{lease['sandbox_id']}/mark-for-deletion",
                            headers=owner_headers("s1"))
    assert (await admin_post(client, "cleanup"))["deleted"] == 1
    fake_csp.add_row(account)  # the CSP still lists the account it just deleted
    clock.advance(3600)
    assert (await admin_post(client, "sync"))["synced"] == 0
    assert (await stats(client))["total"] == 0  # never offered to anyone again


async def _release_all(client: httpx.AsyncClient, fake: FakeCsp, count: int) -> None:
    for i in range(count):
        fake.add_account(f"lab-{i:02d}")
    await admin_post(client, "sync")
    for i in range(count):
        lease = (await client.post("/v1/allocate", headers=owner_headers(f"o{i}"))).json()
        r = await client.post(f"/v1/sandboxes/{lease['sandbox_id']}/mark-for-deletion",
                              headers=owner_headers(f"o{i}"))
        assert r.status_code == 200


async def test_csp_outage_ends_with_everything_deleted_and_nothing_failed(
    on_backend: Callable[..., Settings], fake_csp: FakeCsp, clock: FakeClock
) -> None:
    settings = on_backend(
        broker_provider="csp", csp_base_url=fake_csp.base_url, csp_api_token=fake_csp.token,
        csp_breaker_failures=3, csp_breaker_reset_sec=0.02, cleanup_rate_per_sec=1000,
    )  # the default attempt budget and backoff
    async for client in started(create_app(settings, clock=clock)):
        await _release_all(client, fake_csp, 8)
        fake_csp.fail_next(10_000, status=503)
        outage_ends = clock.now + 5 * 60
        totals: dict[str, int] = {}
        for _ in range(120):  # a cleanup pass every fake minute, for up to two hours
            if clock.now >= outage_ends:
                fake_csp.clear_faults()
            for key, value in (await admin_post(client, "cleanup")).items():
                totals[key] = totals.get(key, 0) + value
            if (await stats(client))["total"] == 0:
                break
            clock.advance(60)
            await asyncio.sleep(0.03)  # lets the breaker half-open
        final = await stats(client)
        assert final["total"] == 0 and final["deletion_failed"] == 0, (final, totals)
        assert totals["deleted"] == 8 and totals["retried"] > 0
        assert totals["not_attempted"] > 0  # the open breaker spared the attempt budget


async def test_retries_exhausted_then_admin_retry_succeeds(
    client: httpx.AsyncClient, fake_csp: FakeCsp, clock: FakeClock
) -> None:
    await _release_all(client, fake_csp, 1)
    fake_csp.fail_next(4, status=500)
    for _ in range(4):
        await admin_post(client, "cleanup")
        clock.advance(7200)
        await asyncio.sleep(0.06)
    failed = await client.get("/v1/admin/sandboxes", headers=ADMIN,
                                    params={"status": "deletion_failed"})
    row = failed.json()["sandboxes"][0]
    assert row["deletion_attempts"] == 4 and row["last_error"]
    assert (await admin_post(client, "retry-failed"))["marked"] == 1
    assert (await admin_post(client, "cleanup"))["deleted"] == 1


async def test_a_revoked_csp_token_delays_deletions_but_fails_none(
    client: httpx.AsyncClient, fake_csp: FakeCsp, clock: FakeClock
) -> None:
    await _release_all(client, fake_csp, 3)
    valid = fake_csp.token
    fake_csp.token = "rotated-at-the-portal"  # every call is answered 401 now
    assert (await admin_post(client, "cleanup"))["retried"] == 3
    assert (await stats(client))["deletion_failed"] == 0
    fake_csp.token = valid  # the operator puts the right token back
    clock.advance(60)  # past the first backoff (30 s base)
    assert (await admin_post(client, "cleanup"))["deleted"] == 3


async def test_a_retried_deletion_keeps_its_age(
    client: httpx.AsyncClient, fake_csp: FakeCsp, clock: FakeClock
) -> None:
    requested = int(clock.now)
    await _release_all(client, fake_csp, 1)
    clock.advance(600)
    fake_csp.fail_next(1, status=503)
    assert (await admin_post(client, "cleanup"))["retried"] == 1  # the row is written again
    assert (await stats(client))["oldest_pending_deletion_age_sec"] == 600
    listed = (await client.get("/v1/admin/sandboxes", headers=ADMIN,
                               params={"status": "pending_deletion"})).json()["sandboxes"]
    assert [row["deletion_requested_at"] for row in listed] == [requested]


async def test_crash_mid_deletion_is_picked_up_later(
    client: httpx.AsyncClient, store: SandboxStore, fake_csp: FakeCsp,
    clock: FakeClock,
) -> None:
    await _release_all(client, fake_csp, 1)
    row = (await store.list(_in(Status.PENDING_DELETION), 10, None)).items[0]
    # A pass claimed it and died before calling the provider.
    now = int(clock.now)
    claimed = await store.transition(
        Transition(row.sandbox_id, Status.PENDING_DELETION, Status.DELETING,
                   changes={"next_attempt_at": now + 300}), now)
    assert claimed is not None
    assert (await admin_post(client, "cleanup"))["deleted"] == 0  # claim still valid
    clock.advance(301)
    summary = await admin_post(client, "cleanup")
    assert summary["reclaimed"] == 1 and summary["deleted"] == 1
    timeline = (await client.get(f"/v1/admin/sandboxes/{row.sandbox_id}/events",
                                 headers=ADMIN)).json()["events"]
    assert [e["reason"] for e in timeline if e["type"] == "deletion_retry"] == [
        "an earlier pass died mid-deletion"]


async def test_a_deletion_that_kills_every_pass_ends_in_deletion_failed(
    app: FastAPI, client: httpx.AsyncClient, store: SandboxStore, fake_csp: FakeCsp,
    clock: FakeClock, csp_settings: Settings,
) -> None:
    await _release_all(client, fake_csp, 1)
    services: Services = app.state.services
    job = CleanupJob(store, services.provider, cleanup_policy(csp_settings), clock)
    fake_csp.delay_sec = 30  # every delete call hangs…
    budget = csp_settings.deletion_retry_max_attempts
    for _ in range(budget):
        now = int(clock.now)
        dying = asyncio.create_task(job.run_once(now))
        for _ in range(500):  # until this pass has claimed the row
            claims = (await store.list(_in(Status.DELETING), 10, None)).items
            if any(row.next_attempt_at and row.next_attempt_at > now for row in claims):
                break
            await asyncio.sleep(0.01)
        dying.cancel()  # …and the pass dies in the middle of it, recording nothing
        with contextlib.suppress(asyncio.CancelledError):
            await dying
        clock.advance(301)  # past the claim's deadline
    summary = await job.run_once(int(clock.now))  # the last attempt is reclaimed only
    assert summary["failed"] == 1 and summary["reclaimed"] == 0
    failed = (await store.list(_in(Status.DELETION_FAILED), 10, None)).items
    assert [(row.deletion_attempts, row.last_error) for row in failed] == [
        (budget, "an earlier pass died mid-deletion")]


async def test_a_deletion_whose_row_moved_meanwhile_is_counted_once(
    client: httpx.AsyncClient, store: SandboxStore, fake_csp: FakeCsp,
    clock: FakeClock,
) -> None:
    await _release_all(client, fake_csp, 1)
    fake_csp.delay_sec = 0.5  # the provider call is in flight…
    running = asyncio.create_task(admin_post(client, "cleanup"))
    deleting: list[Any] = []
    for _ in range(200):
        deleting = (await store.list(_in(Status.DELETING), 10, None)).items
        if deleting:
            break
        await asyncio.sleep(0.01)
    # …when the claim is taken for abandoned and the row put back (a slow pass).
    now = int(clock.now)
    assert await store.transition(
        Transition(deleting[0].sandbox_id, Status.DELETING, Status.PENDING_DELETION,
                   changes={"next_attempt_at": now}), now)
    first = await running
    assert (first["deleted"], first["lost"]) == (0, 1)  # not this pass's removal
    fake_csp.delay_sec = 0
    second = await admin_post(client, "cleanup")  # gone at the provider: removed now
    assert second["deleted"] == 1
    assert (await stats(client))["total"] == 0


def _in(status: Status) -> Any:
    from app.store import SandboxFilter

    return SandboxFilter(status=status)


async def test_jobs_racing_allocations_never_revert_or_double_allocate(
    client: httpx.AsyncClient, store: SandboxStore, fake_csp: FakeCsp,
    clock: FakeClock,
) -> None:
    for i in range(120):
        fake_csp.add_account(f"lab-{i:03d}")
    await admin_post(client, "sync")
    for row in list(fake_csp.rows)[::3]:  # a third vanish at the CSP: sync stales them
        fake_csp.remove_account(row["id"].rsplit("/", 1)[-1])

    async def jobs() -> None:
        for _ in range(6):
            for path in ("sync", "auto-expire", "cleanup"):
                r = await client.post(f"/v1/admin/{path}", headers=ADMIN,
                                            params={"force": "true"} if path == "sync" else {})
                assert r.status_code in (200, 409), r.text

    allocations = [client.post("/v1/allocate", headers=owner_headers(f"u{i}"))
                   for i in range(150)]
    results = await asyncio.gather(jobs(), *allocations)
    answers = [r for r in results[1:] if r is not None]
    winners = {r.json()["sandbox_id"]: r.json() for r in answers if r.status_code == 201}
    assert len(winners) == sum(r.status_code == 201 for r in answers)
    for sandbox_id in winners:
        row = await store.get(sandbox_id)
        assert row is not None and row.status is Status.ALLOCATED  # never reverted
    assert await store.integrity_violations() == []


async def test_a_big_first_sync_stamps_its_events_as_it_writes_them(
    make_settings: Callable[..., Settings], fake_csp: FakeCsp,
) -> None:
    ticking = TickingClock()  # a second passes at every reading: writes take time
    settings = make_settings(broker_provider="csp", csp_base_url=fake_csp.base_url,
                             csp_api_token=fake_csp.token)
    count = 2 * ADD_CHUNK + 1
    for i in range(count):
        fake_csp.add_account(f"lab-{i:04d}")
    async for client in started(create_app(settings, clock=ticking)):
        assert (await admin_post(client, "sync"))["synced"] == count
        page = (await client.get("/v1/admin/events", headers=ADMIN,
                                 params={"type": "synced", "limit": 500})).json()
    stamped = Counter(event["at"] for event in page["events"])
    assert sum(stamped.values()) == count
    assert sorted(stamped.values()) == [1, ADD_CHUNK, ADD_CHUNK]  # one time per chunk
