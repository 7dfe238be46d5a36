"""Tombstones: a sandbox deleted at the provider is not re-added while its tombstone
holds, even though the provider may still list it — on every backend."""

from __future__ import annotations

import pytest

from app.domain import Status
from app.store.base import SandboxStore, Transition
from tests.conftest import make_sandboxes

pytestmark = pytest.mark.integration

NOW = 1_700_000_000


async def test_a_tombstone_blocks_add_until_it_runs_out(store: SandboxStore) -> None:
    gone, kept = make_sandboxes(2, prefix="tomb-", now=NOW)
    await store.add([gone, kept])
    for new in (Status.PENDING_DELETION, Status.DELETING):
        current = (await store.get(gone.sandbox_id)).status  # type: ignore[union-attr]
        await store.transition(Transition(gone.sandbox_id, current, new), NOW)
    assert await store.remove(gone.sandbox_id, Status.DELETING, tombstone_until=NOW + 100)
    assert await store.get(gone.sandbox_id) is None
    # Sync re-lists it within the tombstone's life: nothing comes back.
    assert await store.add([gone.evolve(updated_at=NOW + 99)]) == 0
    assert await store.get(gone.sandbox_id) is None
    # A plain removal (a stale record) leaves no tombstone: the sandbox may return.
    assert await store.remove(kept.sandbox_id, Status.AVAILABLE)
    assert await store.add([kept.evolve(updated_at=NOW + 1)]) == 1
    # Once the tombstone has run out, a provider that lists it again is believed.
    assert await store.add([gone.evolve(updated_at=NOW + 100)]) == 1
    assert (await store.get(gone.sandbox_id)).status is Status.AVAILABLE  # type: ignore[union-attr]
