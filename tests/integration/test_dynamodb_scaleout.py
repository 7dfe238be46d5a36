"""Two `sandbox-broker serve` replicas on one DynamoDB Local table: the invariants of
DESIGN.md §2 hold across processes, not just across tasks of one process."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.backends.dynamo import Emulator
from tests.backends.replicas import (
    admin_headers,
    allocate,
    owner_headers,
    prepare_table,
    replica_env,
    verify,
)
from tests.support.processes import Server, serve

pytestmark = [pytest.mark.integration, pytest.mark.slow]

POOL = 150
OWNERS = 400


@pytest.fixture(scope="module")
def ddb(dynamodb_local: Emulator) -> Emulator:
    """The session's DynamoDB Local (a fresh table per module keeps runs apart)."""
    return dynamodb_local


@pytest.fixture(scope="module")
def env(ddb: Emulator) -> dict[str, str]:
    env = replica_env(ddb.endpoint)
    prepare_table(env, {"lab-": POOL, "solo-": 10})
    return env


@pytest.fixture(scope="module")
def replicas(env: dict[str, str],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    logs = tmp_path_factory.mktemp("scaleout-logs")
    with serve(env, logs) as first, serve(env, logs) as second:
        yield first, second


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=OWNERS + 50, max_keepalive_connections=100)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        yield client


async def stats(http: httpx.AsyncClient, url: str) -> dict[str, int]:
    response = await http.get(f"{url}/v1/admin/stats", headers=admin_headers())
    assert response.status_code == 200, response.text
    counts: dict[str, int] = response.json()
    return counts


async def test_400_owners_150_sandboxes_across_two_replicas(
    replicas: tuple[Server, Server], env: dict[str, str], http: httpx.AsyncClient
) -> None:
    urls = [server.url for server in replicas]
    before = await stats(http, urls[0])
    responses = await asyncio.gather(*(
        allocate(http, urls[i % 2], f"student-{i}", prefix="lab-") for i in range(OWNERS)
    ))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: POOL, 409: OWNERS - POOL}, statuses
    assert all(r.json()["detail"]["code"] == "POOL_EXHAUSTED" and "Retry-After" in r.headers
               for r in responses if r.status_code == 409)
    leases = {f"student-{i}": r.json() for i, r in enumerate(responses) if r.status_code == 201}
    assert len({lease["sandbox_id"] for lease in leases.values()}) == POOL

    # Each lease reads back, and replays, the same on the other replica.
    for index, (owner, lease) in enumerate(list(leases.items())[:30]):
        other = urls[(int(owner.split("-")[1]) + 1) % 2]
        read = await http.get(f"{other}/v1/sandboxes/{lease['sandbox_id']}",
                              headers=owner_headers(owner))
        assert read.status_code == 200 and read.json() == lease, index
        replay = await allocate(http, other, owner, prefix="lab-")
        assert replay.status_code == 200 and replay.json() == lease

    after = await stats(http, urls[1])
    assert after["allocated"] - before["allocated"] == POOL
    assert before["available"] - after["available"] == POOL
    report = verify(env)
    assert report["ok"], report["violations"]


async def test_40_allocates_by_one_owner_across_replicas_share_one_sandbox(
    replicas: tuple[Server, Server], env: dict[str, str], http: httpx.AsyncClient
) -> None:
    urls = [server.url for server in replicas]
    before = await stats(http, urls[0])
    responses = await asyncio.gather(*(
        allocate(http, urls[i % 2], "same-student", prefix="solo-") for i in range(40)
    ))
    statuses = Counter(r.status_code for r in responses)
    assert statuses[201] == 1 and set(statuses) <= {200, 201}, statuses
    assert len({r.json()["sandbox_id"] for r in responses}) == 1
    after = await stats(http, urls[1])
    assert after["allocated"] - before["allocated"] == 1
    report = verify(env)
    assert report["ok"], report["violations"]
