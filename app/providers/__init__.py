"""Providers: where sandboxes really live (the CSP), or a simulation of it."""

from __future__ import annotations

from app.config import Settings
from app.providers.base import (
    DeleteOutcome,
    DeleteResult,
    Provider,
    ProviderSandbox,
    ProviderUnavailable,
)
from app.providers.simulated import SimulatedProvider

__all__ = [
    "DeleteOutcome",
    "DeleteResult",
    "Provider",
    "ProviderSandbox",
    "ProviderUnavailable",
    "SimulatedProvider",
    "create_provider",
]


def create_provider(settings: Settings) -> Provider:
    """The provider named by BROKER_PROVIDER."""
    return SimulatedProvider(
        settings.broker_simulated_pool_size,
        prefix=settings.simulated_name_prefix,
        latency=settings.simulated_delete_latency_sec,
        failure_rate=settings.simulated_failure_rate,
    )
