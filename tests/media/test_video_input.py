"""Tests for dreamreel.media.video_input: validation, exact frame identity, seeking, VFR, sizes, memory."""

from __future__ import annotations

import gc
import logging
import subprocess
import tracemalloc
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from dreamreel.errors import SettingsError
from dreamreel.media import video_input
from dreamreel.media.video_input import VideoSelection, audio_range, open_video, resize_frame

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
W, H, N = 64, 48, 30


def colour(k: int) -> np.ndarray:
    """A flat colour that identifies frame k (distinct for k < 32)."""
    return np.array([(k * 8) % 256, 255 - (k * 8) % 256, (k * 37 + 20) % 256], np.uint8)


PALETTE = np.stack([colour(k) for k in range(N)]).astype(np.float64)


def identify(frame: np.ndarray) -> int:
    """The frame number whose colour ``frame`` shows; fails if no colour is close."""
    mean = frame.reshape(-1, 3).mean(axis=0)
    errors = np.abs(PALETTE - mean).max(axis=1)
    k = int(np.argmin(errors))
    assert errors[k] <= 4, f"frame colour {mean} matches no source frame (closest {k}, error {errors[k]})"
    return k


def ffmpeg(*args: str, stdin: bytes | None = None) -> None:
    proc = subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], input=stdin,
                          capture_output=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()


def make_video(path: Path, *, count: int = N, width: int = W, height: int = H, audio: bool = True,
               fmt: tuple[str, ...] = (), size_args: tuple[str, ...] = ()) -> Path:  # fmt: skip
    """A lossless H.264 video whose frame k is colour(k) (keyframe every 5 frames), with a sine tone."""
    frames = np.stack([np.broadcast_to(colour(k % N), (height, width, 3)) for k in range(count)])
    args = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", "30", "-i", "pipe:0"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={count / 30}", "-c:a", "aac", "-shortest"]
    args += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "0", "-g", "5", *size_args, *fmt, str(path)]
    ffmpeg(*args, stdin=frames.tobytes())
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("video_input")
    mp4 = make_video(root / "colours.mp4")
    paths = {"mp4": mp4, "ts": make_video(root / "colours.ts", fmt=("-f", "mpegts"))}
    paths["mkv"] = make_video(root / "colours.mkv", audio=False)
    paths["vfr"] = root / "vfr.mp4"  # frames 5..9 removed, timestamps kept: a 5-frame gap
    ffmpeg("-i", str(mp4), "-vf", "select='not(between(n,5,9))'", "-fps_mode", "passthrough", "-c:v", "libx264",
           "-crf", "0", "-c:a", "copy", str(paths["vfr"]))  # fmt: skip
    paths["edit_list"] = root / "edit_list.mp4"  # stream copy from 0.2 s: an edit list hides a leading packet
    ffmpeg("-ss", "0.2", "-i", str(mp4), "-c", "copy", str(paths["edit_list"]))
    paths["rotated"] = root / "rotated.mp4"
    ffmpeg("-display_rotation:v:0", "90", "-i", str(mp4), "-c", "copy", str(paths["rotated"]))
    paths["odd"] = make_video(root / "odd.mp4", width=66, height=50, audio=False)
    paths["damaged"] = root / "damaged.mp4"  # packets corrupted deterministically: early frames undecodable
    ffmpeg("-i", str(mp4), "-c", "copy", "-bsf:v", "noise=amount=4", str(paths["damaged"]))
    paths["truncated"] = root / "truncated.mp4"  # the index (moov) is at the end and gets cut off
    paths["truncated"].write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 2])
    paths["empty"] = root / "empty.mp4"
    paths["empty"].write_bytes(b"")
    paths["audio_only"] = root / "tone.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(paths["audio_only"]))
    return paths


# --------------------------------------------------------------------------------------------- identity


def test_info_and_every_frame_in_order(videos: dict[str, Path]) -> None:
    with open_video(videos["mp4"]) as source:
        assert source.info.fps == 30.0 and source.info.fps_rational == "30/1"
        assert source.info.frame_count == N and source.frame_count == N and len(source) == N
        assert source.info.has_audio and source.info.duration == pytest.approx(1.0, abs=0.05)
        assert (source.width, source.height) == (W, H) and source.output_fps == 30.0
        assert not source.variable_frame_rate and source.notices == ()
        seen = [(index, identify(frame)) for index, frame in source]
    assert seen == [(k, k) for k in range(N)]


