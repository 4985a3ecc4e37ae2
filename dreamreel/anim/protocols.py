"""The small protocols the frame loop depends on: sinks, progress, stopping."""

from __future__ import annotations

from typing import Protocol

from dreamreel.generation import Image
from dreamreel.keyframes.table import FrameParams


class FrameSink(Protocol):
    """Receives every output frame, in order."""

    def write(self, image: Image, params: FrameParams) -> None:
        """Take frame ``params.frame``."""
        ...

    def close(self) -> None:
        """Finish (flush files). Called once, also after an interruption."""
        ...


class ProgressReporter(Protocol):
    """Shows progress. ``start`` once, ``advance`` per written frame, ``close`` once."""

    def start(self, total: int, *, completed: int = 0) -> None: ...

    def advance(self, frame: int) -> None: ...

    def close(self) -> None: ...


class NullProgress:
    """A reporter that shows nothing (tests, library use)."""

    def start(self, total: int, *, completed: int = 0) -> None:
        return None

    def advance(self, frame: int) -> None:
        return None

    def close(self) -> None:
        return None
