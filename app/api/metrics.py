"""`GET /metrics`: the Prometheus exposition, optionally behind METRICS_TOKEN."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from app.api.auth import bearer_token, token_digest
from app.api.errors import ApiError
from app.api.schemas import ErrorEnvelope
from app.config import Settings
from app.observability import Metrics

__all__ = ["build_router"]


class MetricsAuth:
    """Checks `Authorization: Bearer <metrics token>` when METRICS_TOKEN is set
    (comma-separated for rotation); with none set, scrapes are open. Answers only
    requests for the path as written, never a percent-encoded spelling of it."""

    def __init__(self, settings: Settings) -> None:
        raw = settings.metrics_token.get_secret_value()
        self._digests = [token_digest(t.strip()) for t in raw.split(",") if t.strip()]

    def __call__(self, request: Request) -> None:
        if b"%" in request.scope.get("raw_path", b""):
            # Only the literal path: an encoded alias (/%6detrics) would slip past a proxy
            # rule that hides /metrics from the internet (the ALB's, in infra/terraform).
            raise ApiError(404, "NOT_FOUND", "Not Found")  # as for any unknown path
        if not self._digests:
            return
        token = bearer_token(request.headers.get("authorization"))
        presented = b"" if token is None else token_digest(token)
        matched = [hmac.compare_digest(presented, digest) for digest in self._digests]
        if not any(matched):
            raise ApiError(401, "UNAUTHORIZED", "a valid metrics bearer token is required",
                           {"WWW-Authenticate": "Bearer"})


def build_router(metrics: Metrics, settings: Settings) -> APIRouter:
    """The /metrics route; sums every worker's values when PROMETHEUS_MULTIPROC_DIR is set."""
    router = APIRouter(tags=["health"])
    multiprocess_dir = settings.prometheus_multiproc_dir

    async def scrape() -> Response:
        body = await metrics.exposition(multiprocess_dir)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    router.add_api_route(
        "/metrics", scrape, methods=["GET"], summary="Prometheus metrics",
        response_class=Response, dependencies=[Depends(MetricsAuth(settings))],
        responses={
            200: {"description": "Prometheus text exposition",
                  "content": {"text/plain": {"schema": {"type": "string"}}}},
            401: {"model": ErrorEnvelope, "description": "METRICS_TOKEN is set and the "
                  "request lacks it"},
        },
    )
    return router
