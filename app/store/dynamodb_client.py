"""One aiobotocore DynamoDB client for a store's lifetime: pooling, bounded retries,
timeouts, error mapping, per-operation call counts, and the table's creation.

Everything the store sends goes through `DynamoClient.call`, so the mapping of
outages (throttling after retries, connection failures, timeouts, a missing table)
to StoreUnavailable lives in one place and leaks no exception text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from app.domain import StoreUnavailable
from app.store.dynamodb_rows import Item
from app.store.dynamodb_schema import TTL_ATTRIBUTE, table_definition

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient

T = TypeVar("T")

__all__ = [
    "MAX_RETRIES",
    "DynamoClient",
    "cancellation_codes",
    "error_code",
    "gather_all",
    "is_condition_failure",
]

MAX_RETRIES = 3
"""botocore 'standard' mode `max_attempts`, which counts retries: at most
MAX_RETRIES + 1 tries per call. Bounded on purpose, so an outage turns into a
prompt 503 with Retry-After instead of a hung request."""

_UNAVAILABLE_CODES = frozenset({
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "ResourceNotFoundException",  # the table is missing: not initialised, or deleted
    "InternalServerError",
    "ServiceUnavailable",
})
_UNAVAILABLE_REASONS = frozenset({
    "ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded",
})
log = logging.getLogger("broker.store.dynamodb")
_MULTI_TABLE = frozenset({"transact_write_items", "batch_write_item"})
# The only errors a caller judges itself; every other one (credentials, permissions,
# a missing table, …) means the store cannot serve: 503, never a 500.
_CALLER_CODES = frozenset({
    "ConditionalCheckFailedException", "TransactionCanceledException",
    "TransactionConflictException",
    "ResourceInUseException", "ValidationException",
})
_ACTIVE_POLL_SEC = 0.2
_ACTIVE_POLLS = 600
_EXPECTED_REASONS = frozenset({"None", "ConditionalCheckFailed", "TransactionConflict"})
_CONDITION_CODES = frozenset({"ConditionalCheckFailedException", "TransactionConflictException"})


async def gather_all(*calls: Awaitable[T]) -> list[T]:
    """asyncio.gather for fan-outs: the first failure cancels the siblings (so an outage
    does not leave dozens of calls retrying in the background) and is raised as is."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_condition_failure(exc: ClientError) -> bool:
    """The write was refused by its condition (or lost a race with a transaction)."""
    return error_code(exc) in _CONDITION_CODES


def cancellation_codes(exc: ClientError) -> list[str] | None:
    """Per-item reason codes of a transaction cancelled by conditions or conflicts;
    None for any other error (including cancellations for other reasons: a bug)."""
    if error_code(exc) != "TransactionCanceledException":
        return None
    reasons = exc.response.get("CancellationReasons") or []
    codes = [str(reason.get("Code", "None")) for reason in reasons]
    return codes if set(codes) <= _EXPECTED_REASONS else None


