"""`sandbox-broker` replicas on one DynamoDB table, driven over real HTTP.

    env = replica_env(ddb.endpoint)                # a fresh table name, jobs off
    prepare_table(env, {"lab-": 150})              # init-store + seed, via the CLI
    with serve(env, tmp_path) as a, serve(env, tmp_path) as b:
        response = await allocate(http, a.url, "owner-1", prefix="lab-")
    assert verify(env)["ok"]
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from tests.backends.dynamo import unique_table_name
from tests.conftest import ADMIN_TOKEN, TRACK_TOKEN
from tests.support.processes import broker_env, run_cli

__all__ = ["admin_headers", "allocate", "owner_headers", "prepare_table", "replica_env", "verify"]

_JOBS_OFF = {name: "false" for name in (
    "SYNC_ENABLED", "CLEANUP_ENABLED", "AUTO_EXPIRY_ENABLED", "STALE_DELETION_ENABLED",
)}


def replica_env(endpoint: str, table: str | None = None, **overrides: str) -> dict[str, str]:
    """Environment for `sandbox-broker` on the DynamoDB store: dev mode, test tokens, an
    empty simulated provider, background jobs and rate limits off (the load is ours)."""
    return broker_env(
        BROKER_ENV="dev", BROKER_STORE="dynamodb", DDB_ENDPOINT_URL=endpoint,
        DDB_TABLE_NAME=table or unique_table_name("broker-replicas"),
        BROKER_API_TOKEN=TRACK_TOKEN, BROKER_ADMIN_TOKEN=ADMIN_TOKEN,
        BROKER_PROVIDER="simulated", BROKER_SIMULATED_POOL_SIZE="0",
        RATE_LIMIT_ENABLED="false", **_JOBS_OFF, **overrides,
    )


def prepare_table(env: dict[str, str], pools: dict[str, int]) -> None:
    """`init-store`, then `seed --count N --prefix P` for each pool."""
    steps = [["init-store"]] + [["seed", "--count", str(n), "--prefix", p]
                                for p, n in pools.items()]
    for step in steps:
        done = run_cli(*step, env=env)
        assert done.returncode == 0, (step, done.stdout, done.stderr)


def verify(env: dict[str, str]) -> dict[str, Any]:
    """`sandbox-broker verify`'s report; asserts the exit code matches `ok`."""
    done = run_cli("verify", env=env)
    report: dict[str, Any] = json.loads(done.stdout)
    assert done.returncode == (0 if report["ok"] else 1), done.stderr
    return report


def owner_headers(owner: str, prefix: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {TRACK_TOKEN}", "X-Instruqt-Sandbox-ID": owner}
    if prefix:
        headers["X-Sandbox-Name-Prefix"] = prefix
    return headers


async def allocate(http: httpx.AsyncClient, base_url: str, owner: str, *,
                   prefix: str | None = None, contention_retries: int = 20) -> httpx.Response:
    """POST /v1/allocate as a lab script does: honour 503 CONTENTION's Retry-After."""
    for _ in range(contention_retries):
        response = await http.post(f"{base_url}/v1/allocate",
                                   headers=owner_headers(owner, prefix))
        if response.status_code != 503 or response.json()["detail"]["code"] != "CONTENTION":
            return response
        await asyncio.sleep(min(float(response.headers.get("Retry-After", "1")), 1.0))
    return response


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
