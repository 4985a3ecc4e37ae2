"""Video output with the ffmpeg bundled in imageio-ffmpeg: segments, joining, audio, probing, preflight.

A render streams its frames into one or more *segments*. Each segment is an independent encode
(it starts with a keyframe) written to ``<name>.part`` and renamed into place only after ffmpeg
exits successfully, so a segment on disk is always complete and playable. :func:`join_segments`
concatenates segments with ffmpeg's concat demuxer and ``-c copy``: no re-encoding, so joining is
fast and the joined video decodes to exactly the frames of its segments. H.264/H.265 segments are
MPEG-TS (``.ts``), VP9 segments are WebM; a GIF is re-encoded from H.264 segments with a two-pass
palette. See docs/compat-output.md for the full list of choices.

Every ffmpeg failure raises :class:`~dreamreel.errors.RenderError` with the exact command and the
tail of ffmpeg's stderr; no partial file is ever left under a final name.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import queue
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

import numpy as np

from dreamreel.errors import MissingDependencyError, RenderError, SettingsError, did_you_mean

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
PIX_FMTS = ("yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le")
# libvpx-vp9 has no presets; x264 preset names map to -cpu-used with -deadline good.
_VP9_CPU_USED = dict(zip(PRESETS, (5, 5, 4, 4, 3, 2, 1, 1, 0), strict=True))
_OUTPUT_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".gif": "gif"}
# sRGB frames are converted with the BT.709 matrix into limited range and tagged as such, so
# players do not guess BT.601 for small sizes and shift the colours.
_COLOUR_TAGS = ["-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709", "-color_range", "tv"]


@dataclass(frozen=True)
class _Codec:
    encoder: str
    segment_format: str
    segment_suffix: str
    outputs: tuple[str, ...]
    crf_max: int
    bits_per_pixel: float  # rough upper estimate at crf 17 (vp9: crf 31), for the disk check


_CODECS = {
    "h264": _Codec("libx264", "mpegts", ".ts", (".mp4", ".mov", ".mkv"), 51, 1.0),
    "h265": _Codec("libx265", "mpegts", ".ts", (".mp4", ".mov", ".mkv"), 51, 0.7),
    "vp9": _Codec("libvpx-vp9", "webm", ".webm", (".webm", ".mkv"), 63, 0.7),
    # GIF: H.264 segments (playable on their own), re-encoded to a palette GIF when joined.
    "gif": _Codec("libx264", "mpegts", ".ts", (".gif",), 51, 1.0),
}


def rational_fps(fps: float) -> Fraction:
    """Return the exact frame rate meant by a float: 29.97 -> 30000/1001, 12.5 -> 25/2.

    Integer rates and NTSC rates (n * 1000/1001) within 0.01 % snap to their exact value; anything
    else becomes the closest fraction with a denominator up to 1001.
    """
    for candidate in (Fraction(round(fps)), Fraction(round(fps * 1.001) * 1000, 1001)):
        if candidate > 0 and abs(fps - candidate) <= 1e-4 * candidate:
            return candidate
    return Fraction(fps).limit_denominator(1001)


@dataclass(frozen=True)
class VideoOptions:
    """How frames become a video file.

    Attributes:
        width: frame width in pixels (see :func:`preflight` for the multiple-of-8 rule).
        height: frame height in pixels.
        fps: frames per second; NTSC floats such as 29.97 mean 30000/1001.
        codec: ``h264``, ``h265``, ``vp9`` or ``gif`` (GIF segments are H.264).
        crf: constant rate factor (0-51 for x264/x265, 0-63 for vp9); lower is better and bigger.
        preset: an x264 preset name; for vp9 it maps to ``-cpu-used``.
        pix_fmt: the encoded pixel format; ``yuv420p`` plays everywhere.
        threads: encoder threads, 0 = ffmpeg's choice (decoded frames do not depend on it for x264/x265).
    """

    width: int
    height: int
    fps: float = 15.0
    codec: str = "h264"
    crf: int = 17
    preset: str = "veryfast"
    pix_fmt: str = "yuv420p"
    threads: int = 0

    def __post_init__(self) -> None:
        if self.codec not in _CODECS:
            raise SettingsError(
                f"unknown video codec {self.codec!r}; use one of {', '.join(_CODECS)}."
                + did_you_mean(str(self.codec), _CODECS),
                key="output.codec",
            )
        crf_max = _CODECS[self.codec].crf_max
        if not 0 <= self.crf <= crf_max:
            raise SettingsError(
                f"crf {self.crf} is out of range for {self.codec}; use 0 to {crf_max}.", key="output.crf"
            )
        if self.preset not in PRESETS:
            raise SettingsError(
                f"unknown preset {self.preset!r}; use one of {', '.join(PRESETS)}."
                + did_you_mean(self.preset, PRESETS),
                key="output.preset",
            )
        if self.pix_fmt not in PIX_FMTS:
            raise SettingsError(
                f"unsupported pix_fmt {self.pix_fmt!r}; use one of {', '.join(PIX_FMTS)}.", key="output"
            )
        if not self.fps > 0:
            raise SettingsError(f"fps must be positive, got {self.fps}.", key="fps")
        if self.width < 1 or self.height < 1:
            raise SettingsError(f"the video size {self.width}x{self.height} must be positive.", key="width")

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> VideoOptions:
        """Build options from a validated ``Settings`` (width, height, fps and the ``output`` block)."""
        out = settings.output
        values = dict(width=settings.width, height=settings.height, fps=settings.fps, codec=out.codec, crf=out.crf)
        values["preset"] = out.preset
        return cls(**{**values, **overrides})

    @property
    def fps_fraction(self) -> Fraction:
        """The exact frame rate (see :func:`rational_fps`)."""
        return rational_fps(self.fps)

    @property
    def segment_suffix(self) -> str:
        """File suffix segments must use (``.ts`` or ``.webm``)."""
        return _CODECS[self.codec].segment_suffix

    @property
    def output_suffixes(self) -> tuple[str, ...]:
        """Suffixes :func:`join_segments` accepts for the final file; the first is the default."""
        return _CODECS[self.codec].outputs

    def encoder_args(self) -> list[str]:
        """ffmpeg output arguments for one segment (conversion, encoder, tags), without the format."""
        pix_fmt = "yuv420p" if self.codec == "gif" else self.pix_fmt
        scale = "scale=out_color_matrix=bt709:out_range=tv:flags=bicubic+accurate_rnd+full_chroma_int"
        args = ["-vf", f"{scale},format={pix_fmt}", "-c:v", _CODECS[self.codec].encoder]
        if self.codec in ("h264", "gif"):
            # stitchable: headers do not depend on the content, so segments share SPS/PPS.
            args += ["-preset", self.preset, "-crf", str(self.crf), "-x264-params", "stitchable=1"]
        elif self.codec == "h265":
            args += ["-preset", self.preset, "-crf", str(self.crf), "-x265-params", "log-level=error"]
        else:
            cpu_used = str(_VP9_CPU_USED[self.preset])
            args += ["-crf", str(self.crf), "-b:v", "0", "-deadline", "good", "-cpu-used", cpu_used, "-row-mt", "1"]
        if self.threads:
            args += ["-threads", str(self.threads)]
        return [*args, *_COLOUR_TAGS]


def _check_size(options: VideoOptions) -> None:
    """Raise RenderError when the pixel format cannot hold the frame size."""
    pix_fmt = "yuv420p" if options.codec == "gif" else options.pix_fmt
    odd_w, odd_h = options.width % 2, options.height % 2
    if ("420" in pix_fmt and (odd_w or odd_h)) or ("422" in pix_fmt and odd_w):
        raise RenderError(
            f"the video size {options.width}x{options.height} cannot be encoded as {pix_fmt}, which needs even "
            "dimensions; run preflight() and use the size it returns (multiples of 8)."
        )


# --------------------------------------------------------------------------------------------- ffmpeg


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg executable bundled with imageio-ffmpeg (or ``IMAGEIO_FFMPEG_EXE``)."""
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise MissingDependencyError("imageio-ffmpeg", "Writing video") from exc
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError as exc:
        raise RenderError(f"no ffmpeg executable was found ({exc}); reinstall imageio-ffmpeg.") from exc


