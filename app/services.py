"""The running service's parts, built once by create_app and shared by the routers."""

from __future__ import annotations

from dataclasses import dataclass

from app.allocation import Allocator
from app.config import Settings
from app.domain import Clock
from app.providers.base import Provider
from app.store.base import SandboxStore

__all__ = ["Services"]


@dataclass
class Services:
    settings: Settings
    store: SandboxStore
    provider: Provider
    allocator: Allocator
    clock: Clock
