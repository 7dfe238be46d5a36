"""The operator dashboard: a static page shipped in the package, plus the pool history.

`/dashboard` answers the HTML with the API base path rendered into a
`<meta name="api-base">` tag, so the page's script never hard-codes it;
`/dashboard/static/<file>` answers the page's own script, style and icon from the
package (no CDN: the page works offline). Both carry a strict CSP: no inline script
or style, and requests only to this origin. `{base}/admin/stats/history` answers the
sampled counts behind the chart (admin token).
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from importlib.resources import files
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from app.api.deps import AdminAuth
from app.api.errors import ApiError
from app.api.schemas import error_docs
from app.history import PoolHistory

__all__ = ["DASHBOARD_CSP", "HistoryOut", "build_router"]

DASHBOARD_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
    "object-src 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": DASHBOARD_CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
_MEDIA_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "chart.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_BASE_PLACEHOLDER = "{{api_base}}"


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    media_type: str
    etag: str


def _asset(text: str, media_type: str) -> _Asset:
    body = text.encode()
    return _Asset(body, media_type, f'"{hashlib.sha256(body).hexdigest()[:20]}"')


def _read(name: str) -> str:
    """A file of the packaged dashboard. Read once, when the app is built, so a wheel
    shipped without it fails at start-up rather than on an operator's first visit."""
    return files("app").joinpath("static", "dashboard", name).read_text(encoding="utf-8")


def _respond(request: Request, asset: _Asset, cache: str) -> Response:
    headers = {**_SECURITY_HEADERS, "Cache-Control": cache, "ETag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


class HistorySample(BaseModel):
    """Counts by status at epoch second `at`; every status is present."""

    at: int
    counts: dict[str, int]


class HistoryOut(BaseModel):
    """Counts by status sampled every `interval_sec`, oldest first, within `window_sec`."""

    interval_sec: float
    window_sec: float
    samples: list[HistorySample]


def get_history(request: Request) -> PoolHistory:
    history: PoolHistory = request.app.state.history
    return history


History = Annotated[PoolHistory, Depends(get_history)]


async def stats_history(
    history: History, _: AdminAuth, hours: Annotated[float, Query(gt=0, le=24)] = 6
) -> HistoryOut:
    """Pool counts by status over the last `hours` (at most the kept window), as
    sampled by this replica since it started."""
    samples = [HistorySample(at=s.at, counts=dict(s.counts))
               for s in history.samples(hours * 3600)]
    return HistoryOut(interval_sec=history.interval_sec, window_sec=history.window_sec,
                      samples=samples)


def build_router(base: str) -> APIRouter:
    """The dashboard page and its assets (out of the schema), and the history endpoint."""
    page = _asset(_read("index.html").replace(_BASE_PLACEHOLDER, html.escape(base, quote=True)),
                  "text/html; charset=utf-8")
    assets = {name: _asset(_read(name), media) for name, media in _MEDIA_TYPES.items()}

    async def dashboard(request: Request) -> Response:
        return _respond(request, page, "no-store")

    async def static_file(request: Request, name: str) -> Response:
        asset = assets.get(name)
        if asset is None:
            raise ApiError(404, "NOT_FOUND", "no such dashboard file")
        return _respond(request, asset, "no-cache")

    router = APIRouter()
    router.add_api_route("/dashboard", dashboard, methods=["GET"], include_in_schema=False)
    router.add_api_route("/dashboard/static/{name}", static_file, methods=["GET"],
                         include_in_schema=False)
    router.add_api_route(f"{base}/admin/stats/history", stats_history, methods=["GET"],
                         response_model=HistoryOut, tags=["admin"],
                         responses=error_docs(401, 403, 422, 429))
    return router