def _tail(text: str, lines: int = 8) -> str:
    kept = [line.rstrip() for line in text.strip().splitlines() if line.strip()][-lines:]
    return "\n".join(f"    {line}" for line in kept) if kept else "    (ffmpeg printed nothing)"


def _failure(what: str, cmd: Sequence[str], stderr: str, returncode: int | None) -> RenderError:
    status = "could not be started" if returncode is None else f"exited with status {returncode}"
    written = " Nothing was written under the final name." if cmd and cmd[-1].endswith(".part") else ""
    return RenderError(
        f"{what} failed: ffmpeg {status}.{written} "
        f"Command: {shlex.join(cmd)}\n  ffmpeg's last messages:\n{_tail(stderr)}"
    )


def _command(args: Sequence[str], loglevel: str = "warning") -> list[str]:
    return [ffmpeg_exe(), "-nostdin", "-hide_banner", "-nostats", "-loglevel", loglevel, *args]


def _run(args: Sequence[str], what: str, *, loglevel: str = "warning", check: bool = True) -> tuple[int, str, str]:
    """Run ffmpeg; return (returncode, stdout, stderr). Raise RenderError on failure when ``check``."""
    cmd = _command(args, loglevel)
    logger.debug("ffmpeg: %s", shlex.join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, check=False)
    except OSError as exc:
        raise _failure(what, cmd, str(exc), None) from exc
    stdout, stderr = (proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))
    if check and proc.returncode != 0:
        raise _failure(what, cmd, stderr, proc.returncode)
    return proc.returncode, stdout, stderr


