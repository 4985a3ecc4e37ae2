"""Joining video segments into the final file, and adding sound, with the bundled ffmpeg.

:func:`join_segments` concatenates segments with ffmpeg's concat demuxer and ``-c copy``: no
re-encoding, so joining is fast and the joined video decodes to exactly the frames of its
segments (a bitstream filter keeps decode timestamps monotonic after very short H.264/H.265
segments). A GIF is re-encoded from the H.264 segments with a two-pass palette.
:func:`mux_audio` adds or replaces the sound of a finished video. Both write ``<name>.part``,
count its frames and only then rename it into place, so no partial file is ever left under a
final name; every ffmpeg failure raises :class:`~dreamreel.errors.RenderError`.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from dreamreel.errors import RenderError, SettingsError
from dreamreel.fileio import replace_durably
from dreamreel.media.ffmpeg import PathLike, _part_name, _run, check_audio_source, probe

if TYPE_CHECKING:
    from dreamreel.media.options import SegmentInfo, VideoOptions

logger = logging.getLogger(__name__)

_OUTPUT_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".gif": "gif"}


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
        replace_durably(tmp, output)
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
    concat = ["-f", "concat", "-safe", "0", "-i", str(listing)]
    started = time.perf_counter()
    try:
        # inside the try: a half-written list (a full disk) is removed below too
        listing.write_text(_concat_list(kept, options.fps_fraction), encoding="utf-8")
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
