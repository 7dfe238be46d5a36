"""What only the DynamoDB store promises: its call budget, no scans on request paths,
outages as StoreUnavailable with bounded retries, and a verify that sees the table's
own redundancy (owner items, index attributes) break."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from app.allocation import AllocationPolicy, AllocationRequest, Allocator
from app.domain import InvalidInput, Status, StoreUnavailable
from app.events import EventDraft, EventType
from app.store.base import ClaimOutcome, SandboxFilter, Transition
from app.store.dynamodb_client import MAX_RETRIES
from app.store.dynamodb_rows import owner_key, sandbox_key
from app.store.dynamodb_schema import AVAIL_PK
from tests.backends.dynamo import Emulator, dynamo_settings, open_dynamo_store
from tests.backends.throttle import ThrottlingProxy
from tests.contract.conftest import DYNAMO_BACKENDS
from tests.contract.test_store_contract import NOW, claimed, lease, make
from tests.support.processes import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(params=DYNAMO_BACKENDS)
def emulator(request: pytest.FixtureRequest) -> Emulator:
    found: Emulator = request.getfixturevalue(
        "moto_server" if request.param == "moto" else "dynamodb_local")
    return found


async def test_an_allocation_costs_one_query_and_one_transaction(emulator: Emulator) -> None:
    seen: list[str] = []
    settings = dynamo_settings(emulator.endpoint, ddb_availability_shards=2)
    async with open_dynamo_store(settings, on_request=seen.append) as store:
        await store.add(make(40))  # about 20 a shard: any start shard has K=5
        store.call_counts.clear()
        seen.clear()
        allocated = EventDraft(EventType.ALLOCATED, "track:t", time.time())
        result = await store.claim_available(None, 5, lease("owner-1"), allocated)
        assert result.outcome is ClaimOutcome.CLAIMED
        assert store.call_counts == Counter({"Query": 1, "TransactWriteItems": 1})
        assert seen == ["Query", "TransactWriteItems"]


async def test_request_paths_never_scan(emulator: Emulator) -> None:
    async with open_dynamo_store(dynamo_settings(emulator.endpoint)) as store:
        pool = make(6)
        await store.add(pool)
        held = await claimed(store, pool[0], "owner-1")
        await store.get_lease("owner-1")
        await store.list(SandboxFilter(status=Status.AVAILABLE, name_prefix="lab-"), 2, None)
        await store.count_by_status()
        await store.transition(Transition(held.sandbox_id, Status.ALLOCATED,
                                          Status.PENDING_DELETION, owner="owner-1"), NOW)
        await store.remove(pool[1].sandbox_id, Status.AVAILABLE)
        await store.acquire_job_lease("sync", "a", 30, NOW)
        assert store.call_counts["Scan"] == 0
        assert await store.integrity_violations() == []
        assert store.call_counts["Scan"] >= 1


async def test_a_missing_table_is_store_unavailable(emulator: Emulator) -> None:
    settings = dynamo_settings(emulator.endpoint, store_unavailable_retry_after_sec=7)
    async with open_dynamo_store(settings, create=False) as store:  # never initialised
        for operation in (store.ping, lambda: store.get("sbx-1"),
                          lambda: store.find_available(None, 5)):
            with pytest.raises(StoreUnavailable) as caught:
                await operation()
            assert caught.value.retry_after == 7
            assert caught.value.message == "the store did not answer"


async def test_a_table_without_its_indexes_is_not_ready(emulator: Emulator) -> None:
    """`init-store` not run after an upgrade that added an index: readiness fails (the
    rollout stops) rather than every allocation on the missing index."""
    async with open_dynamo_store(dynamo_settings(emulator.endpoint), create=False) as store:
        await store.call("create_table", BillingMode="PAY_PER_REQUEST",
                         KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"},
                                    {"AttributeName": "SK", "KeyType": "RANGE"}],
                         AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"}
                                               for k in ("PK", "SK")])
        try:
            with pytest.raises(StoreUnavailable):
                await store.ping()
            await store.init_schema()  # the operator runs init-store
            await store.ping()
        finally:
            await store.call("delete_table")


async def test_an_unreachable_endpoint_is_store_unavailable() -> None:
    settings = dynamo_settings(f"http://127.0.0.1:{free_port()}", store_timeout_sec=1.0)
    async with open_dynamo_store(settings, create=False) as store:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.ping()
        assert time.monotonic() - started < 10  # bounded retries and backoff


async def test_throttling_is_retried_within_bounds(dynamodb_local: Emulator) -> None:
    with ThrottlingProxy(dynamodb_local.endpoint) as proxy:
        settings = dynamo_settings(proxy.endpoint)
        async with open_dynamo_store(settings) as store:
            forwarded = proxy.forwarded
            proxy.throttle(1)
            await store.ping()  # a retry absorbs a short burst
            assert (proxy.throttled, proxy.forwarded - forwarded) == (1, 1)
            proxy.throttle(100)
            with pytest.raises(StoreUnavailable) as caught:
                await store.ping()
            # Bounded: one try plus MAX_RETRIES retries, then it gives up.
            assert proxy.throttled == 1 + (MAX_RETRIES + 1)
            assert "Throughput" not in caught.value.message
            proxy.throttle(0)
            await store.ping()


async def test_a_transition_whose_answer_was_lost_is_not_reported_as_refused(
    dynamodb_local: Emulator,
) -> None:
    """The update commits, its answer comes too late, botocore retries, and the retry
    fails its own condition: the row already holds what this call wrote, so the call
    succeeded (cleanup would otherwise skip the deletion it had just claimed)."""
    with ThrottlingProxy(dynamodb_local.endpoint) as proxy:
        async with open_dynamo_store(dynamo_settings(proxy.endpoint,
                                                     store_timeout_sec=0.5)) as store:
            (a,) = make(1)
            await store.add([a])
            await claimed(store, a, "owner-1")
            await store.transition(
                Transition(a.sandbox_id, Status.ALLOCATED, Status.PENDING_DELETION), NOW)
            proxy.delay_answers("UpdateItem", 1, 1.5)
            claim = Transition(a.sandbox_id, Status.PENDING_DELETION, Status.DELETING,
                               changes={"next_attempt_at": NOW + 300})
            moved = await store.transition(claim, NOW + 1)
            assert moved is not None and moved.status is Status.DELETING
            assert moved.next_attempt_at == NOW + 300
            # Someone else's identical-looking move is still refused: the time differs.
            again = Transition(a.sandbox_id, Status.PENDING_DELETION, Status.DELETING,
                               changes={"next_attempt_at": NOW + 300})
            assert await store.transition(again, NOW + 2) is None


async def test_verify_sees_broken_owner_items_and_indexes(emulator: Emulator) -> None:
    async with open_dynamo_store(dynamo_settings(emulator.endpoint)) as store:
        a, b, c = make(3)
        await store.add([a, b, c])
        await claimed(store, a, "owner-1")
        await store.call("delete_item", Key=owner_key("owner-1"))
        await store.call("put_item", Item={**owner_key("ghost"), "owner": {"S": "ghost"},
                                           "sandbox_id": {"S": b.sandbox_id}})
        await store.call("update_item", Key=sandbox_key(c.sandbox_id),
                         UpdateExpression="REMOVE #a", ExpressionAttributeNames={"#a": AVAIL_PK})
        problems = await store.integrity_violations()
        assert len(problems) == 3, problems
        for expected in ("'sbx-lab-0001' is allocated to 'owner-1'",
                         "owner 'ghost' points to sandbox 'sbx-lab-0002'",
                         "'sbx-lab-0003' is available but missing from the pool index"):
            assert any(expected in problem for problem in problems), (expected, problems)
        # A lease whose owner item is gone can still be ended (the row heals).
        released = await store.transition(
            Transition(a.sandbox_id, Status.ALLOCATED, Status.PENDING_DELETION), NOW)
        assert released is not None and released.status is Status.PENDING_DELETION


async def test_a_stale_lease_record_does_not_lock_its_owner_out(emulator: Emulator) -> None:
    async with open_dynamo_store(dynamo_settings(emulator.endpoint)) as store:
        a, b, c = make(3)
        await store.add([a, b, c])
        await claimed(store, a, "owner-1")
        # A restore (or a hand edit) left a lease record pointing at a free sandbox.
        await store.call("put_item", Item={**owner_key("ghost"), "owner": {"S": "ghost"},
                                           "sandbox_id": {"S": b.sandbox_id}})
        allocator = Allocator(store, AllocationPolicy(3600, k_candidates=3, claim_rounds=1),
                              lambda: float(NOW))

        result = await allocator.allocate(AllocationRequest("ghost"))

        assert result.created and result.sandbox.owner == "ghost"
        assert await store.integrity_violations() == []
        # A record that is right is never dropped: owner-1 gets its lease back.
        again = await allocator.allocate(AllocationRequest("owner-1"))
        assert not again.created and again.sandbox.sandbox_id == a.sandbox_id
        assert not await store._drop_stale_owner_item("owner-1", a.sandbox_id)
        assert (await store.get_lease("owner-1")) == again.sandbox


async def test_the_feed_waits_for_events_to_settle(emulator: Emulator) -> None:
    settings = dynamo_settings(emulator.endpoint)
    async with open_dynamo_store(settings, feed_settle_sec=1.0) as store:
        (a,) = make(1)
        await store.add([a])
        await store.put_checkpoint("feed", "somewhere")
        fresh = await store.record_event(a, EventDraft(EventType.REPLAYED, "t", time.time()))
        assert (await store.list_events(None, None, None, 10)).events == []
        assert (await store.list_events(a.sandbox_id, None, None, 10)).events == [fresh]
        await asyncio.sleep(1.2)
        assert (await store.list_events(None, None, None, 10)).events == [fresh]
        assert await store.integrity_violations() == []  # events, checkpoints: not sandboxes


async def test_a_cursor_belongs_to_its_filter(emulator: Emulator) -> None:
    async with open_dynamo_store(dynamo_settings(emulator.endpoint)) as store:
        await store.add(make(5))
        cursor = (await store.list(SandboxFilter(), 2, None)).next_cursor
        with pytest.raises(InvalidInput):
            await store.list(SandboxFilter(status=Status.STALE), 2, cursor)
