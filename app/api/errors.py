"""The single error envelope and the one table mapping errors to HTTP statuses.

Body: {"detail": {"code", "message", "request_id"}} (+ "errors" on 422), and the
request id equals the X-Request-ID response header.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app import domain
from app.domain import DomainError
from app.providers.base import ProviderUnavailable

__all__ = ["ApiError", "error_response", "install_error_handlers", "request_id_var"]

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

STATUS_BY_ERROR: dict[type[DomainError], int] = {
    domain.InvalidInput: 400,
    domain.NotSandboxOwner: 403,
    domain.SandboxNotFound: 404,
    domain.PoolExhausted: 409,
    domain.InvalidTransition: 409,
    domain.JobRunning: 409,
    domain.ExtensionLimit: 409,
    domain.LeaseNotActive: 409,
    domain.SyncRefused: 409,
    domain.Contention: 503,
    domain.StoreUnavailable: 503,
    ProviderUnavailable: 503,
}

_CODE_BY_STATUS = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}


class ApiError(Exception):
    """An HTTP-level refusal raised by the API layer itself (auth, headers)."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    errors: list[Any] | None = None,
) -> Response:
    detail: dict[str, Any] = {"code": code, "message": message, "request_id": request_id_var.get()}
    if errors is not None:
        detail["errors"] = errors
    return Response(
        orjson.dumps({"detail": detail}),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _retry_headers(retry_after: int | None) -> dict[str, str] | None:
    return None if retry_after is None else {"Retry-After": str(retry_after)}


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    request.state.error_code = exc.code
    status = next(
        (code for cls, code in STATUS_BY_ERROR.items() if isinstance(exc, cls)), 500
    )
    return error_response(status, exc.code, exc.message, headers=_retry_headers(exc.retry_after))


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    request.state.error_code = exc.code
    return error_response(exc.status, exc.code, exc.message, headers=exc.headers)


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODE_BY_STATUS.get(exc.status_code, "HTTP_ERROR")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ").lower()
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, code, message, headers=headers)


def _jsonable(error: dict[str, Any]) -> dict[str, Any]:
    """A validation error without its raw input (it may be binary or huge)."""
    return {
        "loc": [str(part) for part in error.get("loc", ())],
        "msg": str(error.get("msg", "")),
        "type": str(error.get("type", "")),
    }


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [_jsonable(e) for e in exc.errors()]
    return error_response(422, "VALIDATION_ERROR", "the request is not valid", errors=errors)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
