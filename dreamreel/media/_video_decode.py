"""Video Input decoding internals: the timeline of a video and the ffmpeg process that reads it.

:func:`_scan_timestamps` reads the video packets' timestamps (no decoding) and :func:`_timeline`
decides from them whether the video is constant or variable frame rate and how source frame
numbers map to timestamps (:class:`_Timeline`). A :class:`_Decoder` is one ffmpeg process that
streams selected frames as raw RGB, each paired with the source frame number computed from the
timestamp ffmpeg's ``showinfo`` filter printed for it. The public API built on these is
:mod:`dreamreel.media.video_input`; see its docstring for frame identity and variable frame rates.
"""

from __future__ import annotations

import collections
import io
import logging
import os
import queue
import re
import shlex
import subprocess
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from dreamreel.errors import RenderError, SettingsError
from dreamreel.generation import Image
from dreamreel.media.ffmpeg import MediaInfo, ffmpeg_exe, rational_fps

logger = logging.getLogger(__name__)

_KEY = "video_input"
_MAX_DRIFT = 0.45  # frames: timestamps closer than this to the constant-rate grid count as CFR
_REENCODE = "ffmpeg -i input -c:v libx264 -crf 17 -c:a aac fixed.mp4"


# --------------------------------------------------------------------------------------------- timeline


@dataclass(frozen=True)
class _Timeline:
    """How source frame numbers map to timestamps. ``t0`` and times are in seconds (exact)."""

    fps: Fraction
    t0: Fraction
    container_start: Fraction
    frame_count: int
    variable: bool
    width: int
    height: int

    def slot(self, pts: int, time_base: Fraction) -> int:
        """The source frame number of a decoded frame with timestamp ``pts * time_base``."""
        return round((pts * time_base - self.t0) * self.fps)


def _scan_timestamps(path: Path) -> tuple[list[int], Fraction, str]:
    """Video packet timestamps (raw, sorted), their time base, and ffmpeg's description of the file."""
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-nostats", "-loglevel", "info", "-copyts", "-i", str(path)]
    cmd += ["-map", "0:V:0", "-c", "copy", "-f", "framecrc", "-"]
    try:
        proc = subprocess.run(cmd, capture_output=True, check=False)
    except OSError as exc:
        raise RenderError(f"could not run ffmpeg ({exc}); reinstall imageio-ffmpeg.") from exc
    out, err = proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")
    tb_match = re.search(r"^#tb 0: (\d+)/(\d+)", out, re.MULTILINE)
    pts = []
    for line in out.splitlines():
        parts = [part.strip() for part in line.split(",")]
        flags = next((int(part[2:], 16) for part in parts[6:] if part.startswith("F=")), 1)
        # packets an MP4 edit list cuts off are flagged "discard" (0x4): they never become frames
        if not line.startswith("#") and len(parts) >= 5 and (value := int(parts[2])) != -(2**63) and not flags & 4:
            pts.append(value)
    if proc.returncode != 0 or tb_match is None:
        raise SettingsError(
            f"{path}: ffmpeg could not read the video's timestamps; the file is damaged or truncated. "
            f"Re-encode it (for example `{_REENCODE}`). ffmpeg said: {_last_lines(err, 3)}",
            key=f"{_KEY}.path",
        )
    return sorted(pts), Fraction(int(tb_match.group(1)), int(tb_match.group(2))), err


def _display_size(info: MediaInfo, description: str) -> tuple[int, int]:
    """The size ffmpeg delivers frames at: rotation metadata of 90/270 degrees swaps the sides."""
    match = re.search(r"rotation of (-?[\d.]+) degrees", description)
    if match and round(float(match.group(1))) % 180 != 0:
        return info.height, info.width
    return info.width, info.height


def _timeline(info: MediaInfo, pts: list[int], time_base: Fraction, description: str) -> _Timeline:
    """Decide between constant and variable frame rate from the timestamps."""
    match = re.search(r"Duration: .*?, start: (-?[\d.]+)", description)
    start = Fraction(match.group(1)) if match else Fraction(0)
    width, height = _display_size(info, description)
    fps = Fraction(info.fps_rational)
    if len(pts) < 2:
        t0 = pts[0] * time_base if pts else start
        return _Timeline(fps, t0, start, max(1, info.frame_count), False, width, height)
    ticks = np.asarray(pts, dtype=np.int64)
    seconds = (ticks - ticks[0]) * float(time_base)
    t0 = pts[0] * time_base
    # Timestamps rounded to a coarse time base (Matroska: 1 ms) make the mean rate a little off:
    # prefer the integer or NTSC rate near it when every frame sits on that rate's grid.
    candidates = [*_nice_rates((len(pts) - 1) / seconds[-1]), fps] if seconds[-1] > 0 else [fps]
    drifts = [float(np.max(np.abs(seconds * float(rate) - np.arange(len(pts))))) for rate in candidates]
    best = int(np.argmin(drifts))
    if drifts[best] < _MAX_DRIFT:
        return _Timeline(candidates[best], t0, start, len(pts), False, width, height)
    steps = np.diff(ticks)
    step = float(np.median(steps[steps > 0])) * float(time_base)
    near = [rate for rate in _nice_rates(1.0 / step) if abs(1.0 / float(rate) - step) <= float(time_base) * 1.001]
    nominal = near[0] if near else rational_fps(1.0 / step)
    count = max(1, round(info.video_duration * nominal))
    return _Timeline(nominal, t0, start, count, True, width, height)


