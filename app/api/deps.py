"""Request dependencies: services, auth roles and validated headers, in one place."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Header, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.auth import Role, TokenBook, bearer_token
from app.api.errors import ApiError
from app.services import Services

__all__ = [
    "BEARER_SECURITY",
    "AdminAuth",
    "Owner",
    "ServicesDep",
    "TrackAuth",
    "authenticate",
    "clean_header",
    "get_services",
    "read_owner",
    "utf8_header",
]

MAX_HEADER_CHARS = 128
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# Dependencies are `async def` although they do no I/O: FastAPI runs plain `def`
# dependencies in a worker thread, which costs a thread hand-off per request.


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def authenticate(request: Request, wanted: Role) -> str:
    """Check the bearer token has the wanted role; return its id (never the token)."""
    raw = request.headers.get("authorization")
    challenge = {"WWW-Authenticate": "Bearer"}
    if not raw:
        raise ApiError(401, "UNAUTHORIZED", "a bearer token is required", challenge)
    token = bearer_token(raw)
    if token is None:
        raise ApiError(401, "UNAUTHORIZED", "use 'Authorization: Bearer <token>'", challenge)
    book: TokenBook = request.app.state.token_book
    known = book.identify_for(token, request.scope.setdefault("state", {}))
    if known is None:
        raise ApiError(401, "UNAUTHORIZED", "the token is not valid", challenge)
    role, token_id = known
    if role is not wanted:
        raise ApiError(403, "FORBIDDEN", f"this endpoint needs a {wanted.value} token")
    principal = f"{wanted.value}:{token_id}"
    request.state.principal = principal
    return principal


# Declares the scheme in the OpenAPI document (Swagger's "Authorize" button); it never
# refuses anything itself: `authenticate` checks the token and answers in the envelope.
_BEARER_DOCS = HTTPBearer(
    auto_error=False, scheme_name="bearer",
    description="A track token (track endpoints) or an admin token (/admin, /events).",
)
# For routes that read the token themselves (no dependency to declare it):
BEARER_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]
_Documented = Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER_DOCS)]


async def require_track(request: Request, _: _Documented) -> str:
    return authenticate(request, Role.TRACK)


async def require_admin(request: Request, _: _Documented) -> str:
    return authenticate(request, Role.ADMIN)


TrackAuth = Annotated[str, Depends(require_track)]
AdminAuth = Annotated[str, Depends(require_admin)]


def utf8_header(value: str | None) -> str | None:
    """A header as the client wrote it: Starlette reads header bytes as latin-1, clients
    send names (a prefix, a lab's name) in UTF-8. Bytes that are not UTF-8 stay latin-1."""
    if value is None or value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def clean_header(name: str, value: str | None, *, code: str = "INVALID_HEADER") -> str | None:
    """The header value stripped, or None if absent; 400 if empty, too long or binary."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        raise ApiError(400, code, f"header {name} must not be empty")
    if len(value) > MAX_HEADER_CHARS:
        raise ApiError(400, code, f"header {name} is longer than {MAX_HEADER_CHARS} characters")
    if _CONTROL.search(value):
        raise ApiError(400, code, f"header {name} contains control characters")
    return value


async def owner_header(
    request: Request,
    x_instruqt_sandbox_id: Annotated[
        str | None,
        Header(description="The lab participant's Instruqt sandbox id (the lease owner)."),
    ] = None,
    x_track_id: Annotated[
        str | None, Header(description="Legacy owner header, used when the preferred is absent.")
    ] = None,
) -> str:
    """The lease owner: X-Instruqt-Sandbox-ID, else the legacy X-Track-ID.

    The parameters document the headers in OpenAPI; read_owner reads and checks them.
    """
    return read_owner(request)


def read_owner(request: Request) -> str:
    """The owner header, validated (400 MISSING_OWNER / INVALID_OWNER)."""
    headers = request.headers
    preferred, legacy = headers.get("x-instruqt-sandbox-id"), headers.get("x-track-id")
    # Each header is read (and checked) only without a usable other one: existing lab
    # scripts may send the legacy header empty beside the preferred one, or (templated
    # from an unset variable) the preferred one empty beside the legacy one.
    if preferred is not None and (preferred.strip() or legacy is None):
        owner = clean_header("X-Instruqt-Sandbox-ID", preferred, code="INVALID_OWNER")
    else:
        owner = clean_header("X-Track-ID", legacy, code="INVALID_OWNER")
    if owner is None:
        raise ApiError(
            400, "MISSING_OWNER", "send the owner in X-Instruqt-Sandbox-ID (or X-Track-ID)"
        )
    request.state.owner = owner
    return owner


Owner = Annotated[str, Depends(owner_header)]
