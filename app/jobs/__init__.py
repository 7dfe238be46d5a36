"""Background jobs (sync, cleanup, auto-expiry, stale deletion) and their runner."""

from __future__ import annotations

from app.config import Settings
from app.domain import Clock
from app.jobs.base import Job, JobSummary
from app.jobs.cleanup import CleanupJob, CleanupPolicy
from app.jobs.expiry import ExpiryJob
from app.jobs.retention import EventPurgeJob
from app.jobs.runner import JobRecord, JobRunner, RunObserver, ScheduledJob
from app.jobs.stale import StaleDeletionJob
from app.jobs.sync import SyncJob
from app.providers.base import Provider
from app.store.base import SandboxStore

__all__ = [
    "CleanupJob",
    "CleanupPolicy",
    "EventPurgeJob",
    "ExpiryJob",
    "Job",
    "JobRecord",
    "JobRunner",
    "JobSummary",
    "ScheduledJob",
    "StaleDeletionJob",
    "SyncJob",
    "build_runner",
]


def cleanup_policy(settings: Settings) -> CleanupPolicy:
    return CleanupPolicy(
        batch_size=settings.cleanup_batch_size,
        concurrency=settings.cleanup_concurrency,
        rate_per_sec=settings.cleanup_rate_per_sec,
        claim_timeout_sec=settings.deleting_claim_timeout_sec,
        max_attempts=settings.deletion_retry_max_attempts,
        backoff_base_sec=settings.deletion_backoff_base_sec,
        backoff_max_sec=settings.deletion_backoff_max_sec,
        tombstone_sec=int(settings.deleted_tombstone_hours * 3600),
    )


def build_runner(
    settings: Settings,
    store: SandboxStore,
    provider: Provider,
    clock: Clock,
    observer: RunObserver | None = None,
    extra: list[ScheduledJob] | None = None,
) -> JobRunner:
    """Every job, scheduled as the settings say, under one runner (plus `extra`)."""
    s = settings
    jobs = [
        ScheduledJob(SyncJob(store, provider, s.sync_max_stale_fraction, clock),
                     s.sync_interval_sec, s.sync_enabled),
        ScheduledJob(CleanupJob(store, provider, cleanup_policy(s), clock),
                     s.cleanup_interval_sec, s.cleanup_enabled),
        ScheduledJob(ExpiryJob(store, s.grace_seconds, clock),
                     s.auto_expiry_interval_sec, s.auto_expiry_enabled),
        ScheduledJob(StaleDeletionJob(store, int(s.stale_grace_hours * 3600), clock),
                     s.stale_deletion_interval_sec, s.stale_deletion_enabled),
        ScheduledJob(EventPurgeJob(store, s.event_retention_days * 86400),
                     s.event_purge_interval_sec),
        *(extra or []),
    ]
    return JobRunner(store, jobs, clock=clock, lease_ttl_sec=s.job_lease_ttl_sec,
                     jitter_fraction=s.job_jitter_fraction, observer=observer)
