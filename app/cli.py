"""`sandbox-broker serve | init-store | seed | verify | bench`: the operator's entry points."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import SettingsError

from app.config import Settings, generate_dev_tokens
from app.domain import DomainError, Sandbox
from app.observability import prepare_multiprocess_dir
from app.store import SandboxStore, create_store

__all__ = ["main"]


def _load_settings() -> Settings:
    """Settings from the environment, or exit with one line naming each bad variable
    (never its value: it may be a secret)."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(_problem(error["loc"], str(error.get("msg", "")))
                             for error in exc.errors())
    except SettingsError as exc:  # a value that is not even JSON, e.g. WEBHOOK_SUBSCRIBERS
        problems = str(exc)
    raise SystemExit(f"sandbox-broker: configuration refused: {problems}")


def _problem(loc: tuple[int | str, ...], message: str) -> str:
    message = message.removeprefix("Value error, ")
    if not loc:  # a check across several variables: the message names them
        return message
    where = str(loc[0]).upper() + "".join(f"[{part}]" for part in loc[1:])
    return f"{where}: {message}"


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _load_settings()
    if settings.is_dev and not (settings.track_tokens and settings.admin_tokens):
        track, admin = generate_dev_tokens()
        # Workers re-read the environment, so every process shares these tokens.
        if not settings.track_tokens:
            os.environ["BROKER_API_TOKEN"] = track
        if not settings.admin_tokens:
            os.environ["BROKER_ADMIN_TOKEN"] = admin
        settings = _load_settings()
    url = f"http://{args.host}:{args.port}"
    print(f"sandbox-broker ({settings.broker_env} mode, {settings.broker_store} store, "
          f"{settings.broker_provider} provider) on {url}")
    if settings.broker_provider == "simulated" and not settings.is_dev:
        print("  warning: BROKER_PROVIDER=simulated: the sandboxes it leases are not real "
              "(set BROKER_PROVIDER=csp)")
    print(f"  docs:    {url}{settings.api_base_path}/docs")
    if settings.is_dev:
        print(f"  track token: {settings.track_tokens[0]}")
        print(f"  admin token: {settings.admin_tokens[0]}")
        print(f"  try: curl -X POST -H 'Authorization: Bearer {settings.track_tokens[0]}'"
              f" -H 'X-Instruqt-Sandbox-ID: me' {url}{settings.api_base_path}/allocate")
    sys.stdout.flush()
    if args.workers > 1 or settings.prometheus_multiproc_dir:
        # Workers share metric values through files here (prometheus-client's multiprocess
        # mode); set before any worker imports prometheus-client, emptied of a past run's.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = prepare_multiprocess_dir(
            settings.prometheus_multiproc_dir)
    uvicorn.run(
        "app.main:app_from_environment",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="app.http_guard:GuardedHttpToolsProtocol",  # httptools, with read bounds
        ws="none",  # no WebSocket routes: an upgrade request is plain HTTP
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=settings.keep_alive_timeout_sec,
        proxy_headers=False,  # TRUSTED_PROXIES decides whose X-Forwarded-For is believed
        server_header=False,  # no `server: uvicorn`: what runs here is nobody's business
    )
    return 0


def _with_store(
    action: Callable[[SandboxStore], Awaitable[int]], *, existing: bool = False
) -> int:
    """Run `action` on the opened store; a store problem is one line on stderr and exit
    status 1. `existing`: refuse to create a SQLite file (a typo must not pass `verify`)."""
    settings = _load_settings()
    path = Path(settings.broker_sqlite_path)
    if existing and settings.broker_store == "sqlite" and not path.exists():
        raise SystemExit(f"sandbox-broker: no store at {path}; check BROKER_SQLITE_PATH")

    async def run() -> int:
        store = create_store(settings)
        try:
            await store.open()
            try:
                return await action(store)
            finally:
                await store.close()
        except DomainError as exc:
            hint = "" if action is _init_store else (
                " (a new store needs `sandbox-broker init-store` first)")
            raise SystemExit(f"sandbox-broker: {exc}{hint}") from None

    return asyncio.run(run())


async def _init_store(store: SandboxStore) -> int:
    print(json.dumps(await store.init_schema(), indent=2, default=str))
    return 0


def _seed(count: int, prefix: str) -> Callable[[SandboxStore], Awaitable[int]]:
    async def seed(store: SandboxStore) -> int:
        now = int(time.time())
        width = max(5, len(str(count)))
        batch = [
            Sandbox(sandbox_id=f"seed-{prefix}{i:0{width}d}", name=f"{prefix}{i:0{width}d}",
                    external_id=f"identity/accounts/seed-{prefix}{i:0{width}d}",
                    created_at=now, updated_at=now)
            for i in range(1, count + 1)
        ]
        added = 0
        for start in range(0, len(batch), 500):
            added += await store.add(batch[start:start + 500])
        print(json.dumps({"requested": count, "added": added, "prefix": prefix}))
        return 0

    return seed


async def _verify(store: SandboxStore) -> int:
    problems = await store.integrity_violations()
    counts = {str(k): v for k, v in (await store.count_by_status()).items()}
    print(json.dumps({"ok": not problems, "violations": problems, "counts": counts}, indent=2))
    return 1 if problems else 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sandbox-broker", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1)
    commands.add_parser("init-store", help="create the table/schema (idempotent)")
    seed = commands.add_parser("seed", help="add N available sandboxes to the store")
    seed.add_argument("--count", type=_positive, required=True)
    seed.add_argument("--prefix", default="lab-")
    commands.add_parser("verify", help="check the store's invariants; non-zero on violation")
    commands.add_parser("bench", add_help=False,  # its own options: `bench --help`
                        help="load-test a running broker's allocate endpoint (JSON report)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["bench"]:  # the load runner parses its own options
        from app.loadgen.runner import main as bench

        return bench(arguments[1:])
    args = _parser().parse_args(arguments)
    if args.command == "serve":
        return _serve(args)
    if args.command == "init-store":
        return _with_store(_init_store)
    if args.command == "seed":
        return _with_store(_seed(args.count, args.prefix))
    return _with_store(_verify, existing=True)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
