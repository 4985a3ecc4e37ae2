"""Where the time of a render went, by stage."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

STAGES = ("model", "warp", "depth", "color", "filters", "control", "encode")


class StageTimer:
    """Accumulates wall time per named stage. Cheap: two ``perf_counter`` calls per measurement."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start
            self.calls[name] += 1

    def total(self) -> float:
        return sum(self.seconds.values())

    def report(self, wall: float) -> list[str]:
        """One line per stage that took time, plus what the stages do not account for."""
        lines = []
        for name in sorted(self.seconds, key=lambda n: -self.seconds[n]):
            seconds = self.seconds[name]
            share = seconds / wall * 100 if wall > 0 else 0.0
            lines.append(f"{name:<8} {seconds:8.2f} s  {share:5.1f} %  ({self.calls[name]} calls)")
        other = max(0.0, wall - self.total())
        lines.append(f"{'other':<8} {other:8.2f} s  {other / wall * 100 if wall > 0 else 0.0:5.1f} %")
        return lines
