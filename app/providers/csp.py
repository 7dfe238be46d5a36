"""The Cloud Service Portal provider: lists and deletes sandbox accounts over HTTP.

One pooled httpx client for the provider's lifetime; every call goes through a
circuit breaker so a CSP outage costs one fast rejection, not a timeout per call.
Error messages are built from status codes and exception class names only, so the
API token can never leak into them.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urljoin

import httpx
from pydantic import SecretStr

from app.domain import Sandbox
from app.providers.base import DeleteOutcome, DeleteResult, ProviderSandbox, ProviderUnavailable
from app.providers.breaker import BreakerOpen, CircuitBreaker

__all__ = ["CallHook", "CspProvider"]

logger = logging.getLogger(__name__)

CallHook = Callable[[str, str], None]
"""on_call(operation, outcome): invoked once per attempted HTTP call, for metrics."""

LIST_PATH = "/current_user/accounts"
DELETE_PATH = "/sandbox/accounts/"
DEFAULT_RETRY_AFTER_SEC = 30.0
MAX_RETRY_AFTER_SEC = 86400.0  # a day: a larger (or absurd) Retry-After is read as this
PROBE_BUSY_RETRY_SEC = 1.0  # half-open with a probe in flight: its answer is near
MAX_PAGES = 1000  # a guard against a portal whose `next` never ends


class _CallError(Exception):
    """No usable HTTP response: `outcome` is the metrics label, the message is safe to show."""

    def __init__(self, outcome: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.retry_after = retry_after


def _status_outcome(status: int) -> str:
    if status < 300:
        return "ok"
    if status == 404:
        return "not_found"
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    return "client_error"


def parse_retry_after(value: str | None, now: float | None = None) -> float:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); 30 when absent
    or unreadable, so a bare 429 still backs off; at most a day, so no answer can park
    a deletion for years (or overflow a timestamp)."""
    if value is None or not value.strip():
        return DEFAULT_RETRY_AFTER_SEC
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return DEFAULT_RETRY_AFTER_SEC
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        current = datetime.now(UTC).timestamp() if now is None else now
        seconds = max(0.0, when.timestamp() - current)
    if not (math.isfinite(seconds) and seconds >= 0):
        return DEFAULT_RETRY_AFTER_SEC
    return min(seconds, MAX_RETRY_AFTER_SEC)