class DynamoClient:
    """Owns the client; subclasses speak DynamoDB through `call` and `pages`."""

    def __init__(
        self,
        table_name: str,
        *,
        region: str,
        endpoint_url: str | None = None,
        max_pool_connections: int = 64,
        timeout_sec: float = 3.0,
        retry_after: int = 5,
        on_request: Callable[[str], None] | None = None,
    ) -> None:
        self.table_name = table_name
        self._region = region
        self._endpoint_url = endpoint_url
        self._max_pool_connections = max_pool_connections
        self._timeout_sec = timeout_sec
        # A last-resort bound on one call, retries included (botocore's own timeouts
        # apply per attempt and per socket operation).
        self._deadline = timeout_sec * (MAX_RETRIES + 1) * 2 + 1
        self._retry_after = retry_after
        self._on_request = on_request
        self.call_counts: Counter[str] = Counter()
        """API calls sent, by operation name (e.g. "Query"); for tests and benchmarks."""
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: DynamoDBClient | None = None
        self._indexes_seen = False  # the table once had every index this release queries

    async def open(self) -> None:
        """Create the one pooled client. Does not touch the table (see init_schema)."""
        if self._client is not None:
            return
        session = aioboto3.Session(region_name=self._region)
        dummy = await self._emulator_key(session)
        config = AioConfig(
            max_pool_connections=self._max_pool_connections,
            retries={"mode": "standard", "max_attempts": MAX_RETRIES},
            connect_timeout=self._timeout_sec,
            read_timeout=self._timeout_sec,
        )
        stack = contextlib.AsyncExitStack()
        client = await stack.enter_async_context(
            session.client(
                "dynamodb", endpoint_url=self._endpoint_url, config=config,
                aws_access_key_id=dummy, aws_secret_access_key=dummy,
            )
        )
        client.meta.events.register("before-call.dynamodb", self._count_call)
        self._stack, self._client = stack, client

    async def _emulator_key(self, session: aioboto3.Session) -> str | None:
        """A dummy key when an endpoint (moto, DynamoDB Local, which accept any key) is
        set and botocore's chain finds no credentials; None leaves the chain alone."""
        if not self._endpoint_url:
            return None
        # The stubs declare get_credentials() synchronous; aioboto3 returns a coroutine.
        found = await cast(Awaitable[object], session.get_credentials())
        return "local" if found is None else None

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    def _count_call(self, model: Any, **_: Any) -> None:
        self.call_counts[model.name] += 1
        if self._on_request is not None:
            self._on_request(model.name)

    def unavailable(self) -> StoreUnavailable:
        return StoreUnavailable("the store did not answer", retry_after=self._retry_after)

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        """Send one API call (snake_case name); TableName is added unless the call spans
        tables (transactions, batches).

        Raises StoreUnavailable for outages; other ClientErrors (conditions,
        cancelled transactions, validation bugs) propagate for the caller to judge.
        """
        if self._client is None:
            raise RuntimeError("the DynamoDB store is not open")
        if operation not in _MULTI_TABLE:
            params["TableName"] = self.table_name
        # getattr keeps one code path for every operation; the typed per-operation
        # signatures of types-aiobotocore cannot express dynamically built kwargs.
        method = getattr(self._client, operation)
        try:
            async with asyncio.timeout(self._deadline):
                response: dict[str, Any] = await method(**params)
        except ClientError as exc:
            reasons = {str(r.get("Code")) for r in exc.response.get("CancellationReasons") or []}
            code = error_code(exc)
            if code in _UNAVAILABLE_CODES or _UNAVAILABLE_REASONS & reasons:
                raise self.unavailable() from exc
            if code not in _CALLER_CODES:
                log.warning("DynamoDB refused the call", extra={"fields": {
                    "operation": operation, "code": code}})
                raise self.unavailable() from exc
            raise
        except (BotoConnectionError, HTTPClientError, BotoCoreError, TimeoutError) as exc:
            raise self.unavailable() from exc
        return response

    async def pages(
        self, operation: str, params: Mapping[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Each response of a Query/Scan, following LastEvaluatedKey to the end.

        Use under contextlib.aclosing() when the caller may stop early.
        """
        request = dict(params)
        while True:
            response = await self.call(operation, **request)
            yield response
            last_key: Item | None = response.get("LastEvaluatedKey")
            if not last_key:
                return
            request["ExclusiveStartKey"] = last_key

    async def init_schema(self) -> dict[str, Any]:
        """Create the table, any missing index and the TTL setting; wait until ACTIVE."""
        definition = table_definition(self.table_name)
        try:
            await self.call("create_table", **definition)
        except ClientError as exc:
            if error_code(exc) != "ResourceInUseException":
                raise
        table = await self._wait_active()
        existing = {index["IndexName"] for index in table.get("GlobalSecondaryIndexes", [])}
        for index in definition["GlobalSecondaryIndexes"]:
            if index["IndexName"] not in existing:  # one index creation per UpdateTable
                await self.call(
                    "update_table",
                    AttributeDefinitions=definition["AttributeDefinitions"],
                    GlobalSecondaryIndexUpdates=[{"Create": index}],
                )
                await self._wait_active()
        self._indexes_seen = True
        ttl = {"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
        described = await self.call("describe_time_to_live")
        if described["TimeToLiveDescription"]["TimeToLiveStatus"] not in ("ENABLED", "ENABLING"):
            await self.call("update_time_to_live", TimeToLiveSpecification=ttl)
        return {**definition, "TimeToLiveSpecification": ttl}

    async def _wait_active(self) -> dict[str, Any]:
        for _ in range(_ACTIVE_POLLS):
            table: dict[str, Any] = (await self.call("describe_table"))["Table"]
            indexes = table.get("GlobalSecondaryIndexes", [])
            if table["TableStatus"] == "ACTIVE" and all(
                index.get("IndexStatus", "ACTIVE") == "ACTIVE" for index in indexes
            ):
                return table
            await asyncio.sleep(_ACTIVE_POLL_SEC)
        raise self.unavailable()

    async def ping(self) -> None:
        """A cheap data-plane read: fails on outages and on a missing table. Until the
        table has once shown every index this release queries, also a DescribeTable: a
        replica must not report ready on a table `init-store` has not brought up to date
        (each allocation would fail on the missing index)."""
        await self.call("get_item", Key={"PK": {"S": "PING"}, "SK": {"S": "PING"}})
        if self._indexes_seen:
            return
        table = (await self.call("describe_table"))["Table"]
        ready = {index["IndexName"] for index in table.get("GlobalSecondaryIndexes", [])
                 if index.get("IndexStatus", "ACTIVE") == "ACTIVE"}
        wanted = {index["IndexName"]
                  for index in table_definition(self.table_name)["GlobalSecondaryIndexes"]}
        if not wanted <= ready:
            log.error("the table lacks indexes; run `sandbox-broker init-store`",
                      extra={"fields": {"missing": sorted(wanted - ready)}})
            raise self.unavailable()
        self._indexes_seen = True
