"""Video options: codec, quality, preset, pixel format, fps, size checks; and what a finished segment is.

Shared by :mod:`dreamreel.media.video` (encoding) and :mod:`dreamreel.media.join` (joining), which
import it and not each other's types.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from dreamreel.errors import RenderError, SettingsError, did_you_mean
from dreamreel.media.ffmpeg import rational_fps

PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
PIX_FMTS = ("yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le")
# libvpx-vp9 has no presets; x264 preset names map to -cpu-used with -deadline good.
_VP9_CPU_USED = dict(zip(PRESETS, (5, 5, 4, 4, 3, 2, 1, 1, 0), strict=True))
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
