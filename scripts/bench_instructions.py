"""`make bench-instructions`: CPU instructions per request, counted by valgrind's
callgrind, for the allocate endpoint (SQLite, one worker) and the baseline endpoint,
both served by real `serve` processes and loaded over HTTP by the load runner.

Why: on this shared host a timed run moves by up to 30 % from one hour to the next,
CPU time per request included, so a change of a few per cent shows only in many
interleaved A/B pairs (docs/performance.md). Instruction counts do not depend on what
else the machine is doing: three runs of the same code agreed to within 0.1 %. They
are a proxy, not a time: cache misses, system calls, waits for the GIL and lock
hand-offs cost time without costing instructions, so a change that moves work between
threads or into the kernel still needs a timed run. Under valgrind the server runs
~50 times slower while the load generator does not, so batches of claims grow
larger than at full speed (the per-claim share of a commit shrinks).

Each server is started under callgrind, warmed up, its counters zeroed
(`callgrind_control -z`), loaded with --requests allocations, and its counters dumped
(`-d`): the figure is that dump's total over the requests, all threads included.

    .venv/bin/python scripts/bench_instructions.py                # both, ~3 min
    .venv/bin/python scripts/bench_instructions.py --app-path /tmp/patched   # A/B
    .venv/bin/python scripts/bench_instructions.py --set RATE_LIMIT_ENABLED=false
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_procs import clean_env, cli, free_port, load, started

from bench import serve_command, server_env

_TOTALS = re.compile(r"^totals:\s+(\d+)", re.M)


def _callgrind(name: str, workdir: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={workdir / name}.cg"]


def _dumped_total(pid: int, workdir: Path, name: str) -> int:
    """Dump the server's counters and read the dump's total instruction count."""
    before = set(workdir.glob(f"{name}.cg.*"))
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True,
                   timeout=120)
    (dump,) = set(workdir.glob(f"{name}.cg.*")) - before
    match = _TOTALS.search(dump.read_text())
    if match is None:
        raise RuntimeError(f"no totals in {dump}")
    return int(match.group(1))


def count(name: str, command: Callable[[int], list[str]], env: dict[str, str], token: str,
          args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Instructions per request for one server under `--requests` allocations."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    served = [*_callgrind(name, workdir), *command(port)]
    with started(name, served, env, workdir, f"{url}/healthz", url, timeout=300) as server:
        load_args = ("--connections", str(args.connections), "--duration", "600")
        load(url, token, *load_args, "--requests", str(args.warmup), "--prefix", "warm-")
        subprocess.run(["callgrind_control", "-z", str(server.process.pid)], check=True,
                       capture_output=True, timeout=120)
        result = load(url, token, *load_args, "--requests", str(args.requests),
                      "--prefix", "counted-")
        total = _dumped_total(server.process.pid, workdir, name)
    return {"requests": result["requests"], "status": result["status"],
            "instructions": total, "per_request": round(total / result["requests"])}


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench_instructions.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the broker's server (e.g. LOG_LEVEL=WARNING), "
                             "to see what a feature costs; repeatable")
    parser.add_argument("--app-path", default=None,
                        help="a directory holding a patched app/ to serve instead (A/B runs)")
    args = parser.parse_args()
    for setting in args.set:
        if "=" not in setting:
            parser.error(f"--set {setting!r}: expected NAME=VALUE")
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind (Debian package valgrind) is needed", file=sys.stderr)
        return 2
    if args.app_path:
        os.environ["BENCH_APP_PATH"] = str(Path(args.app_path).resolve())
    workdir = Path(tempfile.mkdtemp(prefix="broker-instructions-"))
    results: dict[str, Any] = {}
    try:
        track, admin = secrets.token_urlsafe(30), secrets.token_urlsafe(30)
        env = server_env({"BROKER_STORE": "sqlite",
                          "BROKER_SQLITE_PATH": str(workdir / "broker.db")}, track, admin)
        env.update(setting.split("=", 1) for setting in args.set)
        cli(env, "seed", "--count", str(args.warmup + args.requests + 100), "--prefix", "ic-")
        results["sqlite"] = count("sqlite", lambda port: serve_command(port, 1), env, track,
                                  args, workdir)
        if not args.skip_baseline:
            def baseline(port: int) -> list[str]:
                return [sys.executable, "-m", "tests.load.baseline_app", "--port", str(port)]

            results["baseline"] = count("baseline", baseline, clean_env(), "x", args, workdir)
            results["ratio"] = round(
                results["baseline"]["per_request"] / results["sqlite"]["per_request"], 3)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
