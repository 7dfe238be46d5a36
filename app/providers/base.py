"""The Provider contract: what the broker needs from the cloud service portal."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol, runtime_checkable

from app.domain import DomainError, Sandbox

__all__ = [
    "DeleteOutcome",
    "DeleteResult",
    "Provider",
    "ProviderSandbox",
    "ProviderUnavailable",
]


@dataclass(frozen=True, slots=True)
class ProviderSandbox:
    """A sandbox as the provider reports it."""

    sandbox_id: str
    name: str
    external_id: str | None = None
    sfdc_account_id: str | None = None
    created_at: int | None = None


class DeleteOutcome(Enum):
    DELETED = "deleted"  # the provider removed it now
    ALREADY_GONE = "already_gone"  # nothing to delete; treat as done
    RETRY_LATER = "retry_later"  # transient: try again after `retry_after`
    FAILED = "failed"  # permanent: retrying will not help


@dataclass(frozen=True, slots=True)
class DeleteResult:
    outcome: DeleteOutcome
    retry_after: float | None = None
    reason: str | None = None
    attempted: bool = True  # False when no request reached the provider (open breaker)


class ProviderUnavailable(DomainError):
    """The provider could not give a complete answer (outage, timeout, open breaker)."""

    code = "PROVIDER_UNAVAILABLE"


@runtime_checkable
class Provider(Protocol):
    """Lists and deletes sandboxes at the provider. Implementations never raise on
    delete (the outcome says what happened); `list_sandboxes` raises
    ProviderUnavailable when the answer would be incomplete."""

    async def list_sandboxes(self) -> list[ProviderSandbox]: ...

    async def delete_sandbox(self, sandbox: Sandbox) -> DeleteResult: ...

    def breaker_state(self) -> str:
        """'closed', 'open' or 'half_open' (always 'closed' without a breaker)."""

    async def close(self) -> None: ...
