"""The streamed finisher: frame counts and rates, chunk boundaries, resuming after a failure, redoing a last chunk."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from dreamreel.finish.stream import Chunk, Finisher, InterpolateStep, UpscaleStep
from dreamreel.finish.upscale import LanczosUpscaler
from dreamreel.generation import Image
from dreamreel.media.ffmpeg import probe
from dreamreel.media.options import VideoOptions

W, H = 48, 32


class Blend:
    """A deterministic interpolator: the in-betweens are cross-fades (enough to check the stream around it)."""

    name = "blend"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def sequence(self, frames: Sequence[Image], x: int) -> list[Image]:
        self.calls.append(len(frames))
        out: list[Image] = []
        for a, b in itertools.pairwise(frames):
            out.append(a)
            for k in range(1, x):
                out.append(np.rint(a * (1 - k / x) + b * (k / x)).astype(np.uint8))
        out.append(frames[-1])
        return out


def _frame(index: int) -> Image:
    return np.full((H, W, 3), (index * 9) % 256, np.uint8)


def _chunks(total: int, size: int, loads: list[int] | None = None, fail_at: int | None = None) -> list[Chunk]:
    chunks = []
    for start in range(0, total, size):
        count = min(size, total - start)

        def frames(start: int = start, count: int = count) -> Iterator[Image]:
            if loads is not None:
                loads.append(start)
            for index in range(start, start + count):
                if index == fail_at:
                    raise RuntimeError("killed")
                yield _frame(index)

        chunks.append(Chunk(start, count, frames, lambda start=start: _frame(start)))  # type: ignore[misc]
    return chunks


def _finish(folder: Path, chunks: list[Chunk], steps: list[object], *, end: bool = True) -> Finisher:
    finisher = Finisher(folder, steps, W, H, Fraction(10), VideoOptions(width=W, height=H, fps=10, crf=0))  # type: ignore[arg-type]
    for chunk in chunks:
        finisher.add(chunk)
    if end:
        finisher.end()
    return finisher


def _decoded(path: Path) -> np.ndarray:
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", output_params=["-fps_mode", "passthrough"])
    meta = next(reader)
    width, height = meta["size"]
    return np.stack([np.frombuffer(raw, np.uint8).reshape(height, width, 3) for raw in reader])


def test_interpolation_and_upscale_across_chunks(tmp_path: Path) -> None:
    blend = Blend()
    steps = [UpscaleStep(LanczosUpscaler(), 2.0), InterpolateStep(blend, 3, window=4)]
    finisher = _finish(tmp_path / "f", _chunks(10, 4), steps)
    assert [s.frame_count for s in finisher.segments] == [12, 12, 4]  # (10 - 1) * 3 + 1 frames in all
    assert (finisher.out_width, finisher.out_height, finisher.out_fps) == (96, 64, Fraction(30))
    video = finisher.join(tmp_path / "out.mp4")
    info = probe(video)
    assert (info.width, info.height, info.frame_count, info.fps) == (96, 64, 28, pytest.approx(30))
    levels = _decoded(video).reshape(28, -1).mean(axis=1)
    expected = np.interp(np.arange(28) / 3, np.arange(10), [(i * 9) % 256 for i in range(10)])
    assert np.abs(levels - expected).max() < 2.5  # in-betweens at 1/3 and 2/3 across every chunk boundary
    assert max(blend.calls) <= 5  # a window of 4 frames plus the next one: memory does not grow with a chunk


def test_slow_motion_keeps_the_frame_rate(tmp_path: Path) -> None:
    finisher = _finish(tmp_path / "f", _chunks(6, 6), [InterpolateStep(Blend(), 2, slow_motion=2)])
    assert finisher.out_fps == Fraction(10) and sum(s.frame_count for s in finisher.segments) == 11


def test_a_failure_keeps_the_committed_segments_and_a_rerun_gives_the_same_bits(tmp_path: Path) -> None:
    steps = [InterpolateStep(Blend(), 2)]
    whole = _finish(tmp_path / "whole", _chunks(12, 4), steps).join(tmp_path / "whole.mp4")
    with pytest.raises(RuntimeError, match="killed"):
        _finish(tmp_path / "cut", _chunks(12, 4, fail_at=9), steps)
    loads: list[int] = []
    again = _finish(tmp_path / "cut", _chunks(12, 4, loads=loads), steps)
    assert loads == [8]  # the first two chunks were committed; only the third is finished again
    assert again.join(tmp_path / "again.mp4").read_bytes() == whole.read_bytes()


def test_a_last_chunk_is_redone_when_more_chunks_follow_after_all(tmp_path: Path) -> None:
    steps = [InterpolateStep(Blend(), 2)]
    first = _finish(tmp_path / "f", _chunks(8, 4), steps)
    assert sum(s.frame_count for s in first.segments) == 15
    loads: list[int] = []
    longer = _finish(tmp_path / "f", _chunks(12, 4, loads=loads), steps)
    assert loads == [4, 8]  # chunk 4-7 was finished as the last one: without the in-betweens after frame 7
    assert [s.frame_count for s in longer.segments] == [8, 8, 7]


def test_other_steps_start_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _finish(tmp_path / "f", _chunks(4, 4), [InterpolateStep(Blend(), 2)])
    loads: list[int] = []
    finisher = _finish(tmp_path / "f", _chunks(4, 4, loads=loads), [InterpolateStep(Blend(), 3)])
    assert loads == [0] and finisher.segments[0].frame_count == 10
    assert "changed" in caplog.text
