"""Admin endpoints under {base}/admin (admin token; DESIGN.md §1)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from app.admin import AdminService
from app.api.deps import AdminAuth
from app.api.schemas import JobResult, SandboxPage, admin_sandbox_body, error_docs
from app.domain import Status
from app.store.base import SandboxFilter

__all__ = ["build_router"]

_ERRORS = error_docs(400, 401, 403, 409, 422, 429, 503)
Text = Annotated[str | None, Query(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]


async def get_admin(request: Request) -> AdminService:
    admin: AdminService = request.app.state.admin
    return admin


Admin = Annotated[AdminService, Depends(get_admin)]


async def list_sandboxes(
    admin: Admin,
    _: AdminAuth,
    status: Status | None = None,
    name_prefix: Text = None,
    track_name: Text = None,
    owner: Text = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    """One page of sandboxes; pass `next_cursor` back as `cursor` for the next."""
    where = SandboxFilter(status=status, name_prefix=name_prefix, track_name=track_name,
                          owner=owner)
    page = await admin.list_sandboxes(where, limit, cursor)
    return {"sandboxes": [admin_sandbox_body(s) for s in page.items],
            "count": len(page.items), "next_cursor": page.next_cursor}


async def stats(admin: Admin, _: AdminAuth) -> dict[str, Any]:
    """Counts by status, total, and the age of the oldest pending deletion."""
    return await admin.stats()


async def jobs(admin: Admin, _: AdminAuth) -> dict[str, Any]:
    """Job health in this replica: each job's last pass, and the provider breaker state."""
    return admin.job_health()


async def sync(admin: Admin, _: AdminAuth, force: bool = False) -> JobResult:
    """Sync now; `force=true` overrides the guard against mass-staling."""
    return JobResult(job="sync", summary=await admin.run_job("sync", force=force))


async def cleanup(admin: Admin, _: AdminAuth) -> JobResult:
    return JobResult(job="cleanup", summary=await admin.run_job("cleanup"))


async def auto_expire(admin: Admin, _: AdminAuth) -> JobResult:
    return JobResult(job="auto_expire", summary=await admin.run_job("auto_expire"))


async def auto_delete_stale(
    admin: Admin, _: AdminAuth, grace_period_hours: Annotated[float, Query(ge=0, le=24 * 365)]
) -> JobResult:
    """Remove stale records older than the grace period."""
    summary = await admin.delete_stale_older_than(grace_period_hours)
    return JobResult(job="stale_deletion", summary=summary)


async def bulk_delete(
    admin: Admin, principal: AdminAuth, status: Status, force: bool = False
) -> JobResult:
    """Mark every sandbox in `status` for deletion through the provider pipeline.
    Allocated sandboxes (live leases) need `force=true`."""
    summary = await admin.bulk_delete(status, force=force, actor=principal)
    return JobResult(job="bulk_delete", summary=summary)


async def retry_failed(admin: Admin, principal: AdminAuth) -> JobResult:
    """deletion_failed → pending_deletion, with a fresh attempt budget."""
    return JobResult(job="retry_failed", summary=await admin.retry_failed(principal))


def build_router(base: str) -> APIRouter:
    router = APIRouter(prefix=f"{base}/admin", tags=["admin"])
    router.add_api_route("/sandboxes", list_sandboxes, methods=["GET"],
                         response_model=SandboxPage, responses=_ERRORS)
    router.add_api_route("/stats", stats, methods=["GET"], responses=_ERRORS)
    router.add_api_route("/jobs", jobs, methods=["GET"], responses=_ERRORS)
    for path, endpoint in (("/sync", sync), ("/cleanup", cleanup), ("/auto-expire", auto_expire),
                           ("/auto-delete-stale", auto_delete_stale),
                           ("/bulk-delete", bulk_delete), ("/retry-failed", retry_failed)):
        router.add_api_route(path, endpoint, methods=["POST"], response_model=JobResult,
                             responses=_ERRORS)
    return router
