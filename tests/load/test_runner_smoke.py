"""The load runner (`sandbox-broker bench`) against a real `serve` process: JSON shape
and the checks.

A 50-sandbox SQLite pool and 200 requests (20% of them replays of earlier winners,
which must get their own sandbox back): exactly 50 owners win, the rest get 409, and
no sandbox is handed out twice. The run is bounded by its request count (usually well
under a second); the 10 s time bound is only a backstop. No timing assertions.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from app.cli import main as cli_main
from tests.support.processes import broker_env, run_cli, serve

pytestmark = pytest.mark.load

POOL = 50


def _run_load(url: str, token: str, *args: str, monkeypatch: pytest.MonkeyPatch,
              capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """`sandbox-broker bench …`, in this process (the server is another)."""
    monkeypatch.setenv("SMOKE_TOKEN", token)
    assert cli_main(["bench", "--url", url, "--token-env", "SMOKE_TOKEN", *args]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


@pytest.mark.parametrize("owners", ["replay", "replay:1.5", "each"])
def test_bench_refuses_an_unknown_owner_mix(owners: str) -> None:
    with pytest.raises(SystemExit) as refused:
        cli_main(["bench", "--url", "http://127.0.0.1:9", "--owners", owners])
    assert refused.value.code == 2


def test_bench_refuses_to_run_without_a_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("SMOKE_TOKEN", raising=False)
    assert cli_main(["bench", "--url", "http://127.0.0.1:9", "--token-env", "SMOKE_TOKEN"]) == 2
    assert "SMOKE_TOKEN is empty" in capsys.readouterr().err


def test_runner_reports_shape_winners_and_no_double_allocation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
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
                           "--requests", "200", "--owners", "replay:0.2", "--prefix", "smoke-",
                           monkeypatch=monkeypatch, capsys=capsys)
        # The httpx client speaks to the same server the same way (the pool is dry now).
        dry = _run_load(server.url, track, "--client", "httpx", "--connections", "2",
                        "--requests", "6", "--prefix", "dry-", monkeypatch=monkeypatch,
                        capsys=capsys)

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
    assert (dry["client"], dry["status"], dry["transport_errors"]) == ("httpx", {"409": 6}, {})

    verified = run_cli("verify", env=env)
    assert verified.returncode == 0, verified.stdout
    assert json.loads(verified.stdout)["counts"]["allocated"] == POOL
