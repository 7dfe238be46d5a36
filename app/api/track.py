"""Track endpoints used by lab setup and cleanup scripts (DESIGN.md §1)."""

from __future__ import annotations

import math
import re
from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.responses import Response

from app.allocation import AllocationRequest
from app.api.auth import Role
from app.api.deps import (
    BEARER_SECURITY,
    Owner,
    ServicesDep,
    TrackAuth,
    authenticate,
    clean_header,
    get_services,
    read_owner,
    utf8_header,
)
from app.api.schemas import (
    ExtendedSandboxOut,
    ExtendRequest,
    SandboxOut,
    error_docs,
    sandbox_body,
)
from app.domain import Sandbox

__all__ = ["allocate", "allocate_route", "build_router"]

SandboxId = Annotated[
    str, Path(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
]

# X-Lab-Duration-Hours as documented in ALLOCATE_HEADERS, and as checked.
_HOURS_PATTERN, _HOURS_MAX_CHARS = r"^[0-9]*\.?[0-9]+$", 16
_DECIMAL_HOURS = re.compile(_HOURS_PATTERN)


def _json(sandbox: Sandbox, status: int, request: Request) -> Response:
    request.state.sandbox_id = sandbox.sandbox_id
    return Response(orjson.dumps(sandbox_body(sandbox)), status, media_type="application/json")


def _duration_seconds(raw: str | None, max_hours: float) -> int | None:
    """Seconds from the header's decimal hours, as ALLOCATE_HEADERS documents them
    (`float()` alone would also take "1_0", "1e-9" or " 2 ")."""
    if raw is None:
        return None
    decimal = len(raw) <= _HOURS_MAX_CHARS and _DECIMAL_HOURS.match(raw)
    hours = float(raw) if decimal else math.nan
    if not (0 < hours <= max_hours):
        raise RequestValidationError([{
            "loc": ("header", "X-Lab-Duration-Hours"), "type": "value_error",
            "msg": f"must be a number of hours in (0, {max_hours:g}]",
        }])
    return max(1, int(hours * 3600))


async def allocate(request: Request) -> Response:
    """201 with a new lease, 200 with the same body when the owner already holds one.

    The hot path: it reads its headers itself rather than through FastAPI parameters
    (that resolution was about half of the request's CPU); they are documented through
    ALLOCATE_HEADERS instead.
    """
    services = await get_services(request)
    principal = authenticate(request, Role.TRACK)
    headers = request.headers
    result = await services.allocator.allocate(
        AllocationRequest(
            owner=read_owner(request),
            track_name=clean_header("X-Instruqt-Track-ID",
                                    utf8_header(headers.get("x-instruqt-track-id"))),
            name_prefix=clean_header("X-Sandbox-Name-Prefix",
                                     utf8_header(headers.get("x-sandbox-name-prefix"))),
            duration_sec=_duration_seconds(
                headers.get("x-lab-duration-hours"), services.settings.lab_duration_cap_hours
            ),
            actor=principal,
        )
    )
    request.state.outcome = "new" if result.created else "replay"
    request.state.conflicts = result.conflicts
    return _json(result.sandbox, 201 if result.created else 200, request)


def _header_doc(name: str, description: str) -> dict[str, object]:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": {"type": "string", "minLength": 1, "maxLength": 128}}


ALLOCATE_HEADERS = [
    _header_doc("X-Instruqt-Sandbox-ID", "The lab participant's id: the lease owner."),
    {**_header_doc("X-Track-ID", "Legacy owner header: used, and then held to 1-128 printable "
                                 "characters, only when X-Instruqt-Sandbox-ID is absent or "
                                 "empty (ignored beside a non-empty one, whatever its value)."),
     "schema": {"type": "string"}},
    _header_doc("X-Instruqt-Track-ID", "Lab (track) name, stored as track_name."),
    _header_doc("X-Sandbox-Name-Prefix", "Only lease sandboxes whose name starts with this."),
    {**_header_doc("X-Lab-Duration-Hours",
                   "Lease length in hours, in (0, MAX_LAB_DURATION_HOURS]; default "
                   "LAB_DURATION_HOURS."),
     "schema": {"type": "string", "pattern": _HOURS_PATTERN, "maxLength": _HOURS_MAX_CHARS}},
]


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
        openapi_extra={"parameters": ALLOCATE_HEADERS, "security": BEARER_SECURITY},
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


def allocate_route(router: APIRouter) -> APIRoute:
    """The allocate route of a router from build_router (for DirectRoute)."""
    (route,) = [r for r in router.routes if isinstance(r, APIRoute) and r.endpoint is allocate]
    return route
