"""The ceiling for the benchmark: a minimal FastAPI POST endpoint returning small JSON.

Served exactly like `sandbox-broker serve` (uvicorn, uvloop, httptools, no access log,
no log config, the same garbage-collector settings), so `allocation throughput /
baseline throughput` says how close the broker's hot path gets to what the framework
itself can do on the same machine.

    python -m tests.load.baseline_app --port 8099 --workers 1
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from fastapi import FastAPI
from starlette.responses import Response

from app.gc_tuning import settle_heap

__all__ = ["BODY", "app", "main"]

BODY = (b'{"sandbox_id":"seed-lab-00001","name":"lab-00001","external_id":null,'
        b'"allocated_at":1700000000,"expires_at":1700014400,"sfdc_account_id":null,'
        b'"track_name":null,"status":"allocated"}')

app = FastAPI(title="baseline", docs_url=None, redoc_url=None, openapi_url=None)


@app.post("/v1/allocate", status_code=201)
async def allocate() -> Response:
    """Same path and a body of the same size as a real allocation, no work."""
    return Response(BODY, 201, media_type="application/json")


@app.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


if __name__ != "__main__":  # a server's import: the same heap settings as the app's
    settle_heap()


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m tests.load.baseline_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    # The same server settings as app/cli.py `_serve`.
    uvicorn.run("tests.load.baseline_app:app", host=args.host, port=args.port,
                workers=args.workers, loop="uvloop",
                http="app.http_guard:GuardedHttpToolsProtocol", ws="none", access_log=False,
                log_config=None, timeout_graceful_shutdown=10, timeout_keep_alive=75,
                proxy_headers=False, server_header=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
