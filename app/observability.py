"""Metrics and structured logs. The core stays free of both: the request middleware,
the job runner and scrape-time collectors read what happened and record it.

With `--workers N` every worker writes its values to files in PROMETHEUS_MULTIPROC_DIR
(prometheus-client's multiprocess mode, chosen when that variable is set before
prometheus-client is imported) and `/metrics` sums them, whichever worker answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from app.domain import Status
from app.log_buffer import BufferedStreamHandler

__all__ = [
    "ALLOCATION_OUTCOMES",
    "JsonFormatter",
    "Metrics",
    "PoolCollector",
    "configure_logging",
    "prepare_multiprocess_dir",
    "write_logs_through",
]

log = logging.getLogger("broker.metrics")

ALLOCATION_OUTCOMES = ("new", "replay", "exhausted", "contention", "error")
BREAKER_STATES = ("closed", "open", "half_open")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_JOB_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
_CONFLICT_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64)

CountByStatus = Callable[[], Awaitable[Mapping[Status, int]]]


class PoolCollector(Collector):
    """`broker_pool_sandboxes{status}`, zero-filled over every status.

    Collectors run synchronously at scrape time, so the store is read by `refresh()`
    (awaited by the /metrics handler first) at most once per `ttl` seconds; `collect()`
    only reports the cached counts, and nothing until a first read succeeded."""

    def __init__(self, count_by_status: CountByStatus, ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._count = count_by_status
        self._ttl = ttl
        self._clock = clock
        self._counts: Mapping[Status, int] | None = None
        self._read_at = -float("inf")
        self._lock = asyncio.Lock()
        self.failures = 0

    async def refresh(self) -> None:
        """Re-read the counts if the cached ones are older than `ttl`; on a store error
        keep the last counts (the failure is logged and counted)."""
        if self._clock() - self._read_at < self._ttl:
            return
        async with self._lock:  # concurrent scrapes share one store read
            if self._clock() - self._read_at < self._ttl:
                return
            try:
                self._counts = await self._count()
            except Exception as exc:
                self.failures += 1
                log.warning("pool count failed", extra={"fields": {"error": type(exc).__name__}})
                return
            self._read_at = self._clock()

    def collect(self) -> Iterator[Metric]:
        counts = self._counts
        if counts is None:
            return
        family = GaugeMetricFamily(
            "broker_pool_sandboxes", "Sandboxes in the pool by status (cached for a few seconds)",
            labels=["status"],
        )
        for status in Status:
            family.add_metric([str(status)], counts.get(status, 0))
        yield family


class Metrics:
    """Every metric the service exports, registered on one registry.

    Recorders for the other parts of the service:
    - `allocation(outcome)`: the request middleware's count of allocations;
    - `job_run(job, outcome, seconds, counts)`: the job runner's observer, one call per pass;
    - `provider_call(operation, outcome)`: the CSP provider's on_call hook;
    - `watch_breaker(state_of)`: a callable returning "closed" | "open" | "half_open";
    - `watch_pool(count_by_status, ttl)`: the store's counts, read at scrape time.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.http_requests = Counter(
            "broker_http_requests", "HTTP requests by route template, method and status",
            ["route", "method", "status"], registry=registry,
        )
        self.http_latency = Histogram(
            "broker_http_request_duration_seconds", "HTTP request latency",
            ["route", "method"], buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.allocations = Counter(
            "broker_allocations", "Allocations by outcome (new, replay, exhausted, contention, "
            "error); requests refused before reaching the allocator are not allocations",
            ["outcome"], registry=registry,
        )
        self.allocation_latency = Histogram(
            "broker_allocation_duration_seconds", "Allocation latency",
            buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.allocation_conflicts = Histogram(
            "broker_allocation_conflicts", "Candidates lost to other callers per allocation",
            buckets=_CONFLICT_BUCKETS, registry=registry,
        )
        self.rate_limited = Counter(
            "broker_rate_limited_requests", "Requests refused with 429, by the budget exceeded",
            ["limit"], registry=registry,
        )
        self.rate_limit_errors = Counter(
            "broker_rate_limit_storage_errors", "Rate-limit checks skipped: storage failed",
            registry=registry,
        )
        self.job_runs = Counter(
            "broker_job_runs", "Background job passes by job and outcome",
            ["job", "outcome"], registry=registry,
        )
        self.job_duration = Histogram(
            "broker_job_duration_seconds", "Background job pass duration",
            ["job"], buckets=_JOB_BUCKETS, registry=registry,
        )
        self.job_sandboxes = Counter(
            "broker_job_sandboxes", "Sandboxes a job pass acted on, by job and result "
            "(synced, staled, expired, deleted, failed, ...)",
            ["job", "result"], registry=registry,
        )
        self.provider_calls = Counter(
            "broker_provider_calls", "Provider API calls by operation and outcome",
            ["operation", "outcome"], registry=registry,
        )
        self.webhook_deliveries = Counter(
            "broker_webhook_deliveries", "Webhook delivery attempts by subscriber and outcome",
            ["subscriber", "outcome"], registry=registry,
        )
        self.breaker_state = Gauge(
            "broker_provider_breaker_state", "1 for the provider circuit breaker's current state",
            ["state"], registry=registry, multiprocess_mode="mostrecent",
        )
        # One child per outcome, made now (every outcome is exported from the start) and
        # reused per request: `labels()` looks it up under a lock each time.
        self._allocations_by_outcome = {
            outcome: self.allocations.labels(outcome) for outcome in ALLOCATION_OUTCOMES}
        self._breaker_state_of: Callable[[], str] | None = None
        self.pool: PoolCollector | None = None

    def allocation(self, outcome: str) -> None:
        """Count one allocation by its outcome (one of ALLOCATION_OUTCOMES)."""
        child = self._allocations_by_outcome.get(outcome)
        if child is None:
            child = self._allocations_by_outcome[outcome] = self.allocations.labels(outcome)
        child.inc()

    def job_run(self, job: str, outcome: str, seconds: float, counts: Mapping[str, int]) -> None:
        """Record one job pass: its outcome, duration and the per-result sandbox counts."""
        self.job_runs.labels(job, outcome).inc()
        self.job_duration.labels(job).observe(seconds)
        for result, count in counts.items():
            if isinstance(count, int) and count > 0:
                self.job_sandboxes.labels(job, result).inc(count)

    def webhook_delivery(self, subscriber: str, outcome: str) -> None:
        self.webhook_deliveries.labels(subscriber, outcome).inc()

    def provider_call(self, operation: str, outcome: str) -> None:
        """Record one provider API call; also refreshes the breaker gauge it may have moved."""
        self.provider_calls.labels(operation, outcome).inc()
        self.refresh_breaker()

    def watch_breaker(self, state_of: Callable[[], str]) -> None:
        """Report `state_of()` as the breaker state, at each provider call and each scrape."""
        self._breaker_state_of = state_of
        self.refresh_breaker()

    def refresh_breaker(self) -> None:
        if self._breaker_state_of is None:
            return
        current = self._breaker_state_of()
        for state in BREAKER_STATES:
            self.breaker_state.labels(state).set(1 if state == current else 0)

    def watch_pool(self, count_by_status: CountByStatus, ttl: float) -> PoolCollector:
        """Export the pool size by status, read from the store at most once per `ttl` s."""
        self.pool = PoolCollector(count_by_status, ttl)
        self.registry.register(self.pool)
        return self.pool

    async def exposition(self, multiprocess_dir: str | None = None) -> bytes:
        """The text exposition: cached async values refreshed first, then every metric
        (summed over all workers' files in multiprocess mode)."""
        if self.pool is not None:
            await self.pool.refresh()
        self.refresh_breaker()
        if multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        if self.pool is not None:
            registry.register(self.pool)
        return generate_latest(registry)


def prepare_multiprocess_dir(path: str | None) -> str:
    """A directory for prometheus-client's per-worker files: `path` emptied of a previous
    run's files (stale values would be summed in), or a fresh temporary directory."""
    if path is None:
        return tempfile.mkdtemp(prefix="broker-metrics-")
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    return str(directory)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra fields passed via `extra={"fields": {...}}`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            entry["exc"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(entry, default=str).decode()
        except TypeError:  # what orjson refuses (e.g. an int beyond 64 bits)
            return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Send every logger's records to stderr as JSON lines.

    The lines carry no source file, thread or process, so the logging module is told
    not to look them up for every record (its documented optimisation knobs): finding
    the caller's frame was a good part of the per-request log line's cost.
    """
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BufferedStreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous, root.handlers[:] = root.handlers[:], [handler]
    for retired in previous:  # replaced first, so no line goes to a closed buffer
        if isinstance(retired, BufferedStreamHandler):  # its flusher thread stops
            retired.close()
    root.setLevel(level.upper())


def write_logs_through() -> None:
    """Flush the batched log lines and write every later one at once (at shutdown)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, BufferedStreamHandler):
            handler.write_through()
