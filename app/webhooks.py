"""Signed webhooks, delivered at least once from the event feed.

Each subscriber is a job: a pass reads the feed from the subscriber's checkpoint in
the store, POSTs each matching event (HMAC-SHA256 over "<timestamp>.<body>"), and
advances the checkpoint only past what got a 2xx. A failure is retried with exponential
backoff within the pass, then the pass ends and the next one resumes from the
checkpoint — so a restart resends exactly what was not acknowledged, and an event the
subscriber keeps refusing holds back what follows it (order is kept) without what
preceded it being sent again. Delivery runs in the job runner, never on the request
path: a slow or dead subscriber slows only itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import asdict

import httpx
import orjson

from app.config import Settings, WebhookSubscriber
from app.events import Event, EventType
from app.jobs.base import JobSummary
from app.jobs.runner import ScheduledJob
from app.store.base import SandboxStore

__all__ = ["SIGNATURE_HEADER", "WebhookJob", "sign", "webhook_jobs"]

SIGNATURE_HEADER = "X-Broker-Signature"
DeliveryObserver = Callable[[str, str], None]  # (subscriber, outcome)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value: `t=<timestamp>,v1=<hex HMAC-SHA256>`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


class WebhookJob:
    """Delivers the feed to one subscriber (see module docstring)."""

    def __init__(
        self,
        subscriber: WebhookSubscriber,
        store: SandboxStore,
        client: httpx.AsyncClient,
        *,
        max_tries: int = 4,
        backoff_base_sec: float = 0.5,
        batch: int = 100,
        observer: DeliveryObserver | None = None,
    ) -> None:
        self.name = f"webhook:{subscriber.name}"
        self._subscriber = subscriber
        self._types = frozenset(EventType(t) for t in subscriber.events) or None
        self._store = store
        self._client = client
        self._max_tries = max_tries
        self._backoff = backoff_base_sec
        self._batch = batch
        self._observer = observer

    async def run_once(self, now: int, *, force: bool = False) -> JobSummary:
        checkpoint = f"webhook:{self._subscriber.name}"
        cursor = await self._store.get_checkpoint(checkpoint)
        delivered = 0
        while True:
            page = await self._store.list_events(None, self._types, cursor, self._batch)
            for acknowledged, event in enumerate(page.events):
                if not await self._deliver_with_retries(event):
                    await self._keep_up_to(checkpoint, cursor, page.events[:acknowledged])
                    return {"delivered": delivered, "pending": 1}
                delivered += 1
            if page.events and page.next_cursor is not None:
                cursor = page.next_cursor  # acknowledged up to here
                await self._store.put_checkpoint(checkpoint, cursor)
            if len(page.events) < self._batch:
                return {"delivered": delivered, "pending": 0}

    async def _keep_up_to(
        self, checkpoint: str, cursor: str | None, acknowledged: list[Event]
    ) -> None:
        """Checkpoint just past the `acknowledged` events after `cursor`, so the next pass
        resends only the refused event and what follows it, not the page before it. The
        cursor comes from reading those events again; should the read differ (events
        purged meanwhile), the checkpoint stays: a resend, never a skip."""
        if not acknowledged:
            return
        head = await self._store.list_events(None, self._types, cursor, len(acknowledged))
        same = [e.event_id for e in head.events] == [e.event_id for e in acknowledged]
        if same and head.next_cursor is not None:
            await self._store.put_checkpoint(checkpoint, head.next_cursor)

    async def _deliver_with_retries(self, event: Event) -> bool:
        for attempt in range(self._max_tries):
            if attempt:
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
            outcome = await self._post(event)
            if self._observer is not None:
                self._observer(self._subscriber.name, outcome)
            if outcome == "delivered":
                return True
        return False

    async def _post(self, event: Event) -> str:
        body = orjson.dumps({**asdict(event), "type": str(event.type)})
        timestamp = int(time.time())
        secret = self._subscriber.secret.get_secret_value()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, timestamp, body),
            "X-Broker-Event-Id": event.event_id,
            "X-Broker-Event-Type": str(event.type),
        }
        try:
            response = await self._client.post(str(self._subscriber.url), content=body,
                                               headers=headers)
        except httpx.TimeoutException:
            return "timeout"
        except httpx.HTTPError:
            return "error"
        return "delivered" if response.is_success else f"http_{response.status_code // 100}xx"


def webhook_jobs(
    settings: Settings,
    store: SandboxStore,
    client: httpx.AsyncClient,
    observer: DeliveryObserver | None = None,
) -> list[ScheduledJob]:
    """One scheduled delivery job per configured subscriber."""
    return [
        ScheduledJob(
            WebhookJob(subscriber, store, client, max_tries=settings.webhook_max_tries_per_pass,
                       backoff_base_sec=settings.webhook_backoff_base_sec, observer=observer),
            settings.webhook_interval_sec,
        )
        for subscriber in settings.webhook_subscribers
    ]
