"""Tests for dreamreel.media.video, .join and .ffmpeg: segments, bit-exact joins, audio, probing, preflight."""

from __future__ import annotations

import os
import signal
import subprocess
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from dreamreel.errors import RenderError, SettingsError
from dreamreel.media import video
from dreamreel.media.ffmpeg import probe, rational_fps
from dreamreel.media.join import join_segments, mux_audio
from dreamreel.media.video import SegmentInfo, SegmentWriter, VideoOptions, preflight

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
W, H = 128, 96


def ffmpeg(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run the bundled ffmpeg quietly and fail the test if it fails."""
    proc = subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", *args], capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc


def frames(count: int, *, seed: int = 0, width: int = W, height: int = H) -> list[np.ndarray]:
    """Textured, moving, noisy frames (so the encoder uses B-frames and real motion)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height // 8, width // 8, 3)).astype(np.float32)
    texture = np.kron(base, np.ones((8, 8, 1), np.float32))
    x = np.arange(width, dtype=np.float32)[None, :, None]
    out = []
    for i in range(count):
        img = np.roll(texture, 2 * i, axis=1) + 40 * np.sin(i / 3 + x / 9) + rng.normal(0, 6, texture.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def decode_yuv(path: Path, width: int = W, height: int = H) -> np.ndarray:
    """Decoded frames in the encoded pixel format (no colour conversion), one row per frame."""
    out = ffmpeg(
        "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"
    )
    return np.frombuffer(out.stdout, np.uint8).reshape(-1, width * height * 3 // 2)


def decode_rgb(path: Path) -> list[np.ndarray]:
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    result = [np.frombuffer(buf, np.uint8).reshape(height, width, 3) for buf in reader]
    return result


def packet_times(path: Path) -> tuple[list[int], list[int]]:
    """(dts, pts) of the video packets, in decode order."""
    out = ffmpeg("-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "framecrc", "-").stdout.decode()
    rows = [line.split(",") for line in out.splitlines() if not line.startswith("#")]
    return [int(r[1]) for r in rows], [int(r[2]) for r in rows]


def write_segments(
    options: VideoOptions, images: list[np.ndarray], lengths: list[int], folder: Path
) -> list[SegmentInfo]:
    writer = SegmentWriter(options)
    segments, start = [], 0
    for length in lengths:
        writer.open(folder / f"seg_{start:09d}{options.segment_suffix}", start)
        for image in images[start : start + length]:
            writer.write(image)
        segments.append(writer.close())
        start += length
    return segments


def make_audio(path: Path, seconds: float, *codec: str) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", *codec, "-y", str(path))
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part") or p.name.startswith("."))


# ------------------------------------------------------------------------------------------- options


def test_rational_fps_snaps_to_exact_rates() -> None:
    assert rational_fps(29.97) == Fraction(30000, 1001)
    assert rational_fps(23.976) == Fraction(24000, 1001)
    assert rational_fps(15.0) == 15
    assert rational_fps(12.5) == Fraction(25, 2)
    assert VideoOptions(64, 64, fps=59.94).fps_fraction == Fraction(60000, 1001)


def test_options_defaults_and_crf_checked_per_codec() -> None:
    options = VideoOptions(640, 384, fps=24)
    assert (options.width, options.height, options.fps, options.codec, options.crf) == (640, 384, 24, "h264", 17)
    assert (options.preset, options.segment_suffix, options.output_suffixes[0]) == ("veryfast", ".ts", ".mp4")
    with pytest.raises(SettingsError, match="0 to 51"):
        VideoOptions(640, 384, crf=55)  # Settings allows 63 (vp9); x264 does not


@pytest.mark.parametrize(
    ("kwargs", "key", "text"),
    [
        ({"codec": "h246"}, "output.codec", "'h264'"),
        ({"crf": 52}, "output.crf", "0 to 51"),
        ({"codec": "vp9", "crf": 64}, "output.crf", "0 to 63"),
        ({"preset": "veryfst"}, "output.preset", "'veryfast'"),
        ({"fps": 0.0}, "fps", "positive"),
    ],
)
def test_options_reject_bad_values(kwargs: dict[str, object], key: str, text: str) -> None:
    with pytest.raises(SettingsError) as info:
        VideoOptions(64, 64, **kwargs)  # type: ignore[arg-type]
    assert info.value.key == key
    assert text in str(info.value)


# ------------------------------------------------------------------------------------------- segments


def test_segment_round_trip_probe_and_colours(tmp_path: Path) -> None:
    options = VideoOptions(W, H, fps=29.97)
    swatch = np.zeros((H, W, 3), np.uint8)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (40, 120, 200), (200, 60, 30)]
    for i, colour in enumerate(colours):
        swatch[(i // 3) * 48 : (i // 3 + 1) * 48, (i % 3) * 42 : (i % 3 + 1) * 42] = colour
    images = [swatch, *frames(11)]
    (segment,) = write_segments(options, images, [12], tmp_path)
    assert segment == SegmentInfo(tmp_path / "seg_000000000.ts", 0, 12)
    assert leftovers(tmp_path) == []

    info = probe(segment.path)
    assert (info.width, info.height, info.frame_count) == (W, H, 12)
    assert info.fps_rational == "30000/1001"
    assert info.fps == pytest.approx(29.97003, abs=1e-5)
    assert info.video_duration == pytest.approx(12 * 1001 / 30000, abs=1e-3)
    assert (info.video_codec, info.has_audio, info.audio_codec) == ("h264", False, None)

    header = subprocess.run([FFMPEG, "-hide_banner", "-i", str(segment.path)], capture_output=True).stderr.decode()
    assert "yuv420p(tv, bt709" in header  # limited range, BT.709 matrix tagged for players
    decoded = decode_rgb(segment.path)
    assert len(decoded) == 12
    # BT.709 conversion and tags: saturated colours come back within a few levels (a BT.601/709
    # mismatch moves pure red by more than 20).
    for i, colour in enumerate(colours):
        centre = decoded[0][(i // 3) * 48 + 24, (i % 3) * 42 + 21].astype(int)
        assert np.abs(centre - np.array(colour)).max() <= 4, (colour, centre)
    error = np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(decoded[1:], images[1:], strict=True)])
    shifted = np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(decoded[2:], images[1:-1], strict=True)])
    assert error < 8.0 < 3 * error < shifted  # the noise is lossy; the frames are in order


def test_encoding_is_deterministic(tmp_path: Path) -> None:
    options = VideoOptions(W, H, fps=10, preset="medium")
    images = frames(10, seed=3)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (a,) = write_segments(options, images, [10], tmp_path / "a")
    (b,) = write_segments(options, images, [10], tmp_path / "b")
    assert np.array_equal(decode_yuv(a.path), decode_yuv(b.path))


def test_writer_rejects_wrong_frames_and_sizes(tmp_path: Path) -> None:
    writer = SegmentWriter(VideoOptions(W, H, fps=10))
    writer.open(tmp_path / "seg.ts", 40)
    writer.write(frames(1)[0])
    with pytest.raises(RenderError, match=r"frame 41: .*shape \(64, 64, 3\)"):
        writer.write(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(RenderError, match="frame 41: the image is float32"):
        writer.write(np.zeros((H, W, 3), np.float32))
    assert writer.close().frame_count == 1
    with pytest.raises(RenderError, match="needs even"):
        SegmentWriter(VideoOptions(65, 48, fps=10)).open(tmp_path / "odd.ts", 0)
    with pytest.raises(ValueError, match=r"\.ts"):
        writer.open(tmp_path / "seg.mp4", 0)


def test_empty_segment_writes_nothing(tmp_path: Path) -> None:
    writer = SegmentWriter(VideoOptions(W, H, fps=10))
    writer.open(tmp_path / "seg_000000005.ts", 5)
    assert writer.close() == SegmentInfo(tmp_path / "seg_000000005.ts", 5, 0)
    assert list(tmp_path.iterdir()) == []


def test_exception_keeps_frames_and_ffmpeg_ignores_terminal_ctrl_c(tmp_path: Path) -> None:
    pgids = []

    def render() -> None:
        with SegmentWriter(VideoOptions(W, H, fps=10)) as writer:
            writer.open(tmp_path / "seg.ts", 0)
            for image in frames(3):
                writer.write(image)
            assert writer.pid is not None
            pgids.append(os.getpgid(writer.pid))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        render()
    assert pgids[0] != os.getpgid(0)  # a terminal's SIGINT does not reach ffmpeg
    assert probe(tmp_path / "seg.ts").frame_count == 3
    assert leftovers(tmp_path) == []


def test_encoder_death_raises_with_command_and_leaves_no_file(tmp_path: Path) -> None:
    writer = SegmentWriter(VideoOptions(W, H, fps=10), queue_frames=1)
    writer.open(tmp_path / "seg.ts", 0)
    images = frames(2)
    writer.write(images[0])
    assert writer.pid is not None
    os.kill(writer.pid, signal.SIGKILL)

    def keep_writing() -> None:
        for _ in range(200):
            writer.write(images[1])
        writer.close()

    with pytest.raises(RenderError) as info:
        keep_writing()
    assert "Command: " in str(info.value) and "-f mpegts" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_ffmpeg_error_message_has_stderr(tmp_path: Path) -> None:
    writer = SegmentWriter(VideoOptions(W, H, fps=10))
    writer.open(tmp_path / "missing-dir" / "seg.ts", 0)
    writer.write(frames(1)[0])  # ffmpeg cannot open its output; the pipe or close() notices
    with pytest.raises(RenderError) as info:
        writer.close()
    message = str(info.value)
    assert "ffmpeg exited with status" in message
    assert "No such file or directory" in message
    assert str(tmp_path / "missing-dir" / "seg.ts.part") in message


# ------------------------------------------------------------------------------------------- joining


@pytest.mark.parametrize("codec", ["h264", "h265", "vp9"])
def test_join_is_a_bit_exact_concatenation(tmp_path: Path, codec: str) -> None:
    options = VideoOptions(W, H, fps=10, codec=codec, preset="veryfast")
    images = frames(16, seed=1)
    # Short segments in the middle have no B-frame delay; the join must still keep DTS monotonic.
    segments = write_segments(options, images, [6, 1, 2, 7], tmp_path)
    output = join_segments(segments, tmp_path / f"out{options.output_suffixes[0]}", options=options)

    joined = decode_yuv(output)
    separate = np.concatenate([decode_yuv(seg.path) for seg in segments])
    assert joined.shape[0] == 16
    assert np.array_equal(joined, separate)

    info = probe(output)
    assert (info.frame_count, info.fps_rational, info.has_audio) == (16, "10/1", False)
    assert info.video_duration == pytest.approx(1.6, abs=0.002)
    assert info.duration == pytest.approx(1.6, abs=0.011)
    dts, pts = packet_times(output)
    assert len(set(np.diff(dts))) == 1 and dts[1] > dts[0], dts  # monotonic, one frame apart
    assert len(set(np.diff(sorted(pts)))) == 1, pts  # constant frame rate
    assert leftovers(tmp_path) == []


def test_join_gif_reencodes_all_frames(tmp_path: Path) -> None:
    options = VideoOptions(64, 64, fps=10, codec="gif")
    segments = write_segments(options, frames(6, width=64, height=64), [4, 2], tmp_path)
    info = probe(join_segments(segments, tmp_path / "new" / "loop.gif", options=options))
    assert (info.video_codec, info.frame_count, info.width) == ("gif", 6, 64)
    assert info.video_duration == pytest.approx(0.6, abs=0.011)
    with pytest.raises(SettingsError, match="cannot carry sound"):
        join_segments(segments, tmp_path / "loop.gif", options=options, audio=tmp_path / "x.wav")


def test_join_checks_segments_and_output(tmp_path: Path) -> None:
    options = VideoOptions(W, H, fps=10)
    segments = write_segments(options, frames(5), [3, 2], tmp_path)
    gap = [segments[0], SegmentInfo(segments[1].path, 4, 2)]
    with pytest.raises(RenderError, match="frames would be missing"):
        join_segments(gap, tmp_path / "out.mp4", options=options)
    with pytest.raises(SettingsError, match=r"\.mp4 or \.mov or \.mkv"):
        join_segments(segments, tmp_path / "out.webm", options=options)
    with pytest.raises(RenderError, match="is missing"):
        join_segments([*segments, SegmentInfo(tmp_path / "gone.ts", 5, 3)], tmp_path / "out.mp4", options=options)
    segments[1].path.write_bytes(os.urandom(20_000))  # ffmpeg skips the junk; the frame count catches it
    with pytest.raises(RenderError, match="has 3 frames but its inputs should give 5"):
        join_segments(segments, tmp_path / "out.mp4", options=options)
    segments[0].path.write_text("not a video\n")  # ffmpeg cannot open it at all
    with pytest.raises(RenderError, match=r"(?s)ffmpeg exited with status.*Command: .*-f concat.*Impossible to open"):
        join_segments(segments, tmp_path / "out.mp4", options=options)
    assert not (tmp_path / "out.mp4").exists()
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------- audio


@pytest.mark.parametrize(("seconds", "codec"), [(3, ["-c:a", "libmp3lame"]), (0.7, [])], ids=["longer", "shorter"])
def test_join_with_audio_follows_the_video_length(tmp_path: Path, seconds: float, codec: list[str]) -> None:
    audio = make_audio(tmp_path / ("a.mp3" if codec else "a.wav"), seconds, *codec)
    options = VideoOptions(W, H, fps=10)
    segments = write_segments(options, frames(20), [12, 8], tmp_path)
    info = probe(join_segments(segments, tmp_path / "out.mp4", options=options, audio=audio))
    assert (info.frame_count, info.has_audio, info.audio_codec) == (20, True, "aac")
    assert info.duration == pytest.approx(2.0, abs=0.1)
    assert info.audio_duration == pytest.approx(2.0, abs=0.1)
    assert decode_yuv(tmp_path / "out.mp4").shape[0] == 20


def test_mux_audio_from_a_video_with_sound(tmp_path: Path) -> None:
    source = tmp_path / "source.mp4"
    ffmpeg(
        *("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=4", "-f", "lavfi", "-i", "sine=duration=4"),
        *("-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", "-y", str(source)),
    )
    options = VideoOptions(W, H, fps=12)
    silent = join_segments(
        write_segments(options, frames(15), [15], tmp_path), tmp_path / "silent.mp4", options=options
    )
    info = probe(mux_audio(silent, source, tmp_path / "sound.mp4", audio_start=1.0))
    assert (info.frame_count, info.has_audio) == (15, True)
    assert info.audio_duration == pytest.approx(15 / 12, abs=1 / 12)
    with pytest.raises(SettingsError, match="no audio stream") as error:
        mux_audio(silent, silent, tmp_path / "again.mp4")
    assert error.value.key == "output.audio"
    assert not (tmp_path / "again.mp4").exists()


# ------------------------------------------------------------------------------------------- probing


def test_probe_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        probe(tmp_path / "nope.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(SettingsError, match="empty"):
        probe(tmp_path / "empty.mp4")
    (tmp_path / "junk.mp4").write_bytes(os.urandom(4096))
    with pytest.raises(SettingsError, match="could not read"):
        probe(tmp_path / "junk.mp4")
    with pytest.raises(SettingsError, match="no video stream"):
        probe(make_audio(tmp_path / "tone.wav", 0.2))


# ------------------------------------------------------------------------------------------- preflight


def test_preflight_adjusts_size_and_cleans_up(tmp_path: Path) -> None:
    report = preflight(VideoOptions(131, 100, fps=10), tmp_path / "run", estimated_frames=100)
    assert (report.options.width, report.options.height) == (128, 96)
    assert report.notice is not None and "131x100" in report.notice and "128x96" in report.notice
    assert report.ffmpeg_version.startswith("ffmpeg version")
    assert report.free_bytes > report.estimated_bytes > 0
    assert list((tmp_path / "run").iterdir()) == []
    unchanged = preflight(VideoOptions(64, 48, fps=10, codec="vp9"), tmp_path, estimated_frames=10)
    assert unchanged.notice is None
    assert list(tmp_path.glob("*.*")) == []


def test_preflight_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = VideoOptions(64, 64, fps=10)
    silent = write_segments(options, frames(1, width=64, height=64), [1], tmp_path)[0].path
    with pytest.raises(SettingsError, match="no audio stream"):
        preflight(options, tmp_path / "a", estimated_frames=10, audio=silent)
    (tmp_path / "file").write_text("x")
    with pytest.raises(RenderError, match="not writable"):
        preflight(options, tmp_path / "file" / "run", estimated_frames=10)

    class Usage:
        free = 10_000_000

    monkeypatch.setattr(video.shutil, "disk_usage", lambda _: Usage())
    with pytest.raises(RenderError, match=r"has 10 MB free, but 5000 frames"):
        preflight(options, tmp_path / "b", estimated_frames=5000)
    monkeypatch.setattr(video, "available_encoders", lambda: frozenset({"libx264", "libvpx-vp9"}))
    with pytest.raises(RenderError, match=r"no libx265 encoder.*codecs that work here: h264, vp9, gif"):
        preflight(VideoOptions(64, 64, codec="h265"), tmp_path, estimated_frames=10)
