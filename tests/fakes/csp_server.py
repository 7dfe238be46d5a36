"""A fake Cloud Service Portal: a real HTTP server on 127.0.0.1 in a background thread.

Tests drive its state (accounts, page size) and faults (errors, 429s, slow answers,
answers that trickle in, malformed bodies) and read its per-route request counters.
Standard library only, so it starts in milliseconds and needs no event loop of its own.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid as uuid_mod
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["DELETE_ROUTE", "LIST_ROUTE", "FakeCsp", "closed_port"]

PREFIX = "/csp/api"  # proves the client keeps the base URL's path
LIST_ROUTE = "GET /current_user/accounts"
DELETE_ROUTE = "DELETE /sandbox/accounts"
_DELETE_PREFIX = "/sandbox/accounts/"

Reply = tuple[int, dict[str, str], bytes]
"""status, headers, body"""


@dataclass
class _Fault:
    remaining: int
    status: int
    headers: dict[str, str]
    raw_body: bytes | None = None
    skip: int = 0  # requests to let through untouched before the fault starts


class FakeCsp:
    """State and faults shared by the handler threads; all access holds `_lock`."""

    def __init__(self, token: str = "fake-csp-token-0123456789abcdef") -> None:
        self.token = token
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.reset()

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        # A short poll interval makes shutdown() (and so each test's teardown) quick.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, name="fake-csp"
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._stopping.set()  # wakes handlers sleeping on delay_sec
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None

    @property
    def origin(self) -> str:
        if self._server is None:
            raise RuntimeError("fake CSP is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def base_url(self) -> str:
        return self.origin + PREFIX

    @property
    def list_url(self) -> str:
        return self.base_url + "/current_user/accounts"

    # -- state -----------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.rows: list[dict[str, Any]] = []
            self.page_size: int | None = None
            self.delay_sec = 0.0
            self.trickle_sec = 0.0  # > 0: bodies go out a byte at a time, this far apart
            self.empty_list = False
            self.next_origin: str | None = None  # send `next` links to another host
            self.connections = 0
            self.requests: Counter[str] = Counter()
            self.auth_headers: list[str | None] = []
            self._faults: list[_Fault] = []

    def add_account(self, name: str, **fields: Any) -> dict[str, Any]:
        """Add an active sandbox row (fields override the defaults) and return it."""
        account_uuid = fields.pop("uuid", None) or str(uuid_mod.uuid4())
        row: dict[str, Any] = {
            "id": f"identity/accounts/{account_uuid}",
            "csp_id": f"csp-{account_uuid[:8]}",
            "name": name,
            "account_type": "sandbox",
            "state": "active",
            "sfdc_account_id": f"SFDC-{name}",
            "created_at": "2024-05-01T12:00:00Z",
        }
        row.update(fields)
        self.add_row(row)
        return row

    def add_row(self, row: dict[str, Any]) -> None:
        """Add a row exactly as given (for rows the provider must skip)."""
        with self._lock:
            self.rows.append(row)

    def remove_account(self, account_uuid: str) -> bool:
        with self._lock:
            before = len(self.rows)
            self.rows = [r for r in self.rows if _row_uuid(r) != account_uuid]
            return len(self.rows) != before

    def fail_next(self, n: int, status: int = 500, after: int = 0,
                  retry_after: str | None = None) -> None:
        """Answer `status` to n requests, once `after` requests have gone through."""
        headers = {} if retry_after is None else {"Retry-After": retry_after}
        self._add_fault(_Fault(n, status, headers, skip=after))

    def rate_limit_next(self, n: int, retry_after: str | float | None = 2) -> None:
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        self._add_fault(_Fault(n, 429, headers))

    def respond_next(self, n: int, body: bytes, status: int = 200) -> None:
        """Answer n requests with exactly this body (broken shapes, odd links)."""
        self._add_fault(_Fault(n, status, {"Content-Type": "application/json"}, raw_body=body))

    def malformed_next(self, n: int) -> None:
        """Answer 200 with a body that is not JSON."""
        self.respond_next(n, b"<html>not json</html>")

    def clear_faults(self) -> None:
        """End every pending fault now (an outage that is over)."""
        with self._lock:
            self._faults.clear()

    def stopping(self, wait_sec: float) -> bool:
        """Wait up to `wait_sec`; True as soon as the server is being stopped."""
        return self._stopping.wait(wait_sec)

    def note_connection(self) -> None:
        with self._lock:
            self.connections += 1

    def count(self, route: str) -> int:
        with self._lock:
            return self.requests[route]

    def _add_fault(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self) -> _Fault | None:
        with self._lock:
            while self._faults and self._faults[0].remaining <= 0:
                self._faults.pop(0)
            if not self._faults:
                return None
            if self._faults[0].skip > 0:
                self._faults[0].skip -= 1
                return None
            self._faults[0].remaining -= 1
            return self._faults[0]

    # -- request handling (handler threads) --------------------------------------------

    def handle(self, method: str, raw_path: str, auth: str | None) -> Reply:
        parts = urlsplit(raw_path)
        path = parts.path.removeprefix(PREFIX) if parts.path.startswith(PREFIX) else None
        route = _route(method, path)
        with self._lock:
            self.requests[route] += 1
            self.auth_headers.append(auth)
            delay = self.delay_sec
        if path is None or route.startswith("? "):
            return _json(404, {"detail": "no such route"})
        if auth != f"Token {self.token}":
            return _json(401, {"detail": "bad token"})
        if delay and self._stopping.wait(delay):
            return _json(503, {"detail": "shutting down"})
        fault = self._take_fault()
        if fault is not None:
            body = fault.raw_body if fault.raw_body is not None else b'{"detail": "fault"}'
            return fault.status, fault.headers, body
        if route == LIST_ROUTE:
            return self._list(parse_qs(parts.query))
        return self._delete(path.removeprefix(_DELETE_PREFIX))

    def _list(self, query: dict[str, list[str]]) -> Reply:
        with self._lock:
            rows = [] if self.empty_list else list(self.rows)
            size = self.page_size
        if size is None:
            return _json(200, {"results": rows})
        page = int(query.get("page", ["1"])[0])
        chunk = rows[(page - 1) * size : page * size]
        more = page * size < len(rows)
        origin = self.next_origin or self.origin
        next_url = f"{origin}{PREFIX}/current_user/accounts?page={page + 1}" if more else None
        return _json(200, {"results": chunk, "next": next_url})

    def _delete(self, account_uuid: str) -> Reply:
        if self.remove_account(account_uuid):
            return 204, {}, b""
        return _json(404, {"detail": "not found"})


def _row_uuid(row: dict[str, Any]) -> str:
    return str(row.get("id", "")).rsplit("/", 1)[-1]


def _route(method: str, path: str | None) -> str:
    if method == "GET" and path == "/current_user/accounts":
        return LIST_ROUTE
    if method == "DELETE" and path and path.startswith(_DELETE_PREFIX):
        return DELETE_ROUTE
    return f"? {method} {path}"


def _json(status: int, payload: object) -> Reply:
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads
    fake: FakeCsp

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (timeouts, pool shutdown) are expected; stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    protocol_version = "HTTP/1.1"  # keep-alive, so the client's pooling is exercised
    timeout = 10  # a forgotten client connection cannot hang server_close() forever
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def setup(self) -> None:
        super().setup()
        self.server.fake.note_connection()

    def _serve(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status, headers, body = fake.handle(
            self.command, self.path, self.headers.get("Authorization")
        )
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self._write_body(body, fake.trickle_sec)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. its read timeout)

    def _write_body(self, body: bytes, trickle_sec: float) -> None:
        if not trickle_sec:
            self.wfile.write(body)
            return
        for offset in range(len(body)):  # every read gets a byte before its timeout
            self.wfile.write(body[offset:offset + 1])
            self.wfile.flush()
            if self.server.fake.stopping(trickle_sec):
                return

    do_GET = do_DELETE = do_POST = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging on stderr."""


def closed_port() -> int:
    """A local port nobody listens on: connections to it are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
