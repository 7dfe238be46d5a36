"""The job runner's leases: two replicas (two stores on one database) run each
scheduled pass once, a dead replica's lease expires, shutdown is prompt."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from app.config import Settings
from app.domain import JobRunning
from app.jobs import JobRunner, JobSummary, ScheduledJob
from app.store import CursorCodec, SandboxStore, create_store
from app.store.sqlite import SqliteStore
from tests.conftest import FakeClock

pytestmark = pytest.mark.integration


class CountingJob:
    """A job that records each pass and can be held open by a test."""

    name = "count"

    def __init__(self) -> None:
        self.passes = 0
        self.release = asyncio.Event()
        self.release.set()
        self.ended_at: float | None = None  # time.monotonic() when the last pass ended

    async def run_once(self, now: int, *, force: bool = False) -> JobSummary:
        self.passes += 1
        try:
            await self.release.wait()
        finally:
            self.ended_at = time.monotonic()
        return {"passes": self.passes}


@pytest.fixture
async def two_stores(
    on_backend: Callable[..., Settings],
) -> AsyncIterator[tuple[SandboxStore, SandboxStore]]:
    """Two replicas' stores on one database (a SQLite file, or one DynamoDB table)."""
    settings = on_backend()
    stores = (create_store(settings), create_store(settings))
    for store in stores:
        await store.open()
    yield stores
    for store in stores:
        await store.close()


class PoolJob(CountingJob):
    """A CountingJob of its own name in the shared "pool" lease group."""

    lease_group = "pool"

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


def replica(store: SandboxStore, job: CountingJob, clock: FakeClock, name: str) -> JobRunner:
    return JobRunner(store, [ScheduledJob(job, interval_sec=60)], clock=clock,
                     lease_ttl_sec=30, holder=name)


async def test_two_replicas_run_each_scheduled_pass_once(
    two_stores: tuple[SandboxStore, SandboxStore], clock: FakeClock
) -> None:
    job = CountingJob()
    a, b = (replica(s, job, clock, n) for s, n in zip(two_stores, "ab", strict=True))
    for _ in range(5):
        results = await asyncio.gather(a.run_scheduled("count"), b.run_scheduled("count"))
        assert sum(r is not None for r in results) == 1
        # Later in the same slot, neither replica runs it again.
        assert await a.run_scheduled("count") is None
        assert await b.run_scheduled("count") is None
        clock.advance(60)
    assert job.passes == 5


async def test_running_pass_blocks_admin_trigger_everywhere(
    two_stores: tuple[SandboxStore, SandboxStore], clock: FakeClock
) -> None:
    job = CountingJob()
    a, b = (replica(s, job, clock, n) for s, n in zip(two_stores, "ab", strict=True))
    job.release.clear()
    running = asyncio.create_task(a.trigger("count"))
    await asyncio.sleep(0.05)
    with pytest.raises(JobRunning):
        await b.trigger("count")
    job.release.set()
    assert (await running) == {"passes": 1}
    assert (await b.trigger("count")) == {"passes": 2}  # free again once done
    assert a.records["count"].outcome == "ok" and b.records["count"].summary == {"passes": 2}


async def test_dead_replicas_lease_expires_and_another_takes_over(
    two_stores: tuple[SandboxStore, SandboxStore], clock: FakeClock
) -> None:
    job = CountingJob()
    dead_store, live_store = two_stores
    # The dead replica took the run lease and never came back.
    assert await dead_store.acquire_job_lease("run:count", "dead", 30, clock.now)
    live = replica(live_store, job, clock, "live")
    with pytest.raises(JobRunning):
        await live.trigger("count")
    clock.advance(31)
    assert await live.trigger("count") == {"passes": 1}


async def test_loops_start_run_and_stop_promptly(
    two_stores: tuple[SandboxStore, SandboxStore], clock: FakeClock
) -> None:
    job = CountingJob()
    runner = JobRunner(two_stores[0], [ScheduledJob(job, interval_sec=3600)], clock=clock)
    runner.start()
    for _ in range(100):
        if job.passes:
            break
        await asyncio.sleep(0.01)
    assert job.passes == 1  # the first pass runs at start-up
    started = time.perf_counter()
    await runner.stop()  # mid-sleep of an hour-long interval
    assert time.perf_counter() - started < 1.0


