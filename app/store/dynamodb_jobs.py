"""Job leases on the DynamoDB table: which replica runs a background job pass.

One item per job, taken with a conditional put (free, expired, or already ours) and
given up with a conditional delete (only if still ours). The item carries a TTL a day
past its expiry, so leases of jobs that no longer run do not stay forever.
"""

from __future__ import annotations

from botocore.exceptions import ClientError

from app.store.dynamodb_client import DynamoClient, is_condition_failure
from app.store.dynamodb_rows import Expr, Item, job_key, s_value
from app.store.dynamodb_schema import TTL_ATTRIBUTE

__all__ = ["acquire_job_lease", "release_job_lease"]

_JOB_PURGE_AFTER_SEC = 86_400


async def acquire_job_lease(
    client: DynamoClient, job: str, holder: str, ttl_sec: float, now: float
) -> bool:
    """True if `holder` now holds the lease on `job` until now + ttl_sec."""
    expires = now + ttl_sec
    expr = Expr()
    condition = " OR ".join((
        expr.absent("PK"),
        expr.compare("holder", "=", s_value(holder)),
        expr.compare("expires_at", "<=", {"N": repr(float(now))}),
    ))
    item: Item = {**job_key(job), "holder": s_value(holder),
                  "expires_at": {"N": repr(float(expires))},
                  TTL_ATTRIBUTE: {"N": str(int(expires) + _JOB_PURGE_AFTER_SEC)}}
    try:
        await client.call("put_item", Item=item, ConditionExpression=condition, **expr.params())
    except ClientError as exc:
        if is_condition_failure(exc):
            return False
        raise
    return True


async def release_job_lease(client: DynamoClient, job: str, holder: str) -> None:
    """Give the lease up if `holder` still has it (otherwise there is nothing to do)."""
    expr = Expr()
    try:
        await client.call("delete_item", Key=job_key(job),
                          ConditionExpression=expr.compare("holder", "=", s_value(holder)),
                          **expr.params())
    except ClientError as exc:
        if not is_condition_failure(exc):
            raise
