"""Garbage-collector settings for a serving process (the app's workers and the
benchmark's baseline alike, so ratios between them stay fair).

Almost everything a request creates is freed by reference counting; the cyclic
collector finds next to nothing (193 objects over 50,000 allocations, measured). But
with dozens of requests in flight a few thousand container objects are alive at any
moment, so the default young-generation threshold (700) ran a collection every ~16
requests that only walked live objects: ~6 µs per request (docs/performance.md,
seventh round). A threshold above the in-flight working set makes those collections
rare; cycles are still collected, just in bigger, rarer batches.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "settle_heap"]

YOUNG_THRESHOLD = 10_000  # container allocations (net) between young collections


def settle_heap() -> None:
    """Collect once, freeze what start-up built, then apply the serving thresholds.

    Frozen objects (modules, routes, schemas: ~85k in the app) are left out of every
    later full collection, which otherwise scanned them several times a second under
    load (25-40 ms pauses: the p99).
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
