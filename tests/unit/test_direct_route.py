"""DirectRoute answers exactly its route, through the app's exception handlers, and
refuses a route whose parameters or dependencies FastAPI would have had to resolve."""

from __future__ import annotations

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.routing import APIRoute
from starlette.responses import JSONResponse, Response

from app.api.direct import DirectRoute

pytestmark = pytest.mark.unit


class Refused(Exception):
    pass


async def endpoint(request: Request) -> Response:
    if request.headers.get("x-refuse"):
        raise Refused()
    if request.headers.get("x-crash"):
        raise RuntimeError("unhandled")
    return JSONResponse({"via": "direct", "route": request.scope["route"].path})


async def routed(request: Request) -> Response:
    """What the router would call: registered for the route, never reached by POST."""
    return JSONResponse({"via": "router"})


async def on_refused(_: Request, exc: Exception) -> Response:
    return JSONResponse({"refused": type(exc).__name__}, status_code=409)


def build() -> FastAPI:
    app = FastAPI()
    app.add_api_route("/x", routed, methods=["POST"])
    app.add_exception_handler(Refused, on_refused)
    (route,) = [r for r in app.routes if isinstance(r, APIRoute)]
    app.add_middleware(DirectRoute, route=route, endpoint=endpoint,
                       exception_handlers=app.exception_handlers)
    return app


async def test_answers_its_route_and_leaves_the_rest_to_fastapi() -> None:
    app = build()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        direct = await client.post("/x")
        assert direct.json() == {"via": "direct", "route": "/x"}
        assert (await client.get("/x")).status_code == 405  # other methods: the router
        assert (await client.post("/y")).status_code == 404
        refused = await client.post("/x", headers={"x-refuse": "1"})
        assert (refused.status_code, refused.json()) == (409, {"refused": "Refused"})
        crashed = await client.post("/x", headers={"x-crash": "1"})
        assert crashed.status_code == 500  # unhandled errors propagate to the outer layers


async def needs_a_token(token: str = "") -> str:
    return token


def test_refuses_routes_with_parameters_or_dependencies() -> None:
    app = FastAPI()

    async def with_query(q: int) -> None: ...

    app.add_api_route("/q", with_query, methods=["POST"])
    app.add_api_route("/d", endpoint, methods=["POST"], dependencies=[Depends(needs_a_token)])
    for route in [r for r in app.routes if isinstance(r, APIRoute)]:
        with pytest.raises(ValueError, match="cannot be a direct route"):
            DirectRoute(app, route=route, endpoint=endpoint, exception_handlers={})


async def test_matches_the_route_path_under_a_root_path() -> None:
    """Behind `uvicorn --root-path /base` the scope's path carries the prefix."""
    app = build()
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/base/x", "raw_path": b"/base/x",
             "root_path": "/base", "query_string": b"", "headers": [],
             "client": ("127.0.0.1", 1), "server": ("t", 80)}
    await app(scope, receive, send)
    assert sent[0]["status"] == 200
    assert sent[1]["body"] == b'{"via":"direct","route":"/x"}'
