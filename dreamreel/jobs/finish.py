"""Finishing jobs: ``dreamreel upscale`` and ``dreamreel interpolate`` on any video, run directory or PNG still.

Every check that can fail on user input (the input, the model, the numbers) runs before a model loads
or a frame is decoded. A video is finished in chunks (:mod:`dreamreel.finish.stream`) into a work folder
next to the output (``OUT.parts``), so an interrupted command continues where it stopped when it is
run again, and the folder goes once the output is written. A run directory is finished from its
committed segments. A PNG still keeps its A1111 ``parameters`` and gains A1111's upscaler fields.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from dreamreel.errors import SettingsError, check_local_path
from dreamreel.fileio import unwritable_folder
from dreamreel.finish.stream import Chunk, Finisher, Step
from dreamreel.generation import Image
from dreamreel.media.options import SegmentInfo, VideoOptions

logger = logging.getLogger(__name__)

CHUNK_FRAMES = 60
"""Input frames per output segment when finishing a plain video (a run directory keeps its segments)."""

_IMAGE_SUFFIXES = (".png",)


@dataclass(frozen=True)
class Source:
    """What is being finished: frames in chunks, their size and rate, and the sound that goes with them."""

    chunks: list[Chunk]
    width: int
    height: int
    fps: Fraction
    audio: Path | None
    audio_start: float
    video: VideoOptions  # the input's codec options, kept for the output


def open_source(path: Path, *, key: str = "INPUT", chunk_frames: int = CHUNK_FRAMES) -> Source:
    """A video file or a run directory (its committed segments) as chunks; checked, nothing decoded but a frame."""
    path = check_local_path(str(path), key=key, what="video or run directory", folder=Path(path).is_dir())
    if path.is_dir():
        return _run_directory(path, key=key)
    return _video_file(path, chunk_frames=chunk_frames)


def _run_directory(root: Path, *, key: str) -> Source:
    from dreamreel.media.rundir import RunDirectory

    if not (root / "manifest.json").is_file():
        raise SettingsError(f"{root} is a folder but not a dreamreel run directory (no manifest.json)", key=key)
    run = RunDirectory.open(root)
    segments = run.manifest.segment_infos(run.root)
    if not segments:
        raise SettingsError(f"the run in {root} has no finished video segment yet; render it first", key=key)
    options = VideoOptions(**run.manifest.options["video"]) if "video" in run.manifest.options else None
    first = segments[0]
    probe = _open(first.path)
    video = options or VideoOptions(width=probe.width, height=probe.height, fps=probe.output_fps)
    audio, audio_start = _run_audio(run)
    return Source(
        [segment_chunk(segment) for segment in segments],
        video.width,
        video.height,
        probe.output_fps_fraction,
        audio,
        audio_start,
        video,
    )


def _run_audio(run: Any) -> tuple[Path | None, float]:
    """The soundtrack the run's video was muxed with (none when it had none)."""
    video = run.root / (run.manifest.video or "")
    if run.manifest.video and video.is_file():
        from dreamreel.media.ffmpeg import probe

        if probe(video).has_audio:
            return video, 0.0
    return None, 0.0


def segment_chunk(segment: SegmentInfo) -> Chunk:
    """One committed video segment as a chunk of the input."""

    def frames() -> Iterator[Image]:
        source = _open(segment.path)
        try:
            for _, image in source:
                yield image
        finally:
            source.close()

    def first() -> Image:
        source = _open(segment.path)
        try:
            return source.frame(0)
        finally:
            source.close()

    return Chunk(segment.first_frame, segment.frame_count, frames, first)


def _video_file(path: Path, *, chunk_frames: int) -> Source:
    from dreamreel.media.video_input import audio_range

    source = _open(path)
    firsts = _open(path)  # a second stream for the chunks' first frames, so the first one never seeks back
    total = source.frame_count
    chunks = []
    for start in range(0, total, chunk_frames):
        count = min(chunk_frames, total - start)

        def frames(start: int = start, count: int = count) -> Iterator[Image]:
            for index in range(start, start + count):
                yield source.frame(index)

        def first(start: int = start) -> Image:
            return firsts.frame(start)

        chunks.append(Chunk(start, count, frames, first))
    audio = path if source.info.has_audio else None
    start_seconds = audio_range(source)[0] if audio is not None else 0.0
    video = VideoOptions(width=source.width, height=source.height, fps=source.output_fps, preset="medium")
    return Source(chunks, source.width, source.height, source.output_fps_fraction, audio, start_seconds, video)


