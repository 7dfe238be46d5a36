"""The DynamoDB table definition: the one place it lives.

`init-store` creates the table from `table_definition()`, and the Terraform module is
checked against the same data, so this stays a plain data structure (CreateTable
keyword arguments) with no behaviour.

Layout (single table):
- sandbox      PK=SBX#<id>      SK=META   every Sandbox field, plus index attributes
- owner lease  PK=OWNER#<owner> SK=LEASE  sandbox_id of the owner's live lease
- job lease    PK=LEASE#<job>   SK=JOB    holder, expires_at, TTL attribute
- event        PK=EVT#<sandbox> SK=<event_id> one sandbox's timeline, in event_id order
- checkpoint   PK=CKPT#<name>   SK=CKPT   a feed consumer's saved position
- tombstone    PK=TOMB#<id>     SK=TOMB   a deleted sandbox sync must not re-add (TTL)

Indexes (both sparse, both sharded by a stable hash of sandbox_id so that no single
index partition takes every write):
- availability: avail_pk=AVAIL#<shard>, avail_sk=<name>#<sandbox_id>; present only
  while status=available, so a name prefix is a server-side begins_with.
- by_status: status_pk=<status>#<shard>, sort key sandbox_id; admin listing, counts
  and the background jobs page through it in a stable order.
- events_feed: feed_pk=FEED#<shard>, sort key event_id (time-ordered); the event feed
  and retention merge the shards.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AVAIL_INDEX",
    "AVAIL_PK",
    "AVAIL_SK",
    "FEED_INDEX",
    "FEED_PK",
    "FEED_SK",
    "STATUS_INDEX",
    "STATUS_PK",
    "STATUS_SK",
    "TTL_ATTRIBUTE",
    "table_definition",
]

TTL_ATTRIBUTE = "purge_at"
"""Epoch seconds after which DynamoDB may delete an item: job leases and events (their
retention). Never on sandbox or owner items: an owner item must not vanish on its own,
or its allocated sandbox could not be released."""

AVAIL_INDEX = "availability"
AVAIL_PK = "avail_pk"
AVAIL_SK = "avail_sk"

STATUS_INDEX = "by_status"
STATUS_PK = "status_pk"
STATUS_SK = "sandbox_id"

FEED_INDEX = "events_feed"
FEED_PK = "feed_pk"
FEED_SK = "event_id"


def _key(hash_key: str, range_key: str) -> list[dict[str, str]]:
    return [
        {"AttributeName": hash_key, "KeyType": "HASH"},
        {"AttributeName": range_key, "KeyType": "RANGE"},
    ]


def table_definition(table_name: str) -> dict[str, Any]:
    """CreateTable keyword arguments for the broker's table."""
    return {
        "TableName": table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": _key("PK", "SK"),
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": "S"}
            for name in ("PK", "SK", AVAIL_PK, AVAIL_SK, STATUS_PK, STATUS_SK, FEED_PK, FEED_SK)
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": AVAIL_INDEX,
                "KeySchema": _key(AVAIL_PK, AVAIL_SK),
                "Projection": {"ProjectionType": "ALL"},
            },
            {
                "IndexName": STATUS_INDEX,
                "KeySchema": _key(STATUS_PK, STATUS_SK),
                "Projection": {"ProjectionType": "ALL"},
            },
            {
                "IndexName": FEED_INDEX,
                "KeySchema": _key(FEED_PK, FEED_SK),
                "Projection": {"ProjectionType": "ALL"},
            },
        ],
    }
