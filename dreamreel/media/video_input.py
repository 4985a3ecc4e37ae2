"""Video Input (mov2mov) frames: validated selection, exact frame identity, streaming decode.

:func:`open_video` checks the file and the selection before anything heavy and returns a
:class:`VideoSource`. Its frames are decoded on demand by the ffmpeg bundled with imageio-ffmpeg,
one process at a time, one frame in memory at a time: ``frame(i)`` continues the open stream when
``i`` is the next frame and seeks otherwise; iterating yields ``(i, frame)`` in order.

Frame identity is exact. Frame ``i`` of the selection is source frame
``first_frame + i * every_nth``, where source frame ``k`` is the frame shown at
``t0 + k / fps`` (``t0`` = the first frame's timestamp). ffmpeg selects frames by their
timestamps, prints each delivered frame's timestamp (``showinfo``), and every frame is checked
against the index it must have; a seek that lands too late (MPEG-TS and other formats without an
index) is detected and the stream is re-read from the start instead.

Variable frame rate: if a frame's timestamp is half a frame or more away from ``t0 + k / fps``,
the video is decoded as constant frame rate at its most common frame interval (ffmpeg's ``fps``
filter repeats or drops frames, so the audio stays in sync) and a one-line notice is logged.

Differences from Deforum (see docs/compat.md):
    * ``end_frame`` is the last source frame, inclusive, like ``extract_to_frame`` (-1 = to the end).
    * The stride starts at ``start_frame``: frames ``start, start + n, ...``; Deforum kept the
      frames whose absolute index is a multiple of ``extract_nth_frame``.
    * Frames are streamed, not extracted to JPEG files first.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from dreamreel.errors import RenderError, SettingsError, did_you_mean
from dreamreel.generation import Image
from dreamreel.media._video_decode import _KEY, _REENCODE, _Decoder, _scan_timestamps, _Timeline, _timeline
from dreamreel.media.ffmpeg import MediaInfo, probe

logger = logging.getLogger(__name__)

__all__ = ["RESIZE_MODES", "VideoSelection", "VideoSource", "audio_range", "open_video", "resize_frame"]

RESIZE_MODES: tuple[str, ...] = ("just_resize", "crop_and_resize", "resize_and_fill")
_READ_THROUGH = 96  # source frames: a forward jump shorter than this decodes through instead of seeking


@dataclass(frozen=True)
class VideoSelection:
    """Which frames of a video to use, and at what size.

    Give the range in frames or in seconds, not both. Frame numbers count from 0.

    Attributes:
        start_frame: first source frame.
        end_frame: last source frame, inclusive (Deforum's ``extract_to_frame``); -1 = to the end.
        start_seconds: alternative to ``start_frame``: the frame nearest to this time.
        end_seconds: alternative to ``end_frame``: frames that start before this time (exclusive).
        every_nth: keep every n-th frame from the start on (``start, start + n, ...``).
        width: output width; None keeps the source width (or its aspect when only height is set).
        height: output height; None likewise. Both are rounded down to multiples of 8.
        resize_mode: "just_resize" (stretch), "crop_and_resize" (fill and crop the overflow,
            centred) or "resize_and_fill" (fit and extend the edge pixels into the bands).
    """

    start_frame: int = 0
    end_frame: int = -1
    start_seconds: float | None = None
    end_seconds: float | None = None
    every_nth: int = 1
    width: int | None = None
    height: int | None = None
    resize_mode: str = "crop_and_resize"

    def __post_init__(self) -> None:
        def bad(key: str, message: str) -> SettingsError:
            return SettingsError(message, key=f"{_KEY}.{key}")

        if not _is_int(self.every_nth) or self.every_nth < 1:
            raise bad("every_nth_frame", f"every_nth must be a whole number >= 1; got {self.every_nth!r}.")
        if not _is_int(self.start_frame) or self.start_frame < 0:
            raise bad("from_frame", f"start_frame must be a whole number >= 0; got {self.start_frame!r}.")
        if not _is_int(self.end_frame) or (self.end_frame < self.start_frame and self.end_frame != -1):
            raise bad(
                "to_frame",
                f"end_frame must be -1 (to the end) or a frame >= start_frame ({self.start_frame}); it is the "
                f"last frame used, inclusive. Got {self.end_frame!r}.",
            )
        for name in ("start_seconds", "end_seconds"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise bad(name, f"{name} must be a number of seconds >= 0; got {value!r}.")
        if self.start_seconds is not None and self.start_frame != 0:
            raise bad("from_frame", "give the start as start_frame or as start_seconds, not both.")
        if self.end_seconds is not None and self.end_frame != -1:
            raise bad("to_frame", "give the end as end_frame or as end_seconds, not both.")
        if self.end_seconds is not None and self.end_seconds <= (self.start_seconds or 0.0):
            raise bad("end_seconds", f"end_seconds ({self.end_seconds}) must be after the start.")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 8):
                raise SettingsError(f"{name} must be a whole number >= 8; got {value!r}.", key=name)
        if self.resize_mode not in RESIZE_MODES:
            raise bad(
                "resize_mode",
                f"unknown resize mode {self.resize_mode!r}; use one of {', '.join(RESIZE_MODES)}."
                + did_you_mean(str(self.resize_mode), RESIZE_MODES),
            )


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------- resizing


def resize_frame(image: Image, width: int, height: int, mode: str = "just_resize") -> Image:
    """Resize an (H, W, 3) uint8 image to ``width`` x ``height`` with an A1111 resize mode.

    INTER_AREA when shrinking, Lanczos when enlarging. "crop_and_resize" crops the source to the
    target aspect (centred) and resizes; "resize_and_fill" fits the whole image and fills the
    bands by repeating its edge pixels (A1111 stretches the edge rows, which is the same).

    Returns:
        ``image`` itself when it already has the size, else a new array.
    """
    src_h, src_w = image.shape[:2]
    if (src_w, src_h) == (width, height):
        return image
    if mode == "crop_and_resize":
        if src_w * height > width * src_h:  # wider than the target: crop the sides
            keep = max(1, round(src_h * width / height))
            left = (src_w - keep) // 2
            image = image[:, left : left + keep]
        else:
            keep = max(1, round(src_w * height / width))
            top = (src_h - keep) // 2
            image = image[top : top + keep]
        return _resize(image, width, height)
    if mode == "resize_and_fill":
        scale = min(width / src_w, height / src_h)
        fit_w, fit_h = min(width, max(1, round(src_w * scale))), min(height, max(1, round(src_h * scale)))
        fitted = _resize(image, fit_w, fit_h)
        top, left = (height - fit_h) // 2, (width - fit_w) // 2
        bottom, right = height - fit_h - top, width - fit_w - left
        return np.asarray(cv2.copyMakeBorder(fitted, top, bottom, left, right, cv2.BORDER_REPLICATE), np.uint8)
    return _resize(image, width, height)


def _resize(image: Image, width: int, height: int) -> Image:
    src_h, src_w = image.shape[:2]
    if (src_w, src_h) == (width, height):
        return np.ascontiguousarray(image)
    shrink = width <= src_w and height <= src_h
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4)
    return np.asarray(resized, np.uint8)


def _target_size(selection: VideoSelection, src_w: int, src_h: int) -> tuple[int, int, str | None]:
    width, height = selection.width, selection.height
    if width is None and height is None:
        width, height = src_w, src_h
    elif width is None:
        width = max(8, round(src_w * height / src_h))  # type: ignore[operator]
    elif height is None:
        height = max(8, round(src_h * width / src_w))
    assert width is not None and height is not None
    rounded_w, rounded_h = max(8, width - width % 8), max(8, height - height % 8)
    notice = None
    if (rounded_w, rounded_h) != (width, height):
        notice = (
            f"The frame size {width}x{height} is not a multiple of 8 (needed by Stable Diffusion and the "
            f"encoder); video frames are resized to {rounded_w}x{rounded_h}."
        )
    return rounded_w, rounded_h, notice


# --------------------------------------------------------------------------------------------- source


class VideoSource:
    """The selected frames of a video, decoded on demand. Build it with :func:`open_video`.

    Use it as a context manager (or call :meth:`close`) so the ffmpeg process is stopped.

    Attributes:
        info: the probed file, with ``fps``/``fps_rational``/``frame_count`` as decoded: the exact
            constant rate (Matroska's 1 ms timestamps give 30, not 29.99) and, for variable-rate
            videos, the constant-rate sequence.
        selection: the selection it was opened with.
        width: frame width delivered by :meth:`frame`.
        height: frame height delivered by :meth:`frame`.
        first_frame: source frame number of selected frame 0.
        frame_count: number of selected frames.
        variable_frame_rate: True when the video is decoded as constant frame rate (see module doc).
        notices: one-line notices (size rounding, frame-rate conversion), also logged.
    """

    def __init__(
        self, info: MediaInfo, selection: VideoSelection, line: _Timeline, span: range, notices: list[str]
    ) -> None:
        self.info = info
        self.selection = selection
        self._line = line
        self._span = span
        self.width, self.height, _ = _target_size(selection, line.width, line.height)
        self.first_frame = span.start
        self.frame_count = len(span)
        self.variable_frame_rate = line.variable
        self.notices = tuple(notices)
        self._decoder: _Decoder | None = None
        self._finalizer: weakref.finalize[[], VideoSource] | None = None
        self._next = 0  # selection index the open decoder delivers next
        self._seek_ok = True
        self._last: Image | None = None

    @property
    def path(self) -> Path:
        """The video file."""
        return self.info.path

    @property
    def fps_fraction(self) -> Fraction:
        """The exact (decoded) source frame rate."""
        return self._line.fps

    @property
    def output_fps(self) -> float:
        """Frames per second that keep the selection's duration: source fps / every_nth."""
        return float(self.output_fps_fraction)

    @property
    def output_fps_fraction(self) -> Fraction:
        """:attr:`output_fps` as an exact fraction."""
        return self._line.fps / self.selection.every_nth

    @property
    def output_fps_rational(self) -> str:
        """:attr:`output_fps` as ``"num/den"``."""
        value = self.output_fps_fraction
        return f"{value.numerator}/{value.denominator}"

    def source_frame(self, index: int) -> int:
        """The source frame number of selected frame ``index``."""
        return self._span[index]

    def source_time(self, index: int) -> float:
        """Seconds from the start of the file (as players count) to selected frame ``index``."""
        line = self._line
        return float(line.t0 - line.container_start + Fraction(self._span[index]) / line.fps)

    def __len__(self) -> int:
        return self.frame_count

    def __iter__(self) -> Iterator[tuple[int, Image]]:
        """Yield ``(index, frame)`` for every selected frame, streaming."""
        for index in range(self.frame_count):
            yield index, self.frame(index)

    def frame(self, index: int) -> Image:
        """Selected frame ``index`` as a new (height, width, 3) uint8 RGB array.

        Continues the open stream when ``index`` is the next frame (or a little ahead); otherwise
        seeks, which costs a new ffmpeg process.

        Raises:
            IndexError: ``index`` is outside ``0 .. frame_count - 1``.
            RenderError: ffmpeg failed or the file ended early (damaged file).
        """
        if not _is_int(index) or not 0 <= index < self.frame_count:
            raise IndexError(f"video frame {index!r} is out of range: the selection has {self.frame_count} frames.")
        ahead = index - self._next
        if self._decoder is None or ahead < 0 or ahead * self.selection.every_nth > _READ_THROUGH:
            # a variable-rate stream starts one frame early so the last frame can be repeated at its end
            self._open(max(0, index - 1) if self._line.variable else index, seek=self._seek_ok)
        while True:
            image = self._read_next()
            if self._next - 1 == index:
                return resize_frame(image, self.width, self.height, self.selection.resize_mode)

    def _open(self, index: int, *, seek: bool) -> None:
        self.close()
        last = self._span[-1]
        self._decoder = _Decoder(self.path, self._line, self._span[index], last, self.selection.every_nth, seek=seek)
        self._next = index
        # a source dropped without close() still stops its ffmpeg when it is garbage-collected
        self._finalizer = weakref.finalize(self, self._decoder.close)

    def _read_next(self) -> Image:
        """Read the frame for selection index ``self._next`` from the open decoder and advance."""
        decoder = self._decoder
        assert decoder is not None
        expected = self._span[self._next]
        try:
            got = decoder.read()
        except BaseException:  # also Ctrl-C mid-frame: the stream position is lost
            self.close()
            raise
        if got is not None and got[0] > expected and decoder.seeked and self._seek_ok:
            logger.debug("seek in %s landed after frame %d; reading from the start", self.path, expected)
            self._seek_ok = False
            self._open(self._next, seek=False)
            return self._read_next()
        if got is None:
            if not self._line.variable or self._last is None:
                self._decoder = None
                raise decoder.failure(
                    f"the video ended before frame {expected} although it has {self._line.frame_count} frames"
                )
            image = self._last.copy()  # the constant-rate conversion ended early: repeat the last frame
        elif got[0] != expected:
            self._decoder = None
            problem = f"frame {got[0]} arrived where frame {expected} was expected"
            if got[0] > expected:
                problem = f"source frames {expected}..{got[0] - 1} could not be decoded ({problem})"
            raise decoder.failure(problem)
        else:
            image = got[1]
        self._last = image
        self._next += 1
        return image

    def close(self) -> None:
        """Stop the decoding process, if any. The source can still be read afterwards (it reopens)."""
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None
        self._last = None

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"VideoSource({str(self.path)!r}, frames={self.frame_count}, first={self.first_frame}, "
            f"every_nth={self.selection.every_nth}, size={self.width}x{self.height}, fps={self.output_fps:.4g})"
        )


# --------------------------------------------------------------------------------------------- opening


def _describe(line: _Timeline) -> str:
    seconds = line.frame_count / line.fps
    return f"{line.frame_count} frames (0..{line.frame_count - 1}), {float(seconds):.3f} s at {float(line.fps):.4g} fps"


def _frame_range(path: Path, selection: VideoSelection, line: _Timeline) -> range:
    """The selected source frames, or a SettingsError when the selection is outside the video."""
    count = line.frame_count
    first = selection.start_frame
    if selection.start_seconds is not None:
        first = round(_decimal(selection.start_seconds) * line.fps)
    last = count - 1 if selection.end_frame == -1 else selection.end_frame
    if selection.end_seconds is not None:
        last = math.ceil(_decimal(selection.end_seconds) * line.fps) - 1
    if first >= count or last >= count + (selection.end_seconds is not None):
        what = "starts" if first >= count else "ends"
        raise SettingsError(
            f"{path}: the selection {what} outside the video: it asks for frames {first}..{last}, but the video "
            f"has {_describe(line)}. Choose frames inside that range (end_frame -1 means to the end).",
            key=f"{_KEY}.{'from_frame' if first >= count else 'to_frame'}",
        )
    last = min(last, count - 1)
    if last < first:
        raise SettingsError(
            f"{path}: the selection from {selection.start_seconds} s to {selection.end_seconds} s contains no frame "
            f"of this video ({_describe(line)}); widen it.",
            key=f"{_KEY}.to_frame",
        )
    return range(first, last + 1, selection.every_nth)


def _decimal(seconds: float) -> Fraction:
    """The number as written (0.8 -> 4/5), not its binary float value (0.8000000000000000444...)."""
    return Fraction(repr(float(seconds)))


def _probe(path: Path) -> MediaInfo:
    try:
        return probe(path)
    except SettingsError as exc:
        raise SettingsError(
            f"{exc.detail} Check the video path; if the file plays elsewhere, re-encode it (for example "
            f"`{_REENCODE}`) and use the new file.",
            key=f"{_KEY}.path",
        ) from exc


def open_video(path: str | os.PathLike[str], selection: VideoSelection | None = None) -> VideoSource:
    """Validate a video and a selection, and return a streaming :class:`VideoSource`.

    Checks, before anything heavy: the file exists, is not empty, ffmpeg reads it and finds a video
    stream, its timestamps (constant or variable frame rate), that the selection lies inside the
    video, and that the first selected frame decodes. Costs two passes over the packets (no
    decoding) plus one decoded frame: milliseconds for short clips.

    Raises:
        SettingsError: missing, empty, damaged or video-less file, the first selected frame does not
            decode, or the selection is outside the video.
    """
    target = Path(path)
    selection = selection or VideoSelection()
    info = _probe(target)
    pts, time_base, description = _scan_timestamps(target)
    line = _timeline(info, pts, time_base, description)
    notices = []
    if line.variable:
        notices.append(
            f"{target} has a variable frame rate; it is decoded as constant {float(line.fps):.4g} fps "
            "(frames repeated or dropped as ffmpeg's fps filter does, so the sound stays in sync)."
        )
    fraction = f"{line.fps.numerator}/{line.fps.denominator}"
    info = dataclasses.replace(info, fps=float(line.fps), fps_rational=fraction, frame_count=line.frame_count)
    span = _frame_range(target, selection, line)
    size_notice = _target_size(selection, line.width, line.height)[2]
    if size_notice:
        notices.append(size_notice)
    source = VideoSource(info, selection, line, span, notices)
    for notice in notices:
        (logger.warning if "variable frame rate" in notice else logger.info)("%s", notice)
    try:
        source.frame(0)
    except RenderError as exc:
        raise SettingsError(f"{exc}", key=f"{_KEY}.path") from exc
    finally:
        source.close()
    return source


def audio_range(source: VideoSource) -> tuple[float, float]:
    """``(start_seconds, duration)`` of the source's sound that plays with the selected frames.

    Pass ``start_seconds`` as ``audio_start`` when muxing the source's audio (it is counted from
    the start of the file, as ffmpeg's ``-ss`` counts), and cut the sound at ``duration``
    = ``frame_count / output_fps``.
    """
    start = max(0.0, source.source_time(0))
    return start, float(source.frame_count / source.output_fps_fraction)
