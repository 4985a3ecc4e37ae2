"""Where the time of a render went, by stage."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

BACKGROUND_NICENESS = 10
"""How much lower than the frame loop's the priority of work behind it is (encoding, writing, noise ahead)."""

STAGES = ("model", "warp", "depth", "color", "filters", "noise", "control", "encode", "checkpoint")

WAITING_STAGES = frozenset({"model"})
"""Stages in which the frame loop waits for the generator: the host's time for the work behind the loop."""


class StageTimer:
    """Accumulates wall time per named stage. Cheap: two ``perf_counter`` calls per measurement.

    Attributes:
        waiting: set while the loop is in one of :data:`WAITING_STAGES` (the generator runs), so
            work behind the loop (the run directory's writer thread) can do its part then instead
            of competing with the loop's own host work for the CPU.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.waiting = threading.Event()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        waiting = name in WAITING_STAGES
        if waiting:
            self.waiting.set()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start
            self.calls[name] += 1
            if waiting:
                self.waiting.clear()

    def total(self) -> float:
        return sum(self.seconds.values())

    def report(self, wall: float) -> list[str]:
        """One line per stage that took time, plus what the stages do not account for."""
        lines = []
        for name in sorted(self.seconds, key=lambda n: -self.seconds[n]):
            seconds = self.seconds[name]
            share = seconds / wall * 100 if wall > 0 else 0.0
            lines.append(f"{name:<10} {seconds:8.2f} s  {share:5.1f} %  ({self.calls[name]} calls)")
        other = max(0.0, wall - self.total())
        lines.append(f"{'other':<10} {other:8.2f} s  {other / wall * 100 if wall > 0 else 0.0:5.1f} %")
        return lines


def lower_priority(pid: int | None = None) -> None:
    """Lower the scheduling priority of the calling thread (or of process ``pid``) by :data:`BACKGROUND_NICENESS`.

    Work that runs behind the frame loop (the run directory's writer thread, noise computed ahead,
    the ffmpeg encoder) then yields the CPU to the loop on a busy machine instead of delaying the
    next diffusion. Linux only, where the niceness of a thread is its own; elsewhere (where it would
    apply to the whole process) and on any error it does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        target = threading.get_native_id() if pid is None else pid
        os.setpriority(os.PRIO_PROCESS, target, min(19, os.getpriority(os.PRIO_PROCESS, target) + BACKGROUND_NICENESS))
    except (OSError, AttributeError):
        pass