@lru_cache(maxsize=1)
def available_encoders() -> frozenset[str]:
    """Names of the encoders the bundled ffmpeg was built with."""
    _, out, _ = _run(["-encoders"], "Listing ffmpeg's encoders", loglevel="error")
    return frozenset(m.group(1) for m in re.finditer(r"^\s*[VAS][\w.]{5}\s+(\S+)", out, re.MULTILINE))


def working_codecs() -> list[str]:
    """The dreamreel codec names whose encoder the bundled ffmpeg has."""
    encoders = available_encoders()
    return [name for name, codec in _CODECS.items() if codec.encoder in encoders]


def _replace_into_place(tmp: Path, final: Path) -> None:
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)


def _part_name(path: Path) -> Path:
    return path.with_name(path.name + ".part")


# --------------------------------------------------------------------------------------------- segments


@dataclass(frozen=True)
class SegmentInfo:
    """A finished segment: ``frame_count`` frames starting at global frame ``first_frame``."""

    path: Path
    first_frame: int
    frame_count: int

    @property
    def end_frame(self) -> int:
        """One past the last frame index."""
        return self.first_frame + self.frame_count


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
        _replace_into_place(tmp, self._path)
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
        self._queue = queue.Queue(maxsize=self._queue_frames)
        self._thread = threading.Thread(target=self._pump, name="dreamreel-video-writer", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self._queue is not None and self._proc is not None and self._proc.stdin is not None
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


# --------------------------------------------------------------------------------------------- probing


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` found in a media file. Durations are in seconds.

    ``frame_count`` counts the video packets (exact, no estimate); ``fps`` is the mean frame rate
    and ``fps_rational`` its exact form (``"30000/1001"``); ``duration`` is the container's.
    """

    path: Path
    width: int
    height: int
    fps: float
    fps_rational: str
    frame_count: int
    duration: float
    video_duration: float
    video_codec: str
    has_audio: bool
    audio_codec: str | None
    audio_duration: float | None


_STREAM_RE = re.compile(r"Stream #0:\d+.*?: (Video|Audio): (\w+)(.*)")


def _media_error(path: Path, problem: str, key: str | None) -> SettingsError:
    return SettingsError(f"{path}: {problem}", key=key)


def _packets(stdout: str) -> tuple[dict[tuple[str, int], str], dict[int, list[tuple[int, int]]]]:
    """Parse ffmpeg's framecrc output into headers and per-stream (pts, duration) lists."""
    headers: dict[tuple[str, int], str] = {}
    packets: dict[int, list[tuple[int, int]]] = {}
    for line in stdout.splitlines():
        if line.startswith("#"):
            if m := re.match(r"#(\w+) (\d+): (.*)", line):
                headers[(m.group(1), int(m.group(2)))] = m.group(3).strip()
            continue
        parts = line.split(",")
        if len(parts) >= 5 and (pts := int(parts[2])) != -(2**63):
            packets.setdefault(int(parts[0]), []).append((pts, int(parts[3])))
    return headers, packets


def _span(packets: list[tuple[int, int]], tb: Fraction, *, from_zero: bool) -> float:
    start = min(pts for pts, _ in packets)
    end = max(pts + dur for pts, dur in packets)
    return float((end - (max(start, 0) if from_zero else start)) * tb)


def _scan(path: PathLike, *, key: str | None = None) -> tuple[str, dict[tuple[str, int], str], dict[int, Any]]:
    """Run one pass of ffmpeg over ``path`` (packets only, no decoding)."""
    target = Path(path)
    if not target.is_file():
        raise _media_error(target, "the file does not exist (or is not a file).", key)
    if target.stat().st_size == 0:
        raise _media_error(target, "the file is empty (0 bytes).", key)
    args = ["-i", str(target), "-map", "0:V:0?", "-map", "0:a:0?", "-c", "copy", "-f", "framecrc", "-"]
    returncode, stdout, stderr = _run(args, f"Reading {target}", loglevel="info", check=False)
    if returncode != 0 or not _STREAM_RE.search(stderr):
        raise _media_error(
            target,
            "ffmpeg could not read this file as audio or video (is it corrupt or truncated?). "
            f"ffmpeg said:\n{_tail(stderr, 4)}",
            key,
        )
    headers, packets = _packets(stdout)
    return stderr, headers, packets


def probe(path: PathLike) -> MediaInfo:
    """Describe a video file: size, exact fps, exact frame count, durations, codecs, audio.

    Reads every packet (no decoding), so it is exact and takes milliseconds per thousand frames.

    Raises:
        SettingsError: the file is missing, empty, unreadable or has no video stream.
    """
    target = Path(path)
    stderr, headers, packets = _scan(target)
    types = {index: value for (name, index), value in headers.items() if name == "media_type"}
    video = next((i for i, kind in types.items() if kind == "video"), None)
    audio = next((i for i, kind in types.items() if kind == "audio"), None)
    if video is None or not packets.get(video):
        raise _media_error(target, "the file has no video stream (or its video stream has no frames).", None)
    width, height = (int(v) for v in headers[("dimensions", video)].split("x"))
    tb = Fraction(headers[("tb", video)])
    vpk = packets[video]
    pts_sorted = sorted(pts for pts, _ in vpk)
    if len(vpk) > 1 and pts_sorted[-1] > pts_sorted[0]:
        fps = rational_fps(float((len(vpk) - 1) / ((pts_sorted[-1] - pts_sorted[0]) * tb)))
    elif vpk[0][1] > 0:
        fps = rational_fps(float(1 / (vpk[0][1] * tb)))
    else:
        m = re.search(r"Video:.*?([\d.]+) (?:fps|tbr)", stderr)
        fps = rational_fps(float(m.group(1)) if m else 25.0)
    video_duration = _span(vpk, tb, from_zero=False)
    m = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", stderr)
    duration = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3)) if m else video_duration
    audio_duration = None
    if audio is not None and packets.get(audio):
        audio_duration = _span(packets[audio], Fraction(headers[("tb", audio)]), from_zero=True)
    return MediaInfo(
        path=target,
        width=width,
        height=height,
        fps=float(fps),
        fps_rational=f"{fps.numerator}/{fps.denominator}",
        frame_count=len(vpk),
        duration=duration,
        video_duration=video_duration,
        video_codec=headers.get(("codec_id", video), "unknown"),
        has_audio=audio is not None,
        audio_codec=headers.get(("codec_id", audio)) if audio is not None else None,
        audio_duration=audio_duration,
    )


def check_audio_source(path: PathLike) -> None:
    """Raise SettingsError (key ``output.audio``) unless ``path`` has an audio stream ffmpeg reads."""
    _, headers, _ = _scan(path, key="output.audio")
    if "audio" not in {value for (name, _), value in headers.items() if name == "media_type"}:
        raise _media_error(
            Path(path),
            "this file has no audio stream, so it cannot be the soundtrack; use an audio file "
            "(mp3, wav, aac, flac, ...) or a video that has sound, or remove output.audio.",
            "output.audio",
        )


# --------------------------------------------------------------------------------------------- joining


def _quote(path: Path) -> str:
    return "'" + str(path.resolve()).replace("'", "'\\''") + "'"


def _concat_list(segments: Sequence[SegmentInfo], fps: Fraction) -> str:
    """An ffconcat script whose durations add up exactly (in microseconds) to frames / fps."""

    def micros(frames: int) -> int:
        return round(frames * 1_000_000 / fps)

    lines = ["ffconcat version 1.0"]
    done = 0
    for seg in segments:
        lines += [f"file {_quote(seg.path)}", f"duration {micros(done + seg.frame_count) - micros(done)}us"]
        done += seg.frame_count
    return "\n".join(lines) + "\n"


def _check_segments(segments: Sequence[SegmentInfo]) -> list[SegmentInfo]:
    kept = [seg for seg in segments if seg.frame_count > 0]
    if not kept:
        raise RenderError("there are no frames to join: every video segment is empty.")
    for prev, seg in itertools.pairwise(kept):
        if seg.first_frame != prev.end_frame:
            gap = "missing" if seg.first_frame > prev.end_frame else "duplicated"
            raise RenderError(
                f"video segments do not line up: {prev.path.name} ends before frame {prev.end_frame} but "
                f"{seg.path.name} starts at frame {seg.first_frame}, so frames would be {gap}; render the missing "
                "frames again or remove the overlapping segment."
            )
    for seg in kept:
        if not seg.path.is_file():
            raise RenderError(
                f"the video segment {seg.path} (frames {seg.first_frame}-{seg.end_frame - 1}) is missing."
            )
    return kept


def _reorder_fix(segments: Sequence[SegmentInfo], options: VideoOptions) -> list[str]:
    """Bitstream-filter arguments that make decode timestamps monotonic across short segments.

    x264/x265 segments of 3+ frames start their decode timestamps B-frame-delay frames early; a
    1-2 frame segment has no delay. When such a short segment is followed by another one, the
    copied timestamps would go backwards; rewriting DTS as ``(N - delay)`` frame durations fixes
    that without touching presentation times or the bitstream.
    """
    if options.codec not in ("h264", "h265") or not any(seg.frame_count <= 2 for seg in segments[:-1]):
        return []
    long = max(segments, key=lambda seg: seg.frame_count)
    if long.frame_count <= 2:
        return []
    args = ["-i", str(long.path), "-map", "0:v:0", "-c", "copy", "-frames:v", "1", "-f", "framecrc", "-"]
    _, stdout, _ = _run(args, f"Reading {long.path.name}")
    tb = Fraction(re.search(r"#tb 0: (\S+)", stdout).group(1))  # type: ignore[union-attr]
    dts, pts = (int(v) for v in next(ln for ln in stdout.splitlines() if not ln.startswith("#")).split(",")[1:3])
    fps = options.fps_fraction
    delay = round((pts - dts) * tb * fps)
    if delay <= 0:
        return []
    expr = f"STARTPTS+floor((N-{delay})*{fps.denominator}/(TB*{fps.numerator})+0.000001)"
    return ["-bsf:v", f"setts=pts=PTS:dts={expr}"]


def _audio_args(audio: PathLike, start: float, seconds: float, suffix: str, input_index: int) -> list[str]:
    """Input and output arguments that add ``audio`` trimmed or padded with silence to ``seconds``."""
    check_audio_source(audio)
    encoder = ["-c:a", "libopus", "-b:a", "160k"] if suffix == ".webm" else ["-c:a", "aac", "-b:a", "192k"]
    end = f"{seconds:.6f}"
    audio_filter = f"asetpts=PTS-STARTPTS,apad=whole_dur={end},atrim=end={end}"
    seek = ["-ss", f"{start:.6f}"] if start > 0 else []
    return [*seek, "-i", str(audio), "-map", f"{input_index}:a:0", "-af", audio_filter, *encoder]


def _output_suffix(output: Path, options: VideoOptions, audio: PathLike | None) -> str:
    suffix = output.suffix.lower()
    if suffix not in options.output_suffixes:
        raise SettingsError(
            f"{output}: a {options.codec} video must be saved as {' or '.join(options.output_suffixes)}, "
            f"not {suffix or 'a file without suffix'}.",
            key="output",
        )
    if audio is not None and suffix == ".gif":
        raise SettingsError("a GIF cannot carry sound; remove output.audio or choose h264.", key="output.audio")
    return suffix


def _container_args(suffix: str, options: VideoOptions) -> list[str]:
    args = ["-movflags", "+faststart"] if suffix in (".mp4", ".mov") else []
    if options.codec == "h265" and suffix in (".mp4", ".mov"):
        args += ["-tag:v", "hvc1"]  # QuickTime/Safari play hvc1, not ffmpeg's default hev1
    return [*args, "-f", _OUTPUT_FORMATS[suffix]]


def _write_atomically(output: Path, what: str, build: Callable[[Path], list[str]], expected_frames: int | None) -> Path:
    """Run ffmpeg into ``<output>.part`` (``build(tmp) -> args``), verify, then rename into place."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = _part_name(output)
    try:
        _run([*build(tmp), "-y", str(tmp)], what)
        if expected_frames is not None:
            found = probe(tmp).frame_count
            if found != expected_frames:
                raise RenderError(
                    f"{what}: the result has {found} frames but its inputs should give {expected_frames}, so an "
                    "input is damaged or incomplete; check each segment with probe() and render its frames again."
                )
        _replace_into_place(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return output


def join_segments(
    segments: Sequence[SegmentInfo],
    output: PathLike,
    *,
    options: VideoOptions,
    audio: PathLike | None = None,
    audio_start: float = 0.0,
    verify: bool = True,
) -> Path:
    """Concatenate segments (in frame order, without gaps) into the final video.

    H.264/H.265/VP9 packets are copied, not re-encoded (milliseconds per thousand frames); a GIF is
    re-encoded from the segments with a palette computed over the whole video. With ``audio``, the
    sound (from ``audio_start`` seconds on) is re-encoded (AAC, Opus in WebM) and trimmed or padded
    with silence to the video's length.

    Args:
        segments: the segments, in order; empty ones are skipped.
        output: the final file; its suffix must be one of ``options.output_suffixes``.
        options: the options the segments were written with.
        audio: a file with an audio stream (audio file or video with sound), or None.
        audio_start: seconds to skip at the start of the audio.
        verify: count the frames of the result and fail if any are missing.

    Returns:
        The output path.
    """
    output = Path(output)
    suffix = _output_suffix(output, options, audio)
    kept = _check_segments(segments)
    total = sum(seg.frame_count for seg in kept)
    output.parent.mkdir(parents=True, exist_ok=True)
    listing = output.with_name(f".{output.name}.ffconcat")
    listing.write_text(_concat_list(kept, options.fps_fraction), encoding="utf-8")
    concat = ["-f", "concat", "-safe", "0", "-i", str(listing)]
    started = time.perf_counter()
    try:
        if suffix == ".gif":
            _join_gif(concat, output, total, verify)
        else:
            seconds = float(total / options.fps_fraction)
            sound = _audio_args(audio, audio_start, seconds, suffix, 1) if audio is not None else []
            fix = _reorder_fix(kept, options)

            def build(tmp: Path) -> list[str]:
                return [*concat, *sound, "-map", "0:v:0", "-c:v", "copy", *fix, *_container_args(suffix, options)]

            _write_atomically(
                output, f"Joining {len(kept)} video segments into {output}", build, total if verify else None
            )
    finally:
        listing.unlink(missing_ok=True)
    logger.info("wrote %s (%d frames) in %.2f s", output, total, time.perf_counter() - started)
    return output


def _join_gif(concat: list[str], output: Path, total: int, verify: bool) -> None:
    """Two passes: a palette from about 50 frames spread over the video, then ordered dithering.

    Ordered (Bayer) dithering does not crawl from frame to frame like error diffusion, and is about
    twice as fast; sampling frames keeps palettegen from hashing every pixel of a long video.
    """
    palette = output.with_name(f".{output.name}.palette.png")
    sample = f"select='not(mod(n,{max(1, total // 50)}))',palettegen=stats_mode=full"
    gif = ["-i", str(palette), "-lavfi", "[0:v][1:v]paletteuse=dither=bayer", "-fps_mode", "passthrough"]
    try:
        pass1 = [*concat, "-vf", sample, "-frames:v", "1", "-update", "1", "-y", str(palette)]
        _run(pass1, f"Computing the GIF palette for {output}")
        what = f"Writing the GIF {output}"
        _write_atomically(
            output, what, lambda tmp: [*concat, *gif, "-loop", "0", "-f", "gif"], total if verify else None
        )
    finally:
        palette.unlink(missing_ok=True)


def mux_audio(video: PathLike, audio: PathLike, output: PathLike, *, audio_start: float = 0.0) -> Path:
    """Copy ``video``'s video stream and add ``audio`` trimmed or padded to the video's length.

    Use this to add or replace the sound of a finished video; :func:`join_segments` does the same
    in one pass when it makes the video.
    """
    video, output = Path(video), Path(output)
    info = probe(video)
    suffix = output.suffix.lower()
    if suffix not in _OUTPUT_FORMATS or suffix == ".gif":
        raise SettingsError(f"{output}: a video with sound must be .mp4, .mov, .mkv or .webm.", key="output")
    sound = _audio_args(audio, audio_start, info.video_duration, suffix, 1)
    fmt = ["-movflags", "+faststart"] if suffix in (".mp4", ".mov") else []
    if info.video_codec == "hevc" and suffix in (".mp4", ".mov"):
        fmt += ["-tag:v", "hvc1"]
    return _write_atomically(
        output,
        f"Adding the sound of {audio} to {video}",
        lambda tmp: ["-i", str(video), *sound, "-map", "0:v:0", "-c:v", "copy", *fmt, "-f", _OUTPUT_FORMATS[suffix]],
        info.frame_count,
    )


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