@pytest.mark.parametrize("kind", ["mp4", "ts", "mkv"])
def test_start_and_every_nth_select_exact_source_frames(videos: dict[str, Path], kind: str) -> None:
    with open_video(videos[kind], VideoSelection(start_frame=3, end_frame=25, every_nth=4)) as source:
        assert source.frame_count == 6 and source.first_frame == 3
        assert source.output_fps == 7.5 and source.output_fps_rational == "15/2"
        assert [source.source_frame(i) for i in range(6)] == [3, 7, 11, 15, 19, 23]
        assert [identify(frame) for _, frame in source] == [3, 7, 11, 15, 19, 23]


def test_end_frame_is_inclusive_and_minus_one_means_to_the_end(videos: dict[str, Path]) -> None:
    with open_video(videos["mp4"], VideoSelection(start_frame=20, end_frame=24)) as source:
        assert [identify(f) for _, f in source] == [20, 21, 22, 23, 24]
    with open_video(videos["mp4"], VideoSelection(start_frame=27, every_nth=2)) as source:
        assert [identify(f) for _, f in source] == [27, 29]


def test_range_in_seconds(videos: dict[str, Path]) -> None:
    with open_video(videos["mp4"], VideoSelection(start_seconds=0.5, end_seconds=0.8)) as source:
        assert [source.source_frame(i) for i in range(len(source))] == list(range(15, 24))
        assert identify(source.frame(0)) == 15 and identify(source.frame(8)) == 23


