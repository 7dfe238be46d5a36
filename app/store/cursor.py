"""Opaque, tamper-evident pagination cursors shared by every backend.

A cursor is only accepted where it was issued: its tag also covers a scope (the listing
and its filter, or the sandbox of a timeline), so a cursor from another listing is
refused (400) instead of silently restarting or skipping.

Feed cursors (the empty scope) are tagged with a fixed key instead of the secret: webhook
checkpoints are feed cursors kept in the store, and the secret changes whenever the
admin tokens it may be derived from are rotated; a checkpoint that stopped decoding would
stop its subscriber for good. A feed cursor holds only a position in a log its reader
may read whole, so a forged one gains nothing. Feed cursors tagged with the secret, as
releases before this one wrote them, are still accepted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from app.domain import InvalidInput

__all__ = ["CursorCodec", "scope_of", "timeline_scope"]

_SIG_BYTES = 16
_FEED_KEY = b"sandbox-broker feed position"  # not a secret (module docstring)


class CursorCodec:
    """Encodes a backend's resume position as base64url(json) + HMAC tag."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def encode(self, position: dict[str, Any], scope: str = "") -> str:
        body = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
        return base64.urlsafe_b64encode(self._tag(body, scope) + body).decode().rstrip("=")

    def decode(self, cursor: str, scope: str = "") -> dict[str, Any]:
        """The position inside `cursor`; InvalidInput unless we issued it for `scope`."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (ValueError, TypeError) as exc:
            raise InvalidInput("cursor is not valid") from exc
        tag, body = raw[:_SIG_BYTES], raw[_SIG_BYTES:]
        accepted = [self._tag(body, scope)]
        if not scope:  # a feed cursor (or checkpoint) of an earlier release
            accepted.append(self._keyed(self._secret, body))
        if len(tag) != _SIG_BYTES or not any(hmac.compare_digest(tag, a) for a in accepted):
            raise InvalidInput("cursor is not valid")
        try:
            position = json.loads(body)
        except ValueError as exc:
            raise InvalidInput("cursor is not valid") from exc
        if not isinstance(position, dict):
            raise InvalidInput("cursor is not valid")
        return position

    def _tag(self, body: bytes, scope: str) -> bytes:
        if not scope:
            return self._keyed(_FEED_KEY, body)
        return self._keyed(self._secret, scope.encode() + b"\n" + body)

    @staticmethod
    def _keyed(key: bytes, material: bytes) -> bytes:
        return hmac.new(key, material, hashlib.sha256).digest()[:_SIG_BYTES]


def scope_of(kind: str, *parts: object) -> str:
    """A cursor scope: what the cursor pages through, e.g. ("sandboxes", <filter...>)."""
    return json.dumps([kind, *(None if p is None else str(p) for p in parts)],
                      separators=(",", ":"))


def timeline_scope(sandbox_id: str | None) -> str:
    """One sandbox's timeline, or (None) the feed: the empty scope of older cursors."""
    return "" if sandbox_id is None else scope_of("timeline", sandbox_id)
