"""The request middleware stack: request id, last-resort 500 envelope, one log line and
the HTTP metrics per request, plus the order every hardening layer runs in."""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.direct import DirectRoute, Endpoint
from app.api.errors import error_response, request_id_var
from app.api.ratelimit import RateLimitMiddleware, RateLimits
from app.api.security import CorsMiddleware, RequestLimitsMiddleware, SecurityHeadersMiddleware
from app.config import Settings
from app.observability import Metrics

__all__ = ["RequestContextMiddleware", "install_middleware"]

log = logging.getLogger("broker.http")
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_ALLOCATION_OUTCOMES = {"POOL_EXHAUSTED": "exhausted", "CONTENTION": "contention"}


def _inbound_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _SANE_REQUEST_ID.match(text) else None
    return None


class RouteLabels:
    """The route template of a request, for the metrics label. Routes FastAPI labels
    itself (API routes) cost nothing; others (docs pages, requests refused before
    routing) are matched against the templates of the OpenAPI document and the
    top-level routes, compiled once. Unknown paths are "unmatched" (bounded labels)."""

    def __init__(self) -> None:
        self._patterns: list[tuple[re.Pattern[str], str]] | None = None

    def __call__(self, scope: Scope) -> str:
        path = getattr(scope.get("route"), "path", None)
        if isinstance(path, str):
            return path
        for pattern, template in self._compiled(scope.get("app")):
            if pattern.match(scope["path"]):
                return template
        return "unmatched"

    def _compiled(self, app: Any) -> list[tuple[re.Pattern[str], str]]:
        if self._patterns is None and isinstance(app, FastAPI):
            try:
                templates = [*app.openapi().get("paths", {})]
            except Exception:  # a broken schema must not break requests
                templates = []
            paths = (getattr(route, "path", None) for route in app.routes)
            templates += [path for path in paths if isinstance(path, str)]
            self._patterns = [(_template_regex(t), t) for t in dict.fromkeys(templates)]
        return self._patterns or []


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile("^" + "".join(
        "[^/]+" if part.startswith("{") else re.escape(part) for part in parts
    ) + "$")


def _allocation_outcome(state: dict[str, Any], status: int) -> str | None:
    """new/replay/exhausted/contention/error for a request that reached the allocator;
    None for one refused before it (auth, headers, validation, rate limit)."""
    outcome = state.get("outcome") or _ALLOCATION_OUTCOMES.get(state.get("error_code", ""))
    if outcome is None and status >= 500:
        outcome = "error"
    return outcome


def _log_level(status: int) -> int:
    """Client errors are the caller's business (INFO); 429 and 5xx need an operator's eye."""
    if status == 500:
        return logging.ERROR
    return logging.WARNING if status == 429 or status >= 500 else logging.INFO


class RequestContextMiddleware:
    """Gives every request an id (kept from X-Request-ID when sane), echoes it in
    the response, turns unhandled errors into the 500 envelope, logs and counts."""

    def __init__(self, app: ASGIApp, metrics: Metrics, allocate_path: str) -> None:
        self.app = app
        self.metrics = metrics
        self.allocate_path = allocate_path
        self.route_label = RouteLabels()
        # Ids unique per process (random prefix) and across its requests (a counter):
        # cheaper than a uuid4 per request, and ids need not be unguessable.
        self._id_prefix, self._id_counter = secrets.token_hex(8), itertools.count()
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _inbound_request_id(scope) or (
            f"{self._id_prefix}{next(self._id_counter):016x}")
        token = request_id_var.set(request_id)
        state: dict[str, Any] = scope.setdefault("state", {})
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()),
                                      (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"fields": {"request_id": request_id}})
            if not response_started:
                response = error_response(500, "INTERNAL_ERROR", "internal error")
                await response(scope, receive, send_with_id)
        finally:
            self._record(scope, state, status, time.perf_counter() - started, request_id)
            request_id_var.reset(token)

    def _record(
        self, scope: Scope, state: dict[str, Any], status: int, elapsed: float, request_id: str
    ) -> None:
        route = self.route_label(scope)
        method = scope["method"]
        requests, latency = self._series_for(route, method, status)
        requests.inc()
        latency.observe(elapsed)
        outcome = state.get("outcome") or state.get("error_code")
        outcome = outcome or ("ok" if status < 400 else "error")
        if route == self.allocate_path and method == "POST":
            self._record_allocation(state, status, elapsed)
        log.log(_log_level(status), "request", extra={"fields": {
            "request_id": request_id, "method": method, "path": scope["path"], "route": route,
            "status": status, "owner": state.get("owner"), "sandbox_id": state.get("sandbox_id"),
            "outcome": outcome, "latency_ms": round(elapsed * 1000, 2),
            "client": state.get("client_ip"),
        }})

    def _series_for(self, route: str, method: str, status: int) -> tuple[Any, Any]:
        """The labelled request counter and latency histogram, looked up once per label
        set (label values are bounded: route templates, methods, statuses)."""
        key = (route, method, status)
        series = self._series.get(key)
        if series is None:
            series = (self.metrics.http_requests.labels(route, method, str(status)),
                      self.metrics.http_latency.labels(route, method))
            self._series[key] = series
        return series

    def _record_allocation(self, state: dict[str, Any], status: int, elapsed: float) -> None:
        allocation = _allocation_outcome(state, status)
        if allocation is None:
            return
        self.metrics.allocation(allocation)
        self.metrics.allocation_latency.observe(elapsed)
        conflicts = state.get("conflicts")
        if isinstance(conflicts, int):
            self.metrics.allocation_conflicts.observe(conflicts)


def install_middleware(
    app: FastAPI, settings: Settings, metrics: Metrics, *,
    docs_paths: Iterable[str] = (),
    direct: Iterable[tuple[BaseRoute, Endpoint]] = (),
) -> None:
    """Add every middleware, outermost first:

    1. security headers: wraps everything, so 404/422/429/500 and preflights get them too;
    2. request context: the id, log line and metrics cover every answer below it;
    3. CORS (only with allowed origins): 429/413 answers stay readable by browsers;
    4. size limits: junk is refused before it costs a rate-limit lookup;
    5. rate limits, just outside the routes;
    6. the `direct` routes (app/api/direct.py: the allocate route), innermost, so
       everything above applies to them as to any route.
    """
    base = settings.api_base_path
    layers: list[tuple[Any, dict[str, Any]]] = [
        (SecurityHeadersMiddleware, {
            "hsts_max_age": settings.hsts_max_age,
            "docs_paths": docs_paths,
        }),
        (RequestContextMiddleware, {"metrics": metrics, "allocate_path": f"{base}/allocate"}),
    ]
    if settings.cors_origins:
        layers.append((CorsMiddleware, {"origins": settings.cors_origins}))
    layers.append((RequestLimitsMiddleware, {
        "max_body_bytes": settings.max_body_bytes, "max_header_bytes": settings.max_header_bytes,
    }))
    if settings.rate_limit_enabled:
        limits = RateLimits.from_settings(settings, app.state.token_book)
        layers.append((RateLimitMiddleware, {"limits": limits, "metrics": metrics}))
    if direct and app.router.dependencies:  # DirectRoute would skip them
        raise ValueError("app-wide dependencies and direct routes do not mix")
    for route, endpoint in direct:
        layers.append((DirectRoute, {"route": route, "endpoint": endpoint,
                                     "exception_handlers": app.exception_handlers}))
    for layer, options in reversed(layers):  # add_middleware: the last added runs first
        app.add_middleware(layer, **options)

