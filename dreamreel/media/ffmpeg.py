"""The ffmpeg bundled with imageio-ffmpeg: running it, its encoders, and probing media files.

:func:`ffmpeg_exe` finds the executable; every run that fails raises
:class:`~dreamreel.errors.RenderError` with the exact command and the tail of ffmpeg's stderr.
:func:`probe` describes a video (size, exact frame rate and frame count, durations, codecs, audio)
by reading its packets without decoding, and :func:`check_audio_source` checks that a file can be
a soundtrack. :func:`rational_fps` gives the exact frame rate a float means. The helpers that write
``<name>.part`` and rename it into place are shared by segments (:mod:`dreamreel.media.video`) and
joins (:mod:`dreamreel.media.join`).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

from dreamreel.errors import MissingDependencyError, RenderError, SettingsError

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def rational_fps(fps: float) -> Fraction:
    """Return the exact frame rate meant by a float: 29.97 -> 30000/1001, 12.5 -> 25/2.

    Integer rates and NTSC rates (n * 1000/1001) within 0.01 % snap to their exact value; anything
    else becomes the closest fraction with a denominator up to 1001.
    """
    for candidate in (Fraction(round(fps)), Fraction(round(fps * 1.001) * 1000, 1001)):
        if candidate > 0 and abs(fps - candidate) <= 1e-4 * candidate:
            return candidate
    return Fraction(fps).limit_denominator(1001)


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


def _part_name(path: Path) -> Path:
    return path.with_name(path.name + ".part")


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


def check_audio_source(path: PathLike, *, key: str = "output.audio") -> None:
    """Raise SettingsError naming ``key`` (the option or settings key as the user wrote it) unless ``path``
    has an audio stream ffmpeg reads."""
    _, headers, _ = _scan(path, key=key)
    if "audio" not in {value for (name, _), value in headers.items() if name == "media_type"}:
        raise _media_error(
            Path(path),
            "this file has no audio stream, so it cannot be the soundtrack; use an audio file "
            f"(mp3, wav, aac, flac, ...) or a video that has sound, or remove {key}.",
            key,
        )
