"""Conditional writes of sandbox rows, keeping the owner item and the index
attributes in step with the status (the redundancy the single-table layout needs).

A write that must know the current row first (to move the owner item, or to build
the availability key from the name) reads it consistently and writes on its
version counter, retrying briefly if the row moved in between.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import Any

from botocore.exceptions import ClientError

from app.domain import Sandbox, Status
from app.events import EventDraft, stamp
from app.store.dynamodb_client import DynamoClient, cancellation_codes, is_condition_failure
from app.store.dynamodb_events import event_put
from app.store.dynamodb_rows import (
    VERSION,
    Expr,
    encode_fields,
    from_item,
    index_fields,
    owner_key,
    s_value,
    sandbox_key,
    to_item,
    tombstone_key,
)
from app.store.dynamodb_schema import TTL_ATTRIBUTE

__all__ = ["DynamoWriter"]

log = logging.getLogger("broker.store.dynamodb")

_OCC_ATTEMPTS = 4
_CONFLICT_REASONS = frozenset({"ConditionalCheckFailed", "TransactionConflict"})


class _Write(Enum):
    WRITTEN = "written"
    MOVED = "moved"  # the row changed since it was read: read again
    REFUSED = "refused"  # an owner item condition failed: the change cannot apply


class DynamoWriter(DynamoClient):
    """Sandbox-row writes shared by the store's verbs; `shards` sizes the indexes."""

    def __init__(
        self,
        table_name: str,
        *,
        shards: int = 8,
        event_retention_sec: float = 30 * 86400,
        **client_options: Any,
    ) -> None:
        super().__init__(table_name, **client_options)
        self.shards = shards
        self.event_retention_sec = event_retention_sec

    async def _read(self, sandbox_id: str) -> tuple[Sandbox, int | None] | None:
        """The row and its version counter, read consistently."""
        response = await self.call("get_item", Key=sandbox_key(sandbox_id), ConsistentRead=True)
        item = response.get("Item")
        if not item:
            return None
        version = item.get(VERSION)
        return from_item(item), None if version is None else int(version["N"])

    async def _write_checked(
        self,
        sandbox_id: str,
        accept: Callable[[Sandbox], bool],
        updates: Mapping[str, Any] | None,
        event: EventDraft | None = None,
        extra: Sequence[dict[str, Any]] = (),
    ) -> Sandbox | None:
        """Read, check, write on the version read (None `updates` deletes the row),
        with the event about the row as written (or as deleted) in the same write.

        The row as written (or as deleted); None when `accept` refuses it or the
        owner item cannot follow.
        """
        for _ in range(_OCC_ATTEMPTS):
            found = await self._read(sandbox_id)
            if found is None or not accept(found[0]):
                return None
            current, version = found
            new = None if updates is None else current.evolve(**updates)
            with_event = [] if event is None else [self._event_put(event, new or current)]
            with_event.extend(extra)
            outcome = await self._write_version(current, version, updates, new, with_event)
            if outcome is _Write.WRITTEN:
                return current if new is None else new
            if outcome is _Write.REFUSED:
                return None
        return None

    async def _write_version(
        self,
        current: Sandbox,
        version: int | None,
        updates: Mapping[str, Any] | None,
        new: Sandbox | None,
        with_event: list[dict[str, Any]],
    ) -> _Write:
        sandbox_id = current.sandbox_id
        expr = Expr()
        condition = (expr.absent(VERSION) if version is None
                     else expr.compare(VERSION, "=", {"N": str(version)}))
        if updates is None or new is None:
            write = {"Delete": {"TableName": self.table_name, "Key": sandbox_key(sandbox_id),
                                "ConditionExpression": condition, **expr.params()}}
        else:
            write = self._sandbox_update(sandbox_id, updates, new.name, expr, condition)
        old_owner = current.owner if current.status is Status.ALLOCATED else None
        new_owner = new.owner if new is not None and new.status is Status.ALLOCATED else None
        if new is not None and new.status is Status.ALLOCATED and new_owner is None:
            raise ValueError("an allocated sandbox needs an owner")
        also = [*self._owner_moves(sandbox_id, old_owner, new_owner), *with_event]
        try:
            if also:
                await self.call("transact_write_items", TransactItems=[write, *also])
            else:
                kind, params = next(iter(write.items()))
                await self.call("update_item" if kind == "Update" else "delete_item", **params)
        except ClientError as exc:
            codes = cancellation_codes(exc)
            if is_condition_failure(exc):
                return _Write.MOVED
            if codes is None:
                raise
            if not codes or codes[0] in _CONFLICT_REASONS or "TransactionConflict" in codes:
                return _Write.MOVED
            return _Write.REFUSED
        return _Write.WRITTEN

    def _sandbox_update(
        self,
        sandbox_id: str,
        values: Mapping[str, Any],
        name: str | None,
        expr: Expr,
        condition: str,
    ) -> dict[str, Any]:
        """A transactable Update of sandbox fields plus the index attributes its new
        status calls for (`name` only matters when that status is available)."""
        fields = {
            **encode_fields(values),
            **index_fields(sandbox_id, Status(values["status"]), name, self.shards),
        }
        return {"Update": {
            "TableName": self.table_name,
            "Key": sandbox_key(sandbox_id),
            "UpdateExpression": expr.update(fields, bump=VERSION),
            "ConditionExpression": condition,
            **expr.params(),
        }}

    def _event_put(self, draft: EventDraft, sandbox: Sandbox) -> dict[str, Any]:
        return event_put(self.table_name, stamp(draft, sandbox), self.shards,
                         self.event_retention_sec)

    async def _add_one(self, sandbox: Sandbox, event: EventDraft | None) -> bool:
        """Put the row unless it exists, with its owner item and event, atomically."""
        expr = Expr()
        items = [{"Put": {"TableName": self.table_name, "Item": to_item(sandbox, self.shards),
                          "ConditionExpression": expr.absent("PK"), **expr.params()}}]
        tomb = Expr()  # not while a tombstone of this id is still in force
        items.append({"ConditionCheck": {
            "TableName": self.table_name, "Key": tombstone_key(sandbox.sandbox_id),
            "ConditionExpression": f"{tomb.absent('PK')} OR "
                                   + tomb.compare(TTL_ATTRIBUTE, "<=",
                                                  {"N": str(sandbox.updated_at)}),
            **tomb.params()}})
        if sandbox.status is Status.ALLOCATED and sandbox.owner is not None:
            items.append(self._owner_put(sandbox.owner, sandbox.sandbox_id))
        if event is not None:
            items.append(self._event_put(event, sandbox))
        try:
            await self.call("transact_write_items", TransactItems=items)
        except ClientError as exc:
            if is_condition_failure(exc) or cancellation_codes(exc) is not None:
                return False
            raise
        return True

    def _owner_put(self, owner: str, sandbox_id: str) -> dict[str, Any]:
        expr = Expr()
        return {"Put": {
            "TableName": self.table_name,
            "Item": {**owner_key(owner), "owner": s_value(owner),
                     "sandbox_id": s_value(sandbox_id)},
            "ConditionExpression": expr.absent("PK"),
            **expr.params(),
        }}

    async def _drop_stale_owner_item(self, owner: str, sandbox_id: str) -> bool:
        """Delete `owner`'s item pointing at `sandbox_id` if, at commit, that sandbox is
        gone or not allocated to `owner` (a restore or a manual edit left it behind).
        Left standing, it refuses every claim of that owner (OWNER_HAS_LEASE with no
        lease to replay) for ever. True if it was deleted."""
        owner_item, sandbox = Expr(), Expr()
        not_leased_to_owner = (
            f"{sandbox.absent('PK')} OR "
            f"{sandbox.compare('status', '<>', s_value(Status.ALLOCATED))} OR "
            f"{sandbox.compare('owner', '<>', s_value(owner))}")
        items = [
            {"Delete": {"TableName": self.table_name, "Key": owner_key(owner),
                        "ConditionExpression": owner_item.compare(
                            "sandbox_id", "=", s_value(sandbox_id)), **owner_item.params()}},
            {"ConditionCheck": {"TableName": self.table_name, "Key": sandbox_key(sandbox_id),
                                "ConditionExpression": not_leased_to_owner,
                                **sandbox.params()}},
        ]
        try:
            await self.call("transact_write_items", TransactItems=items)
        except ClientError as exc:
            if is_condition_failure(exc) or cancellation_codes(exc) is not None:
                return False  # it moved meanwhile: a claim or release is in charge
            raise
        log.warning("dropped a stale lease record", extra={"fields": {
            "owner": owner, "sandbox_id": sandbox_id}})
        return True

    def _owner_moves(
        self, sandbox_id: str, old: str | None, new: str | None
    ) -> list[dict[str, Any]]:
        """Transaction items moving the owner item from `old` to `new` (either None).

        A missing old owner item does not block the move (it heals a broken row); one
        pointing at another sandbox does.
        """
        if old == new:
            return []
        moves = []
        if old is not None:
            expr = Expr()
            condition = (f"{expr.absent('PK')} OR "
                         f"{expr.compare('sandbox_id', '=', s_value(sandbox_id))}")
            moves.append({"Delete": {"TableName": self.table_name, "Key": owner_key(old),
                                     "ConditionExpression": condition, **expr.params()}})
        if new is not None:
            moves.append(self._owner_put(new, sandbox_id))
        return moves