async def test_failing_pass_is_recorded_and_loop_survives(
    two_stores: tuple[SandboxStore, SandboxStore], clock: FakeClock
) -> None:
    class Failing(CountingJob):
        async def run_once(self, now: int, *, force: bool = False) -> JobSummary:
            self.passes += 1
            raise RuntimeError("boom")

    job = Failing()
    seen: list[tuple[str, str]] = []
    runner = JobRunner(two_stores[0], [ScheduledJob(job, interval_sec=0.01)], clock=clock,
                       observer=lambda name, outcome, _s, _c: seen.append((name, outcome)))
    runner.start()
    for _ in range(200):
        clock.advance(1)
        if job.passes >= 3:
            break
        await asyncio.sleep(0.01)
    await runner.stop()
    assert job.passes >= 3 and runner.records["count"].outcome == "error"
    assert ("count", "error") in seen


async def test_one_replica_never_runs_a_pass_twice_at_once(
    two_stores: tuple[SandboxStore, SandboxStore], clock: FakeClock
) -> None:
    job = CountingJob()
    runner = replica(two_stores[0], job, clock, "a")
    job.release.clear()
    first = asyncio.create_task(runner.trigger("count"))
    await asyncio.sleep(0.05)
    with pytest.raises(JobRunning):  # same replica, same job: no re-entry
        await runner.trigger("count")
    job.release.set()
    assert await first == {"passes": 1}


async def test_a_pass_that_loses_its_lease_is_stopped(
    two_stores: tuple[SandboxStore, SandboxStore], clock: FakeClock
) -> None:
    job = CountingJob()
    runner = JobRunner(two_stores[0], [ScheduledJob(job, interval_sec=60)], clock=clock,
                       lease_ttl_sec=0.3, holder="slow")
    job.release.clear()  # the pass hangs
    running = asyncio.create_task(runner.trigger("count"))
    await asyncio.sleep(0.05)
    clock.advance(1)  # its lease expires in the store's eyes…
    assert await two_stores[1].acquire_job_lease("run:count", "other", 30, clock.now)
    with pytest.raises(JobRunning, match="lost its lease"):  # …so it must stop
        await asyncio.wait_for(running, timeout=5)
    assert runner.records["count"].outcome == "lease_lost"


async def test_a_pass_stops_before_its_lease_runs_out_while_renewals_hang(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Renewals stuck behind another process's write lock (each for the store's 5 s busy
    timeout) must not let the pass outlive its 3 s lease: it is stopped first."""
    path = tmp_path / "jobs.db"
    store = SqliteStore(str(path), CursorCodec(b"k" * 32))
    await store.open()
    job = CountingJob()
    job.release.clear()  # the pass hangs
    runner = JobRunner(store, [ScheduledJob(job, interval_sec=60)], clock=clock,
                       lease_ttl_sec=3, holder="stuck")
    started = time.monotonic()  # the lease is asked for after this: it holds until +3 s
    running = asyncio.create_task(runner.trigger("count"))
    await asyncio.sleep(0.2)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another worker's long write: every renewal hangs
    try:
        for _ in range(200):
            if job.ended_at is not None:
                break
            await asyncio.sleep(0.05)
        assert job.ended_at is not None and job.ended_at - started < 3
    finally:
        other.execute("ROLLBACK")
        other.close()
    with pytest.raises(JobRunning, match="lost its lease"):
        await asyncio.wait_for(running, timeout=15)
    await store.close()


async def test_a_pass_deferred_by_its_busy_lease_group_runs_once_the_group_is_free(
    two_stores: tuple[SandboxStore, SandboxStore], clock: FakeClock
) -> None:
    """A daily job that starts while another job of its group runs must not lose the
    day: its slot is given back and the loop tries again soon (here: TTL/2 = 0.5 s)."""
    busy, daily = PoolJob("busy"), PoolJob("daily")
    runner = JobRunner(two_stores[0], [ScheduledJob(busy, interval_sec=3600),
                                       ScheduledJob(daily, interval_sec=86400)],
                       clock=clock, lease_ttl_sec=1, jitter_fraction=0)
    busy.release.clear()  # the group's run lease stays held
    running = asyncio.create_task(runner.trigger("busy"))
    await asyncio.sleep(0.1)
    assert await runner.run_scheduled("daily") is None  # deferred, not run…
    runner.start()
    try:
        await asyncio.sleep(0.3)
        assert daily.passes == 0  # …and still not while the group is busy
        busy.release.set()
        await running
        for _ in range(100):
            if daily.passes:
                break
            await asyncio.sleep(0.05)
        assert daily.passes == 1
    finally:
        await runner.stop()
