"""A webhook receiver on 127.0.0.1 that checks signatures like a subscriber would,
can fail or block its next deliveries, and records what it accepted."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["WebhookReceiver"]


class WebhookReceiver:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.accepted: list[dict[str, Any]] = []
        self.attempts = 0
        self.bad_signatures = 0
        self.fail_next = 0
        self.reject_type: str | None = None  # events of this type are refused with 400
        self.gate = threading.Event()  # cleared: requests wait (a stuck subscriber)
        self.gate.set()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.gate.wait(timeout=30)
                status = receiver.receive(self.headers.get("X-Broker-Signature", ""), body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.01}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.gate.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def receive(self, signature: str, body: bytes) -> int:
        with self._lock:
            self.attempts += 1
            if not self._verify(signature, body):
                self.bad_signatures += 1
                return 401
            if self.fail_next > 0:
                self.fail_next -= 1
                return 503
            event = json.loads(body)
            if event["type"] == self.reject_type:
                return 400
            self.accepted.append(event)
            return 204

    def _verify(self, signature: str, body: bytes) -> bool:
        parts = dict(p.split("=", 1) for p in signature.split(",") if "=" in p)
        if "t" not in parts or "v1" not in parts:
            return False
        expected = hmac.new(self.secret.encode(), f"{parts['t']}.".encode() + body,
                            hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, parts["v1"])

    def types_for(self, sandbox_id: str) -> list[str]:
        with self._lock:
            return [e["type"] for e in self.accepted if e["sandbox_id"] == sandbox_id]
