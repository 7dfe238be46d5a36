"""Metrics read back from /metrics: allocations, HTTP, pool, rate limits, jobs and the
provider, the optional token, and the sum over `--workers N` processes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.domain import Status
from app.main import create_app
from app.observability import ALLOCATION_OUTCOMES, Metrics, PoolCollector
from tests.conftest import ADMIN_TOKEN, TRACK, TRACK_TOKEN, make_sandboxes, owner_headers, started
from tests.support.processes import broker_env, run_cli, serve

pytestmark = pytest.mark.integration

METRICS_TOKEN = "metrics-token-for-tests-0123456789abcdef"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, keyed by (name, labels)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def test_allocations_read_back(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(pool_metrics_cache_sec=0))
    async for client in started(app):
        await app.state.services.store.add(make_sandboxes(3))
        for owner in ("a", "a", "b", "c", "d"):  # new, replay, new, new, exhausted
            await client.post("/v1/allocate", headers=owner_headers(owner))
        await client.post("/v1/allocate")  # 401: refused before the allocator
        await client.get("/v1/sandboxes/sbx-lab-0001", headers=owner_headers("zed"))
        text = (await client.get("/metrics")).text
    found = samples(text)
    outcomes = {o: value(found, "broker_allocations_total", outcome=o)
                for o in ("new", "replay", "exhausted", "contention", "error")}
    assert outcomes == {"new": 3, "replay": 1, "exhausted": 1, "contention": 0, "error": 0}
    assert value(found, "broker_allocation_duration_seconds_count") == 5
    assert value(found, "broker_allocation_conflicts_count") == 4  # claims that returned
    route = {"route": "/v1/allocate", "method": "POST"}
    assert value(found, "broker_http_requests_total", **route, status="201") == 3
    assert value(found, "broker_http_requests_total", **route, status="401") == 1
    assert value(found, "broker_http_request_duration_seconds_count", **route) == 6
    assert value(found, "broker_http_requests_total", route="/v1/sandboxes/{sandbox_id}",
                 method="GET", status="403") == 1  # the template, not the id
    pool = {s: value(found, "broker_pool_sandboxes", status=str(s)) for s in Status}
    assert pool[Status.ALLOCATED] == 3 and pool[Status.AVAILABLE] == 0
    assert len(pool) == len(Status)  # every state exported, zero-filled
    assert TRACK_TOKEN not in text and ADMIN_TOKEN not in text


async def test_rate_limited_requests_are_counted(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(rate_limit_enabled=True, rate_limit_principal="1/minute"))
    async for client in started(app):
        for _ in range(3):
            await client.get("/v1/sandboxes/x", headers=owner_headers("o"))
        found = samples((await client.get("/metrics")).text)
    assert value(found, "broker_rate_limited_requests_total", limit="principal") == 2
    assert value(found, "broker_http_requests_total", route="/v1/sandboxes/{sandbox_id}",
                 method="GET", status="429") == 2


@pytest.mark.parametrize(("headers", "status"), [
    pytest.param({}, 401, id="no-header"),
    pytest.param(TRACK, 401, id="track-token"),
    pytest.param({"Authorization": f"Basic {METRICS_TOKEN}"}, 401, id="malformed"),
    pytest.param({"Authorization": f"Bearer {METRICS_TOKEN}"}, 200, id="metrics-token"),
])
async def test_metrics_token(make_settings: Callable[..., Settings], headers: dict[str, str],
                             status: int) -> None:
    app = create_app(make_settings(metrics_token=METRICS_TOKEN))
    async for client in started(app):
        response = await client.get("/metrics", headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.json()["detail"]["code"] == "UNAUTHORIZED"
        assert response.headers["www-authenticate"] == "Bearer"
    assert METRICS_TOKEN not in response.text


async def test_only_the_literal_path_serves_metrics(
    make_settings: Callable[..., Settings],
) -> None:
    async for client in started(create_app(make_settings())):  # no METRICS_TOKEN: open
        literal = await client.get("/metrics")
        aliases = [await client.get(path) for path in ("/%6detrics", "/metric%73")]
    assert literal.status_code == 200
    unknown = {"status": 404, "code": "NOT_FOUND", "message": "Not Found"}
    for alias in aliases:  # what a proxy rule hiding /metrics would not recognise
        detail = alias.json()["detail"]
        assert {"status": alias.status_code, "code": detail["code"],
                "message": detail["message"]} == unknown
        assert "broker_" not in alias.text


def test_weak_or_shared_metrics_token_refused(make_settings: Callable[..., Settings]) -> None:
    for token in ("short", TRACK_TOKEN):
        with pytest.raises(ValueError, match="METRICS_TOKEN"):
            make_settings(metrics_token=token)


async def test_job_and_provider_recorders() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.job_run("sync", "ok", 1.5, {"synced": 3, "staled": 1, "unchanged": 0})
    metrics.job_run("cleanup", "error", 0.2, {})
    state = ["closed"]
    metrics.watch_breaker(lambda: state[0])
    metrics.provider_call("delete", "server_error")
    state[0] = "open"
    metrics.provider_call("delete", "breaker_open")
    found = samples((await metrics.exposition()).decode())
    assert value(found, "broker_job_runs_total", job="sync", outcome="ok") == 1
    assert value(found, "broker_job_runs_total", job="cleanup", outcome="error") == 1
    assert value(found, "broker_job_duration_seconds_sum", job="sync") == 1.5
    assert value(found, "broker_job_sandboxes_total", job="sync", result="synced") == 3
    assert value(found, "broker_job_sandboxes_total", job="sync", result="staled") == 1
    assert ("broker_job_sandboxes_total", frozenset({("job", "sync"), ("result", "unchanged")})) \
        not in found
    assert value(found, "broker_provider_calls_total", operation="delete",
                 outcome="breaker_open") == 1
    breaker = {s: value(found, "broker_provider_breaker_state", state=s)
               for s in ("closed", "open", "half_open")}
    assert breaker == {"closed": 0, "open": 1, "half_open": 0}


async def test_allocation_outcomes_start_at_zero_and_count_any_outcome() -> None:
    metrics = Metrics(CollectorRegistry())
    found = samples((await metrics.exposition()).decode())
    assert {outcome: value(found, "broker_allocations_total", outcome=outcome)
            for outcome in ALLOCATION_OUTCOMES} == dict.fromkeys(ALLOCATION_OUTCOMES, 0.0)

    metrics.allocation("new")
    metrics.allocation("new")
    metrics.allocation("unforeseen")  # a new outcome gets its own series, no error

    found = samples((await metrics.exposition()).decode())
    assert value(found, "broker_allocations_total", outcome="new") == 2
    assert value(found, "broker_allocations_total", outcome="unforeseen") == 1


async def test_pool_counts_are_cached_and_survive_store_errors() -> None:
    now, calls, failing = [100.0], [0], [False]

    async def count() -> dict[Status, int]:
        calls[0] += 1
        if failing[0]:
            raise ConnectionError("store down")
        return {Status.AVAILABLE: calls[0]}

    pool = PoolCollector(count, ttl=5, clock=lambda: now[0])
    assert list(pool.collect()) == []  # nothing known yet: nothing exported
    await pool.refresh()
    await pool.refresh()  # within the TTL: no second store read
    now[0] += 5
    failing[0] = True
    await pool.refresh()  # the read fails: the last counts stay
    [family] = pool.collect()
    by_status = {s.labels["status"]: s.value for s in family.samples}
    assert calls[0] == 2 and pool.failures == 1
    assert by_status["available"] == 1 and by_status["allocated"] == 0


@pytest.mark.slow
async def test_two_workers_share_one_set_of_metrics(tmp_path: Path) -> None:
    """Every scrape sums both workers, whichever one answers it."""
    env: dict[str, Any] = broker_env(
        BROKER_ENV="production", BROKER_API_TOKEN=TRACK_TOKEN, BROKER_ADMIN_TOKEN=ADMIN_TOKEN,
        BROKER_SQLITE_PATH=str(tmp_path / "broker.db"), BROKER_SIMULATED_POOL_SIZE="0",
        RATE_LIMIT_ENABLED="false", PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    (tmp_path / "metrics").mkdir()
    assert run_cli("seed", "--count", "30", env=env).returncode == 0
    with serve(env, tmp_path, workers=2) as server:
        for i in range(20):  # a new connection each: the kernel spreads them over workers
            async with httpx.AsyncClient(base_url=server.url) as client:
                response = await client.post("/v1/allocate", headers=owner_headers(f"w{i}"))
                assert response.status_code == 201
        for _ in range(6):
            async with httpx.AsyncClient(base_url=server.url) as client:
                found = samples((await client.get("/metrics")).text)
            assert value(found, "broker_allocations_total", outcome="new") == 20
            assert value(found, "broker_pool_sandboxes", status="allocated") == 20
