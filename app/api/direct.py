"""DirectRoute: one hot route answered straight from the middleware stack.

FastAPI's own layers under our middleware (exception middleware, router, route
matching, dependency resolution, request handling) cost about as much CPU as an
allocation itself (py-spy, docs/performance.md). The allocate endpoint declares no
parameters: it reads its own headers. So for exactly that method and path this layer
calls the endpoint itself. Everything above it still runs (security headers, request
context, size and rate limits), errors go through the app's own exception handlers,
and the route stays registered with FastAPI for the OpenAPI document and any other
method or path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["DirectRoute", "Endpoint"]

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Exception], Awaitable[Response]]


class DirectRoute:
    """Calls `endpoint` for requests to `route` (its one method and path)."""

    def __init__(
        self, app: ASGIApp, *, route: BaseRoute, endpoint: Endpoint,
        exception_handlers: Mapping[Any, Handler],
    ) -> None:
        dependant = getattr(route, "dependant", None)
        if dependant is not None and any((
            dependant.dependencies, dependant.path_params, dependant.query_params,
            dependant.header_params, dependant.cookie_params, dependant.body_params,
        )):  # FastAPI would resolve these; this layer does not, so it must not skip them
            raise ValueError(f"{getattr(route, 'path', route)} declares parameters or "
                             "dependencies; it cannot be a direct route")
        self.app = app
        self.route = route
        self.path: str = getattr(route, "path")  # noqa: B009 - BaseRoute has no typed path
        (self.method,) = getattr(route, "methods")  # noqa: B009 - one method, by design
        self.endpoint = endpoint
        self.handlers = exception_handlers  # the app's live mapping (later additions count)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _route_path(scope) != self.path or (
            scope["method"] != self.method
        ):
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route  # what the router would have set (metrics label)
        request = Request(scope, receive)
        try:
            response = await self.endpoint(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise  # the request context layer answers 500
            response = await handler(request, exc)
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> Handler | None:
        for cls in type(exc).__mro__:
            if cls in self.handlers:
                return self.handlers[cls]
        return None


def _route_path(scope: Scope) -> str:
    """The path the router matches: without the root path a server put in front."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path
