"""The small protocols the frame loop depends on: sinks, progress, stopping."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from dreamreel.generation import Image
from dreamreel.keyframes.table import FrameParams

if TYPE_CHECKING:
    from dreamreel.anim.loop import LoopState


class FrameSink(Protocol):
    """Receives every output frame, in order, and the loop state after each cadence group."""

    def write(self, image: Image, params: FrameParams) -> None:
        """Take frame ``params.frame`` (the sink may keep ``image``; the loop does not change it)."""
        ...

    def checkpoint(self, state: LoopState) -> None:
        """The frames so far end a cadence group; ``state`` resumes after them (save it, or ignore it)."""
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
