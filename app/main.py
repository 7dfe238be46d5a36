"""create_app(settings): wiring only — store, provider, services, routers, middleware."""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from app import __doc__ as app_doc
from app import http_guard
from app.admin import AdminService
from app.allocation import AllocationPolicy, Allocator
from app.api import admin, dashboard, events, health, install_error_handlers, track
from app.api import metrics as metrics_route
from app.api.auth import TokenBook
from app.api.docs_pages import install_docs_pages
from app.api.middleware import install_middleware
from app.config import Settings
from app.domain import Clock
from app.gc_tuning import settle_heap
from app.history import PoolHistory
from app.jobs import build_runner
from app.observability import Metrics, configure_logging, write_logs_through
from app.providers import Provider, create_provider
from app.services import Services
from app.store import SandboxStore, create_store
from app.webhooks import webhook_jobs

__all__ = ["app_from_environment", "create_app"]

# FastAPI (0.165 on) asks OpenTelemetry on every request whether a global provider is
# configured (a few µs of environment lookups). The service reports through Prometheus
# and its JSON logs, so those native hooks are switched off where FastAPI has them.
_NO_NATIVE_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters else {}
)


def _policy(settings: Settings) -> AllocationPolicy:
    return AllocationPolicy(
        lab_duration_sec=settings.lab_duration_seconds,
        max_extension_sec=int(settings.max_extension_hours * 3600),
        max_lease_sec=int(settings.max_lease_hours * 3600),
        max_extensions=settings.max_extensions,
        k_candidates=settings.k_candidates,
        claim_rounds=settings.claim_rounds,
        exhausted_retry_after=settings.pool_exhausted_retry_after_sec,
        contention_retry_after=settings.contention_retry_after_sec,
    )


def create_app(
    settings: Settings,
    *,
    store: SandboxStore | None = None,
    provider: Provider | None = None,
    clock: Clock = time.time,
) -> FastAPI:
    """Build the service. Tests pass settings (and may pass a store or provider)."""
    base = settings.api_base_path
    metrics = Metrics(CollectorRegistry())
    store = store or create_store(settings)
    provider = provider or create_provider(settings, on_call=metrics.provider_call)
    metrics.watch_breaker(provider.breaker_state)
    services = Services(
        settings=settings,
        store=store,
        provider=provider,
        allocator=Allocator(store, _policy(settings), clock),
        clock=clock,
    )
    metrics.watch_pool(store.count_by_status, settings.pool_metrics_cache_sec)
    webhook_client = httpx.AsyncClient(timeout=settings.webhook_timeout_sec)
    runner = build_runner(settings, store, provider, clock, observer=metrics.job_run,
                          extra=webhook_jobs(settings, store, webhook_client,
                                             metrics.webhook_delivery))
    history = PoolHistory(store, clock)  # the dashboard's chart

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Teardown runs in reverse order, every step even if an earlier one fails.
        async with AsyncExitStack() as stack:
            stack.push_async_callback(webhook_client.aclose)
            stack.push_async_callback(provider.close)
            await store.open()
            stack.push_async_callback(store.close)
            runner.start()
            stack.push_async_callback(runner.stop)
            history.start()
            stack.push_async_callback(history.stop)
            stack.callback(write_logs_through)  # first at shutdown: its lines must get out
            yield

    app = FastAPI(
        title="sandbox-broker",
        version="0.1.0",
        description=app_doc,
        docs_url=None,  # app/api/docs_pages.py serves them, with pinned, checked assets
        redoc_url=None,
        openapi_url=f"{base}/openapi.json",
        lifespan=lifespan,
        **_NO_NATIVE_TELEMETRY,
    )
    app.state.services = services
    app.state.token_book = TokenBook(settings.track_tokens, settings.admin_tokens)
    app.state.metrics = metrics
    app.state.admin = AdminService(store, runner, provider, clock)
    app.state.history = history
    install_error_handlers(app)
    track_router = track.build_router(base)
    app.include_router(track_router)
    app.include_router(admin.build_router(base))
    app.include_router(events.build_router(base))
    app.include_router(health.router)
    app.include_router(dashboard.build_router(base))
    app.include_router(metrics_route.build_router(metrics, settings))
    docs_url, redoc_url = f"{base}/docs", f"{base}/redoc"
    install_docs_pages(app, docs_url, redoc_url)
    install_middleware(app, settings, metrics, docs_paths=(docs_url, redoc_url),
                       direct=[(track.allocate_route(track_router), track.allocate)])
    return app


def app_from_environment() -> FastAPI:
    """Factory for `uvicorn --factory` workers: settings come from the environment."""
    settings = Settings()
    configure_logging(settings.log_level)
    http_guard.configure(settings.max_header_bytes, settings.request_read_timeout_sec)
    app = create_app(settings)
    settle_heap()  # everything built so far lives as long as the process
    return app
