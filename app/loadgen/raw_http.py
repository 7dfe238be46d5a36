"""A minimal keep-alive HTTP/1.1 client connection for the load runner's `raw` client:
an asyncio protocol that parses only what uvicorn sends (status line, Content-Length
bodies), so the load generator spends little CPU per request."""

from __future__ import annotations

import asyncio

__all__ = ["HttpConnection"]


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection closed by server"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buffer[:end]).lower()
        start = head.find(b"\r\ncontent-length:")
        if start < 0:
            waiter.set_exception(ConnectionError("response without Content-Length"))
            return
        stop = head.find(b"\r\n", start + 2)
        length = int(head[start + 17: stop if stop >= 0 else len(head)])
        total = end + 4 + length
        if len(self._buffer) < total:
            return
        status = int(head[9:12])
        body = bytes(self._buffer[end + 4: total])
        del self._buffer[:total]
        waiter.set_result((status, body))

    def request(self, payload: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return self._waiter