def parse_created_at(value: object) -> int | None:
    """Epoch seconds from an ISO-8601 string or an epoch number; None when unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value) if math.isfinite(value) else None
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        try:
            return parse_created_at(float(value))
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def _optional_str(value: object) -> str | None:
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None


def map_account(row: object) -> ProviderSandbox | None:
    """A ProviderSandbox for an active sandbox row; None for anything else."""
    if not isinstance(row, dict):
        return None
    if row.get("account_type") != "sandbox" or row.get("state") != "active":
        return None
    name, external_id = _optional_str(row.get("name")), _optional_str(row.get("id"))
    if not name or _account_uuid(external_id) is None:
        return None  # no account to delete later: never leased
    assert external_id is not None
    return ProviderSandbox(
        sandbox_id=_optional_str(row.get("csp_id")) or external_id,
        name=name,
        external_id=external_id,
        sfdc_account_id=_optional_str(row.get("sfdc_account_id")),
        created_at=parse_created_at(row.get("created_at")),
    )


def _account_uuid(external_id: str | None) -> str | None:
    """The last path segment of `identity/accounts/<uuid>`; None if there is none, or
    if it is a dot segment (URL resolution would turn DELETE …/accounts/.. into a
    DELETE of the collection's parent)."""
    if not external_id:
        return None
    segment = external_id.rstrip("/").rsplit("/", 1)[-1]
    return segment if segment not in ("", ".", "..") else None


class CspProvider:
    """Provider backed by the CSP HTTP API (see app.providers.base.Provider)."""

    def __init__(
        self,
        *,
        base_url: str,
        api_token: str | SecretStr,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        failure_threshold: int = 5,
        reset_timeout_sec: float = 30.0,
        on_call: CallHook | None = None,
    ) -> None:
        token = api_token.get_secret_value() if isinstance(api_token, SecretStr) else api_token
        if not token:
            raise ValueError("CSP API token is empty")
        self._base_url = httpx.URL(base_url.rstrip("/") + "/")
        self._client = httpx.AsyncClient(
            base_url=self._base_url,
            headers={"Authorization": f"Token {token}", "Accept": "application/json"},
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            follow_redirects=False,
        )
        # httpx's read timeout bounds each read, not the answer: one that trickles in
        # could hold a call (a half-open probe, a cleanup pass) for ever.
        self._call_deadline = connect_timeout + read_timeout
        self._breaker = CircuitBreaker(failure_threshold, reset_timeout_sec)
        self._on_call = on_call

    async def list_sandboxes(self) -> list[ProviderSandbox]:
        """Every active sandbox account, across all pages; raises ProviderUnavailable
        rather than return a partial list (a missing row would mark a sandbox stale)."""
        sandboxes: list[ProviderSandbox] = []
        url: str | None = str(self._base_url.join(LIST_PATH.lstrip("/")))
        seen: set[str] = set()
        while url is not None:
            if url in seen or len(seen) >= MAX_PAGES:
                raise ProviderUnavailable("CSP list: pagination does not end")
            seen.add(url)
            rows, url = await self._list_page(url)
            sandboxes.extend(s for s in map(map_account, rows) if s is not None)
        return sandboxes

    async def _list_page(self, url: str) -> tuple[list[Any], str | None]:
        try:
            response, body = await self._send("list", "GET", url, want_json=True)
        except _CallError as exc:
            raise ProviderUnavailable(f"CSP list: {exc}") from exc
        if not response.is_success:
            raise ProviderUnavailable(f"CSP list: HTTP {response.status_code}")
        rows = body.get("results") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise ProviderUnavailable("CSP list: response has no results list")
        return rows, self._next_url(url, body.get("next"))

    def _next_url(self, current: str, raw: object) -> str | None:
        """The absolute next-page URL; refuses other origins so the token stays home."""
        if raw is None or raw == "":
            return None
        if not isinstance(raw, str):
            raise ProviderUnavailable("CSP list: malformed next link")
        target = httpx.URL(urljoin(current, raw))
        if (target.scheme, target.host, target.port) != (
            self._base_url.scheme,
            self._base_url.host,
            self._base_url.port,
        ):
            raise ProviderUnavailable("CSP list: next link points to another host")
        return str(target)

    async def delete_sandbox(self, sandbox: Sandbox) -> DeleteResult:
        """Never raises: every failure becomes an outcome the cleanup job can act on."""
        uuid = _account_uuid(sandbox.external_id)
        if uuid is None:
            return DeleteResult(DeleteOutcome.FAILED, reason="sandbox has no usable external_id")
        try:
            response, _ = await self._send("delete", "DELETE", DELETE_PATH + quote(uuid, safe=""))
        except _CallError as exc:
            return DeleteResult(DeleteOutcome.RETRY_LATER, exc.retry_after, reason=str(exc),
                                attempted=exc.outcome != "breaker_open")
        except Exception as exc:  # the protocol promises no exception from delete
            logger.exception("CSP delete of %s failed unexpectedly", sandbox.sandbox_id)
            return DeleteResult(DeleteOutcome.RETRY_LATER, reason=type(exc).__name__)
        status = response.status_code
        if response.is_success:
            return DeleteResult(DeleteOutcome.DELETED)
        if status in (404, 410):
            return DeleteResult(DeleteOutcome.ALREADY_GONE)
        # Anything else is retried with backoff until DELETION_RETRY_MAX_ATTEMPTS: a
        # revoked token (401/403), a conflict or an outage must not fail a deletion for
        # good at the first answer. Retry-After is honoured on any status; a 429
        # without one still waits DEFAULT_RETRY_AFTER_SEC.
        header = response.headers.get("Retry-After")
        retry_after = parse_retry_after(header) if header or status == 429 else None
        return DeleteResult(DeleteOutcome.RETRY_LATER, retry_after, reason=f"HTTP {status}")

    async def _send(
        self, operation: str, method: str, url: str, *, want_json: bool = False
    ) -> tuple[httpx.Response, Any]:
        """One HTTP call through the breaker, reported once to on_call. 5xx, timeouts
        and transport errors count against the breaker; any answer else is a sign of
        life. Raises _CallError when there is no usable response."""
        try:
            with self._breaker.guard() as verdict:
                try:
                    async with asyncio.timeout(self._call_deadline):
                        response = await self._client.request(method, url)
                except (httpx.HTTPError, TimeoutError) as exc:
                    timed_out = isinstance(exc, httpx.TimeoutException | TimeoutError)
                    if timed_out or isinstance(exc, httpx.TransportError):
                        verdict.failure()
                    outcome = "timeout" if timed_out else "error"
                    self._report(operation, outcome)
                    raise _CallError(outcome, f"{outcome} ({type(exc).__name__})") from exc
                if response.status_code >= 500:
                    verdict.failure()
        except BreakerOpen as exc:
            self._report(operation, "breaker_open")
            retry = exc.retry_after or PROBE_BUSY_RETRY_SEC
            raise _CallError("breaker_open", "circuit breaker open", retry) from None
        body: Any = None
        if want_json and response.is_success:
            try:
                body = response.json()
            except ValueError:
                self._report(operation, "bad_response")
                raise _CallError("bad_response", "malformed JSON body") from None
        self._report(operation, _status_outcome(response.status_code))
        return response, body

    def _report(self, operation: str, outcome: str) -> None:
        if self._on_call is None:
            return
        try:
            self._on_call(operation, outcome)
        except Exception:  # metrics must never break a provider call
            logger.exception("on_call hook failed")

    def breaker_state(self) -> str:
        return self._breaker.state().value

    async def close(self) -> None:
        await self._client.aclose()
