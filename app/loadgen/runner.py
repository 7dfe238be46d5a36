"""Async HTTP load runner for `POST /v1/allocate` (no k6 needed); prints one JSON object.

    sandbox-broker bench --url http://127.0.0.1:8080 --token-env BROKER_API_TOKEN \
        --connections 64 --duration 15 --requests 100000 --owners distinct --prefix run1-

Every connection is a keep-alive HTTP/1.1 connection that sends one request at a time
until the request budget (--requests) or the time budget (--duration) is spent,
whichever comes first. Owners (X-Instruqt-Sandbox-ID) are `<prefix><n>`, distinct per
request; `--owners replay:0.3` makes 30% of requests repeat an owner that already got a
sandbox, and checks that the answer is 200 with that same sandbox.

The report holds throughput, a status histogram, latency percentiles, and a check over
every successful answer: a sandbox handed to two owners is a double allocation, an owner
handed two sandboxes is a replay mismatch.

Two HTTP clients: `raw` (default) speaks HTTP/1.1 over asyncio protocols with uvloop,
which costs far less CPU than `httpx` per request; that matters when the server and the
load generator share two cores (docs/performance.md has the comparison). Only bodies with
Content-Length are supported by `raw`, which is what uvicorn sends for these endpoints.
The token is read from the environment variable named by --token-env, never argv.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from app.loadgen.raw_http import HttpConnection

__all__ = ["LoadConfig", "Report", "main", "run_load"]

_SUCCESS = (200, 201)


@dataclass(frozen=True)
class LoadConfig:
    url: str
    token: str
    connections: int = 64
    duration: float = 15.0
    requests: int | None = None
    replay_fraction: float = 0.0
    prefix: str = ""
    path: str = "/v1/allocate"
    name_prefix: str | None = None
    track_name: str | None = None
    client: str = "raw"
    timeout: float = 30.0
    check: bool = True  # parse bodies for the double-allocation/replay checks


@dataclass
class Report:
    """Raw observations; `summary()` turns them into the JSON report."""

    config: LoadConfig
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    owner_sandbox: dict[str, str] = field(default_factory=dict)
    sandbox_owner: dict[str, str] = field(default_factory=dict)
    double_allocations: list[dict[str, str]] = field(default_factory=list)
    replay_attempted: int = 0
    replay_matched: int = 0
    replay_mismatched: list[dict[str, Any]] = field(default_factory=list)
    owner_conflicts: int = 0
    transport_errors: Counter[str] = field(default_factory=Counter)
    started: float = 0.0
    finished: float = 0.0

    def record(self, owner: str, replay: bool, status: int, body: bytes, elapsed: float) -> None:
        self.latencies.append(elapsed)
        self.statuses[str(status)] += 1
        if not self.config.check:
            return
        if status not in _SUCCESS:
            with contextlib.suppress(ValueError, TypeError, KeyError):
                self.codes[orjson.loads(body)["detail"]["code"]] += 1
            if replay:
                self.replay_mismatched.append({"owner": owner, "status": status})
            return
        try:
            sandbox_id = str(orjson.loads(body)["sandbox_id"])
        except (ValueError, TypeError, KeyError):
            self.codes["UNPARSEABLE_SUCCESS"] += 1
            return
        holder = self.sandbox_owner.setdefault(sandbox_id, owner)
        if holder != owner:
            self.double_allocations.append(
                {"sandbox_id": sandbox_id, "first_owner": holder, "second_owner": owner})
        held = self.owner_sandbox.setdefault(owner, sandbox_id)
        if held != sandbox_id:
            self.owner_conflicts += 1
        if replay:
            if status == 200 and held == sandbox_id:
                self.replay_matched += 1
            else:
                self.replay_mismatched.append(
                    {"owner": owner, "status": status, "expected": held, "got": sandbox_id})

    def summary(self) -> dict[str, Any]:
        elapsed = max(self.finished - self.started, 1e-9)
        total = len(self.latencies)
        ordered = sorted(self.latencies)
        created = self.statuses.get("201", 0)
        return {
            "url": self.config.url + self.config.path,
            "client": self.config.client,
            "connections": self.config.connections,
            "owners": (f"replay:{self.config.replay_fraction}"
                       if self.config.replay_fraction else "distinct"),
            "elapsed_s": round(elapsed, 3),
            "requests": total,
            "throughput_rps": round(total / elapsed, 1),
            "created_per_s": round(created / elapsed, 1),
            "status": dict(sorted(self.statuses.items())),
            "error_codes": dict(sorted(self.codes.items())),
            "transport_errors": dict(self.transport_errors),
            "latency_ms": {
                "mean": _ms(sum(ordered) / total) if total else None,
                **{f"p{q}": _ms(_percentile(ordered, q)) for q in (50, 90, 95, 99)},
                "max": _ms(ordered[-1]) if ordered else None,
            },
            "allocations": {
                "created": created,
                "replayed": self.statuses.get("200", 0),
                "distinct_sandboxes": len(self.sandbox_owner),
                "distinct_owners": len(self.owner_sandbox),
            },
            "double_allocations": len(self.double_allocations),
            "double_allocation_examples": self.double_allocations[:5],
            "owners_with_two_sandboxes": self.owner_conflicts,
            "replay": {
                "attempted": self.replay_attempted,
                "matched": self.replay_matched,
                "mismatched": len(self.replay_mismatched),
                "mismatch_examples": self.replay_mismatched[:5],
            },
            "checked": self.config.check,
        }


def _percentile(ordered: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


class _Plan:
    """Hands out (owner, is_replay) pairs until the request budget or the deadline."""

    def __init__(self, config: LoadConfig, report: Report, deadline: float) -> None:
        self._config = config
        self._report = report
        self._deadline = deadline
        self._issued = 0
        self._rng = random.Random()
        self._known: list[str] = []  # owners that got a sandbox (replay candidates)

    def next(self) -> tuple[str, bool] | None:
        budget = self._config.requests
        if (budget is not None and self._issued >= budget) or time.perf_counter() >= self._deadline:
            return None
        self._issued += 1
        if self._known and self._rng.random() < self._config.replay_fraction:
            self._report.replay_attempted += 1
            return self._rng.choice(self._known), True
        return f"{self._config.prefix}{self._issued}", False

    def succeeded(self, owner: str, replay: bool) -> None:
        if not replay and self._config.replay_fraction:
            self._known.append(owner)


# --- clients -----------------------------------------------------------------------------


class _RawClient:
    def __init__(self, config: LoadConfig) -> None:
        parts = urlsplit(config.url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        head = [
            f"POST {config.path} HTTP/1.1",
            f"Host: {parts.netloc}",
            f"Authorization: Bearer {config.token}",
            "Content-Length: 0",
        ]
        if config.name_prefix:
            head.append(f"X-Sandbox-Name-Prefix: {config.name_prefix}")
        if config.track_name:
            head.append(f"X-Instruqt-Track-ID: {config.track_name}")
        self._head = ("\r\n".join(head) + "\r\nX-Instruqt-Sandbox-ID: ").encode()
        self._timeout = config.timeout

    async def connection(self) -> HttpConnection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(HttpConnection, self._host, self._port)
        return protocol

    async def worker(self, plan: _Plan, report: Report) -> None:
        conn: HttpConnection | None = None
        try:
            while (item := plan.next()) is not None:
                owner, replay = item
                try:
                    if conn is None or conn.closed:
                        conn = await self.connection()
                    started = time.perf_counter()
                    status, body = await asyncio.wait_for(
                        conn.request(self._head + owner.encode() + b"\r\n\r\n"), self._timeout)
                    elapsed = time.perf_counter() - started
                except (TimeoutError, OSError) as exc:
                    report.transport_errors[type(exc).__name__] += 1
                    if conn is not None and conn.transport is not None:
                        conn.transport.close()
                    conn = None
                    await asyncio.sleep(0.05)  # do not spin on a refused connection
                    continue
                report.record(owner, replay, status, body, elapsed)
                if status in _SUCCESS:
                    plan.succeeded(owner, replay)
        finally:
            if conn is not None and conn.transport is not None:
                conn.transport.close()

    async def aclose(self) -> None:
        return None


class _HttpxClient:
    def __init__(self, config: LoadConfig) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {config.token}"}
        if config.name_prefix:
            headers["X-Sandbox-Name-Prefix"] = config.name_prefix
        if config.track_name:
            headers["X-Instruqt-Track-ID"] = config.track_name
        self._client = httpx.AsyncClient(
            base_url=config.url, headers=headers, timeout=config.timeout,
            limits=httpx.Limits(max_connections=config.connections,
                                max_keepalive_connections=config.connections),
        )
        self._path = config.path
        self._errors = (httpx.TransportError,)

    async def worker(self, plan: _Plan, report: Report) -> None:
        while (item := plan.next()) is not None:
            owner, replay = item
            started = time.perf_counter()
            try:
                response = await self._client.post(
                    self._path, headers={"X-Instruqt-Sandbox-ID": owner})
            except self._errors as exc:
                report.transport_errors[type(exc).__name__] += 1
                await asyncio.sleep(0.05)
                continue
            elapsed = time.perf_counter() - started
            report.record(owner, replay, response.status_code, response.content, elapsed)
            if response.status_code in _SUCCESS:
                plan.succeeded(owner, replay)

    async def aclose(self) -> None:
        await self._client.aclose()


async def run_load(config: LoadConfig) -> dict[str, Any]:
    """Run one load test and return its JSON-ready summary."""
    report = Report(config)
    client: _RawClient | _HttpxClient = (
        _HttpxClient(config) if config.client == "httpx" else _RawClient(config))
    report.started = time.perf_counter()
    plan = _Plan(config, report, report.started + config.duration)
    try:
        await asyncio.gather(*(client.worker(plan, report) for _ in range(config.connections)))
    finally:
        report.finished = time.perf_counter()
        await client.aclose()
    return report.summary()


def _parse_owners(raw: str) -> float:
    if raw == "distinct":
        return 0.0
    kind, _, fraction = raw.partition(":")
    try:
        value = float(fraction)
    except ValueError:
        value = -1.0
    if kind != "replay" or not 0 < value < 1:
        raise argparse.ArgumentTypeError("use 'distinct' or 'replay:<fraction in (0, 1)>'")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sandbox-broker bench",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--token-env", default="BROKER_API_TOKEN",
                        help="name of the environment variable holding the track token")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=15.0, help="time budget, seconds")
    parser.add_argument("--requests", type=int, default=None, help="request budget")
    parser.add_argument("--owners", type=_parse_owners, default=0.0,
                        help="'distinct' (default) or 'replay:0.3'")
    parser.add_argument("--prefix", default=None,
                        help="owner id prefix (default: a random run id)")
    parser.add_argument("--path", default="/v1/allocate")
    parser.add_argument("--name-prefix", default=None, help="X-Sandbox-Name-Prefix to send")
    parser.add_argument("--track-name", default=None, help="X-Instruqt-Track-ID to send")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    parser.add_argument("--no-check", action="store_true",
                        help="do not parse bodies (for endpoints that are not allocate)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    token = os.environ.get(args.token_env, "")
    if not token:
        print(f"environment variable {args.token_env} is empty", file=sys.stderr)
        return 2
    config = LoadConfig(
        url=args.url.rstrip("/"), token=token, connections=args.connections,
        duration=args.duration, requests=args.requests, replay_fraction=args.owners,
        prefix=args.prefix if args.prefix is not None else f"load-{uuid.uuid4().hex[:8]}-",
        path=args.path, name_prefix=args.name_prefix, track_name=args.track_name,
        client=args.client, timeout=args.timeout, check=not args.no_check,
    )
    try:
        import uvloop
    except ImportError:
        summary = asyncio.run(run_load(config))
    else:
        summary = uvloop.run(run_load(config))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
