"""Bearer-token roles with constant-time checks. Tokens are kept only as digests."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from enum import Enum
from typing import Any

__all__ = ["Role", "TokenBook", "bearer_token", "token_digest", "token_id"]

# The scheme is case-insensitive (RFC 9110); a token is printable ASCII without spaces,
# as Settings requires of every configured one.
_BEARER = re.compile(r"^(?i:bearer) ([\x21-\x7e]+)$")


class Role(Enum):
    TRACK = "track"
    ADMIN = "admin"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value; None if it is not one.
    The one parser for every reader of the header (auth, rate limits, /metrics)."""
    match = _BEARER.match(authorization) if authorization else None
    return None if match is None else match.group(1)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def token_id(token: str) -> str:
    """A short, non-reversible id for a token, safe for logs and rate-limit keys."""
    return token_digest(token).hex()[:12]


class TokenBook:
    """Which role a presented token has. Every stored digest is compared, always,
    so the time taken does not reveal which (or whether a) token matched."""

    def __init__(self, track: Iterable[str], admin: Iterable[str]) -> None:
        self._entries = [(token_digest(t), Role.TRACK) for t in track] + [
            (token_digest(t), Role.ADMIN) for t in admin
        ]

    def role_of(self, token: str) -> Role | None:
        return self._match(token_digest(token))

    def identify(self, token: str) -> tuple[Role, str] | None:
        """The token's role and its id (`token_id`), from one digest; None if unknown."""
        presented = token_digest(token)
        role = self._match(presented)
        return None if role is None else (role, presented.hex()[:12])

    def identify_for(self, token: str, state: dict[str, Any]) -> tuple[Role, str] | None:
        """`identify`, digested at most once per request: the rate limiter and the
        route's auth both ask, so the answer waits in the request's state beside a
        fingerprint of the token it is for (Python's keyed string hash: the state never
        holds the token itself). Both askers read the header with `bearer_token`, so the
        fingerprints match."""
        fingerprint = hash(token)
        seen = state.get("token_identity")
        if seen is not None and seen[0] == fingerprint:
            known: tuple[Role, str] | None = seen[1]
            return known
        known = self.identify(token)
        state["token_identity"] = (fingerprint, known)
        return known

    def _match(self, presented: bytes) -> Role | None:
        found: Role | None = None
        for digest, role in self._entries:
            if hmac.compare_digest(presented, digest) and found is None:
                found = role
        return found