def test_frame_access_continues_the_stream_and_seeks_when_needed(
    videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[int] = []
    original = video_input._Decoder

    class Counting(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            started.append(int(args[2]))  # type: ignore[call-overload]
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(video_input, "_Decoder", Counting)
    with open_video(videos["mp4"]) as source:
        started.clear()  # open_video decoded frame 0 as a check
        assert [identify(source.frame(i)) for i in range(10)] == list(range(10))
        assert started == [0]  # one stream for ten consecutive frames
        assert identify(source.frame(12)) == 12 and started == [0]  # a short jump reads through
        assert identify(source.frame(4)) == 4 and started == [0, 4]  # backwards: a new stream at 4
        assert identify(source.frame(5)) == 5 and started == [0, 4]
        assert identify(source.frame(29)) == 29 and identify(source.frame(0)) == 0
        again = source.frame(17)
        assert np.array_equal(again, source.frame(17))  # same decode, same pixels
    assert source._decoder is None


def test_seek_that_lands_late_falls_back_to_reading_from_the_start(videos: dict[str, Path]) -> None:
    # MPEG-TS has no index: ffmpeg's seek can land after the wanted frame; every frame is still exact.
    with open_video(videos["ts"]) as source:
        assert [identify(source.frame(i)) for i in (21, 8, 13, 3, 29)] == [21, 8, 13, 3, 29]


def test_matroska_millisecond_timestamps_are_constant_30_fps(videos: dict[str, Path]) -> None:
    with open_video(videos["mkv"]) as source:
        assert source.fps_fraction == 30 and not source.variable_frame_rate
        assert source.info.fps_rational == "30/1" and not source.info.has_audio


def test_packets_cut_by_an_mp4_edit_list_are_not_frames(videos: dict[str, Path]) -> None:
    with open_video(videos["edit_list"], VideoSelection(start_frame=2, every_nth=3)) as source:
        assert source.info.frame_count == 24  # 25 packets, the first one before the edit list's start
        assert [identify(frame) for _, frame in source] == [8, 11, 14, 17, 20, 23, 26, 29]
        assert audio_range(source)[0] == pytest.approx(2 / 30)


# --------------------------------------------------------------------------------------------- audio


def test_audio_range_matches_the_selected_frames(videos: dict[str, Path]) -> None:
    with open_video(videos["mp4"], VideoSelection(start_frame=6, end_frame=25, every_nth=2)) as source:
        start, duration = audio_range(source)
        assert start == pytest.approx(6 / 30) and duration == pytest.approx(source.frame_count * 2 / 30)
        assert source.frame_count == 10 and duration == pytest.approx(10 / source.output_fps)


def test_audio_range_counts_from_the_file_start_when_the_video_starts_later(videos: dict[str, Path]) -> None:
    # MPEG-TS files start at 1.4 s and the video here 1/42 s after the sound: ffmpeg's -ss counts from the start.
    with open_video(videos["ts"], VideoSelection(start_frame=3)) as source:
        start, _ = audio_range(source)
        first_video = float(source._line.t0 - source._line.container_start)
        assert 0 < first_video < 0.1 and start == pytest.approx(first_video + 3 / 30)


# --------------------------------------------------------------------------------------------- VFR, sizes


def test_variable_frame_rate_is_decoded_as_constant_rate_with_a_notice(
    videos: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="dreamreel.media.video_input"):
        source = open_video(videos["vfr"])
    with source:
        assert source.variable_frame_rate and source.fps_fraction == 30 and source.frame_count == N
        assert source.info.frame_count == N and source.info.fps_rational == "30/1"
        assert any("variable frame rate" in r.getMessage() for r in caplog.records)
        assert "variable frame rate" in source.notices[0]
        shown = [identify(frame) for _, frame in source]
    # the 5-frame gap shows the frame before it; every other frame is at its own time
    assert shown[:5] == [0, 1, 2, 3, 4] and set(shown[5:10]) <= {4, 10} and shown[10:] == list(range(10, N))
    assert audio_range(source) == (0.0, pytest.approx(1.0))


def test_rotation_metadata_swaps_the_frame_size(videos: dict[str, Path]) -> None:
    with open_video(videos["rotated"]) as source:
        assert (source.width, source.height) == (H, W)
        frame = source.frame(7)
        assert frame.shape == (W, H, 3) and identify(frame) == 7


def test_sizes_are_rounded_down_to_multiples_of_8_with_a_notice(videos: dict[str, Path]) -> None:
    with open_video(videos["odd"]) as source:
        assert (source.width, source.height) == (64, 48)
        assert source.notices == (
            "The frame size 66x50 is not a multiple of 8 (needed by Stable Diffusion and the encoder); video "
            "frames are resized to 64x48.",
        )
        assert source.frame(3).shape == (48, 64, 3) and identify(source.frame(3)) == 3
    with open_video(videos["mp4"], VideoSelection(width=36, height=21, resize_mode="just_resize")) as source:
        assert (source.width, source.height) == (32, 16) and source.frame(2).shape == (16, 32, 3)
        assert identify(source.frame(2)) == 2
    with open_video(videos["mp4"], VideoSelection(width=128)) as source:  # height follows the aspect
        assert (source.width, source.height) == (128, 96) and source.notices == ()


def test_resize_modes() -> None:
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, :20] = (255, 0, 0)
    image[:, 20:] = (0, 0, 255)
    image[0] = (0, 255, 0)  # top row green
    crop = resize_frame(image, 16, 16, "crop_and_resize")  # keeps the centre 20x20: half red, half blue
    assert crop.shape == (16, 16, 3)
    assert np.array_equal(crop[8, 0], [255, 0, 0]) and np.array_equal(crop[8, -1], [0, 0, 255])
    fill = resize_frame(image, 40, 40, "resize_and_fill")  # 40x20 fits, bands of 10 rows above and below
    assert fill.shape == (40, 40, 3)
    assert np.array_equal(fill[:10], np.repeat(fill[10:11], 10, axis=0))  # top band repeats the edge row
    assert np.array_equal(fill[-10:], np.repeat(fill[29:30], 10, axis=0))
    assert np.array_equal(fill[5, 2], [0, 255, 0]) and np.array_equal(fill[35, 2], [255, 0, 0])
    stretch = resize_frame(image, 8, 32, "just_resize")
    assert stretch.shape == (32, 8, 3)
    assert resize_frame(image, 40, 20, "crop_and_resize") is image


# --------------------------------------------------------------------------------------------- memory


def test_streaming_memory_does_not_grow_with_the_number_of_frames(tmp_path: Path) -> None:
    path = make_video(tmp_path / "long.mp4", count=300, width=128, height=128, audio=False)
    with open_video(path) as source:
        gc.collect()
        tracemalloc.start()
        try:
            for index, _frame in source:
                if index == 29:
                    after_30 = tracemalloc.get_traced_memory()[0]
            after_300, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    frame_bytes = 128 * 128 * 3
    assert index == 299
    assert after_300 - after_30 < frame_bytes  # 270 more frames (13 MB) kept nothing
    assert peak < 8 * frame_bytes


# --------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("empty", "the file is empty"),
        ("truncated", "corrupt or truncated"),
        ("audio_only", "no video stream"),
    ],
)
def test_unusable_files_are_rejected_before_decoding(videos: dict[str, Path], kind: str, words: str) -> None:
    with pytest.raises(SettingsError, match=words) as caught:
        open_video(videos[kind])
    message = str(caught.value)
    assert str(videos[kind]) in message and "re-encode" in message and caught.value.key == "video_input.path"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist") as caught:
        open_video(tmp_path / "nope.mp4")
    assert "nope.mp4" in str(caught.value)


