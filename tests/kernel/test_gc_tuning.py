"""API and worker processes freeze their start-up heap and collect garbage rarely (see GC_THRESHOLDS)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from synchook.cli.processes import GC_THRESHOLDS, _freeze_startup_heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_start_up_freezes_the_heap_and_raises_the_young_threshold() -> None:
    _freeze_startup_heap()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] >= 10 * 700  # far above CPython's default, or the tuning is gone
    assert gc.get_freeze_count() > 0
