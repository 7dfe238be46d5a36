"""One Settings object, read from the environment once at start-up and passed in.

Every knob lives here; nothing else reads the environment.
"""

from __future__ import annotations

import re
import secrets
from typing import Literal

from pydantic import BaseModel, Field, HttpUrl, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["MIN_TOKEN_LENGTH", "Settings", "WebhookSubscriber", "generate_dev_tokens"]

MIN_TOKEN_LENGTH = 32
_TOKEN_CHARACTERS = re.compile(r"^[\x21-\x7e]+$")  # what `Authorization: Bearer` can carry


def _split(raw: SecretStr) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.get_secret_value().split(",") if part.strip())


class WebhookSubscriber(BaseModel):
    """One webhook receiver: events of the listed types are POSTed to `url`, signed."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    url: HttpUrl
    secret: SecretStr
    events: list[str] = Field(default_factory=list)

    @field_validator("events")
    @classmethod
    def _known_types(cls, events: list[str]) -> list[str]:
        from app.events import EventType  # the one list of event types

        unknown = sorted(set(events) - {str(t) for t in EventType})
        if unknown:
            raise ValueError(f"unknown event types {unknown}; known: "
                             f"{sorted(str(t) for t in EventType)}")
        return events


class Settings(BaseSettings):
    """Service configuration. Field `foo_bar` is read from env var `FOO_BAR`."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    broker_env: Literal["dev", "production"] = "production"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Auth: comma-separated lists so two tokens can be valid during a rotation.
    broker_api_token: SecretStr = SecretStr("")
    broker_admin_token: SecretStr = SecretStr("")
    metrics_token: SecretStr = SecretStr("")

    # HTTP surface
    api_base_path: str = "/v1"
    # Idle keep-alive connections are kept this long: longer than a load balancer's own
    # idle timeout (AWS ALB: 60 s), or it reuses connections the server just closed (502).
    keep_alive_timeout_sec: int = Field(default=75, ge=1, le=4000)
    # A request must arrive whole within this long of its first byte (or of the
    # connection opening): a silent or trickling client holds no socket (app/http_guard).
    request_read_timeout_sec: float = Field(default=30, gt=0, le=3600)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)

    # Storage
    broker_store: Literal["sqlite", "dynamodb"] = "sqlite"
    broker_sqlite_path: str = "./data/broker.db"
    sqlite_batching: bool = True  # group concurrent allocation calls into one transaction
    # How long a write waits for another process's lock before answering 503.
    sqlite_busy_timeout_ms: int = Field(default=5000, ge=0, le=600_000)
    ddb_table_name: str = "sandbox-broker"
    ddb_endpoint_url: str | None = None
    aws_region: str = "us-east-1"
    ddb_availability_shards: int = Field(default=8, ge=1, le=64)
    ddb_max_pool_connections: int = Field(default=64, ge=10)
    store_timeout_sec: float = Field(default=3.0, gt=0)
    cursor_secret: SecretStr = SecretStr("")

    # Leases
    lab_duration_hours: float = Field(default=4.0, gt=0)
    max_lab_duration_hours: float = Field(default=24.0, gt=0)
    grace_period_minutes: int = Field(default=15, ge=0)
    max_extension_hours: float = Field(default=4.0, gt=0)
    max_lease_hours: float = Field(default=24.0, gt=0)
    max_extensions: int = Field(default=3, ge=0)
    k_candidates: int = Field(default=10, ge=1, le=100)
    claim_rounds: int = Field(default=3, ge=1, le=20)
    pool_exhausted_retry_after_sec: int = Field(default=30, ge=1)
    contention_retry_after_sec: int = Field(default=1, ge=1)
    store_unavailable_retry_after_sec: int = Field(default=5, ge=1)

    # Provider
    broker_provider: Literal["simulated", "csp"] = "simulated"
    broker_simulated_pool_size: int = Field(default=100, ge=0)
    simulated_name_prefix: str = "lab-"
    simulated_delete_latency_sec: float = Field(default=0.0, ge=0)
    simulated_failure_rate: float = Field(default=0.0, ge=0, le=1)
    csp_base_url: str = ""
    csp_api_token: SecretStr = SecretStr("")
    csp_connect_timeout_sec: float = Field(default=3.0, gt=0)
    csp_read_timeout_sec: float = Field(default=10.0, gt=0)
    csp_breaker_failures: int = Field(default=5, ge=1)
    csp_breaker_reset_sec: float = Field(default=30.0, gt=0)

    # Background jobs: each runs in one replica at a time, under a lease in the store.
    sync_enabled: bool = True
    sync_interval_sec: float = Field(default=600, gt=0)
    sync_max_stale_fraction: float = Field(default=0.5, ge=0, le=1)
    cleanup_enabled: bool = True
    cleanup_interval_sec: float = Field(default=300, gt=0)
    cleanup_batch_size: int = Field(default=200, ge=1)
    cleanup_concurrency: int = Field(default=8, ge=1, le=256)
    cleanup_rate_per_sec: float = Field(default=20, gt=0)
    deleting_claim_timeout_sec: int = Field(default=300, ge=1)
    deletion_retry_max_attempts: int = Field(default=8, ge=1)
    deletion_backoff_base_sec: float = Field(default=30, gt=0)
    deletion_backoff_max_sec: float = Field(default=3600, gt=0)
    # A sandbox deleted at the provider is not re-added by sync for this long, even if
    # the provider still lists it (its list may lag its deletes).
    deleted_tombstone_hours: float = Field(default=24, ge=0)
    auto_expiry_enabled: bool = True
    auto_expiry_interval_sec: float = Field(default=300, gt=0)
    stale_deletion_enabled: bool = True
    stale_deletion_interval_sec: float = Field(default=86400, gt=0)
    stale_grace_hours: float = Field(default=24, ge=0)
    job_lease_ttl_sec: float = Field(default=60, gt=0)
    event_retention_days: float = Field(default=30, gt=0)
    event_purge_interval_sec: float = Field(default=3600, gt=0)

    # Webhooks: JSON list of {"name", "url", "secret", "events": [types]} (empty = all).
    webhook_subscribers: list[WebhookSubscriber] = Field(default_factory=list)
    webhook_interval_sec: float = Field(default=2.0, gt=0)
    webhook_timeout_sec: float = Field(default=5.0, gt=0)
    webhook_max_tries_per_pass: int = Field(default=4, ge=1)
    webhook_backoff_base_sec: float = Field(default=0.5, gt=0)
    job_jitter_fraction: float = Field(default=0.1, ge=0, le=1)

    # --- hardening: rate limits, CORS, proxies (owned by the hardening work) ---
    # Budgets in `limits` notation, each counted across all routes per key. Under the moving
    # window, "200/4 seconds" is 50 requests/s with bursts of 200: a burst of 200 passes at
    # once, and no 4 s stretch admits more than 200 (50/s sustained). "50/second;200/4 seconds"
    # would cap every second at 50, so that burst could never happen. The moving window
    # stores one timestamp per admitted request in the window; "sliding-window-counter"
    # (two counters per key) keeps memory small for budgets of hundreds of thousands.
    rate_limit_enabled: bool = True
    rate_limit_principal: str = "200/4 seconds"  # per token, keyed by its id (never the token)
    rate_limit_ip: str = "200/4 seconds"  # per client IP; /healthz, /readyz, /metrics exempt
    rate_limit_strategy: Literal["moving-window", "sliding-window-counter", "fixed-window"] = (
        "moving-window"
    )
    # memory:// counts per process. A shared store (e.g. redis://host:6379/0, which needs the
    # `redis` package) gives every worker and replica one budget.
    rate_limit_storage_uri: str = "memory://"
    trusted_proxies: str = ""  # comma-separated IPs/CIDRs whose X-Forwarded-For is believed
    cors_allowed_origins: str = ""  # comma-separated exact origins, e.g. https://ops.example.com
    hsts_max_age: int = Field(default=31_536_000, ge=0)  # 0 leaves Strict-Transport-Security out
    max_header_bytes: int = Field(default=8192, ge=1024)  # all request header lines together
    pool_metrics_cache_sec: float = Field(default=5.0, ge=0)  # store count reuse across scrapes
    # Read by prometheus-client itself: set (by `serve --workers N`) when the workers share
    # their metric values through files in this directory.
    prometheus_multiproc_dir: str | None = None

    @staticmethod
    def _csv(text: str) -> tuple[str, ...]:
        return tuple(part.strip() for part in text.split(",") if part.strip())

    @property
    def trusted_proxy_list(self) -> tuple[str, ...]:
        return self._csv(self.trusted_proxies)

    @property
    def cors_origins(self) -> tuple[str, ...]:
        return self._csv(self.cors_allowed_origins)

    @model_validator(mode="after")
    def _check_hardening(self) -> Settings:
        """Refuse unusable limits, proxies, origins and metrics tokens at start-up."""
        # Imported here so that this block stays self-contained between its markers.
        import importlib.util
        import ipaddress

        from limits import parse_many

        for name in ("rate_limit_principal", "rate_limit_ip"):
            try:
                parse_many(getattr(self, name))
            except ValueError:
                raise ValueError(f"{name.upper()} must look like '200/4 seconds'") from None
        from limits.storage import SCHEMES  # type: ignore[attr-defined]  # its registry

        scheme = self.rate_limit_storage_uri.partition("://")[0]
        if scheme not in SCHEMES or scheme.startswith("async+"):
            # Named by scheme only: the URI may carry a password.
            raise ValueError(f"RATE_LIMIT_STORAGE_URI: unknown storage scheme {scheme[:20]!r}")
        # Top-level packages only: find_spec("redis.sentinel") raises without redis.
        clients = [name.partition(".")[0]
                   for name in getattr(SCHEMES[scheme], "DEPENDENCIES", None) or []]
        if clients and not any(importlib.util.find_spec(name) for name in clients):
            raise ValueError(f"RATE_LIMIT_STORAGE_URI: {scheme}:// needs the {clients[0]} "
                             f"package (pip install 'sandbox-broker[{clients[0]}]' or "
                             f"pip install {clients[0]})")
        for proxy in self.trusted_proxy_list:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"TRUSTED_PROXIES: {proxy!r} is not an IP or CIDR") from None
        for origin in self.cors_origins:
            scheme, _, host = origin.partition("://")
            if scheme not in ("http", "https") or not host or "/" in host or "*" in host:
                raise ValueError(f"CORS_ALLOWED_ORIGINS: {origin!r} is not scheme://host[:port]")
        metrics = self.metrics_token.get_secret_value()
        if metrics and not self.is_dev:
            if len(metrics) < MIN_TOKEN_LENGTH:
                raise ValueError(f"METRICS_TOKEN must be at least {MIN_TOKEN_LENGTH} characters")
            if metrics in self.track_tokens + self.admin_tokens:
                raise ValueError("METRICS_TOKEN must differ from the track and admin tokens")
        return self
    # --- end hardening ---

    @property
    def is_dev(self) -> bool:
        return self.broker_env == "dev"

    @property
    def track_tokens(self) -> tuple[str, ...]:
        return _split(self.broker_api_token)

    @property
    def admin_tokens(self) -> tuple[str, ...]:
        return _split(self.broker_admin_token)

    @property
    def lab_duration_seconds(self) -> int:
        return int(self.lab_duration_hours * 3600)

    @property
    def grace_seconds(self) -> int:
        return self.grace_period_minutes * 60

    @model_validator(mode="after")
    def _check_lease_bounds(self) -> Settings:
        """The default lease within what may be asked for and within any lease."""
        if self.lab_duration_hours > self.max_lab_duration_hours:
            raise ValueError("LAB_DURATION_HOURS must not exceed MAX_LAB_DURATION_HOURS")
        if self.lab_duration_hours > self.max_lease_hours:
            raise ValueError("LAB_DURATION_HOURS must not exceed MAX_LEASE_HOURS")
        return self

    @property
    def lab_duration_cap_hours(self) -> float:
        """The most X-Lab-Duration-Hours may ask for: no lease outlasts MAX_LEASE_HOURS."""
        return min(self.max_lab_duration_hours, self.max_lease_hours)

    @model_validator(mode="after")
    def _refuse_weak_production_config(self) -> Settings:
        if not self.api_base_path.startswith("/") or self.api_base_path.endswith("/"):
            raise ValueError("API_BASE_PATH must start with '/' and not end with '/' (e.g. /v1)")
        if self.broker_provider == "csp" and not (
            self.csp_base_url and self.csp_api_token.get_secret_value()
        ):
            raise ValueError("BROKER_PROVIDER=csp needs CSP_BASE_URL and CSP_API_TOKEN")
        for hook in self.webhook_subscribers:
            if len(hook.secret.get_secret_value()) < 16:
                raise ValueError(f"webhook {hook.name}: the secret must be 16+ characters")
        if len({hook.name for hook in self.webhook_subscribers}) < len(self.webhook_subscribers):
            raise ValueError("webhook subscriber names must be unique")
        if not all(map(_TOKEN_CHARACTERS.match, self.track_tokens + self.admin_tokens)):
            raise ValueError("tokens may hold printable ASCII only, without spaces")
        if self.is_dev:
            return self
        track, admin = self.track_tokens, self.admin_tokens
        if not track or not admin:
            raise ValueError(
                "BROKER_API_TOKEN and BROKER_ADMIN_TOKEN must be set outside dev mode "
                "(or set BROKER_ENV=dev to run locally with generated tokens)"
            )
        if any(len(token) < MIN_TOKEN_LENGTH for token in track + admin):
            raise ValueError(f"every token must be at least {MIN_TOKEN_LENGTH} characters long")
        if set(track) & set(admin):
            raise ValueError("the track and admin tokens must differ")
        return self


def generate_dev_tokens() -> tuple[str, str]:
    """Fresh random (track, admin) tokens for a dev run."""
    return "track-" + secrets.token_urlsafe(24), "admin-" + secrets.token_urlsafe(24)