def test_undecodable_frames_are_reported_at_open(videos: dict[str, Path]) -> None:
    with pytest.raises(SettingsError, match=r"could not be decoded|ended before frame") as caught:
        open_video(videos["damaged"])
    assert "damaged.mp4" in str(caught.value) and "re-encode" in str(caught.value)


def test_selection_outside_the_video(videos: dict[str, Path]) -> None:
    with pytest.raises(SettingsError, match="starts outside the video") as caught:
        open_video(videos["mp4"], VideoSelection(start_frame=30))
    assert "30 frames (0..29), 1.000 s at 30 fps" in str(caught.value)
    assert caught.value.key == "video_input.from_frame"
    with pytest.raises(SettingsError, match=r"ends outside the video.*-1 means to the end"):
        open_video(videos["mp4"], VideoSelection(end_frame=30))
    with pytest.raises(SettingsError, match="starts outside"):
        open_video(videos["mp4"], VideoSelection(start_seconds=2.0))
    with open_video(videos["mp4"], VideoSelection(end_seconds=1.0)) as source:  # exactly the end is fine
        assert source.frame_count == N


@pytest.mark.parametrize(
    ("kwargs", "key", "words"),
    [
        ({"every_nth": 0}, "video_input.every_nth_frame", "every_nth must be a whole number >= 1"),
        ({"start_frame": 5, "end_frame": 4}, "video_input.to_frame", "inclusive"),
        ({"start_frame": 2, "start_seconds": 1.0}, "video_input.from_frame", "not both"),
        ({"start_seconds": 2.0, "end_seconds": 1.0}, "video_input.end_seconds", "after the start"),
        ({"resize_mode": "crop_resize"}, "video_input.resize_mode", "Did you mean one of 'crop_and_resize'"),
        ({"width": 4}, "width", "whole number >= 8"),
    ],
)
def test_selection_validation(kwargs: dict[str, object], key: str, words: str) -> None:
    with pytest.raises(SettingsError, match=words) as caught:
        VideoSelection(**kwargs)  # type: ignore[arg-type]
    assert caught.value.key == key


def test_frame_index_out_of_range(videos: dict[str, Path]) -> None:
    with open_video(videos["mp4"], VideoSelection(every_nth=10)) as source:
        assert source.frame_count == 3
        with pytest.raises(IndexError, match="selection has 3 frames"):
            source.frame(3)


def test_abandoned_iteration_is_cleaned_up(videos: dict[str, Path]) -> None:
    source = open_video(videos["mp4"])
    for index, _ in source:
        if index == 3:
            break
    process = source._decoder._proc  # type: ignore[union-attr]
    source.close()
    assert process.returncode is not None and process.stdout.closed and process.stderr.closed
    gc.collect()  # a leaked pipe or process would raise a ResourceWarning (an error here)


def test_a_source_dropped_without_close_stops_its_ffmpeg(videos: dict[str, Path]) -> None:
    source = open_video(videos["mp4"])
    source.frame(2)
    process = source._decoder._proc  # type: ignore[union-attr]
    del source
    gc.collect()
    assert process.returncode is not None and process.stdout.closed  # type: ignore[union-attr]
