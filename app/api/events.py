"""Event log reads for admins: one sandbox's timeline, and the resumable feed."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from app.api.admin import Admin
from app.api.deps import AdminAuth
from app.api.schemas import error_docs
from app.events import Event, EventType

__all__ = ["build_router"]


class EventOut(BaseModel):
    event_id: str
    at: float
    type: EventType
    sandbox_id: str
    owner: str | None
    track_name: str | None
    actor: str
    reason: str | None


class EventPageOut(BaseModel):
    events: list[EventOut]
    next_cursor: str | None


def _body(events: list[Event], next_cursor: str | None) -> dict[str, Any]:
    return {"events": [{**asdict(e), "type": str(e.type)} for e in events],
            "next_cursor": next_cursor}


Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(max_length=2048)]


async def sandbox_events(
    admin: Admin,
    _: AdminAuth,
    sandbox_id: Annotated[str, Path(min_length=1, max_length=128,
                                    pattern=r"^[^\x00-\x1f\x7f]+$")],
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """The sandbox's timeline, oldest first (also after its row is gone)."""
    page = await admin.timeline(sandbox_id, cursor, limit)
    return _body(page.events, page.next_cursor)


async def event_feed(
    admin: Admin,
    _: AdminAuth,
    since: Cursor = None,
    type: Annotated[list[EventType] | None, Query()] = None,
    limit: Limit = 100,
) -> dict[str, Any]:
    """Every event in commit order after `since`; pass `next_cursor` back to resume."""
    types = frozenset(type) if type else None
    page = await admin.event_feed(types, since, limit)
    return _body(page.events, page.next_cursor)


def build_router(base: str) -> APIRouter:
    router = APIRouter(prefix=f"{base}/admin", tags=["admin"])
    docs = error_docs(400, 401, 403, 422, 429, 503)
    router.add_api_route("/sandboxes/{sandbox_id}/events", sandbox_events, methods=["GET"],
                         response_model=EventPageOut, responses=docs)
    router.add_api_route("/events", event_feed, methods=["GET"], response_model=EventPageOut,
                         responses=docs)
    return router
