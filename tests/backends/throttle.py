"""A tiny HTTP proxy on 127.0.0.1 in front of a DynamoDB endpoint that can answer
ProvisionedThroughputExceededException instead of forwarding, or forward a request and
hold its answer back (the write commits, the client times out and retries).

It runs on its own thread, so both in-process stores and `sandbox-broker serve`
subprocesses can point DDB_ENDPOINT_URL at `proxy.endpoint`:

    with ThrottlingProxy(dynamodb_local.endpoint) as proxy:
        proxy.throttle(5)      # the next 5 requests get HTTP 400 throttling errors
        ...
        proxy.throttled, proxy.forwarded   # counters
        proxy.throttled_operations         # Counter of throttled operations ("Query", ...)
        proxy.delay_answers("UpdateItem", 1, 2.0)  # the next UpdateItem commits, answers late
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

__all__ = ["THROTTLING_BODY", "ThrottlingProxy"]

THROTTLING_BODY = json.dumps({
    "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
    "message": "The level of configured provisioned throughput for the table was exceeded.",
}).encode()
_HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client hanging up mid-answer (a replica stopping) is not news."""


class ThrottlingProxy:
    """Forwards every request to `upstream` unless a throttling budget is set."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._lock = threading.Lock()
        self._budget = 0
        self._late: dict[str, tuple[int, float]] = {}  # operation -> (count, seconds)
        self.throttled = 0
        self.forwarded = 0
        self.throttled_operations: Counter[str] = Counter()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def throttle(self, requests: int) -> None:
        """Answer the next `requests` requests with a throttling error."""
        with self._lock:
            self._budget = requests

    def delay_answers(self, operation: str, requests: int, seconds: float) -> None:
        """Forward the next `requests` calls of `operation` at once, but hold each
        answer back for `seconds` (past the client's read timeout: an ambiguous write)."""
        with self._lock:
            self._late[operation] = (requests, seconds)

    def _answer_delay(self, operation: str) -> float:
        with self._lock:
            count, seconds = self._late.get(operation, (0, 0.0))
            if count <= 0:
                return 0.0
            self._late[operation] = (count - 1, seconds)
            return seconds

    def _take_budget(self, operation: str) -> bool:
        with self._lock:
            if self._budget <= 0:
                self.forwarded += 1
                return False
            self._budget -= 1
            self.throttled += 1
            self.throttled_operations[operation] += 1
            return True

    def __enter__(self) -> ThrottlingProxy:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                operation = self.headers.get("X-Amz-Target", "").rpartition(".")[2]
                if proxy._take_budget(operation):
                    self._answer(400, [("Content-Type", "application/x-amz-json-1.0")],
                                 THROTTLING_BODY)
                    return
                upstream = http.client.HTTPConnection(*proxy._upstream, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in _HOP_HEADERS}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    payload = response.read()
                    time.sleep(proxy._answer_delay(operation))
                    kept = [(k, v) for k, v in response.getheaders()
                            if k.lower() not in _HOP_HEADERS]
                    self._answer(response.status, kept, payload)
                except OSError:
                    self._answer(502, [("Content-Type", "text/plain")], b"upstream down")
                finally:
                    upstream.close()

            do_GET = do_POST

            def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the tests assert on the counters instead."""

        return Handler
