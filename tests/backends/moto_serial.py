"""`moto_server`, but answering one request at a time: `python -m tests.backends.moto_serial
-H 127.0.0.1 -p <port>`.

moto's DynamoDB TransactWriteItems backs up each table it touches and restores the
backup when a condition fails, without a lock. Under moto's threaded server two
concurrent transactions therefore lose each other's writes (measured: 21 leases on
20 sandboxes, owner items vanishing). Serialising requests makes moto's writes
atomic, as DynamoDB's are; sockets are still accepted concurrently.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def serialised(app: WSGIApp) -> WSGIApp:
    """The app with every request (body included) handled under one lock."""
    lock = threading.Lock()

    def handle(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with lock:
            return list(app(environ, start_response))

    return handle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, serialised(app), threaded=True,
               request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
