"""Job leases on every backend: one replica at a time runs a job pass, a lease runs
out so another replica can take over, and a release only counts for the holder."""

from __future__ import annotations

import asyncio

import pytest

from app.store.base import SandboxStore
from tests.contract.test_store_contract import NOW

pytestmark = pytest.mark.integration


async def test_job_lease_is_exclusive_until_it_expires(store: SandboxStore) -> None:
    acquire, release = store.acquire_job_lease, store.release_job_lease
    assert await acquire("sync", "a", 30, NOW + 0.5)
    assert not await acquire("sync", "b", 30, NOW + 1)
    assert await acquire("sync", "a", 30, NOW + 10)  # renewal: now held until NOW + 40
    assert not await acquire("sync", "b", 30, NOW + 39.9)
    assert await acquire("sync", "b", 30, NOW + 40)  # expired: taken over
    assert not await acquire("sync", "a", 30, NOW + 41)
    await release("sync", "a")  # not the holder: no effect
    assert not await acquire("sync", "a", 30, NOW + 42)
    assert await acquire("cleanup", "a", 30, NOW + 42)  # another job is independent
    await release("sync", "b")
    assert await acquire("sync", "a", 30, NOW + 43)
    await release("never-held", "a")


async def test_concurrent_job_lease_acquirers_one_wins(store: SandboxStore) -> None:
    for round_ in range(5):
        job = f"job-{round_}"
        won = await asyncio.gather(*(store.acquire_job_lease(job, f"replica-{r}", 30, NOW)
                                     for r in "abc"))
        assert won.count(True) == 1, won
