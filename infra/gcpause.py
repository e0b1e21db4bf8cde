"""How long the garbage collector stops this Python process: one recorder per process.

A full (generation 2) collection walks every tracked object, so in a process that holds many it
is a pause of tens of milliseconds during which no frame is written. ``GcPauses`` times each
collection through ``gc.callbacks`` and hands the duration to a sink (a histogram's ``observe``,
or a list in a benchmark).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

Sink = Callable[[int, float], None]
"""(generation, seconds) of one collection."""


class GcPauses:
    """Times every collection of this process while installed."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        elif self._began:
            self._sink(int(info["generation"]), time.perf_counter() - self._began)
            self._began = 0.0

    def install(self) -> GcPauses:
        if self not in gc.callbacks:
            gc.callbacks.append(self)
        return self

    def uninstall(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)
