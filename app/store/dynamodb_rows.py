"""Item layout of the DynamoDB store: keys, shards, (de)serialisation and expressions.

Pure functions over DynamoDB's AttributeValue dicts, kept apart from the I/O in
`dynamodb.py`. A None field is stored as an absent attribute (REMOVE on update),
which is how DynamoDB conditions treat SQL NULL: `expires_at <= :x` is false.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, get_type_hints

from app.domain import Sandbox, Status
from app.store.base import SandboxFilter, Transition
from app.store.dynamodb_schema import AVAIL_PK, AVAIL_SK, STATUS_PK

__all__ = [
    "FIELDS",
    "JOB_SK",
    "OWNER_SK",
    "SANDBOX_SK",
    "VERSION",
    "WRITABLE",
    "AttributeValue",
    "Expr",
    "Item",
    "avail_pk",
    "encode_fields",
    "encode_value",
    "from_item",
    "index_fields",
    "job_key",
    "list_filter",
    "meets",
    "owner_key",
    "row_if_committed_retry",
    "s_value",
    "sandbox_key",
    "shard_of",
    "status_pk",
    "to_item",
    "tombstone_key",
]

# {"S": "x"} / {"N": "1"}: plain dicts, as boto's TypedDicts fight dynamic building.
AttributeValue = dict[str, Any]
Item = dict[str, AttributeValue]

SANDBOX_SK = "META"
OWNER_SK = "LEASE"
JOB_SK = "JOB"
VERSION = "ver"
"""Counter bumped by every sandbox write: the optimistic-concurrency token for
writes that must read the row first (owner item moves, index key rebuilds)."""

FIELDS = tuple(Sandbox.__dataclass_fields__)
WRITABLE = frozenset(FIELDS) - {"sandbox_id"}
_HINTS = get_type_hints(Sandbox)
_INT_FIELDS = frozenset(f for f in FIELDS if _HINTS[f] in (int, int | None))


def shard_of(sandbox_id: str, shards: int) -> int:
    """Stable across processes and releases (unlike hash()); spreads index writes."""
    digest = hashlib.blake2b(sandbox_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def s_value(value: str) -> AttributeValue:
    return {"S": value}


def sandbox_key(sandbox_id: str) -> Item:
    return {"PK": {"S": f"SBX#{sandbox_id}"}, "SK": {"S": SANDBOX_SK}}


def owner_key(owner: str) -> Item:
    return {"PK": {"S": f"OWNER#{owner}"}, "SK": {"S": OWNER_SK}}


def tombstone_key(sandbox_id: str) -> Item:
    """A deleted sandbox's tombstone (see SandboxStore.remove)."""
    return {"PK": {"S": f"TOMB#{sandbox_id}"}, "SK": {"S": "TOMB"}}


def job_key(job: str) -> Item:
    return {"PK": {"S": f"LEASE#{job}"}, "SK": {"S": JOB_SK}}


def avail_pk(shard: int) -> str:
    return f"AVAIL#{shard}"


def status_pk(status: Status, shard: int) -> str:
    return f"{status}#{shard}"


def encode_value(field: str, value: Any) -> AttributeValue | None:
    if value is None:
        return None
    if field in _INT_FIELDS:
        return {"N": str(int(value))}
    return {"S": str(value)}


def _decode(field: str, value: AttributeValue) -> Any:
    if field in _INT_FIELDS:
        return int(value["N"])
    return Status(value["S"]) if field == "status" else value["S"]


def encode_fields(values: Mapping[str, Any]) -> dict[str, AttributeValue | None]:
    """Sandbox fields as attributes; None means "remove the attribute"."""
    return {field: encode_value(field, value) for field, value in values.items()}


def index_fields(
    sandbox_id: str, status: Status, name: str | None, shards: int
) -> dict[str, AttributeValue | None]:
    """The index attributes a row in `status` must carry (None = must not carry).

    `name` is needed only when `status` is available (it is the availability sort key).
    """
    shard = shard_of(sandbox_id, shards)
    fields: dict[str, AttributeValue | None] = {
        STATUS_PK: {"S": status_pk(status, shard)},
        AVAIL_PK: None,
        AVAIL_SK: None,
    }
    if status is Status.AVAILABLE:
        if name is None:
            raise ValueError("the name is needed to index an available sandbox")
        fields[AVAIL_PK] = {"S": avail_pk(shard)}
        fields[AVAIL_SK] = {"S": f"{name}#{sandbox_id}"}
    return fields


