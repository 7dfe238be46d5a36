"""The DynamoDB event log: event items put in the same TransactWriteItems as the change
they record, per-sandbox timelines, a sharded feed, retention and checkpoints.

Order is event_id ("<epoch ms>-<process prefix><counter>"), not commit order: many
replicas share no commit sequence short of a hot counter item that every allocation
would contend on. So the feed hands out only events older than a settle window: by
then every write stamped earlier has committed (one store call is bounded well below
the window), and a cursor never skips an event that committed late. A sandbox's own
timeline is a consistent read of its partition, without the window.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from app.domain import InvalidInput, Sandbox
from app.events import Event, EventDraft, EventPage, EventType, stamp
from app.store.cursor import CursorCodec, timeline_scope
from app.store.dynamodb_client import DynamoClient, gather_all
from app.store.dynamodb_rows import Expr, Item, s_value, shard_of
from app.store.dynamodb_schema import FEED_INDEX, FEED_PK, FEED_SK, TTL_ATTRIBUTE

__all__ = ["DEFAULT_FEED_SETTLE_SEC", "DynamoEventLog", "event_put"]

DEFAULT_FEED_SETTLE_SEC = 30.0
_OPTIONAL = ("owner", "track_name", "reason")
_FILTERED_PAGE = 100
_BATCH = 25
_BATCH_TRIES = 5


def _event_item(event: Event, shards: int, retention_sec: float) -> Item:
    item: Item = {
        # DynamoDB's TTL removes the event once its retention has passed.
        TTL_ATTRIBUTE: {"N": str(int(event.at + retention_sec))},
        "PK": s_value(f"EVT#{event.sandbox_id}"), "SK": s_value(event.event_id),
        FEED_PK: s_value(f"FEED#{shard_of(event.sandbox_id, shards)}"),
        FEED_SK: s_value(event.event_id), "at": {"N": repr(float(event.at))},
        "type": s_value(str(event.type)), "sandbox_id": s_value(event.sandbox_id),
        "actor": s_value(event.actor),
    }
    for field in _OPTIONAL:
        value = getattr(event, field)
        if value is not None:
            item[field] = s_value(value)
    return item


def _from_item(item: Item) -> Event:
    optional = {field: item[field]["S"] if field in item else None for field in _OPTIONAL}
    return Event(event_id=item[FEED_SK]["S"], at=float(item["at"]["N"]),
                 type=EventType(item["type"]["S"]), sandbox_id=item["sandbox_id"]["S"],
                 actor=item["actor"]["S"], **optional)


def event_put(
    table_name: str, event: Event, shards: int, retention_sec: float
) -> dict[str, Any]:
    """The TransactWriteItems element that records `event` with a change."""
    return {"Put": {"TableName": table_name,
                    "Item": _event_item(event, shards, retention_sec)}}


def _types_filter(expr: Expr, types: frozenset[EventType] | None) -> dict[str, str]:
    if not types:
        return {}
    values = ", ".join(expr.value(s_value(str(t))) for t in sorted(types))
    return {"FilterExpression": f"{expr.name('type')} IN ({values})"}


class DynamoEventLog:
    """The event verbs of the store, over its client (see module docstring)."""

    def __init__(self, client: DynamoClient, cursors: CursorCodec, shards: int,
                 settle_sec: float = DEFAULT_FEED_SETTLE_SEC,
                 retention_sec: float = 30 * 86400) -> None:
        self._client = client
        self._cursors = cursors
        self._shards = shards
        self._settle_sec = settle_sec
        self._retention_sec = retention_sec

    async def record(self, sandbox: Sandbox, draft: EventDraft) -> Event:
        event = stamp(draft, sandbox)
        item = _event_item(event, self._shards, self._retention_sec)
        await self._client.call("put_item", Item=item)
        return event

    async def page(self, sandbox_id: str | None, types: frozenset[EventType] | None,
                   cursor: str | None, limit: int) -> EventPage:
        after, scope = "", timeline_scope(sandbox_id)
        if cursor is not None:
            position = self._cursors.decode(cursor, scope).get("evt")
            if not isinstance(position, str):
                raise InvalidInput("cursor is not valid")
            after = position
        if sandbox_id is not None:
            events = await self._timeline(sandbox_id, types, after, limit)
            if len(events) < limit:
                return EventPage(events, None)
        else:
            events = await self._feed(types, after, limit)
        last = events[-1].event_id if events else after
        return EventPage(events, self._cursors.encode({"evt": last}, scope))

    async def _timeline(self, sandbox_id: str, types: frozenset[EventType] | None,
                        after: str, limit: int) -> list[Event]:
        expr = Expr()
        key = expr.compare("PK", "=", s_value(f"EVT#{sandbox_id}"))
        if after:
            key += " AND " + expr.compare("SK", ">", s_value(after))
        params = {"KeyConditionExpression": key, "ConsistentRead": True,
                  "Limit": max(limit, _FILTERED_PAGE) if types else limit,
                  **_types_filter(expr, types), **expr.params()}
        return await self._collect(params, limit)

    async def _feed(self, types: frozenset[EventType] | None, after: str,
                    limit: int) -> list[Event]:
        """The `limit` smallest settled event_ids after `after`, merged over the shards."""
        horizon = f"{int((time.time() - self._settle_sec) * 1000):013d}"
        if after >= horizon:
            return []

        async def shard(number: int) -> list[Event]:
            expr = Expr()
            key = (f"{expr.compare(FEED_PK, '=', s_value(f'FEED#{number}'))} AND "
                   f"{expr.name(FEED_SK)} BETWEEN {expr.value(s_value(after or '0'))}"
                   f" AND {expr.value(s_value(horizon))}")
            params = {"IndexName": FEED_INDEX, "KeyConditionExpression": key,
                      "Limit": max(limit + 1, _FILTERED_PAGE) if types else limit + 1,
                      **_types_filter(expr, types), **expr.params()}
            found = await self._collect(params, limit + 1)
            return [event for event in found if event.event_id != after]

        merged = await gather_all(*(shard(n) for n in range(self._shards)))
        return sorted((e for events in merged for e in events), key=lambda e: e.event_id)[:limit]

    async def _collect(self, params: dict[str, Any], limit: int) -> list[Event]:
        events: list[Event] = []
        async for page in self._client.pages("query", params):
            events.extend(_from_item(item) for item in page.get("Items", []))
            if len(events) >= limit:
                break
        return events[:limit]

    async def purge(self, before: float) -> int:
        """Delete events with at < before (the feed index finds them, no scan)."""
        bound = f"{int(before * 1000) + 1:013d}"

        async def keys(number: int) -> list[Item]:
            expr = Expr()
            key = (f"{expr.compare(FEED_PK, '=', s_value(f'FEED#{number}'))} AND "
                   f"{expr.compare(FEED_SK, '<', s_value(bound))}")
            params = {"IndexName": FEED_INDEX, "KeyConditionExpression": key,
                      "FilterExpression": expr.compare("at", "<", {"N": repr(float(before))}),
                      "ProjectionExpression": f"{expr.name('PK')}, {expr.name('SK')}",
                      **expr.params()}
            return [item async for page in self._client.pages("query", params)
                    for item in page.get("Items", [])]

        found = await gather_all(*(keys(n) for n in range(self._shards)))
        return await self._delete_all(key for shard_keys in found for key in shard_keys)

    async def _delete_all(self, keys: Iterable[Item]) -> int:
        pending = [{"DeleteRequest": {"Key": key}} for key in keys]
        total, deleted = len(pending), 0
        for start in range(0, total, _BATCH):
            batch = pending[start:start + _BATCH]
            for attempt in range(_BATCH_TRIES):
                response = await self._client.call(
                    "batch_write_item", RequestItems={self._client.table_name: batch})
                left = response.get("UnprocessedItems", {}).get(self._client.table_name, [])
                deleted += len(batch) - len(left)
                batch = left
                if not batch:
                    break
                await asyncio.sleep(0.05 * 2**attempt)  # throttled: back off, then retry
        return deleted

    async def get_checkpoint(self, name: str) -> str | None:
        response = await self._client.call("get_item", Key=_checkpoint_key(name),
                                           ConsistentRead=True)
        item = response.get("Item")
        return None if not item else str(item["value"]["S"])

    async def put_checkpoint(self, name: str, value: str) -> None:
        await self._client.call("put_item",
                                Item={**_checkpoint_key(name), "value": s_value(value)})


def _checkpoint_key(name: str) -> Item:
    return {"PK": s_value(f"CKPT#{name}"), "SK": s_value("CKPT")}
