"""Liveness, readiness and metrics endpoints (public, not rate limited)."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from starlette.responses import JSONResponse, Response

from app.api.deps import ServicesDep
from app.api.errors import error_response

__all__ = ["router"]

log = logging.getLogger("broker.health")
router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers (no I/O)")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the store answers",
    responses={503: {"description": "The store is unreachable"}},
)
async def readyz(services: ServicesDep) -> Response:
    try:
        await services.store.ping()
    except Exception:  # whatever the cause, not ready; the text stays in our logs only
        log.warning("readiness check failed", exc_info=True)
        return error_response(
            503, "STORE_UNAVAILABLE", "the store is not reachable",
            headers={"Retry-After": str(services.settings.store_unavailable_retry_after_sec)},
        )
    return JSONResponse({"status": "ready"})
