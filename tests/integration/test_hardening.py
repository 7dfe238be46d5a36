"""Hardening over ASGI: the auth matrix over every documented route, security headers on
every kind of answer, CORS, size limits, rate limits with their headers, and log lines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.responses import Response

from app.api.docs_pages import ASSETS
from app.api.security import API_CSP, EXPOSED_HEADERS, inline_script_hashes
from app.config import Settings
from app.main import create_app
from app.observability import JsonFormatter
from tests.conftest import (
    ADMIN,
    ADMIN_TOKEN,
    TRACK,
    TRACK_TOKEN,
    make_sandboxes,
    owner_headers,
)
from tests.support.processes import free_port

pytestmark = pytest.mark.integration

AppFactory = Callable[..., FastAPI]
OWNER = "hardening-owner"
SECURITY = {"x-content-type-options": "nosniff", "x-frame-options": "DENY",
            "referrer-policy": "no-referrer", "strict-transport-security": "max-age=31536000",
            "cache-control": "no-store"}


def _spec() -> dict[str, Any]:
    """The published document of an app that is never started (routes only)."""
    unused = Path(tempfile.gettempdir()) / "hardening-never-opened.db"
    return create_app(Settings(broker_env="production", broker_api_token=TRACK_TOKEN,
                               broker_admin_token=ADMIN_TOKEN,
                               broker_sqlite_path=str(unused))).openapi()


SPEC = _spec()
OPERATIONS = [(method.upper(), path, op) for path, ops in SPEC["paths"].items()
              for method, op in ops.items()]
CREDENTIALS = {
    "no-header": {},
    "malformed": {"Authorization": f"Token {TRACK_TOKEN}"},
    "wrong-token": {"Authorization": "Bearer " + "w" * 40},
    "track-token": TRACK,
    "admin-token": ADMIN,
}


@pytest.fixture
def build(make_settings: Callable[..., Settings]) -> AppFactory:
    """An app with the rate limiter on (unless overridden) and background jobs off."""

    def make(**overrides: Any) -> FastAPI:
        quiet = {f"{job}_enabled": False for job in ("sync", "cleanup", "auto_expiry",
                                                      "stale_deletion")}
        return create_app(make_settings(**{**quiet, "rate_limit_enabled": True, **overrides}))

    return make


@asynccontextmanager
async def serving(
    app: FastAPI, peer: str = "127.0.0.1", seed: int = 5
) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan, `seed` sandboxes, and a client whose peer address is `peer`."""
    async with app.router.lifespan_context(app):
        await app.state.services.store.add(make_sandboxes(seed))
        transport = httpx.ASGITransport(app=app, client=(peer, 4321))
        async with httpx.AsyncClient(transport=transport, base_url="http://broker") as client:
            yield client