def _open(path: Path) -> Any:
    from dreamreel.media.video_input import VideoSelection, open_video

    return open_video(path, VideoSelection(resize_mode="just_resize"))


VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm")


def check_output(out: Path, *, key: str = "--out", suffixes: tuple[str, ...] = VIDEO_SUFFIXES) -> Path:
    """An output file whose folder can be written, with a suffix the job writes."""
    out = Path(out).expanduser()
    if out.suffix.lower() not in suffixes:
        raise SettingsError(f"is {out}; give a file ending in {', '.join(suffixes)}", key=key)
    problem = unwritable_folder(out.parent)
    if problem:
        raise SettingsError(f"cannot write {out}: {problem}", key=key)
    return out


def finish_video(
    source: Source,
    steps: list[Step],
    out: Path,
    *,
    keep_audio: bool = True,
    progress: Any = None,
) -> Path:
    """Finish ``source`` through ``steps`` into ``out`` (resumable through ``OUT.parts``; removed at the end)."""
    work = out.with_name(out.name + ".parts")
    codec = "vp9" if out.suffix.lower() == ".webm" else "h264"
    video = VideoOptions(
        width=source.width, height=source.height, fps=float(source.fps), codec=codec, crf=source.video.crf,
        preset=source.video.preset if codec == "h264" else "medium",
    )  # fmt: skip
    finisher = Finisher(work, steps, source.width, source.height, source.fps, video)
    if progress is not None:
        progress.start(len(source.chunks), completed=0)
    try:
        for index, chunk in enumerate(source.chunks):
            finisher.add(chunk)
            if progress is not None and index:
                progress.advance(index - 1)
        finisher.end()
        if progress is not None:
            progress.advance(len(source.chunks) - 1)
    finally:
        if progress is not None:
            progress.close()
    audio = source.audio if keep_audio else None
    if source.audio is not None and not keep_audio:
        logger.warning("the sound of the input is left out (slow motion makes the video longer than the sound)")
    result = finisher.join(out, audio=audio, audio_start=source.audio_start)
    shutil.rmtree(work, ignore_errors=True)
    return result


def upscale_still(path: Path, upscaler: Any, scale: float, out: Path) -> Path:
    """A PNG upscaled; its A1111 ``parameters`` kept, and A1111's Extras fields for the upscale added."""
    from PIL import Image as PILImage

    from dreamreel.fileio import atomic_open
    from dreamreel.pnginfo import png_text

    with PILImage.open(path) as image:
        rgb = image.convert("RGB")
        text = dict(getattr(image, "text", {}) or {})
    import numpy as np

    upscaled = upscaler.upscale(np.array(rgb), scale)
    # A1111's Extras tab: the generation's "parameters" unchanged, the upscale in a "postprocessing" chunk
    text["postprocessing"] = f"Postprocess upscale by: {scale:g}, Postprocess upscaler: {upscaler.name}"
    with atomic_open(out) as handle:
        PILImage.fromarray(upscaled).save(handle, format="PNG", pnginfo=png_text(text), compress_level=4)
    return out


def is_still(path: Path) -> bool:
    return path.suffix.lower() in _IMAGE_SUFFIXES


class FollowingFinisher:
    """Finishes a render's segments on a thread of its own, as the render commits them.

    :meth:`segment` (called by the run directory's writer thread for every committed segment) queues
    it; the thread adds it to the :class:`~dreamreel.finish.stream.Finisher`, which finishes the
    segment before it. :meth:`close` waits for the queued work and, when the render is complete,
    finishes the last segment. An error on the thread is raised by :meth:`close`.
    """

    def __init__(self, finisher: Finisher, *, timer: Any = None) -> None:
        import queue
        import threading

        from dreamreel.anim.timing import StageTimer

        self.finisher = finisher
        self.timer = timer or StageTimer()
        self._queue: queue.Queue[SegmentInfo | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="dreamreel-finisher", daemon=True)
        self._thread.start()

    def segment(self, segment: SegmentInfo) -> None:
        self._queue.put(segment)

    def _work(self) -> None:
        from dreamreel.anim.timing import lower_priority

        lower_priority()
        while (segment := self._queue.get()) is not None:
            if self._error is not None:
                continue
            try:
                with self.timer.stage("finish"):
                    self.finisher.add(segment_chunk(segment))
            except BaseException as exc:
                self._error = exc

    def close(self, *, complete: bool) -> None:
        """Wait for the queued segments; with ``complete`` (no segment follows) finish the last one too."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        if complete:
            self.finisher.end()
