"""The Python load runner against a real `serve` process: JSON shape and the checks.

A 50-sandbox SQLite pool and 200 requests (20% of them replays of earlier winners,
which must get their own sandbox back): exactly 50 owners win, the rest get 409, and
no sandbox is handed out twice. The run is bounded by its request count (usually well
under a second); the 10 s time bound is only a backstop. No timing assertions.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import broker_env, run_cli, serve

pytestmark = pytest.mark.load

REPO = Path(__file__).resolve().parents[2]
POOL = 50


def _run_load(url: str, token: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.load.runner", "--url", url, "--token-env", "SMOKE_TOKEN",
         *args],
        env={**broker_env(), "SMOKE_TOKEN": token}, cwd=REPO, capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_runner_reports_shape_winners_and_no_double_allocation(tmp_path: Path) -> None:
    track, admin = secrets.token_urlsafe(30), secrets.token_urlsafe(30)
    env = broker_env(
        BROKER_ENV="production", BROKER_API_TOKEN=track, BROKER_ADMIN_TOKEN=admin,
        BROKER_STORE="sqlite", BROKER_SQLITE_PATH=str(tmp_path / "smoke.db"),
        BROKER_SIMULATED_POOL_SIZE="0", SYNC_ENABLED="false", CLEANUP_ENABLED="false",
        AUTO_EXPIRY_ENABLED="false", STALE_DELETION_ENABLED="false",
        RATE_LIMIT_ENABLED="false",
    )
    seeded = run_cli("seed", "--count", str(POOL), env=env)
    assert seeded.returncode == 0, seeded.stderr

    with serve(env, tmp_path) as server:
        report = _run_load(server.url, track, "--connections", "8", "--duration", "10",
                           "--requests", "200", "--owners", "replay:0.2", "--prefix", "smoke-")

    assert set(report) >= {
        "url", "client", "connections", "elapsed_s", "requests", "throughput_rps", "status",
        "latency_ms", "allocations", "double_allocations", "replay", "transport_errors",
    }
    assert set(report["latency_ms"]) == {"mean", "p50", "p90", "p95", "p99", "max"}
    assert report["requests"] == sum(report["status"].values()) > 0
    assert report["transport_errors"] == {}
    assert report["double_allocations"] == 0
    assert report["owners_with_two_sandboxes"] == 0
    assert report["replay"]["mismatched"] == 0
    assert set(report["status"]) <= {"200", "201", "409", "503"}  # 503: CONTENTION
    assert report["status"]["201"] == POOL  # exactly the pool: 50 winners
    assert report["allocations"]["distinct_sandboxes"] == POOL
    assert report["requests"] == 200  # the request budget, not the clock, ended the run

    verified = run_cli("verify", env=env)
    assert verified.returncode == 0, verified.stdout
    assert json.loads(verified.stdout)["counts"]["allocated"] == POOL
