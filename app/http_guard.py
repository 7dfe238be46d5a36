"""uvicorn's httptools protocol with two bounds on reading a request, for a service that
may face clients directly (the ALB sets its own, `serve` and the image do not):

- size: httptools buffers a request's head however long it grows, so one unfinished
  header line could fill the memory before any middleware sees the request. More than
  `head_limit` bytes before the headers end is answered 431 and the connection closed.
  (RequestLimitsMiddleware still answers ordinary oversize headers, with the request id:
  this limit sits above MAX_HEADER_BYTES.)
- time: uvicorn times out only idle keep-alive connections, not one that opened and says
  nothing, or trickles a request in a byte at a time. A request must arrive whole
  (head and body) within `read_timeout` of its first byte or of the connection opening;
  otherwise the connection is closed.

Used as `uvicorn.run(..., http="app.http_guard:GuardedHttpToolsProtocol")`; the limits
come from the settings through `configure` (app_from_environment, in each worker).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.api.errors import error_response, request_id_var

__all__ = ["REQUEST_LINE_ALLOWANCE", "GuardedHttpToolsProtocol", "configure"]

REQUEST_LINE_ALLOWANCE = 16 * 1024  # the request line and slack above MAX_HEADER_BYTES


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol bounding each request's head size and read time (see module).

    Head bytes are counted as they arrive, up to the blank line that ends the head (a
    body or a pipelined request in the same packet is not head). The read time is
    checked by one sweep per event loop over its open connections, a few times per
    `read_timeout`, not by a timer per request (arming and cancelling one per request
    cost more than the whole check). While uvicorn itself has paused reading (a
    pipelined request waits for the one before it) the wait is the server's, not the
    client's: such connections are skipped, and their clock restarts with the reading."""

    head_limit = 8192 + REQUEST_LINE_ALLOWANCE
    read_timeout = 30.0
    _open: ClassVar[dict[asyncio.AbstractEventLoop, set[GuardedHttpToolsProtocol]]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._head_tail = b""  # the last bytes seen, for a blank line split across packets
        self._reading_head = True
        self._reading_since: float | None = None  # loop time a request began arriving

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._reading_since = self.loop.time()
        connections = self._open.get(self.loop)
        if connections is None:  # the first connection of this loop: sweeps start
            connections = self._open[self.loop] = set()
            self.loop.call_later(self._sweep_interval(), _sweep, self.loop)
        connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._open.get(self.loop, set()).discard(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_head:
            seen = self._head_tail + data
            end = seen.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else max(0, end + 4 - len(self._head_tail))
            if self._head_bytes > self.head_limit:
                self._refuse_head()
                return
            self._head_tail = seen[-3:]
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes, self._head_tail, self._reading_head = 0, b"", True
        self._reading_since = self.loop.time()

    def on_headers_complete(self) -> None:
        self._reading_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._reading_since = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self._reading_since is not None:  # a pipelined request: read from now on
            self._reading_since = self.loop.time()
        super().on_response_complete()

    def handle_websocket_upgrade(self) -> None:
        """The connection leaves this protocol (serve turns WebSockets off anyway)."""
        self._open.get(self.loop, set()).discard(self)
        super().handle_websocket_upgrade()

    @classmethod
    def _sweep_interval(cls) -> float:
        return max(0.25, cls.read_timeout / 4)

    def _refuse_head(self) -> None:
        """431 in the service's error envelope, then close: the rest is not read."""
        request_id = uuid.uuid4().hex
        token = request_id_var.set(request_id)
        try:
            response = error_response(431, "REQUEST_HEADERS_TOO_LARGE",
                                      "the request line and headers are too large")
        finally:
            request_id_var.reset(token)
        headers = [*response.raw_headers, (b"x-request-id", request_id.encode()),
                   (b"connection", b"close")]
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n" + b"".join(
            name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n" + response.body)
        self._reading_since = None
        self.transport.close()


def _sweep(loop: asyncio.AbstractEventLoop) -> None:
    """Close this loop's connections whose request has been arriving for too long; again
    soon while the loop has any connection open."""
    guarded = GuardedHttpToolsProtocol
    connections = guarded._open.get(loop, set())
    cutoff = loop.time() - guarded.read_timeout
    for connection in list(connections):
        since = connection._reading_since
        if (since is not None and since < cutoff and not connection.flow.read_paused
                and not connection.transport.is_closing()):
            connection.transport.close()
    if connections:
        loop.call_later(guarded._sweep_interval(), _sweep, loop)
    else:
        guarded._open.pop(loop, None)


def configure(max_header_bytes: int, read_timeout_sec: float) -> None:
    """Set the bounds for every connection this process accepts from now on."""
    GuardedHttpToolsProtocol.head_limit = max_header_bytes + REQUEST_LINE_ALLOWANCE
    GuardedHttpToolsProtocol.read_timeout = read_timeout_sec
