"""Video output with the ffmpeg bundled in imageio-ffmpeg: options, segments, preflight.

A render streams its frames into one or more *segments*. Each segment is an independent encode
(it starts with a keyframe) written to ``<name>.part`` and renamed into place only after ffmpeg
exits successfully, so a segment on disk is always complete and playable.
:func:`dreamreel.media.join.join_segments` concatenates segments with ffmpeg's concat demuxer and
``-c copy``: no re-encoding, so joining is fast and the joined video decodes to exactly the frames
of its segments. H.264/H.265 segments are MPEG-TS (``.ts``), VP9 segments are WebM; a GIF is
re-encoded from H.264 segments with a two-pass palette. Running and probing ffmpeg lives in
:mod:`dreamreel.media.ffmpeg`. See docs/compat-output.md for the full list of choices.

Every ffmpeg failure raises :class:`~dreamreel.errors.RenderError` with the exact command and the
tail of ffmpeg's stderr; no partial file is ever left under a final name.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from dreamreel.anim.timing import lower_priority
from dreamreel.errors import RenderError
from dreamreel.fileio import replace_durably
from dreamreel.media.ffmpeg import (
    PathLike,
    _command,
    _failure,
    _part_name,
    _run,
    available_encoders,
    ffmpeg_exe,
)
from dreamreel.media.join import join_segments
from dreamreel.media.options import (
    _CODECS,
    SegmentInfo,
    VideoOptions,
    _check_size,
)

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------- segments


class SegmentWriter:
    """Streams frames into one segment file through a pipe to ffmpeg.

    ffmpeg starts at the first :meth:`write` and runs in its own process group, so Ctrl-C in a
    terminal reaches only Python and :meth:`close` can still finish the segment with every frame
    written so far. A background thread drains a bounded queue into the pipe, so ``write`` costs
    a copy of the frame unless the encoder is more than ``queue_frames`` frames behind.

    Args:
        options: the video options; frames must be ``(options.height, options.width, 3)`` uint8.
        queue_frames: frames buffered between the caller and ffmpeg.
    """

    def __init__(self, options: VideoOptions, *, queue_frames: int = 8) -> None:
        self.options = options
        self._queue_frames = max(1, queue_frames)
        self._path: Path | None = None
        self._first = 0
        self._count = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None
        self._pipe_error: BaseException | None = None
        self._cmd: list[str] = []

    @property
    def is_open(self) -> bool:
        """True between :meth:`open` and :meth:`close`/:meth:`abort`."""
        return self._path is not None

    @property
    def frame_count(self) -> int:
        """Frames written into the current segment."""
        return self._count

    @property
    def pid(self) -> int | None:
        """Process id of the running ffmpeg, if any."""
        return self._proc.pid if self._proc is not None else None

    def open(self, path: PathLike, first_frame: int) -> None:
        """Start a segment at ``path`` whose first frame has global index ``first_frame``."""
        if self.is_open:
            raise RuntimeError("SegmentWriter.open() called while a segment is open; close() it first")
        target = Path(path)
        if target.suffix != self.options.segment_suffix:
            raise ValueError(f"{self.options.codec} segments must end in {self.options.segment_suffix}, got {target}")
        _check_size(self.options)
        self._path, self._first, self._count, self._pipe_error = target, first_frame, 0, None

    def write(self, image: np.ndarray) -> None:
        """Queue one ``(H, W, 3)`` uint8 RGB frame; raise RenderError if ffmpeg has failed."""
        if self._path is None:
            raise RuntimeError("SegmentWriter.write() called before open()")
        index = self._first + self._count
        expected = (self.options.height, self.options.width, 3)
        if image.dtype != np.uint8 or image.shape != expected:
            raise RenderError(
                f"the image is {image.dtype} with shape {image.shape}, but the video needs uint8 {expected} "
                f"({self.options.width}x{self.options.height} RGB); every frame must have the video's size.",
                frame=index,
            )
        if self._proc is None:
            self._start()
        if self._pipe_error is not None:
            raise self._fail("Encoding the video")
        assert self._queue is not None
        self._queue.put(image.tobytes())
        self._count += 1

    def close(self) -> SegmentInfo:
        """Finish the segment and rename it into place; a segment with no frames writes no file."""
        if self._path is None:
            raise RuntimeError("SegmentWriter.close() called before open()")
        info = SegmentInfo(self._path, self._first, self._count)
        if self._proc is None:
            self._path = None
            return info
        self._finish_pipe()
        assert self._proc is not None
        if self._proc.wait() != 0 or self._pipe_error is not None:
            raise self._fail(f"Encoding the video segment {self._path.name}")
        tmp = _part_name(self._path)
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise self._fail(f"Encoding the video segment {self._path.name} (ffmpeg wrote no data)")
        replace_durably(tmp, self._path)
        self._cleanup(remove_part=False)
        logger.debug("segment %s: frames %d-%d", info.path.name, info.first_frame, info.end_frame - 1)
        return info

    def abort(self) -> None:
        """Stop ffmpeg and delete the unfinished segment; nothing is written."""
        if self._proc is not None:
            self._proc.kill()
            self._finish_pipe()
            self._proc.wait()
        self._cleanup(remove_part=True)

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        """Close the segment, keeping the frames written so far even when an exception is raised."""
        if not self.is_open:
            return
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except RenderError:
            logger.exception("could not finish segment %s", self._path)

    def _start(self) -> None:
        assert self._path is not None
        opts = self.options
        fps = opts.fps_fraction
        args = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{opts.width}x{opts.height}"]
        args += ["-framerate", f"{fps.numerator}/{fps.denominator}", "-i", "pipe:0", *opts.encoder_args()]
        args += [
            "-fps_mode",
            "passthrough",
            "-f",
            _CODECS[opts.codec].segment_format,
            "-y",
            str(_part_name(self._path)),
        ]
        self._cmd = _command(args)
        logger.debug("ffmpeg: %s", shlex.join(self._cmd))
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in _cleanup)
        group: dict[str, Any] = {"start_new_session": True} if os.name == "posix" else {"creationflags": 0x200}
        try:
            self._proc = subprocess.Popen(
                self._cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr, **group
            )
        except OSError as exc:
            raise _failure("Starting the video encoder", self._cmd, str(exc), None) from exc
        lower_priority(self._proc.pid)  # encoding runs behind the frame loop; it must not delay the next diffusion
        self._queue = queue.Queue(maxsize=self._queue_frames)
        self._thread = threading.Thread(target=self._pump, name="dreamreel-video-writer", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self._queue is not None and self._proc is not None and self._proc.stdin is not None
        lower_priority()
        while (item := self._queue.get()) is not None:
            if self._pipe_error is None:
                try:
                    self._proc.stdin.write(item)
                except OSError as exc:  # BrokenPipeError when ffmpeg died; keep draining
                    self._pipe_error = exc
        try:
            self._proc.stdin.close()
        except OSError as exc:
            self._pipe_error = self._pipe_error or exc

    def _finish_pipe(self) -> None:
        if self._queue is not None and self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()[-20000:].decode("utf-8", "replace")

    def _fail(self, what: str) -> RenderError:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self._finish_pipe()
        returncode = self._proc.wait() if self._proc is not None else None
        error = _failure(what, self._cmd, self._stderr_text(), returncode)
        self._cleanup(remove_part=True)
        return error

    def _cleanup(self, *, remove_part: bool) -> None:
        if remove_part and self._path is not None:
            _part_name(self._path).unlink(missing_ok=True)
        if self._stderr is not None:
            self._stderr.close()
        self._proc = self._stderr = self._queue = self._thread = self._path = None
        self._count = 0


# --------------------------------------------------------------------------------------------- preflight


@dataclass(frozen=True)
class PreflightReport:
    """The outcome of :func:`preflight`.

    Attributes:
        options: the options to render with (size rounded down to multiples of 8).
        notice: a one-line notice when the size was changed, else None.
        ffmpeg_version: ffmpeg's version line.
        estimated_bytes: disk space the video needs (segments and the joined file).
        free_bytes: free space in the target directory.
        seconds: how long the check took.
    """

    options: VideoOptions
    notice: str | None
    ffmpeg_version: str
    estimated_bytes: int
    free_bytes: int
    seconds: float


def estimate_video_bytes(options: VideoOptions, frames: int) -> int:
    """A generous estimate of one encoded copy of ``frames`` frames (animation content is noisy)."""
    codec = _CODECS[options.codec]
    reference_crf = 31 if options.codec == "vp9" else 17
    bits = codec.bits_per_pixel * 2 ** ((reference_crf - options.crf) / 6) * options.width * options.height
    per_frame = bits / 8 + (options.width * options.height if options.codec == "gif" else 0)
    return int(per_frame * frames) + 1_000_000


def _adjust_size(options: VideoOptions) -> tuple[VideoOptions, str | None]:
    width, height = (max(8, value - value % 8) for value in (options.width, options.height))
    if (width, height) == (options.width, options.height):
        return options, None
    notice = (
        f"The size {options.width}x{options.height} is not a multiple of 8 (needed by the encoder and the "
        f"models); rendering at {width}x{height}."
    )
    return dataclasses.replace(options, width=width, height=height), notice


def working_codecs() -> list[str]:
    """The dreamreel codec names whose encoder the bundled ffmpeg has."""
    encoders = available_encoders()
    return [name for name, codec in _CODECS.items() if codec.encoder in encoders]


def _check_encoder(options: VideoOptions) -> None:
    encoder = _CODECS[options.codec].encoder
    if encoder not in available_encoders():
        raise RenderError(
            f"the bundled ffmpeg ({ffmpeg_exe()}) has no {encoder} encoder, so codec {options.codec!r} cannot be "
            f"written; codecs that work here: {', '.join(working_codecs()) or 'none'}. Choose one of them in "
            "output.codec, or point IMAGEIO_FFMPEG_EXE at an ffmpeg that has the encoder."
        )


def _test_pattern(options: VideoOptions, shift: int) -> np.ndarray:
    y, x = np.mgrid[0 : options.height, 0 : options.width]
    return np.stack([(x * 7 + shift) % 256, (y * 5) % 256, ((x + y) * 3 + shift) % 256], axis=-1).astype(np.uint8)


def preflight(
    options: VideoOptions,
    directory: PathLike,
    *,
    estimated_frames: int,
    audio: PathLike | None = None,
    extra_bytes: int = 0,
) -> PreflightReport:
    """Check, before any model loads, that the video can be written at the end of the run.

    Rounds the size down to multiples of 8, checks that ffmpeg runs and has the encoder, that
    ``directory`` is writable and has room for the video (plus ``extra_bytes``, e.g. for PNGs),
    that ``audio`` has an audio stream, and encodes two frames as two segments, joins them (with
    the audio) and checks the result, then deletes everything it wrote.

    Raises:
        RenderError: ffmpeg is missing or fails, the directory is not writable or too full.
        SettingsError: an option or the audio source is wrong.
    """
    started = time.perf_counter()
    options, notice = _adjust_size(options)
    _, version, _ = _run(["-version"], "Running ffmpeg", loglevel="error")
    _check_encoder(options)
    folder = Path(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".dreamreel-write-test-"):
            pass
    except OSError as exc:
        raise RenderError(f"the output directory {folder} is not writable ({exc}); choose another one.") from exc
    needed = 2 * estimate_video_bytes(options, estimated_frames) + extra_bytes + 50_000_000
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise RenderError(
            f"the output directory {folder} has {free / 1e6:.0f} MB free, but {estimated_frames} frames of "
            f"{options.width}x{options.height} {options.codec} need about {needed / 1e6:.0f} MB (segments, the "
            "joined video and a margin); free some space or choose another directory."
        )
    _trial_encode(options, folder, audio)
    seconds = time.perf_counter() - started
    logger.debug("video preflight passed in %.2f s", seconds)
    return PreflightReport(options, notice, version.splitlines()[0], needed, free, seconds)


def _trial_encode(options: VideoOptions, folder: Path, audio: PathLike | None) -> None:
    stem = folder / f".dreamreel-preflight-{os.getpid()}"
    paths = [stem.with_name(f"{stem.name}-{i}{options.segment_suffix}") for i in range(2)]
    output = stem.with_name(stem.name + options.output_suffixes[0])
    writer = SegmentWriter(options)
    try:
        segments = []
        for index, path in enumerate(paths):
            writer.open(path, index)
            writer.write(_test_pattern(options, index))
            segments.append(writer.close())
        join_segments(segments, output, options=options, audio=audio)
    finally:
        if writer.is_open:
            writer.abort()
        for path in (*paths, output):
            path.unlink(missing_ok=True)
