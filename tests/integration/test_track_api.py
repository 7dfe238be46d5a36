"""The track wire contract (DESIGN.md §1), every status code, over ASGI on SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import httpx
import pytest

from app.config import Settings
from app.main import create_app
from tests.conftest import (
    ADMIN,
    TRACK,
    TRACK_TOKEN,
    FakeClock,
    make_sandboxes,
    owner_headers,
    started,
)

pytestmark = pytest.mark.integration


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert detail["code"] == code
    assert detail["message"]
    assert detail["request_id"] == response.headers["X-Request-ID"]
    return detail


async def test_allocate_creates_then_replays_same_body(seeded: httpx.AsyncClient) -> None:
    headers = owner_headers("student-1", **{"X-Instruqt-Track-ID": "k8s-101"})
    first = await seeded.post("/v1/allocate", headers=headers)
    assert first.status_code == 201
    body = first.json()
    assert set(body) == {"sandbox_id", "name", "external_id", "allocated_at", "expires_at",
                         "sfdc_account_id", "track_name", "status"}
    assert body["status"] == "allocated" and body["track_name"] == "k8s-101"
    assert isinstance(body["allocated_at"], int) and isinstance(body["expires_at"], int)
    assert body["expires_at"] - body["allocated_at"] == 4 * 3600
    again = await seeded.post("/v1/allocate", headers=headers)
    assert again.status_code == 200
    assert again.json() == body
    read = await seeded.get(f"/v1/sandboxes/{body['sandbox_id']}", headers=headers)
    assert read.status_code == 200 and read.json() == body


async def test_names_in_headers_are_read_as_utf8(
    on_backend: Callable[..., Settings],
) -> None:
    app = create_app(on_backend())
    async for client in started(app):
        await app.state.services.store.add(make_sandboxes(1, prefix="café-"))
        r = await client.post("/v1/allocate", headers={
            **owner_headers("u"), "X-Sandbox-Name-Prefix": "café-".encode(),
            "X-Instruqt-Track-ID": "straße-101".encode()})
        assert r.status_code == 201, r.text
        assert (r.json()["name"], r.json()["track_name"]) == ("café-0001", "straße-101")


async def test_legacy_owner_header_is_accepted(seeded: httpx.AsyncClient) -> None:
    response = await seeded.post("/v1/allocate", headers={**TRACK, "X-Track-ID": "legacy-1"})
    assert response.status_code == 201
    preferred = await seeded.post(
        "/v1/allocate", headers={**TRACK, "X-Instruqt-Sandbox-ID": "legacy-1", "X-Track-ID": "x"}
    )
    assert preferred.json()["sandbox_id"] == response.json()["sandbox_id"]
    # Beside the preferred header the legacy one is ignored, even empty (existing scripts).
    blank = await seeded.post(
        "/v1/allocate", headers={**TRACK, "X-Instruqt-Sandbox-ID": "legacy-1", "X-Track-ID": ""}
    )
    assert blank.status_code == 200 and blank.json() == preferred.json()
    # …and an empty preferred header beside the legacy one leaves the legacy one in charge.
    unset = await seeded.post(
        "/v1/allocate", headers={**TRACK, "X-Instruqt-Sandbox-ID": "", "X-Track-ID": "legacy-1"}
    )
    assert unset.status_code == 200 and unset.json() == preferred.json()


async def test_name_prefix_restricts_candidates(seeded: httpx.AsyncClient) -> None:
    names = set()
    for i in range(3):
        r = await seeded.post(
            "/v1/allocate", headers=owner_headers(f"dev-{i}", **{"X-Sandbox-Name-Prefix": "dev-"})
        )
        assert r.status_code == 201
        names.add(r.json()["name"])
    assert names == {"dev-0001", "dev-0002", "dev-0003"}
    exhausted = await seeded.post(
        "/v1/allocate", headers=owner_headers("dev-9", **{"X-Sandbox-Name-Prefix": "dev-"})
    )
    assert_envelope(exhausted, 409, "POOL_EXHAUSTED")
    assert int(exhausted.headers["Retry-After"]) > 0
    unmatched = await seeded.post(
        "/v1/allocate", headers=owner_headers("x", **{"X-Sandbox-Name-Prefix": "nope-"})
    )
    assert_envelope(unmatched, 409, "POOL_EXHAUSTED")


async def test_empty_pool_is_409_with_retry_after(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/allocate", headers=owner_headers("alone"))
    detail = assert_envelope(response, 409, "POOL_EXHAUSTED")
    assert "available" in str(detail["message"])
    assert response.headers["Retry-After"] == "30"


async def test_lab_duration_header_sets_expiry(seeded: httpx.AsyncClient) -> None:
    r = await seeded.post("/v1/allocate",
                          headers=owner_headers("d1", **{"X-Lab-Duration-Hours": "1.5"}))
    assert r.status_code == 201
    assert r.json()["expires_at"] - r.json()["allocated_at"] == 5400


@pytest.mark.parametrize("value", ["0", "-1", "25", "abc", "nan", "inf", "1_0", "1e-9", " 2",
                                   "2.", "0.00000000000000001"])
async def test_out_of_range_duration_is_422(seeded: httpx.AsyncClient, value: str) -> None:
    r = await seeded.post("/v1/allocate",
                          headers=owner_headers("d2", **{"X-Lab-Duration-Hours": value}))
    detail = assert_envelope(r, 422, "VALIDATION_ERROR")
    assert detail["errors"] == [{"loc": ["header", "X-Lab-Duration-Hours"],
                                 "msg": "must be a number of hours in (0, 24]",
                                 "type": "value_error"}]


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        pytest.param({}, "MISSING_OWNER", id="missing"),
        pytest.param({"X-Instruqt-Sandbox-ID": "   "}, "INVALID_OWNER", id="blank"),
        pytest.param({"X-Instruqt-Sandbox-ID": "x" * 129}, "INVALID_OWNER", id="too-long"),
        pytest.param({"X-Track-ID": "a\tb"}, "INVALID_OWNER", id="control-char"),
        pytest.param({"X-Instruqt-Sandbox-ID": "ok", "X-Instruqt-Track-ID": ""},
                     "INVALID_HEADER", id="empty-track"),
        pytest.param({"X-Instruqt-Sandbox-ID": "ok", "X-Sandbox-Name-Prefix": "p" * 200},
                     "INVALID_HEADER", id="long-prefix"),
    ],
)
async def test_bad_headers_are_400(
    seeded: httpx.AsyncClient, headers: dict[str, str], code: str
) -> None:
    r = await seeded.post("/v1/allocate", headers={**TRACK, **headers})
    assert_envelope(r, 400, code)


@pytest.mark.parametrize(
    ("auth", "status", "code"),
    [
        pytest.param({}, 401, "UNAUTHORIZED", id="no-token"),
        pytest.param({"Authorization": "Basic abc"}, 401, "UNAUTHORIZED", id="malformed"),
        pytest.param({"Authorization": "Bearer wrong"}, 401, "UNAUTHORIZED", id="wrong"),
        pytest.param(ADMIN, 403, "FORBIDDEN", id="admin-token"),
    ],
)
async def test_track_auth(
    seeded: httpx.AsyncClient, auth: dict[str, str], status: int, code: str
) -> None:
    for method, path in (("POST", "/v1/allocate"), ("GET", "/v1/sandboxes/x"),
                         ("POST", "/v1/sandboxes/x/mark-for-deletion")):
        r = await seeded.request(method, path, headers={**auth, "X-Instruqt-Sandbox-ID": "o"})
        assert_envelope(r, status, code)
        if status == 401:
            assert r.headers["WWW-Authenticate"] == "Bearer"


async def test_the_auth_scheme_is_case_insensitive(seeded: httpx.AsyncClient) -> None:
    """RFC 9110 §11.1: `bearer` and `BEARER` are `Bearer`."""
    for scheme in ("bearer", "BEARER"):
        r = await seeded.post("/v1/allocate", headers={
            "Authorization": f"{scheme} {TRACK_TOKEN}", "X-Instruqt-Sandbox-ID": scheme})
        assert r.status_code == 201, r.text


async def test_get_unknown_404_and_other_owner_403(seeded: httpx.AsyncClient) -> None:
    assert_envelope(await seeded.get("/v1/sandboxes/nope", headers=owner_headers("a")),
                    404, "SANDBOX_NOT_FOUND")
    lease = (await seeded.post("/v1/allocate", headers=owner_headers("alice"))).json()
    r = await seeded.get(f"/v1/sandboxes/{lease['sandbox_id']}", headers=owner_headers("mallory"))
    detail = assert_envelope(r, 403, "NOT_SANDBOX_OWNER")
    assert "alice" not in r.text and "alice" not in str(detail)


async def test_mark_for_deletion_is_idempotent(seeded: httpx.AsyncClient) -> None:
    lease = (await seeded.post("/v1/allocate", headers=owner_headers("bob"))).json()
    path = f"/v1/sandboxes/{lease['sandbox_id']}/mark-for-deletion"
    first = await seeded.post(path, headers=owner_headers("bob"))
    assert first.status_code == 200 and first.json()["status"] == "pending_deletion"
    second = await seeded.post(path, headers=owner_headers("bob"))
    assert second.status_code == 200 and second.json() == first.json()
    other = await seeded.post(path, headers=owner_headers("eve"))
    assert_envelope(other, 403, "NOT_SANDBOX_OWNER")
    assert "bob" not in other.text
    unknown = await seeded.post("/v1/sandboxes/none/mark-for-deletion", headers=owner_headers("b"))
    assert_envelope(unknown, 404, "SANDBOX_NOT_FOUND")
    # After release the owner may lease again: a new sandbox, 201.
    new = await seeded.post("/v1/allocate", headers=owner_headers("bob"))
    assert new.status_code == 201 and new.json()["sandbox_id"] != lease["sandbox_id"]


async def test_unknown_route_and_wrong_method_use_envelope(client: httpx.AsyncClient) -> None:
    assert_envelope(await client.get("/v1/nothing"), 404, "NOT_FOUND")
    assert_envelope(await client.get("/v1/allocate", headers=TRACK), 405, "METHOD_NOT_ALLOWED")


async def test_bad_path_parameter_is_422(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/sandboxes/" + "x" * 200, headers=owner_headers("a"))
    assert_envelope(r, 422, "VALIDATION_ERROR")


async def test_request_id_kept_when_sane_replaced_when_not(client: httpx.AsyncClient) -> None:
    kept = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert kept.headers["X-Request-ID"] == "abc-123"
    replaced = await client.get("/v1/nothing", headers={"X-Request-ID": "bad id with spaces"})
    assert replaced.headers["X-Request-ID"] != "bad id with spaces"
    assert replaced.json()["detail"]["request_id"] == replaced.headers["X-Request-ID"]


async def test_health_ready_docs(client: httpx.AsyncClient, settings: Settings) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    assert (await client.get("/v1/docs")).status_code == 200
    assert (await client.get("/v1/redoc")).status_code == 200
    spec = (await client.get("/v1/openapi.json")).json()
    assert "/v1/allocate" in spec["paths"]
    allocate = spec["paths"]["/v1/allocate"]["post"]["responses"]
    assert {"200", "201", "400", "401", "403", "409", "422", "429", "503"} <= set(allocate)
    # Swagger's "Authorize" button: one bearer scheme, on every route that needs a token.
    scheme = spec["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    paths = spec["paths"]
    for path, method in (("/v1/allocate", "post"), ("/v1/sandboxes/{sandbox_id}", "get"),
                         ("/v1/admin/stats", "get"), ("/v1/admin/events", "get")):
        assert paths[path][method]["security"] == [{"bearer": []}], path
    assert "security" not in paths["/healthz"]["get"]


@pytest.mark.parametrize("rounds", [1, 3])
async def test_expired_lease_is_not_replayed(
    on_backend: Callable[..., Settings], clock: FakeClock, rounds: int
) -> None:
    """Ending the expired lease costs no claim round: even with one, a new lease."""
    app = create_app(on_backend(claim_rounds=rounds), clock=clock)
    async for client in started(app):
        await app.state.services.store.add(make_sandboxes(3))
        first = await client.post("/v1/allocate", headers=owner_headers("late"))
        assert first.status_code == 201
        clock.advance(first.json()["expires_at"] - clock.now)
        second = await client.post("/v1/allocate", headers=owner_headers("late"))
        assert second.status_code == 201
        assert second.json()["sandbox_id"] != first.json()["sandbox_id"]
        old = await client.get(f"/v1/sandboxes/{first.json()['sandbox_id']}",
                               headers=owner_headers("late"))
        assert old.json()["status"] == "pending_deletion"


class BrokenStore:
    """A store whose every call fails in a way no adapter maps (a bug, a dead disk)."""

    def __init__(self, inner: object) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def ping(self) -> None:
        raise RuntimeError("secret-internal-detail")


async def test_readyz_is_503_whatever_the_failure(make_settings: Callable[..., Settings]) -> None:
    base = create_app(make_settings())
    async for _ in started(base):
        broken = BrokenStore(base.state.services.store)
        app = create_app(make_settings(), store=broken)  # type: ignore[arg-type]
        async for client in started(app):
            r = await client.get("/readyz")
            assert_envelope(r, 503, "STORE_UNAVAILABLE")
            assert "secret-internal-detail" not in r.text


async def test_a_locked_sqlite_file_is_503_with_the_configured_retry_after(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(sqlite_busy_timeout_ms=100, store_unavailable_retry_after_sec=7)
    app = create_app(settings)
    async for client in started(app):
        await app.state.services.store.add(make_sandboxes(1))
        other = sqlite3.connect(settings.broker_sqlite_path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another process holds the file's write lock
        try:
            locked = await client.post("/v1/allocate", headers=owner_headers("x"))
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert_envelope(locked, 503, "STORE_UNAVAILABLE")
        assert locked.headers["Retry-After"] == "7"
        assert (await client.post("/v1/allocate", headers=owner_headers("x"))).status_code == 201
