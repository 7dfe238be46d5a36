"""Invariant checks over every item of the DynamoDB table (for `sandbox-broker verify`).

Pure: takes the scanned items, returns one line per broken invariant. Beyond the
checks every backend makes, the table's own redundancy is verified: owner items
against the sandboxes they point at, and the index attributes against the status.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from app.domain import Sandbox, Status
from app.store.dynamodb_rows import OWNER_SK, SANDBOX_SK, Item, from_item
from app.store.dynamodb_schema import AVAIL_PK, AVAIL_SK, STATUS_PK

__all__ = ["integrity_problems"]


def _shard(value: str | None, prefix: str) -> int | None:
    """The shard number of an index key `<prefix>#<n>`, None if it is not one."""
    if value is None or not value.startswith(prefix + "#"):
        return None
    tail = value[len(prefix) + 1:]
    return int(tail) if tail.isdigit() else None


def _index_problems(sandbox: Sandbox, item: Item, shards: int) -> list[str]:
    sid, status = sandbox.sandbox_id, sandbox.status
    problems = []
    indexed = _shard(item.get(STATUS_PK, {}).get("S"), str(status))
    if indexed is None or indexed >= shards:
        problems.append(f"sandbox {sid!r} is missing from the {status} status index")
    in_pool = AVAIL_PK in item or AVAIL_SK in item
    if status is Status.AVAILABLE:
        pool_shard = _shard(item.get(AVAIL_PK, {}).get("S"), "AVAIL")
        if pool_shard is None or pool_shard >= shards or AVAIL_SK not in item:
            problems.append(f"sandbox {sid!r} is available but missing from the pool index")
    elif in_pool:
        problems.append(f"sandbox {sid!r} is {status} but still in the pool index")
    return problems


def integrity_problems(items: Iterable[Item], shards: int) -> list[str]:
    """Describe every broken invariant among the table's items."""
    sandboxes: dict[str, Sandbox] = {}
    owner_items: dict[str, str] = {}
    problems: list[str] = []
    for item in items:
        kind = item.get("SK", {}).get("S")
        if kind == SANDBOX_SK:
            sandbox = from_item(item)
            sandboxes[sandbox.sandbox_id] = sandbox
            problems += _index_problems(sandbox, item, shards)
        elif kind == OWNER_SK:
            owner_items[item["owner"]["S"]] = item["sandbox_id"]["S"]

    allocated = [s for s in sandboxes.values() if s.status is Status.ALLOCATED]
    per_owner = Counter(s.owner for s in allocated if s.owner is not None)
    problems += [f"owner {owner!r} holds {count} live leases"
                 for owner, count in per_owner.items() if count > 1]
    for sandbox in allocated:
        sid, owner = sandbox.sandbox_id, sandbox.owner
        if owner is None or sandbox.expires_at is None:
            problems.append(f"sandbox {sid!r} is allocated without an owner or expiry")
        elif owner_items.get(owner) != sid:
            problems.append(f"sandbox {sid!r} is allocated to {owner!r}, whose lease record "
                            f"points to {owner_items.get(owner)!r}")
    for owner, sid in owner_items.items():
        target = sandboxes.get(sid)
        if target is None or target.status is not Status.ALLOCATED or target.owner != owner:
            state = "missing" if target is None else f"{target.status} for {target.owner!r}"
            problems.append(f"lease record of owner {owner!r} points to sandbox {sid!r}, "
                            f"which is {state}")
    return problems
