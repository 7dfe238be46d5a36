"""The CLI and `serve` as an operator runs them: real processes, real HTTP, SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import sqlite3
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, TRACK_TOKEN
from tests.support.processes import broker_env, run_cli, serve

pytestmark = pytest.mark.integration


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return broker_env(
        BROKER_ENV="production", BROKER_API_TOKEN=TRACK_TOKEN, BROKER_ADMIN_TOKEN=ADMIN_TOKEN,
        BROKER_STORE="sqlite", BROKER_SQLITE_PATH=str(tmp_path / "data" / "broker.db"),
        BROKER_PROVIDER="simulated", BROKER_SIMULATED_POOL_SIZE="0",
        RATE_LIMIT_ENABLED="false",
    )


def test_init_seed_verify(env: dict[str, str]) -> None:
    init = run_cli("init-store", env=env)
    assert init.returncode == 0, init.stderr
    assert json.loads(init.stdout)["backend"] == "sqlite"
    seed = run_cli("seed", "--count", "25", "--prefix", "cli-", env=env)
    assert json.loads(seed.stdout) == {"requested": 25, "added": 25, "prefix": "cli-"}
    again = run_cli("seed", "--count", "25", "--prefix", "cli-", env=env)
    assert json.loads(again.stdout)["added"] == 0  # idempotent
    verify = run_cli("verify", env=env)
    assert verify.returncode == 0, verify.stdout
    report = json.loads(verify.stdout)
    assert report["ok"] is True and report["counts"]["available"] == 25


def test_verify_fails_on_a_broken_lease(env: dict[str, str]) -> None:
    assert run_cli("seed", "--count", "3", env=env).returncode == 0
    with sqlite3.connect(env["BROKER_SQLITE_PATH"]) as db:  # corrupt it behind our back
        db.execute("DROP INDEX one_live_lease_per_owner")
        db.execute("UPDATE sandboxes SET status = 'allocated', owner = 'twice', expires_at = 1")
        db.execute("UPDATE sandboxes SET owner = NULL WHERE name = 'lab-00003'")
    verify = run_cli("verify", env=env)
    assert verify.returncode == 1
    violations = json.loads(verify.stdout)["violations"]
    assert len(violations) == 3
    assert "index cannot be built" in violations[0]
    assert "'twice' holds 2 live leases" in violations[1]
    assert "seed-lab-00003" in violations[2]


def test_production_refuses_to_start_without_tokens(env: dict[str, str]) -> None:
    del env["BROKER_API_TOKEN"]
    result = run_cli("serve", "--port", "1", env=env, timeout=30)
    assert result.returncode != 0
    assert "BROKER_API_TOKEN and BROKER_ADMIN_TOKEN must be set" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        pytest.param("SYNC_INTERVAL_SEC", "-1", "SYNC_INTERVAL_SEC: Input should be greater",
                     id="range"),
        pytest.param("WEBHOOK_SUBSCRIBERS", "[{bad", "webhook_subscribers", id="not-json"),
        pytest.param("RATE_LIMIT_STORAGE_URI", "bogus://:hunter2@host/0",
                     "RATE_LIMIT_STORAGE_URI: unknown storage scheme", id="secret-in-value"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(
    env: dict[str, str], variable: str, value: str, named: str
) -> None:
    refused = run_cli("verify", env={**env, variable: value})
    assert refused.returncode != 0
    assert named in refused.stderr
    assert "Traceback" not in refused.stderr and "hunter2" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_verify_of_a_missing_file_fails_without_creating_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    typo = tmp_path / "typo" / "broker.db"
    refused = run_cli("verify", env={**env, "BROKER_SQLITE_PATH": str(typo)})
    assert refused.returncode != 0 and "no store at" in refused.stderr
    assert not typo.parent.exists()


def test_a_store_that_cannot_open_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"this is not a database" * 100)
    refused = run_cli("verify", env={**env, "BROKER_SQLITE_PATH": str(broken)})
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("sandbox-broker: the store could not be opened")


def test_dev_mode_generates_and_prints_tokens(env: dict[str, str], tmp_path: Path) -> None:
    for key in ("BROKER_API_TOKEN", "BROKER_ADMIN_TOKEN"):
        del env[key]
    env.update(BROKER_ENV="dev", BROKER_SIMULATED_POOL_SIZE="5")
    with serve(env, tmp_path) as server:
        printed = server.output()
        token = re.search(r"track token: (\S+)", printed)
        assert token and "/v1/docs" in printed
        r = httpx.post(f"{server.url}/v1/allocate", headers={
            "Authorization": f"Bearer {token.group(1)}", "X-Instruqt-Sandbox-ID": "dev-user"})
        assert r.status_code == 201 and r.json()["name"].startswith("lab-")
        assert r.headers["X-Request-ID"]
        assert "server" not in r.headers  # uvicorn's banner is off


async def _allocate_all(url: str, owners: list[str]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        return await asyncio.gather(*(
            client.post("/v1/allocate", headers={"Authorization": f"Bearer {TRACK_TOKEN}",
                                                 "X-Instruqt-Sandbox-ID": owner})
            for owner in owners
        ))


@pytest.mark.slow
async def test_two_workers_over_http_never_double_allocate(
    env: dict[str, str], tmp_path: Path
) -> None:
    assert run_cli("seed", "--count", "100", env=env).returncode == 0
    with serve(env, tmp_path, workers=2) as server:
        responses = await _allocate_all(server.url, [f"s-{i}" for i in range(300)])
        statuses = Counter(r.status_code for r in responses)
        assert statuses == {201: 100, 409: 200}, (statuses, server.output()[-2000:])
        assert len({r.json()["sandbox_id"] for r in responses if r.status_code == 201}) == 100
        replays = await _allocate_all(server.url, ["s-0"] * 20)
        assert {r.status_code for r in replays} <= {200, 409}
    verify = run_cli("verify", env=env)
    assert verify.returncode == 0, verify.stdout


def test_a_stopped_server_writes_its_last_log_lines(env: dict[str, str], tmp_path: Path) -> None:
    """SIGTERM: uvicorn shuts down, then re-raises the signal (no exit hooks run), so
    the batched log lines must be out before that, its own last lines included."""
    with serve(env, tmp_path) as server:
        answer = httpx.get(f"{server.url}/v1/sandboxes/none",
                           headers={"Authorization": f"Bearer {TRACK_TOKEN}",
                                    "X-Instruqt-Sandbox-ID": "o"})
    assert answer.status_code == 404
    assert "warning: BROKER_PROVIDER=simulated" in server.output()  # production, fake pool
    messages = [json.loads(line).get("msg") for line in server.output().splitlines()
                if line.startswith("{")]
    request_lines = [line for line in server.output().splitlines()
                     if answer.headers["x-request-id"] in line]
    assert len(request_lines) == 1
    assert "Application shutdown complete." in messages
    assert messages[-1] == f"Finished server process [{server.process.pid}]"


def test_idle_connections_are_kept_for_the_keep_alive_timeout(
    env: dict[str, str], tmp_path: Path
) -> None:
    """KEEP_ALIVE_TIMEOUT_SEC reaches uvicorn (75 by default, above an ALB's 60 s: here 1,
    so the close is seen quickly; uvicorn's own default would keep it 5 s)."""
    with (serve({**env, "KEEP_ALIVE_TIMEOUT_SEC": "1"}, tmp_path) as server,
          _connect(server.url) as conn):
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b'{"status":"ok"}'):  # head and body may come apart
            chunk = conn.recv(4096)
            assert chunk, answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200")
        conn.settimeout(4)
        assert conn.recv(4096) == b""  # closed by the server after ~1 s idle


