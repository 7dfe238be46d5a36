"""The dashboard's HTTP side without a browser: the page and its assets ship in the
package, carry a strict CSP and hold no inline or third-party code; the history
endpoint is admin-only and answers what the sampler kept."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI

from app.api.dashboard import DASHBOARD_CSP
from app.config import Settings
from app.history import PoolHistory
from app.main import create_app
from app.store import SandboxStore
from tests.conftest import ADMIN, TRACK, make_sandboxes, started

pytestmark = pytest.mark.integration

ASSETS = {"app.js": "text/javascript", "chart.js": "text/javascript",
          "style.css": "text/css", "favicon.svg": "image/svg+xml"}


def history_of(app: FastAPI) -> PoolHistory:
    history: PoolHistory = app.state.history
    return history


async def test_the_page_names_the_api_base_and_sends_a_strict_csp(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings(api_base_path="/broker/v2"))
    async for client in started(app):
        answer = await client.get("/dashboard")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/html")
        assert answer.headers["content-security-policy"] == DASHBOARD_CSP
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["cache-control"] == "no-store"
        assert '<meta name="api-base" content="/broker/v2">' in answer.text
        assert "{{" not in answer.text


async def test_no_inline_code_and_nothing_fetched_from_elsewhere(
    client: httpx.AsyncClient,
) -> None:
    page = (await client.get("/dashboard")).text
    assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", page))
    assert not re.search(r"\sstyle=|\son[a-z]+=", page)  # no inline style or handlers
    for name in ("app.js", "style.css", "favicon.svg"):
        assert f'="/dashboard/static/{name}"' in page
    assets = {n: (await client.get(f"/dashboard/static/{n}")).text for n in ASSETS}
    assert 'from "./chart.js"' in assets["app.js"]
    for text in [page, *assets.values()]:
        assert not re.search(r"(?:src|href|url\(|from)\s*=?\s*[\"']?(?:https?:)?//", text)
        assert not re.search(r"\.(?:innerHTML|outerHTML)\b|\beval\(|new Function", text)


@pytest.mark.parametrize("name", sorted(ASSETS))
async def test_assets_are_served_from_the_package_with_etags(
    client: httpx.AsyncClient, name: str
) -> None:
    answer = await client.get(f"/dashboard/static/{name}")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith(ASSETS[name])
    assert answer.headers["content-security-policy"] == DASHBOARD_CSP
    again = await client.get(f"/dashboard/static/{name}",
                             headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


@pytest.mark.parametrize("path", ["/dashboard/static/nope.js", "/dashboard/static/..%2Fmain.py",
                                  "/dashboard/static/index.html"],
                         ids=["unknown", "traversal", "not-an-asset"])
async def test_only_the_listed_assets_are_served(client: httpx.AsyncClient, path: str) -> None:
    answer = await client.get(path)
    assert answer.status_code == 404
    assert answer.json()["detail"]["code"] == "NOT_FOUND"


async def test_history_needs_an_admin_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/admin/stats/history")).status_code == 401
    assert (await client.get("/v1/admin/stats/history", headers=TRACK)).status_code == 403
    bad = await client.get("/v1/admin/stats/history", headers=ADMIN, params={"hours": 0})
    assert bad.status_code == 422


async def test_history_answers_the_sampled_counts(
    app: FastAPI, client: httpx.AsyncClient, store: SandboxStore
) -> None:
    history = history_of(app)
    for _ in range(100):  # the lifespan started the sampler; its first sample is immediate
        if history.samples():
            break
        await asyncio.sleep(0.01)
    await store.add(make_sandboxes(4))
    await history.sample()
    body = (await client.get("/v1/admin/stats/history", headers=ADMIN)).json()
    assert body["interval_sec"] == history.interval_sec
    assert body["window_sec"] == history.window_sec
    assert [s["counts"]["available"] for s in body["samples"]] == [0, 4]
    assert set(body["samples"][-1]["counts"]) == {
        "available", "allocated", "pending_deletion", "deleting", "stale", "deletion_failed"}


async def test_history_is_in_the_openapi_document_and_the_page_is_not(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/v1/openapi.json")).json()["paths"]
    assert "/v1/admin/stats/history" in paths
    assert not any(path.startswith("/dashboard") for path in paths)
