"""The collector's pauses are timed, one observation per collection, while installed."""

from __future__ import annotations

import gc

from infra.gcpause import GcPauses


def test_each_collection_is_timed_with_its_generation_until_uninstalled() -> None:
    seen: list[tuple[int, float]] = []
    pauses = GcPauses(lambda generation, seconds: seen.append((generation, seconds))).install()
    try:
        garbage = [[i] for i in range(100_000)]  # something for the full collection to walk
        gc.collect()
        generation, seconds = seen[-1]
        assert generation == 2
        assert seconds > 0
        assert pauses.install() is pauses
        assert gc.callbacks.count(pauses) == 1
        del garbage
    finally:
        pauses.uninstall()
    count = len(seen)
    gc.collect()
    assert len(seen) == count
    assert pauses not in gc.callbacks