def assert_envelope(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert detail["request_id"] == response.headers["x-request-id"]
    assert code is None or detail["code"] == code


def assert_secured(response: httpx.Response, csp: str | None = API_CSP) -> None:
    for name, value in SECURITY.items():
        assert response.headers.get(name) == value, (name, dict(response.headers))
    if csp is not None:
        assert response.headers["content-security-policy"] == csp


# --- the auth matrix ------------------------------------------------------------------

def _needed_role(path: str) -> str | None:
    """DESIGN.md §1: admin endpoints under /v1/admin, track endpoints under /v1."""
    if path.startswith("/v1/admin"):
        return "admin"
    return "track" if path.startswith("/v1/") else None


def _required_query(op: dict[str, Any], spec: dict[str, Any]) -> dict[str, str]:
    """A valid value for each required query parameter (enums: the first value)."""
    values = {}
    for param in op.get("parameters", []):
        if param["in"] == "query" and param.get("required"):
            schema = param["schema"]
            if "$ref" in schema:
                schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
            values[param["name"]] = str(schema["enum"][0] if "enum" in schema
                                        else schema.get("minimum", 1))
    return values


@pytest.mark.parametrize("credential", list(CREDENTIALS))
@pytest.mark.parametrize(("method", "path", "op"), OPERATIONS,
                         ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
async def test_auth_matrix(build: AppFactory, method: str, path: str, op: dict[str, Any],
                           credential: str) -> None:
    async with serving(build()) as client:
        lease = (await client.post("/v1/allocate", headers=owner_headers(OWNER))).json()
        url = path.replace("{sandbox_id}", lease["sandbox_id"])
        headers = {**CREDENTIALS[credential], "X-Instruqt-Sandbox-ID": OWNER}
        body: dict[str, Any] | None = {} if "requestBody" in op else None
        response = await client.request(method, url, headers=headers, json=body,
                                        params=_required_query(op, SPEC))
    role = _needed_role(path)
    assert str(response.status_code) in op["responses"], response.text  # documented
    if role is None:
        assert response.status_code == 200
    elif credential in ("no-header", "malformed", "wrong-token"):
        assert_envelope(response, 401, "UNAUTHORIZED")
        assert response.headers["www-authenticate"] == "Bearer"
    elif credential != f"{role}-token":
        assert_envelope(response, 403, "FORBIDDEN")
    else:
        assert response.status_code not in (401, 403) and response.status_code < 500


async def test_non_utf8_bodies_get_a_documented_answer(build: AppFactory) -> None:
    """FastAPI answers 400 to a body it cannot decode: every route with a body documents it."""
    with_body = [(m, p, op) for m, p, op in OPERATIONS if "requestBody" in op]
    async with serving(build()) as client:
        for method, path, op in with_body:
            headers = {**(ADMIN if _needed_role(path) == "admin" else TRACK),
                       "X-Instruqt-Sandbox-ID": OWNER, "Content-Type": "application/json"}
            url = path.replace("{sandbox_id}", "sbx-lab-0001")
            response = await client.request(method, url, headers=headers, content=b"\xff\xfe{")
            assert response.status_code in (400, 422), response.text
            assert str(response.status_code) in op["responses"]
            assert_envelope(response, response.status_code)


# --- security headers, CORS and size limits -------------------------------------------

async def _boom() -> None:
    raise RuntimeError("kaboom with a secret-looking " + TRACK_TOKEN)


@pytest.mark.parametrize(("status", "method", "path", "kwargs"), [
    pytest.param(200, "GET", "/healthz", {}, id="200"),
    pytest.param(401, "POST", "/v1/allocate", {}, id="401"),
    pytest.param(404, "GET", "/v1/nothing", {}, id="404"),
    pytest.param(405, "GET", "/v1/allocate", {"headers": TRACK}, id="405"),
    pytest.param(413, "POST", "/v1/allocate", {"content": b"x" * 70_000}, id="413"),
    pytest.param(422, "GET", "/v1/sandboxes/" + "x" * 200, {"headers": owner_headers("o")},
                 id="422"),
    pytest.param(429, "GET", "/v1/nothing", {}, id="429"),
    pytest.param(431, "GET", "/healthz", {"headers": {"X-Big": "y" * 9000}}, id="431"),
    pytest.param(500, "GET", "/boom", {}, id="500"),
])
async def test_every_answer_is_secured(build: AppFactory, status: int, method: str, path: str,
                                       kwargs: dict[str, Any]) -> None:
    app = build(rate_limit_ip="1/minute" if status == 429 else "1000/minute")
    app.add_api_route("/boom", _boom, methods=["GET"])
    async with serving(app) as client:
        if status == 429:
            await client.get(path)
        response = await client.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    assert_secured(response)
    assert response.headers["x-request-id"]
    if status >= 400:
        assert_envelope(response, status)
    if status == 500:
        assert TRACK_TOKEN not in response.text and "kaboom" not in response.text


@pytest.mark.parametrize("path", ["/v1/docs", "/v1/redoc"])
async def test_docs_pages_get_a_csp_they_render_under(build: AppFactory, path: str) -> None:
    async with serving(build()) as client:
        response = await client.get(path)
    assert response.status_code == 200
    assert_secured(response, csp=None)
    policy = dict(d.strip().split(" ", 1) for d in
                  response.headers["content-security-policy"].split(";"))
    assert "'unsafe-inline'" not in policy["script-src"] and "unsafe-eval" not in str(policy)
    assert policy["frame-ancestors"] == "'none'"
    for digest in inline_script_hashes(response.content):  # the page's own inline scripts
        assert digest in policy["script-src"]
    external = r'<(script|link)[^>]*(?:src|href)="(https?://[^/"]+)'
    for tag, url in re.findall(external, response.text):
        directive = "script-src" if tag == "script" else "style-src"
        assert url in policy[directive] or url in policy["img-src"], (tag, url)


@pytest.mark.parametrize("path", ["/v1/docs", "/v1/redoc"])
async def test_docs_pages_load_only_pinned_files_checked_by_integrity(
    build: AppFactory, path: str,
) -> None:
    async with serving(build()) as client:
        response = await client.get(path)
    page, policy = response.text, response.headers["content-security-policy"]
    assert not re.search(r"https://cdn\.jsdelivr\.net/?(?:[\s;]|$)", policy)  # not the CDN
    pinned = {asset.url: asset.integrity for asset in ASSETS}
    tags = re.findall(r"<(?:script|link)\b[^>]*>", page)
    external = [(tag, url) for tag in tags
                for url in re.findall(r'(?:src|href)="(https?://[^"]+)"', tag)]
    assert external  # the pages do load their UI from the CDN
    for tag, url in external:
        assert url in pinned, f"{url} is not a pinned asset"
        assert f'integrity="{pinned[url]}"' in tag and 'crossorigin="anonymous"' in tag
        assert f" {url}" in policy  # the policy allows that file, not its neighbours
    assert "fonts.googleapis.com" not in page and "fastapi.tiangolo.com" not in page


async def test_a_routes_own_policy_wins(build: AppFactory) -> None:
    app = build()

    async def page() -> Response:
        return Response("<p>hi</p>", media_type="text/html",
                        headers={"Content-Security-Policy": "default-src 'self'"})

    app.add_api_route("/page", page, methods=["GET"])
    async with serving(app) as client:
        response = await client.get("/page")
    assert response.headers.get_list("content-security-policy") == ["default-src 'self'"]
    assert_secured(response, csp="default-src 'self'")


async def test_cors_only_for_configured_origins(build: AppFactory) -> None:
    allowed, other = "https://ops.example.com", "https://evil.example.com"
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, x-instruqt-sandbox-id"}
    async with serving(build()) as client:  # none configured: no CORS at all
        plain = await client.get("/healthz", headers={"Origin": allowed})
        assert "access-control-allow-origin" not in plain.headers
        refused = await client.options("/v1/allocate", headers={"Origin": allowed, **preflight})
        assert "access-control-allow-origin" not in refused.headers
    app = build(cors_allowed_origins=allowed, rate_limit_principal="1/minute")
    async with serving(app) as client:
        ok = await client.options("/v1/allocate", headers={"Origin": allowed, **preflight})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == allowed
        assert "POST" in ok.headers["access-control-allow-methods"]
        assert "x-instruqt-sandbox-id" in ok.headers["access-control-allow-headers"]
        bad = await client.options("/v1/allocate", headers={"Origin": other, **preflight})
        assert_envelope(bad, 400, "CORS_REJECTED")
        assert "access-control-allow-origin" not in bad.headers
        assert_secured(bad)
        cross = {"Origin": allowed, **owner_headers(OWNER)}
        first = await client.post("/v1/allocate", headers=cross)
        limited = await client.post("/v1/allocate", headers=cross)  # a 429 stays readable
        for response in (first, limited):
            assert response.headers["access-control-allow-origin"] == allowed
            exposed = response.headers["access-control-expose-headers"]
            assert all(name in exposed for name in EXPOSED_HEADERS)
        assert limited.status_code == 429
        foreign = await client.get("/healthz", headers={"Origin": other})
        assert "access-control-allow-origin" not in foreign.headers


async def test_streamed_body_over_the_limit_is_413(build: AppFactory) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it is read
        for _ in range(20):
            yield b"{" * 4096

    async with serving(build()) as client:
        response = await client.post("/v1/sandboxes/sbx-lab-0001/extend", content=chunks(),
                                     headers=owner_headers(OWNER))
    assert_envelope(response, 413, "PAYLOAD_TOO_LARGE")
    assert_secured(response)


# --- rate limits ----------------------------------------------------------------------

async def test_429_headers_tell_the_truth(build: AppFactory) -> None:
    app = build(rate_limit_principal="3/2 seconds", rate_limit_ip="1000/minute")
    headers = owner_headers(OWNER)
    async with serving(app) as client:
        started = time.time()
        for left in (2, 1, 0):
            response = await client.get("/v1/sandboxes/nope", headers=headers)
            assert response.status_code == 404
            assert response.headers["x-ratelimit-limit"] == "3"
            assert response.headers["x-ratelimit-remaining"] == str(left)
            assert "retry-after" not in response.headers  # only refusals carry it
        reset = int(response.headers["x-ratelimit-reset"])
        assert math.ceil(started + 2) <= reset <= math.ceil(time.time() + 2)
        refused = await client.get("/v1/sandboxes/nope", headers=headers)
        assert_envelope(refused, 429, "RATE_LIMIT_EXCEEDED")
        retry = int(refused.headers["retry-after"])
        assert 1 <= retry <= 2
        assert refused.headers["x-ratelimit-limit"] == "3"
        assert refused.headers["x-ratelimit-remaining"] == "0"
        assert int(refused.headers["x-ratelimit-reset"]) == reset
        assert abs(time.time() + retry - reset) <= 1.01
        assert (await client.get("/v1/sandboxes/nope", headers=headers)).status_code == 429
        await asyncio.sleep(max(0.0, reset - time.time()) + 0.05)  # as Reset promised
        again = await client.get("/v1/sandboxes/nope", headers=headers)
        assert again.status_code == 404, again.text


async def test_budgets_are_per_token_and_per_client_ip(build: AppFactory) -> None:
    app = build(rate_limit_principal="1/minute", rate_limit_ip="3/minute",
                trusted_proxies="10.0.0.0/8")
    async with serving(app, peer="10.1.2.3") as proxied:
        assert (await proxied.get("/v1/admin/stats", headers=ADMIN)).status_code == 200
        assert (await proxied.get("/v1/admin/stats", headers=ADMIN)).status_code == 429
        wrong = await proxied.get("/v1/sandboxes/x", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401  # unknown tokens spend the IP budget only
        assert wrong.headers["x-ratelimit-limit"] == "3"
        assert (await proxied.get("/v1/sandboxes/x", headers=owner_headers("o"))).status_code \
            == 429  # the proxy's own address has now spent its 3
        for hop in ("203.0.113.7", "198.51.100.1, 203.0.113.8, 10.9.9.9"):
            fresh = await proxied.get("/v1/nothing", headers={"X-Forwarded-For": hop})
            assert fresh.status_code == 404 and fresh.headers["x-ratelimit-remaining"] == "2"
    async with serving(build(rate_limit_ip="1/minute"), peer="192.0.2.1") as direct:
        await direct.get("/v1/nothing")
        spoofed = await direct.get("/v1/nothing", headers={"X-Forwarded-For": "203.0.113.9"})
        assert_envelope(spoofed, 429, "RATE_LIMIT_EXCEEDED")  # untrusted peer: XFF ignored
        assert "client address" in spoofed.json()["detail"]["message"]


@pytest.fixture
def redis_uri(tmp_path: Path) -> Iterator[str]:
    """A throwaway redis-server on a free port (`make programs` installs Debian's; the
    test skips where it could not)."""
    pytest.importorskip("redis")
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (run `make programs` to see why)")
    port = free_port()
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


async def test_replicas_sharing_a_storage_share_one_budget(build: AppFactory,
                                                          redis_uri: str) -> None:
    replicas = [build(rate_limit_storage_uri=redis_uri, rate_limit_principal="3/minute")
                for _ in range(2)]
    async with serving(replicas[0]) as first, serving(replicas[1], seed=0) as second:
        statuses = [(await c.get("/v1/sandboxes/x", headers=owner_headers("o"))).status_code
                    for c in (first, second, first, second)]
    assert statuses == [404, 404, 404, 429]


async def test_a_failing_storage_lets_requests_through(build: AppFactory) -> None:
    """The limiter must not be the outage: nothing listens on this port."""
    pytest.importorskip("redis")
    app = build(rate_limit_storage_uri=f"redis://127.0.0.1:{free_port()}/0")
    async with serving(app) as client:
        response = await client.get("/v1/sandboxes/x", headers=owner_headers("o"))
        metrics = (await client.get("/metrics")).text
    assert response.status_code == 404 and "x-ratelimit-limit" not in response.headers
    assert "broker_rate_limit_storage_errors_total 1.0" in metrics


async def test_health_ready_and_metrics_are_exempt(build: AppFactory) -> None:
    async with serving(build(rate_limit_ip="1/minute", rate_limit_principal="1/minute")) as c:
        for _ in range(4):
            for path in ("/healthz", "/readyz", "/metrics"):
                response = await c.get(path, headers=TRACK)
                assert response.status_code == 200
                assert "x-ratelimit-limit" not in response.headers


# --- logs -----------------------------------------------------------------------------

async def test_one_json_line_per_request_at_the_right_level(
    build: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="broker.http")
    async with serving(build(rate_limit_principal="2/minute")) as client:
        created = await client.post("/v1/allocate", headers=owner_headers(OWNER))
        await client.get("/v1/sandboxes/nope", headers=owner_headers(OWNER))
        await client.get("/v1/sandboxes/nope", headers=owner_headers(OWNER))
    lines = [r for r in caplog.records if r.name == "broker.http"]
    assert [r.levelno for r in lines] == [logging.INFO, logging.INFO, logging.WARNING]
    entries = [JsonFormatter().format(r) for r in lines]
    for entry, record in zip(entries, lines, strict=True):
        fields = getattr(record, "fields")  # noqa: B009 - set through `extra`
        assert {"request_id", "owner", "sandbox_id", "outcome", "latency_ms"} <= set(fields)
        assert TRACK_TOKEN not in entry and ADMIN_TOKEN not in entry
    first, _, limited = (getattr(r, "fields") for r in lines)  # noqa: B009
    assert first["outcome"] == "new" and first["owner"] == OWNER
    assert first["sandbox_id"] == created.json()["sandbox_id"]
    assert first["request_id"] == created.headers["x-request-id"]
    assert limited["outcome"] == "RATE_LIMIT_EXCEEDED" and limited["status"] == 429
