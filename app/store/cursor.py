"""Opaque, tamper-evident pagination cursors shared by every backend."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from app.domain import InvalidInput

__all__ = ["CursorCodec"]

_SIG_BYTES = 16


class CursorCodec:
    """Encodes a backend's resume position as base64url(json) + HMAC tag."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def encode(self, position: dict[str, Any]) -> str:
        body = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
        tag = hmac.new(self._secret, body, hashlib.sha256).digest()[:_SIG_BYTES]
        return base64.urlsafe_b64encode(tag + body).decode().rstrip("=")

    def decode(self, cursor: str) -> dict[str, Any]:
        """The position inside `cursor`; InvalidInput if it was not issued by us."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (ValueError, TypeError) as exc:
            raise InvalidInput("cursor is not valid") from exc
        tag, body = raw[:_SIG_BYTES], raw[_SIG_BYTES:]
        expected = hmac.new(self._secret, body, hashlib.sha256).digest()[:_SIG_BYTES]
        if len(tag) != _SIG_BYTES or not hmac.compare_digest(tag, expected):
            raise InvalidInput("cursor is not valid")
        try:
            position = json.loads(body)
        except ValueError as exc:
            raise InvalidInput("cursor is not valid") from exc
        if not isinstance(position, dict):
            raise InvalidInput("cursor is not valid")
        return position
