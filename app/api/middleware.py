"""The outermost ASGI middleware: request id, last-resort 500 envelope, one log line
and the HTTP metrics per request."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response, request_id_var
from app.observability import Metrics

__all__ = ["RequestContextMiddleware"]

log = logging.getLogger("broker.http")
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_ALLOCATION_OUTCOMES = {"POOL_EXHAUSTED": "exhausted", "CONTENTION": "contention"}


def _inbound_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _SANE_REQUEST_ID.match(text) else None
    return None


class RequestContextMiddleware:
    """Gives every request an id (kept from X-Request-ID when sane), echoes it in
    the response, turns unhandled errors into the 500 envelope, logs and counts."""

    def __init__(self, app: ASGIApp, metrics: Metrics, allocate_path: str) -> None:
        self.app = app
        self.metrics = metrics
        self.allocate_path = allocate_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _inbound_request_id(scope) or uuid.uuid4().hex
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
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
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
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        method = scope["method"]
        self.metrics.http_requests.labels(route, method, str(status)).inc()
        self.metrics.http_latency.labels(route, method).observe(elapsed)
        outcome = state.get("outcome") or state.get("error_code")
        outcome = outcome or ("ok" if status < 400 else "error")
        if route == self.allocate_path and method == "POST":
            allocation = state.get("outcome") or _ALLOCATION_OUTCOMES.get(
                state.get("error_code", ""), "error"
            )
            self.metrics.allocations.labels(allocation).inc()
            self.metrics.allocation_latency.observe(elapsed)
        level = logging.INFO if status < 500 else logging.WARNING
        level = logging.ERROR if status == 500 else level
        log.log(level, "request", extra={"fields": {
            "request_id": request_id, "method": method, "path": scope["path"], "route": route,
            "status": status, "owner": state.get("owner"), "sandbox_id": state.get("sandbox_id"),
            "outcome": outcome, "latency_ms": round(elapsed * 1000, 2),
        }})