def to_item(sandbox: Sandbox, shards: int, version: int = 0) -> Item:
    """The complete stored item of a sandbox, index attributes included."""
    values = {f: getattr(sandbox, f) for f in FIELDS}
    attributes = {
        **encode_fields(values),
        **index_fields(sandbox.sandbox_id, sandbox.status, sandbox.name, shards),
    }
    item = {k: v for k, v in attributes.items() if v is not None}
    return {**sandbox_key(sandbox.sandbox_id), **item, VERSION: {"N": str(version)}}


def from_item(item: Mapping[str, AttributeValue]) -> Sandbox:
    return Sandbox(**{f: _decode(f, item[f]) for f in FIELDS if f in item})


def meets(sandbox: Sandbox, change: Transition) -> bool:
    """The Transition's conditions evaluated on a row read consistently (NULL fails)."""
    if sandbox.status is not change.expected:
        return False
    if change.owner is not None and sandbox.owner != change.owner:
        return False
    expires = sandbox.expires_at
    if change.expires_at_max is not None and (expires is None or expires > change.expires_at_max):
        return False
    return change.expected_expires_at is None or expires == change.expected_expires_at


class Expr:
    """Builds expression strings with #name / :value placeholders (every attribute is
    aliased, so reserved words such as status, name and owner need no special care)."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}
        self._values: dict[str, AttributeValue] = {}

    def name(self, attribute: str) -> str:
        alias = self._names.get(attribute)
        if alias is None:
            alias = self._names[attribute] = f"#n{len(self._names)}"
        return alias

    def value(self, value: AttributeValue) -> str:
        alias = f":v{len(self._values)}"
        self._values[alias] = value
        return alias

    def compare(self, attribute: str, op: str, value: AttributeValue) -> str:
        return f"{self.name(attribute)} {op} {self.value(value)}"

    def begins_with(self, attribute: str, prefix: str) -> str:
        return f"begins_with({self.name(attribute)}, {self.value({'S': prefix})})"

    def absent(self, attribute: str) -> str:
        return f"attribute_not_exists({self.name(attribute)})"

    def update(self, sets: Mapping[str, AttributeValue | None], bump: str | None = None) -> str:
        """SET the non-None attributes, REMOVE the None ones, ADD 1 to `bump`."""
        assigns = [self.compare(a, "=", v) for a, v in sets.items() if v is not None]
        removes = [self.name(a) for a, v in sets.items() if v is None]
        clauses = []
        if assigns:
            clauses.append("SET " + ", ".join(assigns))
        if removes:
            clauses.append("REMOVE " + ", ".join(removes))
        if bump is not None:
            clauses.append(f"ADD {self.name(bump)} {self.value({'N': '1'})}")
        return " ".join(clauses)

    def params(self) -> dict[str, Any]:
        """ExpressionAttributeNames/Values, omitting empty ones (DynamoDB rejects them)."""
        params: dict[str, Any] = {}
        if self._names:
            params["ExpressionAttributeNames"] = {v: k for k, v in self._names.items()}
        if self._values:
            params["ExpressionAttributeValues"] = dict(self._values)
        return params


def list_filter(expr: Expr, where: SandboxFilter) -> str:
    """The FilterExpression for the non-key parts of a SandboxFilter ("" if none)."""
    conditions = [expr.compare(field, "=", s_value(value)) for field, value in
                  (("track_name", where.track_name), ("owner", where.owner))
                  if value is not None]
    if where.name_prefix:
        conditions.append(expr.begins_with("name", where.name_prefix))
    return " AND ".join(conditions)


def row_if_committed_retry(
    current: Mapping[str, AttributeValue] | None, updates: Mapping[str, Any]
) -> Sandbox | None:
    """The row, if a refused update was a retry of this very update that had committed
    (its answer lost, botocore retried): the row then holds every value written,
    `updated_at` included. None for a real refusal."""
    if not current:
        return None
    row = from_item(current)
    return row if all(getattr(row, field) == value for field, value in updates.items()) else None
