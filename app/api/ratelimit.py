"""Rate limits per client IP and per authenticated principal, checked before routing.

slowapi's `Limiter` is the engine for shared storages: it builds the storage from
RATE_LIMIT_STORAGE_URI and the strategy, and its `limiter` counts. For memory:// the
same strategies are counted in-process by `LocalCounter` (app/api/local_limits.py:
`limits`' memory storage cost a quarter of an allocation's CPU). slowapi's own
middleware is not used: it counts default
limits per URL (every /sandboxes/{id} would get its own budget), takes one key function
where we keep two budgets, and stamps Retry-After on successful responses.

Every request but /healthz, /readyz and /metrics spends one unit of its client IP's
budget and, with a valid token, one of that token's budget (keyed by the token's id,
never the token). Headers tell the truth about the tightest budget that applied (the one
refused, on a 429): X-RateLimit-Limit is its size, X-RateLimit-Remaining what is left
after this request, X-RateLimit-Reset the epoch second by which a unit is free again;
a 429 adds Retry-After, the seconds until then.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio.to_thread
from limits import RateLimitItem, parse_many
from slowapi import Limiter
from slowapi.util import get_remote_address
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.auth import TokenBook, bearer_token
from app.api.local_limits import Count, LocalCounter
from app.api.security import refuse
from app.config import Settings
from app.observability import Metrics

__all__ = [
    "EXEMPT_PATHS", "Budget", "ClientAddress", "Counter", "LimitsCounter", "RateLimitMiddleware",
    "RateLimits", "Verdict",
]

log = logging.getLogger("broker.ratelimit")

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_NOUN = {"ip": "client address", "principal": "token"}  # for the 429 message
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(text: str) -> _Address | None:
    """An address from a forwarded hop: bare, `[v6]:port` or `v4:port`; None if junk."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class ClientAddress:
    """The client's IP. The direct peer, unless the peer is a trusted proxy: then the
    right-most X-Forwarded-For hop that is not itself a trusted proxy (a hop that is not
    an address stops the walk at the last proxy vouched for)."""

    def __init__(self, trusted: Iterable[str]) -> None:
        self._networks = tuple(ipaddress.ip_network(t, strict=False) for t in trusted)

    def _trusted(self, address: _Address | None) -> bool:
        return address is not None and any(address in net for net in self._networks)

    def __call__(self, scope: Scope) -> str:
        client = scope.get("client")
        peer = str(client[0]) if client else "unknown"
        if not self._networks or not self._trusted(_ip(peer)):
            return peer
        hops = [hop for name, value in scope["headers"] if name == b"x-forwarded-for"
                for hop in value.decode("latin-1").split(",")]
        nearest = peer
        for hop in reversed(hops):
            address = _ip(hop)
            if address is None:
                break
            nearest = str(address)
            if not self._trusted(address):
                break
        return nearest


@dataclass(frozen=True, slots=True)
class Budget:
    name: str  # "ip" | "principal": the kind of key, and the metrics label
    items: tuple[RateLimitItem, ...]


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    budget: str
    limit: int
    remaining: int
    reset_at: float  # epoch seconds

    def headers(self, now: float) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.remaining)),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.reset_at - now)))
        return headers


class Counter(Protocol):
    def hit(self, item: RateLimitItem, budget: str, key: str) -> Count:
        """Spend one unit if there is one: (allowed, remaining, reset epoch seconds)."""


class LimitsCounter:
    """Counting through `limits` (shared storages): the hit, then the window's figures."""

    def __init__(self, limiter: Limiter) -> None:
        self._strategy = limiter.limiter

    def hit(self, item: RateLimitItem, budget: str, key: str) -> Count:
        allowed = self._strategy.hit(item, "broker", budget, key)
        stats = self._strategy.get_window_stats(item, "broker", budget, key)
        return allowed, stats.remaining, stats.reset_time