def _nice_rates(rate: float) -> list[Fraction]:
    """The integer and the NTSC (n * 1000/1001) frame rates nearest to ``rate``, closest first."""
    options = {Fraction(round(rate)), Fraction(round(rate * 1.001) * 1000, 1001)}
    return sorted((r for r in options if r > 0), key=lambda r: abs(float(r) - rate))


# --------------------------------------------------------------------------------------------- decoding


class _Decoder:
    """One ffmpeg process streaming the frames ``first, first + nth, ... <= last`` of a timeline.

    Every delivered frame comes with its source frame number, computed from the timestamp that
    ffmpeg's ``showinfo`` filter printed for it (a thread parses stderr into a queue).
    """

    def __init__(self, path: Path, line: _Timeline, first: int, last: int, nth: int, *, seek: bool) -> None:
        self.path, self.line, self.seeked = path, line, seek and first > 0 and not line.variable
        fps, t0 = line.fps, float(line.t0)
        slot = f"round((t-{t0!r})*{fps.numerator}/{fps.denominator})"
        chain = [f"select='between({slot},{first},{last})*not(mod({slot}-{first},{nth}))'", "showinfo=checksum=0"]
        if line.variable:
            chain.insert(0, f"fps=fps={fps.numerator}/{fps.denominator}:start_time={t0!r}")
        seek_args = []
        if self.seeked:
            position = line.t0 + (first - Fraction(1, 2)) / fps
            seek_args = ["-seek_timestamp", "1", "-ss", f"{float(position):.6f}"]
            seek_args.append("-noaccurate_seek")
        args = [*seek_args, "-copyts", "-i", str(path), "-map", "0:V:0", "-vf", ",".join(chain)]
        wanted = len(range(first, last + 1, nth))  # ffmpeg stops there instead of decoding to the end
        args += ["-frames:v", str(wanted), "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
        self.cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-nostats", "-loglevel", "info", *args]
        logger.debug("ffmpeg: %s", shlex.join(self.cmd))
        self._frame_bytes = line.width * line.height * 3
        self._entries: queue.Queue[tuple[int, int, int] | None] = queue.Queue()
        self._time_base: Fraction | None = None
        self._log: collections.deque[str] = collections.deque(maxlen=40)
        group: dict[str, Any] = {"start_new_session": True} if os.name == "posix" else {}
        try:
            self._proc = subprocess.Popen(
                self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **group
            )
        except OSError as exc:
            raise RenderError(f"could not start ffmpeg to read {path} ({exc}); reinstall imageio-ffmpeg.") from exc
        self._thread = threading.Thread(target=self._parse_log, name="dreamreel-video-reader", daemon=True)
        self._thread.start()

    def _parse_log(self) -> None:
        assert self._proc.stderr is not None
        info = re.compile(rb"showinfo_\d+ @ \w+\] n:\s*\d+ pts:\s*(-?\d+) .*? s:(\d+)x(\d+)")
        base = re.compile(rb"showinfo_\d+ @ \w+\] config in time_base: (\d+)/(\d+)")
        for raw in self._proc.stderr:
            if match := info.search(raw):
                self._entries.put((int(match.group(1)), int(match.group(2)), int(match.group(3))))
            elif match := base.search(raw):
                self._time_base = Fraction(int(match.group(1)), int(match.group(2)))
            elif b"] color_range:" not in raw:
                self._log.append(raw.decode("utf-8", "replace").rstrip())
        self._entries.put(None)

    def read(self) -> tuple[int, Image] | None:
        """The next delivered frame as (source frame number, image), or None at the end of the video."""
        assert isinstance(self._proc.stdout, io.BufferedReader)  # stdout=PIPE, binary, buffered
        buffer = np.empty(self._frame_bytes, dtype=np.uint8)
        view, got = buffer.data, 0
        while got < self._frame_bytes:
            count = self._proc.stdout.readinto(view[got:])
            if not count:
                break
            got += count
        if got == 0:
            if self._proc.wait() != 0:
                raise self.failure("ffmpeg stopped with an error")
            return None
        try:
            entry = self._entries.get(timeout=30) if got == self._frame_bytes else None
        except queue.Empty:
            entry = None
        if entry is None or self._time_base is None:
            raise self.failure("ffmpeg delivered an incomplete frame")
        pts, width, height = entry
        if (width, height) != (self.line.width, self.line.height):
            raise self.failure(
                f"frames are {width}x{height}, but {self.line.width}x{self.line.height} was expected "
                "(unusual rotation or size-changing stream)"
            )
        return self.line.slot(pts, self._time_base), buffer.reshape(self.line.height, self.line.width, 3)

    def failure(self, problem: str) -> RenderError:
        """A RenderError naming the file, the problem, the command and ffmpeg's last messages."""
        self.close()
        tail = "\n".join(f"    {line}" for line in list(self._log)[-6:]) or "    (nothing)"
        return RenderError(
            f"reading {self.path}: {problem}. The file may be damaged; re-encode it (for example `{_REENCODE}`) "
            f"and run again.\n  Command: {shlex.join(self.cmd)}\n  ffmpeg's last messages:\n{tail}"
        )

    def close(self) -> None:
        """Stop ffmpeg and release its pipes and the log thread."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._thread.join()
        for pipe in (self._proc.stdout, self._proc.stderr):
            if pipe is not None:
                pipe.close()


def _last_lines(text: str, count: int) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:]) or "(nothing)"
