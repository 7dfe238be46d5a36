"""Providers: where sandboxes really live (the CSP), or a simulation of it."""

from __future__ import annotations

from collections.abc import Callable

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


def create_provider(
    settings: Settings, on_call: Callable[[str, str], None] | None = None
) -> Provider:
    """The provider named by BROKER_PROVIDER (`on_call` counts CSP calls by outcome)."""
    if settings.broker_provider == "csp":
        from app.providers.csp import CspProvider

        return CspProvider(
            base_url=settings.csp_base_url,
            api_token=settings.csp_api_token,
            connect_timeout=settings.csp_connect_timeout_sec,
            read_timeout=settings.csp_read_timeout_sec,
            failure_threshold=settings.csp_breaker_failures,
            reset_timeout_sec=settings.csp_breaker_reset_sec,
            on_call=on_call,
        )
    return SimulatedProvider(
        settings.broker_simulated_pool_size,
        prefix=settings.simulated_name_prefix,
        latency=settings.simulated_delete_latency_sec,
        failure_rate=settings.simulated_failure_rate,
    )
