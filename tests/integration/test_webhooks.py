"""Webhooks to a receiver on 127.0.0.1 that verifies signatures: retries, restarts,
and a stuck subscriber that must not slow allocation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from app.config import Settings
from app.domain import JobRunning
from app.jobs import JobSummary
from app.main import create_app
from app.webhooks import sign
from tests.conftest import ADMIN_TOKEN, owner_headers, started
from tests.fakes.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

SECRET = "webhook-secret-for-tests"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver(SECRET)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def hook_settings(make_settings: Callable[..., Settings], receiver: WebhookReceiver,
                  ) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "broker_simulated_pool_size": 2, "sync_enabled": True, "sync_interval_sec": 3600,
            "webhook_subscribers": [{"name": "ops", "url": receiver.url, "secret": SECRET,
                                     "events": ["synced", "allocated"]}],
            "webhook_interval_sec": 3600, "webhook_backoff_base_sec": 0.01,
        }
        return make_settings(**{**values, **overrides})
    return build


async def deliver(app: FastAPI) -> JobSummary:
    """Run one delivery pass now (waiting out the start-up pass if it is running)."""
    for _ in range(200):
        try:
            summary: JobSummary = await app.state.admin.runner.trigger("webhook:ops")
            return summary
        except JobRunning:
            await asyncio.sleep(0.02)
    raise AssertionError("the webhook job never became free")


async def wait_for_sync(app: FastAPI) -> None:
    for _ in range(200):
        if app.state.admin.runner.records["sync"].outcome == "ok":
            return
        await asyncio.sleep(0.02)
    raise AssertionError("start-up sync did not run")


def test_signature_format() -> None:
    assert sign("k", 1700000000, b"{}").startswith("t=1700000000,v1=")
    assert sign("k", 1, b"a") != sign("k", 1, b"b") != sign("j", 1, b"a")


async def test_failed_deliveries_are_retried_and_signed(
    hook_settings: Callable[..., Settings], receiver: WebhookReceiver
) -> None:
    app = create_app(hook_settings())
    async for client in started(app):
        await wait_for_sync(app)
        lease = (await client.post("/v1/allocate", headers=owner_headers("w1"))).json()
        receiver.fail_next = 2
        await deliver(app)
        summary = await deliver(app)
        assert summary["pending"] == 0
        assert receiver.types_for(lease["sandbox_id"]) == ["synced", "allocated"]
        assert len(receiver.accepted) == 3  # 2 synced + 1 allocated; types filtered
        assert receiver.attempts >= len(receiver.accepted) + 2  # the retries were real
        assert receiver.bad_signatures == 0
        assert len({e["event_id"] for e in receiver.accepted}) == 3


async def test_restart_resends_what_was_not_acknowledged(
    hook_settings: Callable[..., Settings], receiver: WebhookReceiver
) -> None:
    settings = hook_settings(webhook_max_tries_per_pass=2)
    receiver.fail_next = 10_000  # the subscriber is down during the first run
    first = create_app(settings)
    async for client in started(first):
        await wait_for_sync(first)
        await client.post("/v1/allocate", headers=owner_headers("w2"))
        assert (await deliver(first))["pending"] == 1
    assert receiver.accepted == []
    receiver.fail_next = 0  # it comes back while the broker restarts
    second = create_app(settings)
    async for _ in started(second):
        await deliver(second)
        assert (await deliver(second)) == {"delivered": 0, "pending": 0}
    assert sorted(e["type"] for e in receiver.accepted) == ["allocated", "synced", "synced"]


async def test_an_event_the_subscriber_refuses_holds_back_only_itself(
    hook_settings: Callable[..., Settings], receiver: WebhookReceiver
) -> None:
    """Delivery stays in order (nothing after the refused event is sent), and what was
    acknowledged before it is not sent again on every pass."""
    app = create_app(hook_settings(webhook_max_tries_per_pass=2))
    receiver.fail_next = 10_000  # nothing gets through until all three events exist
    async for client in started(app):
        await wait_for_sync(app)
        await client.post("/v1/allocate", headers=owner_headers("w3"))
        assert (await deliver(app))["pending"] == 1  # after the start-up pass, still down
        receiver.fail_next, receiver.reject_type = 0, "allocated"
        for _ in range(3):
            assert (await deliver(app))["pending"] == 1
        assert [e["type"] for e in receiver.accepted] == ["synced", "synced"]  # once each
        receiver.reject_type = None
        assert await deliver(app) == {"delivered": 1, "pending": 0}
    assert [e["type"] for e in receiver.accepted] == ["synced", "synced", "allocated"]


async def test_delivery_survives_an_admin_token_rotation(
    hook_settings: Callable[..., Settings], receiver: WebhookReceiver
) -> None:
    """Without CURSOR_SECRET the cursor key comes from the admin tokens; the stored
    checkpoint must still resume once they change (README: token rotation)."""
    first = create_app(hook_settings())
    async for client in started(first):
        await wait_for_sync(first)
        await client.post("/v1/allocate", headers=owner_headers("w4"))
        assert (await deliver(first))["pending"] == 0
    before = len(receiver.accepted)
    rotated = create_app(hook_settings(broker_admin_token=f"{ADMIN_TOKEN},{'n' * 40}"))
    async for client in started(rotated):
        await client.post("/v1/allocate", headers=owner_headers("w5"))
        assert (await deliver(rotated))["pending"] == 0
    assert [e["type"] for e in receiver.accepted[before:]] == ["allocated"]
    assert receiver.accepted[-1]["owner"] == "w5"


async def test_stuck_subscriber_does_not_slow_allocation(
    hook_settings: Callable[..., Settings], receiver: WebhookReceiver
) -> None:
    receiver.gate.clear()  # every delivery hangs until the gate opens
    app = create_app(hook_settings(webhook_interval_sec=0.05, webhook_timeout_sec=20))
    async for client in started(app):
        await wait_for_sync(app)
        for _ in range(100):  # a delivery is now stuck in flight
            if receiver.attempts or app.state.admin.runner.records.get("webhook:ops"):
                break
            await asyncio.sleep(0.02)
        answers = await asyncio.gather(*(
            client.post("/v1/allocate", headers=owner_headers(f"fast-{i}")) for i in range(2)))
        assert [r.status_code for r in answers] == [201, 201]
        assert receiver.accepted == []  # allocation finished while delivery was blocked
        receiver.gate.set()
        for _ in range(200):
            if sum(e["type"] == "allocated" for e in receiver.accepted) == 2:
                break
            await asyncio.sleep(0.02)
        assert sum(e["type"] == "allocated" for e in receiver.accepted) == 2
