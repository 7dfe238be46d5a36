"""One runner for every background job: cadence with jitter, the job leases in the
store, heartbeats, error logging, a record of each pass, and prompt cancellation.

Two leases per job, both plain store job-lease records:
- `run:<job>`  held only while a pass runs (heartbeat-renewed; expires if the replica
  dies), so no two passes of one job overlap anywhere — admin triggers included;
- `slot:<job>` taken for ~one interval by the replica that ran the scheduled pass, so
  with N replicas each scheduled pass happens once, not N times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from app.domain import Clock, DomainError, JobRunning
from app.jobs.base import Job, JobSummary
from app.store.base import SandboxStore

__all__ = ["JobRecord", "JobRunner", "ScheduledJob"]

log = logging.getLogger("broker.jobs")

RunObserver = Callable[[str, str, float, JobSummary], None]
Pass = Callable[[int], Awaitable[JobSummary]]


@dataclass(frozen=True, slots=True)
class ScheduledJob:
    job: Job
    interval_sec: float
    enabled: bool = True


@dataclass
class JobRecord:
    """The last pass of a job in this replica (for the dashboard and admin API)."""

    job: str
    outcome: str = "never"
    started_at: float | None = None
    duration_sec: float | None = None
    summary: JobSummary = field(default_factory=dict)
    error: str | None = None


class JobRunner:
    def __init__(
        self,
        store: SandboxStore,
        jobs: list[ScheduledJob],
        *,
        clock: Clock,
        lease_ttl_sec: float = 60.0,
        jitter_fraction: float = 0.1,
        observer: RunObserver | None = None,
        holder: str | None = None,
    ) -> None:
        self._store = store
        self._jobs = {s.job.name: s for s in jobs}
        self._clock = clock
        self._ttl = lease_ttl_sec
        self._jitter = jitter_fraction
        self._observer = observer
        self.holder = holder or f"replica-{uuid.uuid4().hex[:12]}"
        self.records = {name: JobRecord(name) for name in self._jobs}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._rng = random.Random()

    @property
    def job_names(self) -> list[str]:
        return list(self._jobs)

    def start(self) -> None:
        """Start one loop per enabled job (call from the app's lifespan)."""
        self._stopping.clear()
        for name, scheduled in self._jobs.items():
            if scheduled.enabled:
                self._tasks.append(asyncio.create_task(self._loop(scheduled), name=f"job:{name}"))

    async def stop(self) -> None:
        """Cancel every loop and wait for it: shutdown never leaves a pass running."""
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def trigger(self, name: str, *, force: bool = False) -> JobSummary:
        """Run one pass of a scheduled job now (admin)."""
        job = self._jobs[name].job
        return await self.run_exclusive(name, lambda now: job.run_once(now, force=force))

    async def run_exclusive(self, name: str, one_pass: Pass) -> JobSummary:
        """Run `one_pass` under the job's run lease. JobRunning if it is held anywhere."""
        summary = await self._run_leased(name, one_pass)
        if summary is None:
            group = self._lease_group(name)
            message = f"job {name} is already running" if group == name else (
                f"job {name} cannot start: a job of its group ({self._members(group)}) "
                "is running")
            raise JobRunning(message, retry_after=5)
        return summary

    def _members(self, group: str) -> str:
        return ", ".join(name for name in self._jobs if self._lease_group(name) == group)

    async def run_scheduled(self, name: str) -> JobSummary | None:
        """One scheduled pass: skipped (None) if another replica owns this slot, or if
        another job of its lease group is running."""
        return (await self._scheduled_pass(name))[1]

    async def _scheduled_pass(self, name: str) -> tuple[bool, JobSummary | None]:
        """(deferred, summary). Deferred: the lease group was busy (cleanup while sync
        runs); the slot is given back so the pass runs once the group is free, rather
        than an interval later (a daily job could otherwise lose whole days)."""
        scheduled = self._jobs[name]
        slot_ttl = max(1.0, scheduled.interval_sec * 0.9)
        # A fresh holder id per attempt: a slot is never renewed, only taken once expired.
        slot, slot_holder = f"slot:{name}", f"{self.holder}:{uuid.uuid4().hex[:8]}"
        if not await self._store.acquire_job_lease(slot, slot_holder, slot_ttl, self._clock()):
            return False, None
        job = scheduled.job
        summary = await self._run_leased(name, lambda now: job.run_once(now, force=False))
        if summary is None:
            with contextlib.suppress(Exception):
                await self._store.release_job_lease(slot, slot_holder)
            return True, None
        return False, summary

    async def _loop(self, scheduled: ScheduledJob) -> None:
        name = scheduled.job.name
        while not self._stopping.is_set():
            deferred = False
            try:
                deferred, _ = await self._scheduled_pass(name)
            except DomainError:
                pass  # an expected refusal (provider down, sync guard): already logged
            except Exception:  # the loop must outlive any one failed pass
                log.exception("job loop error", extra={"fields": {"job": name}})
            wait = min(scheduled.interval_sec, self._ttl / 2) if deferred else (
                scheduled.interval_sec)
            delay = wait * (1 + self._rng.uniform(-self._jitter, self._jitter))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=max(0.01, delay))

    async def _run_leased(self, name: str, one_pass: Pass) -> JobSummary | None:
        """Run the pass while holding `run:<lease group>`; None if someone holds it.

        The holder id is fresh for every pass, so a pass is never re-entered, not even
        by this replica. If the lease cannot be renewed before it expires, the pass is
        cancelled: another replica may take it over, and two must never run at once.
        """
        lease = f"run:{self._lease_group(name)}"
        holder = f"{self.holder}:{uuid.uuid4().hex[:8]}"
        asked_at = time.monotonic()
        if not await self._store.acquire_job_lease(lease, holder, self._ttl, self._clock()):
            return None
        lost = asyncio.Event()
        work = asyncio.create_task(self._run_recorded(name, one_pass))
        heartbeat = asyncio.create_task(
            self._heartbeat(lease, holder, asked_at + self._ttl, work, lost))
        try:
            return await work
        except asyncio.CancelledError:
            if not lost.is_set():
                raise  # we are being shut down
            self.records[name].outcome = "lease_lost"
            raise JobRunning(f"job {name} lost its lease mid-pass and stopped",
                             retry_after=5) from None
        finally:
            heartbeat.cancel()
            work.cancel()
            await asyncio.gather(heartbeat, work, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._store.release_job_lease(lease, holder)

    async def _heartbeat(
        self, lease: str, holder: str, held_until: float,
        work: asyncio.Task[JobSummary], lost: asyncio.Event,
    ) -> None:
        """Renew the lease every third of its TTL. A lease is good until TTL after the
        renewal was *sent*; the pass is stopped a sixth of the TTL before that unless a
        renewal got through, however long a renewal call hangs (a slow store must not
        let two replicas run one pass)."""
        margin, pause = self._ttl / 6, self._ttl / 3
        while True:
            stop_at = held_until - margin
            await asyncio.sleep(max(0.0, min(pause, stop_at - time.monotonic())))
            asked_at = time.monotonic()
            renewed: bool | None = None
            if asked_at < stop_at:
                try:
                    renewed = await asyncio.wait_for(self._store.acquire_job_lease(
                        lease, holder, self._ttl, self._clock()), timeout=stop_at - asked_at)
                except Exception:  # a store blip or a hang: retry while the lease holds
                    renewed = None
            if renewed:
                held_until, pause = asked_at + self._ttl, self._ttl / 3
                continue
            if renewed is False or time.monotonic() >= stop_at:
                log.error("job lease lost; stopping the pass", extra={"fields": {
                    "lease": lease}})
                lost.set()
                work.cancel()
                return
            pause = self._ttl / 30  # retry soon: the lease is running out

    def _lease_group(self, name: str) -> str:
        scheduled = self._jobs.get(name)
        return getattr(scheduled.job, "lease_group", name) if scheduled else name

    async def _run_recorded(self, name: str, one_pass: Pass) -> JobSummary:
        record = self.records.setdefault(name, JobRecord(name))
        record.started_at = self._clock()
        started = time.perf_counter()
        try:
            summary = await one_pass(int(self._clock()))
        except Exception as exc:
            outcome = exc.code.lower() if isinstance(exc, DomainError) else "error"
            record.outcome, record.error, record.summary = outcome, type(exc).__name__, {}
            record.duration_sec = time.perf_counter() - started
            self._observe(name, record)
            log.warning("job pass failed", extra={"fields": {
                "job": name, "outcome": outcome, "error": str(exc)[:200],
                "latency_ms": round(record.duration_sec * 1000, 2)}})
            raise
        record.outcome, record.error, record.summary = "ok", None, summary
        record.duration_sec = time.perf_counter() - started
        self._observe(name, record)
        log.info("job pass", extra={"fields": {
            "job": name, "outcome": "ok", **summary,
            "latency_ms": round(record.duration_sec * 1000, 2)}})
        return summary

    def _observe(self, name: str, record: JobRecord) -> None:
        if self._observer is not None:
            self._observer(name, record.outcome, record.duration_sec or 0.0, record.summary)
