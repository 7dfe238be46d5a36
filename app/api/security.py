"""Pure ASGI middleware for the HTTP surface's hygiene: security headers on every
response, request size limits, and CORS for the configured origins only."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Collection, Iterable
from typing import Any

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.docs_pages import REDOC_JS, SWAGGER_CSS, SWAGGER_JS
from app.api.errors import error_response

__all__ = [
    "EXPOSED_HEADERS",
    "CorsMiddleware",
    "RequestLimitsMiddleware",
    "SecurityHeadersMiddleware",
    "inline_script_hashes",
    "refuse",
]

# JSON needs no sources at all; nothing may frame, embed or post from a response.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# Swagger UI and ReDoc load exactly their pinned files from the CDN, each also checked by
# its integrity hash (app/api/docs_pages.py); their inline styles (and ReDoc's blob:
# worker) are allowed, but inline scripts only by hash, never 'unsafe-inline'.
_DOCS_SCRIPTS = " ".join(asset.url for asset in (SWAGGER_JS, REDOC_JS))
DOCS_CSP = (
    f"default-src 'none'; script-src 'self' {_DOCS_SCRIPTS}{{hashes}}; "
    f"style-src 'self' 'unsafe-inline' {SWAGGER_CSS.url}; "
    "img-src 'self' data: https://cdn.redoc.ly; font-src 'self' data:; "
    "connect-src 'self'; worker-src 'self' blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
EXPOSED_HEADERS = (
    "X-Request-ID", "Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
)
_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script>", re.S | re.I)


async def refuse(
    scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str,
    headers: dict[str, str] | None = None,
) -> None:
    """Answer with the error envelope from a middleware (before any route ran)."""
    scope.setdefault("state", {})["error_code"] = code
    await error_response(status, code, message, headers=headers)(scope, receive, send)


def inline_script_hashes(html: bytes) -> list[str]:
    """CSP source expressions ('sha256-…') for each inline <script> of a page."""
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(match.group(1)).digest()).decode() + "'"
        for match in _INLINE_SCRIPT.finditer(html)
    ]


def _add_missing(message: Message, defaults: list[tuple[bytes, bytes]]) -> None:
    """Add each default header the response did not set itself (a route's own, stricter
    or looser, policy wins: the dashboard sends its own CSP)."""
    headers = list(message.get("headers", ()))
    present = {name.lower() for name, _ in headers}
    headers.extend(item for item in defaults if item[0] not in present)
    message["headers"] = headers


class SecurityHeadersMiddleware:
    """nosniff, frame denial, no referrer, no caching, HSTS and a strict CSP on every
    response that did not set its own. The docs pages get a CSP that lets them render,
    computed from the page itself: it allows exactly the inline scripts FastAPI wrote."""

    def __init__(
        self, app: ASGIApp, *, hsts_max_age: int, docs_paths: Iterable[str | None] = ()
    ) -> None:
        self.app = app
        fixed = {
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
        }
        if hsts_max_age > 0:
            fixed["Strict-Transport-Security"] = f"max-age={hsts_max_age}"
        fixed["Cache-Control"] = "no-store"
        self._fixed = [(k.lower().encode(), v.encode()) for k, v in fixed.items()]
        self._api = [*self._fixed, (b"content-security-policy", API_CSP.encode())]
        self._docs_paths = frozenset(path for path in docs_paths if path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] in self._docs_paths:
            await self._docs_page(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                _add_missing(message, self._api)
            await send(message)

        await self.app(scope, receive, send_secured)

    async def _docs_page(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Hold the (small, rare) page until its body is complete, then hash its scripts."""
        start: Message = {}
        chunks: list[bytes] = []

        async def send_buffered(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            hashes = "".join(" " + h for h in inline_script_hashes(body))
            csp = DOCS_CSP.format(hashes=hashes).encode()
            _add_missing(start, [*self._fixed, (b"content-security-policy", csp)])
            await send(start)
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, send_buffered)


class RequestLimitsMiddleware:
    """431 when the request's header lines exceed `max_header_bytes`; 413 when its body
    exceeds `max_body_bytes`, whether declared (refused before reading) or streamed
    (refused as soon as the reader passes the limit)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.max_headers = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        size, declared = 0, None
        for name, value in scope["headers"]:
            size += len(name) + len(value) + 4  # "name: value\r\n"
            if name == b"content-length":
                declared = value
        if size > self.max_headers:
            await refuse(scope, receive, send, 431, "REQUEST_HEADERS_TOO_LARGE",
                         f"the request headers exceed {self.max_headers} bytes")
            return
        if declared is None:
            await self.app(scope, self._counting(receive), send)
            return
        if not declared.isdigit():
            await refuse(scope, receive, send, 400, "BAD_REQUEST", "invalid Content-Length")
        elif int(declared) > self.max_body:
            await refuse(scope, receive, send, 413, "PAYLOAD_TOO_LARGE",
                         f"the request body exceeds {self.max_body} bytes")
        else:  # the server holds the body to its declared length
            await self.app(scope, receive, send)

    def _counting(self, receive: Receive) -> Receive:
        received = 0

        async def receive_counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    # Raised inside the reader: FastAPI re-raises HTTPException from body
                    # parsing, so the error handlers answer 413 with the envelope.
                    raise HTTPException(413, f"the request body exceeds {self.max_body} bytes")
            return message

        return receive_counted


class CorsMiddleware(CORSMiddleware):
    """Starlette's CORS for exactly the configured origins (no credentials). Browsers
    may read the request id, Retry-After and rate-limit headers; a refused preflight
    answers 400 with the error envelope instead of plain text."""

    def __init__(self, app: ASGIApp, *, origins: Collection[str]) -> None:
        super().__init__(
            app, allow_origins=tuple(origins), allow_methods=("GET", "POST"),
            allow_headers=("*",), expose_headers=EXPOSED_HEADERS, max_age=600,
        )

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        keep: dict[str, Any] = {
            name: value for name, value in response.headers.items()
            if name.startswith("access-control-") or name == "vary"
        }
        reason = bytes(response.body).decode("utf-8", "replace")
        return error_response(400, "CORS_REJECTED", reason, headers=keep)
