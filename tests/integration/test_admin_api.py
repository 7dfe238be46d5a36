"""Admin endpoints: listing with filters and cursors, stats, bulk operations."""

from __future__ import annotations

import httpx
import pytest

from app.store import SandboxStore
from tests.conftest import ADMIN, TRACK, make_sandboxes, owner_headers

pytestmark = pytest.mark.integration


async def list_all(
    client: httpx.AsyncClient, limit: int, **params: str
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    cursor: str | None = None
    for _ in range(100):
        query = {**params, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/admin/sandboxes", headers=ADMIN, params=query)).json()
        assert page["count"] == len(page["sandboxes"]) <= limit
        rows += page["sandboxes"]
        cursor = page["next_cursor"]
        if cursor is None:
            return rows
    raise AssertionError("pagination did not end")


async def test_pages_cover_everything_once(
    client: httpx.AsyncClient, store: SandboxStore
) -> None:
    await store.add(make_sandboxes(25))
    rows = await list_all(client, 7)
    assert len(rows) == 25 and len({r["sandbox_id"] for r in rows}) == 25


async def test_filters_by_status_prefix_track_and_owner(
    seeded: httpx.AsyncClient,
) -> None:
    for i in range(3):
        await seeded.post("/v1/allocate", headers=owner_headers(
            f"o{i}", **{"X-Instruqt-Track-ID": "lab-x" if i < 2 else "lab-y",
                        "X-Sandbox-Name-Prefix": "lab-"}))
    held = await list_all(seeded, 2, track_name="lab-x")
    assert len(held) == 2 and {r["owner"] for r in held} == {"o0", "o1"}
    assert [r["owner"] for r in await list_all(seeded, 5, owner="o2")] == ["o2"]
    assert len(await list_all(seeded, 100, status="allocated")) == 3
    assert len(await list_all(seeded, 100, name_prefix="dev-")) == 3
    assert len(await list_all(seeded, 100, status="available", name_prefix="lab-")) == 7


@pytest.mark.parametrize(
    ("params", "status"),
    [
        pytest.param({"cursor": "forged"}, 400, id="forged-cursor"),
        pytest.param({"limit": "0"}, 422, id="limit-zero"),
        pytest.param({"limit": "101"}, 422, id="limit-too-big"),
        pytest.param({"status": "weird"}, 422, id="unknown-status"),
        pytest.param({"name_prefix": ""}, 422, id="empty-prefix"),
    ],
)
async def test_listing_rejects_bad_input(
    client: httpx.AsyncClient, params: dict[str, str], status: int
) -> None:
    r = await client.get("/v1/admin/sandboxes", headers=ADMIN, params=params)
    assert r.status_code == status
    assert r.json()["detail"]["request_id"] == r.headers["X-Request-ID"]


async def test_tampered_cursor_is_400(client: httpx.AsyncClient, store: SandboxStore) -> None:
    await store.add(make_sandboxes(5))
    page = (await client.get("/v1/admin/sandboxes", headers=ADMIN, params={"limit": 2})).json()
    cursor = page["next_cursor"]
    tampered = cursor[:-3] + ("AAA" if not cursor.endswith("AAA") else "BBB")
    r = await client.get("/v1/admin/sandboxes", headers=ADMIN,
                         params={"limit": 2, "cursor": tampered})
    assert r.status_code == 400 and r.json()["detail"]["code"] == "INVALID_INPUT"


async def test_stats_are_flat_counts(seeded: httpx.AsyncClient) -> None:
    await seeded.post("/v1/allocate", headers=owner_headers("a"))
    body = (await seeded.get("/v1/admin/stats", headers=ADMIN)).json()
    assert body["total"] == 13 and body["available"] == 12 and body["allocated"] == 1
    for key in ("pending_deletion", "deleting", "stale", "deletion_failed"):
        assert body[key] == 0
    assert body["oldest_pending_deletion_age_sec"] is None


async def test_bulk_delete_rules(seeded: httpx.AsyncClient) -> None:
    await seeded.post("/v1/allocate", headers=owner_headers("a"))
    missing = await seeded.post("/v1/admin/bulk-delete", headers=ADMIN)
    assert missing.status_code == 422
    refused = await seeded.post("/v1/admin/bulk-delete", headers=ADMIN,
                                params={"status": "allocated"})
    assert refused.status_code == 400 and "force" in refused.json()["detail"]["message"]
    wrong = await seeded.post("/v1/admin/bulk-delete", headers=ADMIN,
                              params={"status": "deleting"})
    assert wrong.status_code == 400
    forced = await seeded.post("/v1/admin/bulk-delete", headers=ADMIN,
                               params={"status": "allocated", "force": "true"})
    assert forced.json() == {"job": "bulk_delete", "summary": {"marked": 1}}
    available = await seeded.post("/v1/admin/bulk-delete", headers=ADMIN,
                                  params={"status": "available"})
    assert available.json()["summary"] == {"marked": 12}
    stats = (await seeded.get("/v1/admin/stats", headers=ADMIN)).json()
    assert stats["pending_deletion"] == 13 and stats["oldest_pending_deletion_age_sec"] >= 0


async def test_auto_delete_stale_needs_non_negative_grace(seeded: httpx.AsyncClient) -> None:
    await seeded.post("/v1/admin/sync", headers=ADMIN, params={"force": "true"})
    assert (await seeded.get("/v1/admin/stats", headers=ADMIN)).json()["stale"] == 13
    bad = await seeded.post("/v1/admin/auto-delete-stale", headers=ADMIN,
                            params={"grace_period_hours": "-1"})
    assert bad.status_code == 422
    kept = await seeded.post("/v1/admin/auto-delete-stale", headers=ADMIN,
                             params={"grace_period_hours": "1"})
    assert kept.json()["summary"] == {"removed": 0}
    gone = await seeded.post("/v1/admin/auto-delete-stale", headers=ADMIN,
                             params={"grace_period_hours": "0"})
    assert gone.json()["summary"] == {"removed": 13}


async def test_job_running_is_409(client: httpx.AsyncClient, store: SandboxStore) -> None:
    assert await store.acquire_job_lease("run:pool", "someone-else", 60, 1e12)
    r = await client.post("/v1/admin/cleanup", headers=ADMIN)  # cleanup's group is "pool"
    assert r.status_code == 409 and r.json()["detail"]["code"] == "JOB_RUNNING"
    assert "Retry-After" in r.headers


async def test_track_token_is_403_and_no_token_401(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/admin/stats", headers=TRACK)).status_code == 403
    assert (await client.get("/v1/admin/stats")).status_code == 401


async def test_job_health_lists_last_passes(seeded: httpx.AsyncClient) -> None:
    before = (await seeded.get("/v1/admin/jobs", headers=ADMIN)).json()
    assert before["provider_breaker"] == "closed"
    assert {j["job"]: j["outcome"] for j in before["jobs"]}["sync"] == "never"
    await seeded.post("/v1/admin/auto-expire", headers=ADMIN)
    listed = (await seeded.get("/v1/admin/jobs", headers=ADMIN)).json()["jobs"]
    after = {j["job"]: j for j in listed}
    assert after["auto_expire"]["outcome"] == "ok"
    assert after["auto_expire"]["summary"] == {"expired": 0}
    assert after["auto_expire"]["duration_sec"] >= 0


async def test_prefix_with_the_last_code_point_is_not_a_500(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/admin/sandboxes", headers=ADMIN,
                         params={"name_prefix": "lab-\U0010ffff"})
    assert r.status_code == 200 and r.json()["sandboxes"] == []
