"""The listing part of the SandboxStore contract (admin listing and jobs' scans), run
on every backend: pages without duplicates or skips, filters, prefixes, cursors."""

from __future__ import annotations

import pytest

from app.domain import InvalidInput, Sandbox, Status
from app.store.base import SandboxFilter, SandboxStore, Transition
from app.store.cursor import CursorCodec
from tests.contract.test_store_contract import NOW, claimed, ids, make

pytestmark = pytest.mark.integration


async def collect(store: SandboxStore, where: SandboxFilter, limit: int,
                  cursor: str | None = None) -> list[Sandbox]:
    """Every page of a listing (from `cursor`), checking that only the last one is short."""
    items: list[Sandbox] = []
    while True:
        page = await store.list(where, limit, cursor)
        assert len(page.items) <= limit
        items += page.items
        if page.next_cursor is None:
            return items
        assert len(page.items) == limit
        cursor = page.next_cursor


@pytest.mark.parametrize(("total", "sizes"), [
    pytest.param(25, [7, 7, 7, 4], id="25-items"),
    pytest.param(21, [7, 7, 7], id="21-items-exact-pages"),
])
async def test_list_pages_without_duplicates_or_skips(
    store: SandboxStore, total: int, sizes: list[int]
) -> None:
    pool = make(total)
    await store.add(pool)
    seen: list[str] = []
    page_sizes: list[int] = []
    cursor: str | None = None
    while True:
        page = await store.list(SandboxFilter(), 7, cursor)
        again = await store.list(SandboxFilter(), 7, cursor)
        assert again == page  # a cursor is a stable position
        seen += [s.sandbox_id for s in page.items]
        page_sizes.append(len(page.items))
        cursor = page.next_cursor
        if cursor is None:
            break
    assert page_sizes == sizes
    assert len(seen) == len(set(seen)) == total and set(seen) == ids(pool)


async def test_list_resumes_after_the_last_row_is_removed(store: SandboxStore) -> None:
    pool = make(9)
    await store.add(pool)
    first = await store.list(SandboxFilter(), 4, None)
    assert await store.remove(first.items[-1].sandbox_id, Status.AVAILABLE)
    rest = await collect(store, SandboxFilter(), 4, first.next_cursor)
    assert ids(first.items) | ids(rest) == ids(pool)
    assert len(first.items) + len(rest) == 9 and not ids(first.items) & ids(rest)


async def test_list_filters(store: SandboxStore) -> None:
    labs, devs = make(8), make(4, "dev-")
    await store.add(labs + devs)
    await claimed(store, labs[0], "alice", "t1")
    await claimed(store, labs[1], "bob", "t2")
    await claimed(store, devs[0], "carol", "t1")
    await store.transition(Transition(labs[2].sandbox_id, Status.AVAILABLE, Status.STALE), NOW)
    cases = [
        (SandboxFilter(status=Status.ALLOCATED), [labs[0], labs[1], devs[0]]),
        (SandboxFilter(status=Status.AVAILABLE, name_prefix="lab-"), labs[3:]),
        (SandboxFilter(name_prefix="dev-"), devs),
        (SandboxFilter(track_name="t1"), [labs[0], devs[0]]),
        (SandboxFilter(owner="bob"), [labs[1]]),
        (SandboxFilter(status=Status.STALE), [labs[2]]),
        (SandboxFilter(status=Status.DELETING), []),
        (SandboxFilter(status=Status.ALLOCATED, track_name="t1", name_prefix="lab-"), [labs[0]]),
    ]
    for where, expected in cases:
        for limit in (2, 100):
            found = await collect(store, where, limit)
            assert len(found) == len(ids(found)), where
            assert ids(found) == ids(expected), (where, limit)
    assert len(await collect(store, SandboxFilter(), 5)) == 12


async def test_list_prefix_at_the_edges_of_unicode(store: SandboxStore) -> None:
    """A prefix's range ends where its last character's successor starts: after U+D7FF
    that is U+E000 (surrogates are not characters), and U+10FFFF has none."""
    edges = make(2, "lab-\ud7ff") + make(2, "lab-\ue000") + make(2, "lab-\U0010ffff")
    await store.add(edges)
    for prefix, expected in (("lab-\ud7ff", edges[:2]), ("lab-\ue000", edges[2:4]),
                             ("lab-\U0010ffff", edges[4:]), ("lab-", edges)):
        found = await collect(store, SandboxFilter(name_prefix=prefix), 2)
        assert ids(found) == ids(expected), prefix


async def test_list_rejects_cursors_it_did_not_issue(store: SandboxStore) -> None:
    await store.add(make(5))
    cursor = (await store.list(SandboxFilter(), 2, None)).next_cursor
    assert cursor is not None
    tampered = cursor[:10] + ("A" if cursor[10] != "A" else "B") + cursor[11:]
    foreign = CursorCodec(b"someone else").encode({"after": "sbx-lab-0001"})
    for bad in (tampered, foreign, "not-a-cursor", ""):
        with pytest.raises(InvalidInput):
            await store.list(SandboxFilter(), 2, bad)


async def test_a_listing_cursor_resumes_only_the_same_listing(store: SandboxStore) -> None:
    await store.add(make(6))
    issued = (await store.list(SandboxFilter(status=Status.AVAILABLE), 2, None)).next_cursor
    assert issued is not None
    assert (await store.list(SandboxFilter(status=Status.AVAILABLE), 2, issued)).items
    for other in (SandboxFilter(), SandboxFilter(status=Status.STALE),
                  SandboxFilter(status=Status.AVAILABLE, name_prefix="lab-")):
        with pytest.raises(InvalidInput):
            await store.list(other, 2, issued)
