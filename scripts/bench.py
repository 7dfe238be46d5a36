"""`make bench`: allocation benchmarks against real `sandbox-broker serve` processes.

For each store (sqlite, dynamodb on DynamoDB Local) x workers (1, 2), on fresh data:
  warm-up    a few hundred allocations, so first-request costs are not measured;
  contention a pool of 100 and 300 concurrent owners: exactly 100 must win, 200 get 409;
  throughput a large pool, 64 connections, distinct owners, for --duration seconds or
             as many requests as the pool holds, whichever ends first;
  replay     30% of requests repeat an earlier owner and must get its sandbox back (200);
then `sandbox-broker verify`. A baseline (tests/load/baseline_app.py: a FastAPI POST that
returns a small JSON body, served with the same uvicorn settings) is measured with the
same load for each worker count, so every throughput is also a fraction of that ceiling,
and under the contention scenario's shape (300 new connections at once).
A memory run allocates 200,000 sandboxes on SQLite with 1 worker and compares the
server's RSS after a warm-up with its RSS at the end.

Load comes from app/loadgen/runner.py (`sandbox-broker bench`) in its own process; the
server's RSS and CPU time are read from /proc (the whole process tree, so uvicorn's
supervisor is included).
Writes bench/results/<YYYY-MM-DD>.json and .md and prints the table.

    .venv/bin/python scripts/bench.py                     # everything (~5-10 min)
    .venv/bin/python scripts/bench.py --stores sqlite --workers 1 --skip-memory
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench_procs import (
    CLI,
    REPO,
    clean_env,
    cli,
    dynamodb_local,
    free_port,
    load,
    measured,
    started,
)
from bench_report import TARGETS, evaluate, machine, markdown


def server_env(store_env: Mapping[str, str], track: str, admin: str) -> dict[str, str]:
    return clean_env(
        BROKER_ENV="production", BROKER_API_TOKEN=track, BROKER_ADMIN_TOKEN=admin,
        SYNC_ENABLED="false", CLEANUP_ENABLED="false", AUTO_EXPIRY_ENABLED="false",
        STALE_DELETION_ENABLED="false", BROKER_SIMULATED_POOL_SIZE="0",
        # The rate limiter stays in the request path (its cost is part of the figure) with
        # limits far above the load: one token sends everything here. The strategy is the
        # default (moving window).
        RATE_LIMIT_PRINCIPAL="10000000/1 second", RATE_LIMIT_IP="10000000/1 second",
        **store_env,
    )


# --- scenarios -----------------------------------------------------------------------------


def serve_command(port: int, workers: int) -> list[str]:
    return [CLI, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]


def run_store(store: str, workers: int, args: argparse.Namespace, workdir: Path,
              store_env: dict[str, str], pool: int) -> dict[str, Any]:
    track, admin = secrets.token_urlsafe(30), secrets.token_urlsafe(30)  # 40 characters
    env = server_env(store_env, track, admin)
    run: dict[str, Any] = {"store": store, "workers": workers, "pool": pool, "scenarios": {}}
    if store == "dynamodb":
        run["init_store"] = cli(env, "init-store")["elapsed_s"]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    tag = uuid.uuid4().hex[:6]
    with started(f"serve-{store}-{workers}", serve_command(port, workers), env, workdir,
                 f"{url}/healthz", url) as server:
        time.sleep(1.0 if workers > 1 else 0.2)  # let every worker finish its start-up
        run["rss_start_mib"] = server.usage()["rss_mib"]
        # warm-up: exhausts its own small pool, so the contention pool is exactly 100
        cli(env, "seed", "--count", "300", "--prefix", f"warm{tag}-")
        load(url, track, "--connections", "16", "--requests", "300", "--duration", "60",
             "--prefix", f"warm{tag}-o")
        cli(env, "seed", "--count", "100", "--prefix", f"cont{tag}-")
        contention = measured(server, url, track, "--connections", "300", "--requests", "300",
                              "--duration", "60", "--prefix", f"cont{tag}-o")
        contention["winners"] = contention["status"].get("201", 0)
        run["scenarios"]["contention"] = contention

        run["seed_s"] = cli(env, "seed", "--count", str(pool), "--prefix", f"tp{tag}-")[
            "elapsed_s"]
        run["seed_rate_per_s"] = round(pool / max(run["seed_s"], 1e-3))
        # Bounded by the pool as well as by time: once the pool is dry every answer is a
        # cheap 409, which would flatter the figure.
        run["scenarios"]["throughput"] = measured(
            server, url, track, "--connections", str(args.connections), "--duration",
            str(args.duration), "--requests", str(pool), "--prefix", f"tp{tag}-o")

        cli(env, "seed", "--count", str(pool), "--prefix", f"rp{tag}-")
        replay = measured(server, url, track, "--connections", str(args.connections),
                          "--duration", str(args.replay_duration), "--requests", str(pool),
                          "--owners", "replay:0.3", "--prefix", f"rp{tag}-o")
        run["scenarios"]["replay"] = replay
        run["rss_end_mib"] = server.usage()["rss_mib"]
    verify = cli(env, "verify")
    run["verify"] = {"ok": verify["exit"] == 0, **(verify["output"] if isinstance(
        verify["output"], dict) else {"output": verify["output"]})}
    return run


def run_baseline(workers: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "tests.load.baseline_app", "--port", str(port),
               "--workers", str(workers)]
    with started(f"baseline-{workers}", command, clean_env(), workdir, f"{url}/healthz",
                 url) as server:
        time.sleep(1.0 if workers > 1 else 0.2)
        load(url, "x", "--connections", str(args.connections), "--duration", "2", "--no-check")
        result = measured(server, url, "x", "--connections", str(args.connections),
                          "--duration", str(args.duration), "--no-check")
        # The contention scenario's shape (300 new connections, one request each) on the
        # bare endpoint: what connection set-up alone costs on this machine.
        load(url, "x", "--connections", "16", "--requests", "300", "--duration", "60",
             "--no-check")
        result["contention"] = measured(server, url, "x", "--connections", "300",
                                        "--requests", "300", "--duration", "60", "--no-check")
        return result


def run_memory(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """200k allocations, SQLite, 1 worker: RSS after a warm-up vs at the end."""
    track, admin = secrets.token_urlsafe(30), secrets.token_urlsafe(30)
    data = workdir / "memory"
    data.mkdir()
    env = server_env({"BROKER_STORE": "sqlite", "BROKER_SQLITE_PATH": str(data / "b.db")},
                     track, admin)
    total, warm = args.memory_allocations, 20_000
    cli(env, "seed", "--count", str(total + warm + 1000), "--prefix", "mem-")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with started("serve-memory", serve_command(port, 1), env, workdir, f"{url}/healthz",
                 url) as server:
        start = server.usage()["rss_mib"]
        load(url, track, "--connections", str(args.connections), "--requests", str(warm),
             "--duration", "600", "--prefix", "memwarm-")
        after_warmup = server.usage()["rss_mib"]
        result = measured(server, url, track, "--connections", str(args.connections),
                          "--requests", str(total), "--duration", "900", "--prefix", "mem-o")
        end = server.usage()["rss_mib"]
    growth = (end - after_warmup) / after_warmup * 100
    return {
        "allocations": result["status"].get("201", 0), "requests": result["requests"],
        "status": result["status"],
        "throughput_rps": result["throughput_rps"], "latency_ms": result["latency_ms"],
        "double_allocations": result["double_allocations"],
        "rss_mib": {"start": start, "after_warmup": after_warmup, "end": end},
        "growth_pct": round(growth, 2),
        "verify_ok": cli(env, "verify")["exit"] == 0,
    }


# --- main ----------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/bench.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", default="sqlite,dynamodb")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--duration", type=float, default=15.0, help="throughput run, seconds")
    parser.add_argument("--replay-duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--pool", type=int, default=50_000, help="SQLite throughput pool")
    parser.add_argument("--ddb-pool", type=int, default=5_000,
                        help="DynamoDB throughput pool (DynamoDB Local seeds slowly)")
    parser.add_argument("--memory-allocations", type=int, default=200_000)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--app-path", default=None,
                        help="a directory holding a patched app/ to serve instead (A/B runs)")
    return parser


def main() -> int:
    args = _parser().parse_args()
    if args.app_path:
        os.environ["BENCH_APP_PATH"] = str(Path(args.app_path).resolve())
    stores = [s for s in args.stores.split(",") if s]
    workers = [int(w) for w in args.workers.split(",") if w]
    started_at = time.monotonic()
    results: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "targets": TARGETS, "baseline": {}, "runs": [], "errors": [],
    }
    workdir = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    try:
        if not args.skip_baseline:
            for count in workers:
                print(f"baseline, {count} worker(s)…", file=sys.stderr, flush=True)
                results["baseline"][str(count)] = run_baseline(count, args, workdir)
        for store in stores:
            for count in workers:
                print(f"{store}, {count} worker(s)…", file=sys.stderr, flush=True)
                try:
                    results["runs"].append(_one_store(store, count, args, workdir))
                except RuntimeError as exc:
                    results["errors"].append(f"{store} x{count}: {exc}")
                    print(f"  failed: {exc}", file=sys.stderr, flush=True)
        if not args.skip_memory:
            print(f"memory: {args.memory_allocations:,} allocations…", file=sys.stderr,
                  flush=True)
            results["memory"] = run_memory(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["elapsed_s"] = round(time.monotonic() - started_at, 1)
    evaluate(results)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / results["date"]
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    if results["errors"]:
        table += "\nErrors:\n" + "\n".join(f"- {e}" for e in results["errors"]) + "\n"
    stem.with_suffix(".md").write_text(table)
    print(table)
    print(f"wrote {stem}.json and {stem}.md in {results['elapsed_s']} s", file=sys.stderr)
    return 1 if results["errors"] else 0


def _one_store(store: str, workers: int, args: argparse.Namespace,
               workdir: Path) -> dict[str, Any]:
    data = workdir / f"{store}-{workers}"
    data.mkdir()
    if store == "sqlite":
        return run_store(store, workers, args, data, {
            "BROKER_STORE": "sqlite", "BROKER_SQLITE_PATH": str(data / "broker.db")}, args.pool)
    with dynamodb_local(data) as ddb:
        env = {"BROKER_STORE": "dynamodb", "DDB_ENDPOINT_URL": ddb.url,
               "DDB_TABLE_NAME": f"bench-{uuid.uuid4().hex[:8]}", "AWS_REGION": "us-east-1"}
        run = run_store(store, workers, args, data, env, args.ddb_pool)
        run["dynamodb_local_rss_mib"] = ddb.usage()["rss_mib"]
        return run


if __name__ == "__main__":
    raise SystemExit(main())
