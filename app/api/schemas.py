"""Wire schemas: what clients send and receive. Separate from domain objects."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from app.domain import Sandbox, Status

__all__ = [
    "ERROR_RESPONSES",
    "AdminSandboxOut",
    "ErrorBody",
    "ErrorEnvelope",
    "ExtendRequest",
    "ExtendedSandboxOut",
    "JobResult",
    "SandboxOut",
    "SandboxPage",
    "admin_sandbox_body",
    "error_docs",
    "sandbox_body",
]


class SandboxOut(BaseModel):
    """A sandbox as track scripts see it; times are integer epoch seconds."""

    sandbox_id: str
    name: str
    external_id: str | None
    allocated_at: int | None
    expires_at: int | None
    sfdc_account_id: str | None
    track_name: str | None
    status: Status


class ExtendRequest(BaseModel):
    """How many hours to add to the lease's expires_at."""

    hours: float = Field(gt=0, le=24 * 7, allow_inf_nan=False, examples=[1])


class ExtendedSandboxOut(SandboxOut):
    extensions_left: int


class ErrorBody(BaseModel):
    code: str = Field(examples=["POOL_EXHAUSTED"])
    message: str
    request_id: str
    errors: list[dict[str, Any]] | None = None


class ErrorEnvelope(BaseModel):
    detail: ErrorBody


def sandbox_body(sandbox: Sandbox) -> dict[str, Any]:
    """The wire form of a sandbox (fast path: no model validation)."""
    return {
        "sandbox_id": sandbox.sandbox_id,
        "name": sandbox.name,
        "external_id": sandbox.external_id,
        "allocated_at": sandbox.allocated_at,
        "expires_at": sandbox.expires_at,
        "sfdc_account_id": sandbox.sfdc_account_id,
        "track_name": sandbox.track_name,
        "status": str(sandbox.status),
    }


ERROR_RESPONSES: dict[int, str] = {
    400: "Missing or invalid header, or an invalid cursor",
    401: "Missing, malformed or unknown bearer token",
    403: "Token of the wrong role, or the sandbox is leased to someone else",
    404: "No such sandbox (or already deleted)",
    409: "Conflict: pool exhausted, job already running, or a limit reached",
    413: "Request body too large",
    422: "Validation error (detail.errors lists each problem)",
    429: "Rate limit exceeded (see Retry-After)",
    503: "Contention or the store is unavailable (see Retry-After)",
}


def error_docs(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the given error statuses."""
    return {
        status: {"model": ErrorEnvelope, "description": ERROR_RESPONSES[status]}
        for status in statuses
    }


class AdminSandboxOut(SandboxOut):
    """The admin view adds who holds it and the deletion bookkeeping."""

    owner: str | None
    extensions: int
    created_at: int
    updated_at: int
    deletion_attempts: int
    next_attempt_at: int | None
    last_error: str | None
    deletion_requested_at: int | None


class SandboxPage(BaseModel):
    sandboxes: list[AdminSandboxOut]
    count: int
    next_cursor: str | None


class JobResult(BaseModel):
    """What one admin-triggered pass did (counts by kind)."""

    job: str
    summary: dict[str, int]


def admin_sandbox_body(sandbox: Sandbox) -> dict[str, Any]:
    return {
        **sandbox_body(sandbox),
        "owner": sandbox.owner,
        "extensions": sandbox.extensions,
        "created_at": sandbox.created_at,
        "updated_at": sandbox.updated_at,
        "deletion_attempts": sandbox.deletion_attempts,
        "next_attempt_at": sandbox.next_attempt_at,
        "last_error": sandbox.last_error,
        "deletion_requested_at": sandbox.deletion_requested_at,
    }
