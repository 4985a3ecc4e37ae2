"""The CLI's progress bar (rich), behind the :class:`ProgressReporter` protocol."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class _SecondsPerFrame(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{1 / speed:.2f} s/frame" if speed else "- s/frame", style="progress.data.speed")


class RichProgress:
    """Frame count, seconds per frame and ETA on a console."""

    def __init__(self, console: Console, description: str = "rendering") -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _SecondsPerFrame(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._description = description
        self._task: TaskID | None = None
        self.started = 0.0

    def start(self, total: int, *, completed: int = 0) -> None:
        self.started = time.perf_counter()
        self._progress.start()
        self._task = self._progress.add_task(self._description, total=total, completed=completed)

    def advance(self, frame: int) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=frame + 1)

    def close(self) -> None:
        self._progress.stop()


class BatchProgress:
    """One progress display for a whole batch: a bar of jobs done, and the current job's frames.

    :meth:`job` gives the :class:`ProgressReporter` of one job (the renders report into it as usual).
    """

    def __init__(self, console: Console, jobs: int) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._progress.start()
        self._jobs = self._progress.add_task("jobs", total=jobs)
        self._frames: TaskID | None = None

    def job(self, name: str) -> _JobProgress:
        if self._frames is not None:
            self._progress.remove_task(self._frames)
        self._frames = self._progress.add_task(name, total=None)
        return _JobProgress(self._progress, self._frames)

    def job_done(self) -> None:
        self._progress.advance(self._jobs)

    def close(self) -> None:
        self._progress.stop()


class _JobProgress:
    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task

    def start(self, total: int, *, completed: int = 0) -> None:
        self._progress.update(self._task, total=total, completed=completed)

    def advance(self, frame: int) -> None:
        self._progress.update(self._task, completed=frame + 1)

    def close(self) -> None:
        return None
