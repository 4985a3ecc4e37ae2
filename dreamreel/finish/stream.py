"""Finishing as a stream of chunks: upscale and interpolate segment by segment, resumable, flat memory.

A video to finish arrives as consecutive chunks of frames (:class:`Chunk`: the render's committed
segments, or slices of any video). :class:`Finisher` runs each chunk through the steps in order
(:class:`UpscaleStep`, :class:`InterpolateStep`) and encodes the result as one output segment,
committed in ``finish.json`` once it is on disk. Interpolation needs the first frame of the next
chunk (the in-betweens after a chunk's last frame lead to it), so chunk ``i`` is finished when chunk
``i + 1`` arrives, or at :meth:`Finisher.end`. Nothing but one chunk is held in memory.

Guarantees (those of the render): an output segment is named in ``finish.json`` only after it is
fsynced; after ``kill -9`` the next run skips the committed segments and redoes the rest, with the
same bits (the steps are deterministic); a chunk finished as the last one is redone when more
chunks follow after all (a render stopped and resumed). Changing the steps starts over.

Frame counts: an upscale keeps them; an interpolation by ``x`` turns ``n`` frames into
``(n - 1) * x + 1`` (each input frame, then ``x - 1`` in-betweens towards the next); at ``x`` times
the frame rate the video is as long as before, less ``(x - 1) / x`` of one input frame, so the sound
stays in sync. With slow motion the frame rate is divided by ``slow_motion``: the video is longer.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

from dreamreel.errors import RenderError
from dreamreel.fileio import atomic_write_text
from dreamreel.finish.upscale import ImageUpscaler, target_size
from dreamreel.generation import Image
from dreamreel.media.join import join_segments
from dreamreel.media.options import SegmentInfo, VideoOptions
from dreamreel.media.video import SegmentWriter

logger = logging.getLogger(__name__)

__all__ = ["Chunk", "Finisher", "InterpolateStep", "Interpolator", "Step", "UpscaleStep"]

MANIFEST = "finish.json"


class Interpolator(Protocol):
    """Makes in-between frames: ``sequence(frames, x)`` returns ``(n - 1) * x + 1`` frames, the inputs at
    positions ``0, x, 2x, ...`` (see :mod:`dreamreel.finish.engines`)."""

    name: str

    def sequence(self, frames: Sequence[Image], x: int) -> list[Image]: ...


class Step(Protocol):
    """One finishing step, applied to a chunk and to the first frame of the chunk after it."""

    def describe(self) -> dict[str, Any]:
        """What identifies the step's output (a changed description starts the finishing over)."""
        ...

    def size(self, width: int, height: int) -> tuple[int, int]:
        """The frame size after the step."""
        ...

    def fps(self, fps: Fraction) -> Fraction:
        """The frame rate after the step."""
        ...

    def apply(self, frames: Iterable[Image], following: Image | None) -> Iterator[Image]:
        """The chunk's frames after the step (streamed), given the frame that follows the chunk (None at the end)."""
        ...

    def following(self, image: Image) -> Image:
        """The frame that follows a chunk, after the step (what the next step's :meth:`apply` gets)."""
        ...


@dataclass(frozen=True)
class UpscaleStep:
    """Every frame upscaled by ``scale`` (a model or a plain Lanczos resize, see :mod:`dreamreel.finish.upscale`)."""

    upscaler: ImageUpscaler
    scale: float
    model_id: str = ""  # what identifies the weights (a file hash), for :meth:`describe`

    def describe(self) -> dict[str, Any]:
        return {"step": "upscale", "upscaler": self.upscaler.name, "scale": self.scale, "model": self.model_id}

    def size(self, width: int, height: int) -> tuple[int, int]:
        out_height, out_width = target_size(height, width, self.scale)
        return out_width, out_height

    def fps(self, fps: Fraction) -> Fraction:
        return fps

    def apply(self, frames: Iterable[Image], following: Image | None) -> Iterator[Image]:
        for frame in frames:
            yield self.upscaler.upscale(frame, self.scale)

    def following(self, image: Image) -> Image:
        return self.upscaler.upscale(image, self.scale)


@dataclass(frozen=True)
class InterpolateStep:
    """``x - 1`` in-betweens after every frame (the last one excepted); the frame rate times ``x / slow_motion``."""

    interpolator: Interpolator
    x: int
    slow_motion: int = 1
    model_id: str = ""
    window: int = 16  # frames per interpolator call (a call costs an ffmpeg start with minterpolate)

    def describe(self) -> dict[str, Any]:
        return {
            "step": "interpolate",
            "engine": self.interpolator.name,
            "x": self.x,
            "slow_motion": self.slow_motion,
            "model": self.model_id,
        }

    def size(self, width: int, height: int) -> tuple[int, int]:
        return width, height

    def fps(self, fps: Fraction) -> Fraction:
        return fps * self.x / self.slow_motion

    def apply(self, frames: Iterable[Image], following: Image | None) -> Iterator[Image]:
        window: list[Image] = []
        for frame in frames:
            window.append(frame)
            if len(window) > self.window:  # the window's frames, with the in-betweens towards the next one
                yield from self._run(window, keep_last=False)
                window = window[-1:]
        if following is not None:
            window.append(following)
        if window:
            yield from self._run(window, keep_last=following is None)

    def following(self, image: Image) -> Image:
        return image  # the input frames come through unchanged

    def _run(self, sequence: list[Image], *, keep_last: bool) -> list[Image]:
        if self.x == 1 or len(sequence) == 1:
            return sequence if keep_last else sequence[:-1]
        out = self.interpolator.sequence(sequence, self.x)
        expected = (len(sequence) - 1) * self.x + 1
        if len(out) != expected:
            raise RenderError(
                f"the {self.interpolator.name} interpolator returned {len(out)} frames for {len(sequence)}; "
                f"expected {expected}"
            )
        return out if keep_last else out[:-1]


