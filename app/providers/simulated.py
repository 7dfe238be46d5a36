"""An in-memory provider for the embedded default, demos and load tests."""

from __future__ import annotations

import asyncio
import random

from app.domain import Sandbox
from app.providers.base import DeleteOutcome, DeleteResult, ProviderSandbox

__all__ = ["SimulatedProvider"]


class SimulatedProvider:
    """A pool of `size` sandboxes named `<prefix>0001`…; deletions take `latency`
    seconds and fail transiently with probability `failure_rate`."""

    def __init__(
        self,
        size: int,
        prefix: str = "lab-",
        latency: float = 0.0,
        failure_rate: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        width = max(4, len(str(size)))
        self._sandboxes = {
            f"sim-{i:0{width}d}": ProviderSandbox(
                sandbox_id=f"sim-{i:0{width}d}",
                name=f"{prefix}{i:0{width}d}",
                external_id=f"identity/accounts/sim-{i:0{width}d}",
                sfdc_account_id=f"SFDC-{i:0{width}d}",
            )
            for i in range(1, size + 1)
        }
        self._latency = latency
        self._failure_rate = failure_rate
        self._rng = rng or random.Random()

    async def list_sandboxes(self) -> list[ProviderSandbox]:
        return list(self._sandboxes.values())

    async def delete_sandbox(self, sandbox: Sandbox) -> DeleteResult:
        if self._latency:
            await asyncio.sleep(self._latency)
        if self._failure_rate and self._rng.random() < self._failure_rate:
            return DeleteResult(DeleteOutcome.RETRY_LATER, retry_after=1.0, reason="simulated")
        if self._sandboxes.pop(sandbox.sandbox_id, None) is None:
            return DeleteResult(DeleteOutcome.ALREADY_GONE)
        return DeleteResult(DeleteOutcome.DELETED)

    def breaker_state(self) -> str:
        return "closed"

    async def close(self) -> None:
        return None
