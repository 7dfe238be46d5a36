"""Real processes for tests: the `sandbox-broker` CLI and `serve` on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

CLI = str(Path(sys.executable).parent / "sandbox-broker")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def broker_env(**overrides: str) -> dict[str, str]:
    """The current environment minus any BROKER_/DDB_ settings, plus `overrides`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BROKER_", "DDB_", "API_BASE_PATH"))}
    env.update(overrides)
    return env


def run_cli(
    *args: str, env: Mapping[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], env=dict(env), capture_output=True, text=True,
                          timeout=timeout, check=False)


@dataclass
class Server:
    url: str
    process: subprocess.Popen[str]
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def serve(env: Mapping[str, str], log_dir: Path, *, workers: int = 1,
          ready_timeout: float = 30) -> Iterator[Server]:
    """Run `sandbox-broker serve` until the block ends; wait for /healthz first."""
    port = free_port()
    log_path = log_dir / f"serve-{port}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [CLI, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
            env=dict(env), stdout=log, stderr=subprocess.STDOUT, text=True,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_healthy(server, ready_timeout)
        yield server
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen[Any], *, kill: bool = False) -> None:
    """Terminate (or SIGKILL) a child process and reap it; a no-op once it has exited."""
    if process.poll() is None:
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_healthy(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not healthy after {timeout}s:\n{server.output()}")
