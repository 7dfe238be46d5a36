"""Track endpoints used by lab setup and cleanup scripts (DESIGN.md §1)."""

from __future__ import annotations

import math
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Path, Request
from starlette.responses import Response

from app.allocation import AllocationRequest
from app.api.deps import Owner, ServicesDep, TrackAuth, clean_header
from app.api.errors import ApiError
from app.api.schemas import (
    ExtendedSandboxOut,
    ExtendRequest,
    SandboxOut,
    error_docs,
    sandbox_body,
)
from app.domain import Sandbox

__all__ = ["build_router"]

SandboxId = Annotated[
    str, Path(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
]


def _json(sandbox: Sandbox, status: int, request: Request) -> Response:
    request.state.sandbox_id = sandbox.sandbox_id
    return Response(orjson.dumps(sandbox_body(sandbox)), status, media_type="application/json")


def _duration_seconds(raw: str | None, max_hours: float) -> int | None:
    if raw is None:
        return None
    try:
        hours = float(raw)
    except ValueError:
        hours = math.nan
    if not (0 < hours <= max_hours):
        raise ApiError(
            422, "VALIDATION_ERROR", f"X-Lab-Duration-Hours must be a number in (0, {max_hours}]"
        )
    return max(1, int(hours * 3600))


async def allocate(
    request: Request,
    services: ServicesDep,
    principal: TrackAuth,
    owner: Owner,
    x_instruqt_track_id: Annotated[
        str | None, Header(description="Lab (track) name, stored as track_name.")
    ] = None,
    x_sandbox_name_prefix: Annotated[
        str | None, Header(description="Only lease sandboxes whose name starts with this.")
    ] = None,
    x_lab_duration_hours: Annotated[
        str | None, Header(description="Lease length in hours (default LAB_DURATION_HOURS).")
    ] = None,
) -> Response:
    """201 with a new lease, 200 with the same body when the owner already holds one."""
    result = await services.allocator.allocate(
        AllocationRequest(
            owner=owner,
            track_name=clean_header("X-Instruqt-Track-ID", x_instruqt_track_id),
            name_prefix=clean_header("X-Sandbox-Name-Prefix", x_sandbox_name_prefix),
            duration_sec=_duration_seconds(
                x_lab_duration_hours, services.settings.max_lab_duration_hours
            ),
            actor=principal,
        )
    )
    request.state.outcome = "new" if result.created else "replay"
    request.state.conflicts = result.conflicts
    return _json(result.sandbox, 201 if result.created else 200, request)


async def get_sandbox(
    request: Request, sandbox_id: SandboxId, services: ServicesDep, _: TrackAuth, owner: Owner
) -> Response:
    return _json(await services.allocator.get(sandbox_id, owner), 200, request)


async def mark_for_deletion(
    request: Request,
    sandbox_id: SandboxId,
    services: ServicesDep,
    principal: TrackAuth,
    owner: Owner,
) -> Response:
    """Idempotent: a repeat by the owner answers 200 with the released sandbox."""
    return _json(await services.allocator.release(sandbox_id, owner, principal), 200, request)


async def extend(
    request: Request,
    sandbox_id: SandboxId,
    body: ExtendRequest,
    services: ServicesDep,
    principal: TrackAuth,
    owner: Owner,
) -> Response:
    """Move expires_at forward; 409 EXTENSION_LIMIT names the bound that was hit."""
    allocator = services.allocator
    seconds = max(1, int(body.hours * 3600))
    sandbox = await allocator.extend(sandbox_id, owner, seconds, principal)
    request.state.sandbox_id = sandbox.sandbox_id
    payload = {**sandbox_body(sandbox), "extensions_left": allocator.extensions_left(sandbox)}
    return Response(orjson.dumps(payload), 200, media_type="application/json")


def build_router(base: str) -> APIRouter:
    """The track routes under `base` (route templates carry the full path)."""
    router = APIRouter(prefix=base, tags=["track"])
    router.add_api_route(
        "/allocate",
        allocate,
        methods=["POST"],
        status_code=201,
        response_model=SandboxOut,
        summary="Lease a sandbox to the owner (or replay the owner's live lease)",
        responses={200: {"model": SandboxOut, "description": "Replay of the owner's live lease"},
                   **error_docs(400, 401, 403, 409, 422, 429, 503)},
    )
    router.add_api_route(
        "/sandboxes/{sandbox_id}",
        get_sandbox,
        methods=["GET"],
        response_model=SandboxOut,
        summary="Read a sandbox leased to the owner",
        responses=error_docs(400, 401, 403, 404, 422, 429, 503),
    )
    router.add_api_route(
        "/sandboxes/{sandbox_id}/mark-for-deletion",
        mark_for_deletion,
        methods=["POST"],
        response_model=SandboxOut,
        summary="Release the owner's lease; the sandbox is deleted by the cleanup job",
        responses=error_docs(400, 401, 403, 404, 422, 429, 503),
    )
    router.add_api_route(
        "/sandboxes/{sandbox_id}/extend",
        extend,
        methods=["POST"],
        response_model=ExtendedSandboxOut,
        summary="Extend the owner's live lease by `hours`, within the configured bounds",
        responses=error_docs(400, 401, 403, 404, 409, 422, 429, 503),
    )
    return router