def _connect(server_url: str) -> socket.socket:
    host, port = server_url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def test_an_endless_request_head_is_cut_off_with_431(env: dict[str, str], tmp_path: Path) -> None:
    """httptools would buffer an unfinished header line without limit."""
    with serve(env, tmp_path) as server, _connect(server.url) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: ")
        answer = b""
        with contextlib.suppress(ConnectionError):
            for _ in range(64):  # 2 MB, far past MAX_HEADER_BYTES (8 KB) + 16 KB
                conn.sendall(b"j" * 32768)
        with contextlib.suppress(ConnectionError):
            while chunk := conn.recv(4096):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 431")
        detail = json.loads(body)["detail"]
        assert detail["code"] == "REQUEST_HEADERS_TOO_LARGE"
        assert f"x-request-id: {detail['request_id']}".encode() in head
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # the server is fine


def test_bodies_and_pipelined_requests_are_not_counted_as_head(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Only the head counts towards the guard's limit: a 30 KB body sent with its head
    in one write is the app's business (404 here; 413 past MAX_BODY_BYTES), and so are
    many small pipelined requests."""
    body = json.dumps({"hours": 1, "pad": "p" * 30_000}).encode()
    head = (f"POST /v1/sandboxes/none/extend HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {TRACK_TOKEN}\r\nX-Instruqt-Sandbox-ID: o\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    pipelined = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 800  # ~30 KB
    with serve(env, tmp_path) as server:
        for payload, answers in ((head.encode() + body, 1), (pipelined, 800)):
            with _connect(server.url) as conn:
                conn.sendall(payload)
                received = b""
                while received.count(b"HTTP/1.1 ") < answers:
                    chunk = conn.recv(65536)
                    assert chunk, received[-300:]
                    received += chunk
                assert b" 431 " not in received
                assert received.startswith(b"HTTP/1.1 404" if answers == 1 else b"HTTP/1.1 200")


@pytest.mark.parametrize("trickle", [False, True], ids=["silent", "trickling"])
def test_a_request_that_does_not_arrive_in_time_is_dropped(
    env: dict[str, str], tmp_path: Path, trickle: bool
) -> None:
    """REQUEST_READ_TIMEOUT_SEC (here 1 s): a client that opens a connection and says
    nothing, or sends a header line every 0.3 s, holds no socket for longer."""
    with serve({**env, "REQUEST_READ_TIMEOUT_SEC": "1"}, tmp_path) as server:
        with _connect(server.url) as conn:
            started = time.monotonic()
            with contextlib.suppress(ConnectionError):
                if trickle:
                    conn.sendall(b"GET /healthz HTTP/1.1\r\n")
                    while time.monotonic() - started < 5:
                        conn.sendall(b"X-Slow: yes\r\n")
                        time.sleep(0.3)
            conn.settimeout(5)
            with contextlib.suppress(ConnectionError):
                assert conn.recv(4096) == b""  # closed, no answer
            assert time.monotonic() - started < 5
        assert httpx.get(f"{server.url}/healthz").status_code == 200