class RateLimits:
    """The two budgets, the keys requests spend them under, and the counting."""

    def __init__(
        self, counter: Counter, *, ip: Budget, principal: Budget,
        client_address: ClientAddress, token_book: TokenBook, blocking: bool,
    ) -> None:
        self._counter = counter
        self._ip, self._principal = ip, principal
        self.client_address = client_address
        self._tokens = token_book
        self.blocking = blocking  # a network store: count off the event loop

    @classmethod
    def from_settings(cls, settings: Settings, token_book: TokenBook) -> RateLimits:
        local = settings.rate_limit_storage_uri.startswith("memory://")
        counter: Counter = LocalCounter(settings.rate_limit_strategy) if local else (
            LimitsCounter(Limiter(
                key_func=get_remote_address,  # unused: RateLimits.keys() picks the keys
                strategy=settings.rate_limit_strategy,
                storage_uri=settings.rate_limit_storage_uri,
            )))
        return cls(
            counter,
            ip=Budget("ip", tuple(parse_many(settings.rate_limit_ip))),
            principal=Budget("principal", tuple(parse_many(settings.rate_limit_principal))),
            client_address=ClientAddress(settings.trusted_proxy_list),
            token_book=token_book,
            blocking=not local,
        )

    def principal(self, scope: Scope) -> str | None:
        """`<role>:<token id>` for a valid bearer token, else None (unknown tokens get no
        budget of their own, so they cannot mint fresh ones)."""
        for name, value in scope["headers"]:
            if name == b"authorization":
                token = bearer_token(value.decode("latin-1"))
                known = None if token is None else self._tokens.identify_for(
                    token, scope.setdefault("state", {}))
                return None if known is None else f"{known[0].value}:{known[1]}"
        return None

    def keys(self, client_ip: str, principal: str | None) -> list[tuple[Budget, str]]:
        keys = [(self._ip, client_ip)]
        if principal is not None:
            keys.append((self._principal, principal))
        return keys

    def check(self, keys: list[tuple[Budget, str]]) -> Verdict:
        """Spend one unit per limit until one refuses; the verdict names the refusing
        limit, or the one with the least left."""
        tightest: Verdict | None = None
        for budget, key in keys:
            for item in budget.items:
                allowed, remaining, reset_at = self._counter.hit(item, budget.name, key)
                verdict = Verdict(allowed, budget.name, item.amount, remaining, reset_at)
                if not allowed:
                    return verdict
                if tightest is None or verdict.remaining < tightest.remaining:
                    tightest = verdict
        assert tightest is not None  # the IP budget always applies
        return tightest


class RateLimitMiddleware:
    """429 with the envelope and truthful headers once a budget is spent; otherwise the
    request goes on and its response carries the X-RateLimit-* headers. If the storage
    fails, requests are let through (counted and logged): the limiter must not be the
    outage."""

    def __init__(self, app: ASGIApp, *, limits: RateLimits, metrics: Metrics) -> None:
        self.app = app
        self.limits = limits
        self.metrics = metrics
        self._warned_at = -math.inf

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        client_ip = self.limits.client_address(scope)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["client_ip"] = client_ip
        keys = self.limits.keys(client_ip, self.limits.principal(scope))
        try:
            if self.limits.blocking:
                verdict = await anyio.to_thread.run_sync(self.limits.check, keys)
            else:
                verdict = self.limits.check(keys)
        except Exception as exc:
            self._storage_failed(exc)
            await self.app(scope, receive, send)
            return
        headers = verdict.headers(time.time())
        if not verdict.allowed:
            self.metrics.rate_limited.labels(verdict.budget).inc()
            await refuse(scope, receive, send, 429, "RATE_LIMIT_EXCEEDED",
                         f"rate limit exceeded for this {_NOUN[verdict.budget]}; retry in "
                         f"{headers['Retry-After']}s", headers=headers)
            return
        raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *raw]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _storage_failed(self, exc: Exception) -> None:
        self.metrics.rate_limit_errors.inc()
        now = time.monotonic()
        if now - self._warned_at >= 60:  # one line a minute, not one per request
            self._warned_at = now
            log.warning("rate-limit storage failed; not limiting",
                        extra={"fields": {"error": type(exc).__name__}})

