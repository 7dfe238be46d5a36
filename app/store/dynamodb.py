"""DynamoDB store: many replicas, one table (layout in dynamodb_schema.py).

The claim is one TransactWriteItems: a conditional update of the sandbox
(status = available) plus a conditional put of the owner item
(attribute_not_exists), so a sandbox has at most one owner and an owner at most one
live lease, enforced by DynamoDB. In the uncontended case an allocation costs one
availability-index Query plus that one transaction, nothing more.

Transitions that move the owner item or rebuild the availability key go through
dynamodb_writes (read, then write on the row's version); every other transition is
one conditional UpdateItem (whose retry, when the first try committed but its answer was
lost, recognises its own write). Only `integrity_violations` scans.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import ClientError

from app.config import Settings
from app.domain import InvalidInput, Lease, Sandbox, Status, check_transition
from app.events import Event, EventDraft, EventPage, EventType
from app.store import dynamodb_jobs
from app.store.base import (
    ClaimOutcome,
    ClaimResult,
    Page,
    SandboxFilter,
    Transition,
    find_then_claim,
)
from app.store.cursor import CursorCodec
from app.store.dynamodb_client import cancellation_codes, gather_all, is_condition_failure
from app.store.dynamodb_events import DEFAULT_FEED_SETTLE_SEC, DynamoEventLog
from app.store.dynamodb_integrity import integrity_problems
from app.store.dynamodb_rows import (
    WRITABLE,
    Expr,
    avail_pk,
    encode_value,
    from_item,
    list_filter,
    meets,
    owner_key,
    row_if_committed_retry,
    s_value,
    sandbox_key,
    status_pk,
    tombstone_key,
)
from app.store.dynamodb_schema import (
    AVAIL_INDEX,
    AVAIL_PK,
    AVAIL_SK,
    STATUS_INDEX,
    STATUS_PK,
    TTL_ATTRIBUTE,
)
from app.store.dynamodb_writes import DynamoWriter

__all__ = ["DynamoStore"]

_STATUS_ORDER = tuple(Status)
_ADD_CONCURRENCY = 32
_FILTERED_PAGE = 100
_SPREAD = 4
_MAX_WINDOW = 400


class DynamoStore(DynamoWriter):
    """SandboxStore on one DynamoDB table (see module docstring)."""

    def __init__(
        self,
        table_name: str,
        cursors: CursorCodec,
        *,
        shards: int = 8,
        rng: random.Random | None = None,
        feed_settle_sec: float = DEFAULT_FEED_SETTLE_SEC,
        **client_options: Any,
    ) -> None:
        super().__init__(table_name, shards=shards, **client_options)
        self._cursors = cursors
        self._events = DynamoEventLog(self, cursors, shards, feed_settle_sec,
                                      self.event_retention_sec)
        self._rng = rng or random.Random()

    @classmethod
    def from_settings(
        cls, settings: Settings, cursors: CursorCodec, **options: Any
    ) -> DynamoStore:
        return cls(
            settings.ddb_table_name,
            cursors,
            shards=settings.ddb_availability_shards,
            event_retention_sec=settings.event_retention_days * 86400,
            region=settings.aws_region,
            endpoint_url=settings.ddb_endpoint_url,
            max_pool_connections=settings.ddb_max_pool_connections,
            timeout_sec=settings.store_timeout_sec,
            retry_after=settings.store_unavailable_retry_after_sec,
            **options,
        )

    # -- allocation -----------------------------------------------------------------

    async def find_available(self, name_prefix: str | None, limit: int) -> list[Sandbox]:
        """Up to `limit` from one random shard (one Query while the pool is healthy);
        when it runs short, the pool is nearly dry: ask every other shard at once.

        Each shard answers a random sample of its first `_SPREAD * limit` names, so
        concurrent callers mostly see different candidates and conflict less."""
        if limit < 1:
            return []
        start = self._rng.randrange(self.shards)
        found = await self._available_in(start, name_prefix, limit)
        if len(found) < limit and self.shards > 1:
            others = await gather_all(*(
                self._available_in((start + step) % self.shards, name_prefix, limit - len(found))
                for step in range(1, self.shards)
            ))
            found += [sandbox for batch in others for sandbox in batch]
        return found[:limit]

    async def _available_in(self, shard: int, name_prefix: str | None,
                            limit: int) -> list[Sandbox]:
        expr = Expr()
        key = expr.compare(AVAIL_PK, "=", s_value(avail_pk(shard)))
        window = min(limit * _SPREAD, _MAX_WINDOW)
        params: dict[str, Any] = {"IndexName": AVAIL_INDEX, "Limit": window}
        if name_prefix:
            key += " AND " + expr.begins_with(AVAIL_SK, name_prefix)
            if "#" in name_prefix:  # the sort key is name#id: re-check the name alone
                params["FilterExpression"] = expr.begins_with("name", name_prefix)
        params.update(KeyConditionExpression=key, **expr.params())
        found: list[Sandbox] = []
        async with contextlib.aclosing(self.pages("query", params)) as pages:
            async for page in pages:
                found.extend(from_item(item) for item in page.get("Items", []))
                if len(found) >= window:
                    break
        return self._rng.sample(found, min(limit, len(found)))

    async def claim_available(
        self, name_prefix: str | None, window: int, lease: Lease,
        event: EventDraft | None = None,
    ) -> ClaimResult:
        """One index Query, then one transaction per candidate until one sticks."""
        return await find_then_claim(self, name_prefix, window, lease, event, self._rng)

    async def claim(
        self, candidates: Sequence[Sandbox], lease: Lease, event: EventDraft | None = None
    ) -> ClaimResult:
        """One transaction per candidate, in order, until one sticks (module docstring)."""
        for conflicts, candidate in enumerate(candidates):
            claimed = candidate.evolve(
                status=Status.ALLOCATED, owner=lease.owner, track_name=lease.track_name,
                allocated_at=lease.allocated_at, expires_at=lease.expires_at, extensions=0,
                updated_at=lease.allocated_at,
            )
            values = {field: getattr(claimed, field) for field in (
                "status", "owner", "track_name", "allocated_at", "expires_at", "extensions",
                "updated_at",
            )}
            expr = Expr()
            condition = expr.compare("status", "=", s_value(Status.AVAILABLE))
            update = self._sandbox_update(candidate.sandbox_id, values, None, expr, condition)
            items = [update, self._owner_put(lease.owner, candidate.sandbox_id)]
            if event is not None:
                items.append(self._event_put(event, claimed))
            try:
                await self.call("transact_write_items", TransactItems=items)
            except ClientError as exc:
                codes = cancellation_codes(exc)
                if codes is None:
                    raise
                if len(codes) > 1 and codes[1] == "ConditionalCheckFailed":
                    return ClaimResult(ClaimOutcome.OWNER_HAS_LEASE, None, conflicts)
                continue  # taken by someone else, or a transaction conflict: next one
            return ClaimResult(ClaimOutcome.CLAIMED, claimed, conflicts)
        return ClaimResult(ClaimOutcome.CONFLICT, None, len(candidates))

    async def get(self, sandbox_id: str) -> Sandbox | None:
        found = await self._read(sandbox_id)
        return None if found is None else found[0]

    async def get_lease(self, owner: str) -> Sandbox | None:
        response = await self.call("get_item", Key=owner_key(owner), ConsistentRead=True)
        item = response.get("Item")
        if not item:
            return None
        sandbox_id = item["sandbox_id"]["S"]
        sandbox = await self.get(sandbox_id)
        if sandbox is None or sandbox.status is not Status.ALLOCATED or sandbox.owner != owner:
            await self._drop_stale_owner_item(owner, sandbox_id)
            return None
        return sandbox

    # -- conditional writes -------------------------------------------------------------

    async def transition(self, change: Transition, now: int) -> Sandbox | None:
        if change.new is not change.expected:
            check_transition(change.expected, change.new)
        updates = change.updates(now)
        unknown = set(updates) - WRITABLE
        if unknown:
            raise ValueError(f"not writable: {sorted(unknown)}")
        moves_lease = Status.ALLOCATED in (change.expected, change.new) and (
            change.expected is not change.new or "owner" in updates
        )
        if moves_lease or change.new is Status.AVAILABLE or change.event is not None:
            # The owner item to move, the name for the availability key, or the row
            # the event describes comes from the current row.
            return await self._write_checked(
                change.sandbox_id, lambda current: meets(current, change), updates, change.event
            )
        expr = Expr()
        conditions = [expr.compare("status", "=", s_value(change.expected))]
        for field, op, value in (("owner", "=", change.owner),
                                 ("expires_at", "<=", change.expires_at_max),
                                 ("expires_at", "=", change.expected_expires_at)):
            encoded = encode_value(field, value)
            if encoded is not None:
                conditions.append(expr.compare(field, op, encoded))
        params = self._sandbox_update(
            change.sandbox_id, updates, None, expr, " AND ".join(conditions)
        )
        try:
            response = await self.call("update_item", ReturnValues="ALL_NEW",
                                       ReturnValuesOnConditionCheckFailure="ALL_OLD",
                                       **params["Update"])
        except ClientError as exc:
            if is_condition_failure(exc):
                current = exc.response.get("Item")  # the row as it is (ALL_OLD)
                return row_if_committed_retry(
                    current if isinstance(current, dict) else None, updates)
            raise
        return from_item(response["Attributes"])

    async def add(self, sandboxes: Sequence[Sandbox], event: EventDraft | None = None) -> int:
        """Conditional puts (BatchWriteItem cannot be conditional), a chunk at a time."""
        added = 0
        for start in range(0, len(sandboxes), _ADD_CONCURRENCY):
            chunk = sandboxes[start:start + _ADD_CONCURRENCY]
            added += sum(await gather_all(*(self._add_one(s, event) for s in chunk)))
        return added

    async def remove(
        self,
        sandbox_id: str,
        expected: Status,
        event: EventDraft | None = None,
        tombstone_until: int | None = None,
    ) -> bool:
        if expected is Status.ALLOCATED or event is not None or tombstone_until is not None:
            # The owner item, the event and the tombstone go in the same transaction.
            extra = [] if tombstone_until is None else [{"Put": {
                "TableName": self.table_name,
                "Item": {**tombstone_key(sandbox_id),
                         TTL_ATTRIBUTE: {"N": str(tombstone_until)}}}}]
            removed = await self._write_checked(
                sandbox_id, lambda current: current.status is expected, None, event, extra
            )
            return removed is not None
        expr = Expr()
        try:
            await self.call(
                "delete_item", Key=sandbox_key(sandbox_id),
                ConditionExpression=expr.compare("status", "=", s_value(expected)),
                **expr.params(),
            )
        except ClientError as exc:
            if is_condition_failure(exc):
                return False
            raise
        return True

    # -- listing (last: the method named `list` shadows the builtin below it), counting,
    # -- jobs, verification ----------------------------------------------------------

    def _segments(self, status: Status | None) -> list[tuple[Status, int]]:
        statuses = _STATUS_ORDER if status is None else (status,)
        return [(s, shard) for s in statuses for shard in range(self.shards)]

    def _resume(
        self, segments: list[tuple[Status, int]], cursor: str | None, scope: str
    ) -> tuple[int, str | None]:
        """(segment index, sandbox_id to resume after) from a cursor we issued."""
        if cursor is None:
            return 0, None
        position = self._cursors.decode(cursor, scope)
        status, shard, after = position.get("st"), position.get("sh"), position.get("after")
        segment = (status, shard)
        if not isinstance(after, str) or segment not in segments:
            raise InvalidInput("cursor is not valid")
        return segments.index(segment), after

    async def count_by_status(self) -> dict[Status, int]:
        """Select=COUNT per (status, shard) of the status index, concurrently."""
        segments = self._segments(None)
        totals = await gather_all(*(self._count(status_pk(s, h)) for s, h in segments))
        counts = dict.fromkeys(Status, 0)
        for (status, _), total in zip(segments, totals, strict=True):
            counts[status] += total
        return counts

    async def _count(self, partition: str) -> int:
        expr = Expr()
        key = expr.compare(STATUS_PK, "=", s_value(partition))
        params = {"IndexName": STATUS_INDEX, "Select": "COUNT",
                  "KeyConditionExpression": key, **expr.params()}
        total = 0
        async for page in self.pages("query", params):
            total += int(page.get("Count", 0))
        return total

    async def acquire_job_lease(self, job: str, holder: str, ttl_sec: float, now: float) -> bool:
        return await dynamodb_jobs.acquire_job_lease(self, job, holder, ttl_sec, now)

    async def release_job_lease(self, job: str, holder: str) -> None:
        await dynamodb_jobs.release_job_lease(self, job, holder)

    # -- the event log (dynamodb_events.py) -----------------------------------------

    async def record_event(self, sandbox: Sandbox, event: EventDraft) -> Event:
        return await self._events.record(sandbox, event)

    async def list_events(
        self,
        sandbox_id: str | None,
        types: frozenset[EventType] | None,
        cursor: str | None,
        limit: int,
    ) -> EventPage:
        return await self._events.page(sandbox_id, types, cursor, limit)

    async def purge_events(self, before: float) -> int:
        return await self._events.purge(before)

    async def get_checkpoint(self, name: str) -> str | None:
        return await self._events.get_checkpoint(name)

    async def put_checkpoint(self, name: str, value: str) -> None:
        await self._events.put_checkpoint(name, value)

    async def integrity_violations(self) -> list[str]:
        """The only Scan: consistent, paginated, for `sandbox-broker verify`."""
        pages = self.pages("scan", {"ConsistentRead": True})
        items = [item async for page in pages for item in page.get("Items", [])]
        return integrity_problems(items, self.shards)

    async def list(self, where: SandboxFilter, limit: int, cursor: str | None) -> Page:
        """Segments (status, shard) in a fixed order, each by sandbox_id; the cursor is
        the last item returned, so a page never skips or repeats one."""
        if limit < 1:
            raise InvalidInput("limit must be at least 1")
        segments = self._segments(where.status)
        first, after = self._resume(segments, cursor, where.cursor_scope())
        found: list[tuple[int, Sandbox]] = []
        for index in range(first, len(segments)):
            if len(found) > limit:
                break
            status, shard = segments[index]
            pk = status_pk(status, shard)
            expr = Expr()
            params: dict[str, Any] = {
                "IndexName": STATUS_INDEX,
                "KeyConditionExpression": expr.compare(STATUS_PK, "=", s_value(pk)),
                "Limit": limit + 1,
            }
            filter_expression = list_filter(expr, where)
            if filter_expression:  # Limit counts items before the filter: read more
                params.update(FilterExpression=filter_expression,
                              Limit=max(limit + 1, _FILTERED_PAGE))
            params.update(expr.params())
            if index == first and after is not None:
                params["ExclusiveStartKey"] = {
                    **sandbox_key(after), STATUS_PK: s_value(pk),
                    "sandbox_id": s_value(after),
                }
            async with contextlib.aclosing(self.pages("query", params)) as pages:
                async for page in pages:
                    found.extend((index, from_item(item)) for item in page.get("Items", []))
                    if len(found) > limit:
                        break
        items = [sandbox for _, sandbox in found[:limit]]
        next_cursor = None
        if len(found) > limit:
            status, shard = segments[found[limit - 1][0]]
            next_cursor = self._cursors.encode(
                {"st": str(status), "sh": shard, "after": items[-1].sandbox_id},
                where.cursor_scope(),
            )
        return Page(items, next_cursor)