@dataclass(frozen=True)
class Chunk:
    """Consecutive input frames ``first_frame .. first_frame + frame_count - 1``; ``load`` decodes them."""

    first_frame: int
    frame_count: int
    frames: Callable[[], Iterator[Image]]  # decodes the chunk's frames, in order
    first: Callable[[], Image]  # the chunk's first frame alone (the previous chunk's following frame)


@dataclass
class _Done:
    path: str
    source_first: int
    source_count: int
    first_frame: int
    frame_count: int
    with_following: bool


@dataclass
class Finisher:
    """Finishes chunks into output segments in ``folder`` and joins them (see the module docstring).

    Args:
        folder: where the output segments and ``finish.json`` go (created).
        steps: in order.
        width, height, fps: the input's frame size and rate.
        video: the output's codec options (size and frame rate are set from the steps).
    """

    folder: Path
    steps: Sequence[Step]
    width: int
    height: int
    fps: Fraction
    video: VideoOptions
    _pending: Chunk | None = field(default=None, init=False)
    _done: list[_Done] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        width, height, fps = self.width, self.height, self.fps
        for step in self.steps:
            width, height = step.size(width, height)
            fps = step.fps(fps)
        self.out_width, self.out_height, self.out_fps = width, height, fps
        self.options = VideoOptions(
            width=width,
            height=height,
            fps=float(fps),
            codec=self.video.codec,
            crf=self.video.crf,
            preset=self.video.preset,
            pix_fmt=self.video.pix_fmt,
            threads=self.video.threads,
        )
        self._load_manifest()

    # --- the manifest --------------------------------------------------------------------

    def _describe(self) -> dict[str, Any]:
        return {
            "steps": [step.describe() for step in self.steps],
            "input": {"width": self.width, "height": self.height, "fps": str(self.fps)},
            "video": {"codec": self.options.codec, "crf": self.options.crf, "preset": self.options.preset},
        }

    def _load_manifest(self) -> None:
        path = self.folder / MANIFEST
        if path.is_file():
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved.get("describe") == self._describe():
                self._done = [_Done(**entry) for entry in saved.get("segments", [])]
                return
            logger.warning("the finishing steps changed since %s was written; finishing again from the start", path)
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "segments").mkdir(exist_ok=True)
        self._commit()

    def _commit(self) -> None:
        data = {"describe": self._describe(), "segments": [vars(entry) for entry in self._done]}
        atomic_write_text(self.folder / MANIFEST, json.dumps(data, indent=1) + "\n")

    @property
    def segments(self) -> list[SegmentInfo]:
        """The committed output segments, in order."""
        return [SegmentInfo(self.folder / d.path, d.first_frame, d.frame_count) for d in self._done]

    # --- the stream ----------------------------------------------------------------------

    def add(self, chunk: Chunk) -> None:
        """The next chunk of the input: finishes the one before it (now that its following frame is known)."""
        if self._pending is not None:
            if chunk.first_frame != self._pending.first_frame + self._pending.frame_count:
                raise RenderError(
                    f"finishing expects consecutive frames; frames {self._pending.first_frame}-"
                    f"{self._pending.first_frame + self._pending.frame_count - 1} are followed by a chunk starting "
                    f"at {chunk.first_frame}"
                )
            self._finish(self._pending, chunk)
        self._pending = chunk

    def end(self) -> None:
        """No chunk follows: finish the last one."""
        if self._pending is not None:
            self._finish(self._pending, None)
            self._pending = None

    def _finish(self, chunk: Chunk, following: Chunk | None) -> None:
        index = next((i for i, d in enumerate(self._done) if d.source_first == chunk.first_frame), None)
        if index is not None:
            done = self._done[index]
            if done.source_count == chunk.frame_count and (done.with_following or following is None):
                return  # committed by an earlier run
            for stale in self._done[index:]:  # redo from here (e.g. it was the last chunk, and now is not)
                (self.folder / stale.path).unlink(missing_ok=True)
            del self._done[index:]
            self._commit()
        frames: Iterator[Image] = _counted(chunk)
        after = following.first() if following is not None else None
        for step in self.steps:
            frames = step.apply(frames, after)
            after = None if after is None else step.following(after)
        first = self._done[-1].first_frame + self._done[-1].frame_count if self._done else 0
        name = f"segments/seg_{first:09d}{self.options.segment_suffix}"
        writer = SegmentWriter(self.options)
        writer.open(self.folder / name, first)
        try:
            for frame in frames:
                writer.write(frame)
            info = writer.close()
        except BaseException:
            writer.abort()
            raise
        _fsync(info.path)
        self._done.append(
            _Done(name, chunk.first_frame, chunk.frame_count, first, info.frame_count, following is not None)
        )
        self._commit()
        logger.info("finished frames %d-%d into %s", chunk.first_frame, chunk.first_frame + chunk.frame_count - 1, name)

    def join(self, output: Path, *, audio: Path | None = None, audio_start: float = 0.0) -> Path:
        """The committed segments as one video (with ``audio`` from ``audio_start``, trimmed to the video)."""
        if not self._done:
            raise RenderError(f"nothing was finished in {self.folder}")
        return join_segments(self.segments, output, options=self.options, audio=audio, audio_start=audio_start)


def _counted(chunk: Chunk) -> Iterator[Image]:
    count = 0
    for frame in chunk.frames():
        count += 1
        yield frame
    if count != chunk.frame_count:
        raise RenderError(
            f"frames {chunk.first_frame}-{chunk.first_frame + chunk.frame_count - 1} decoded as {count} frames, "
            f"not {chunk.frame_count}"
        )


def _fsync(path: Path) -> None:
    import os

    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
