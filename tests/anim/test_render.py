"""The whole render: preview and tiny-model runs, run directory, stop and resume, SIGKILL recovery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image as PILImage

from dreamreel.errors import SettingsError
from dreamreel.jobs.render import RenderOptions, render_settings, resume
from dreamreel.keyframes import ScheduleTable
from dreamreel.media.ffmpeg import probe
from dreamreel.settings import load_settings


def settings_file(tmp_path: Path, **overrides: object) -> Path:
    data: dict[str, object] = {
        "dreamreel_settings": 1,
        "mode": "2d",
        "width": 64,
        "height": 64,
        "max_frames": 16,
        "fps": 8,
        "seed": 7,
        "steps": 2,
        "prompts": {"0": "a red cat", "8": "the blue dog"},
        "schedules": {"zoom": "0:(1.05)", "angle": "0:(2)", "strength": "0:(0.6)", "noise": "0:(0.02)"},
    }
    data.update(overrides)
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(data))
    return path


def frames_of(video: Path) -> list[np.ndarray]:
    reader = imageio_ffmpeg.read_frames(str(video), pix_fmt="rgb24", output_params=["-fps_mode", "passthrough"])
    meta = next(reader)
    width, height = meta["size"]
    return [np.frombuffer(raw, np.uint8).reshape(height, width, 3).copy() for raw in reader]


def test_preview_render_writes_run_directory_and_video(tmp_path: Path) -> None:
    settings = settings_file(tmp_path, max_frames=12)
    report = render_settings(settings, RenderOptions(out=tmp_path / "run", preview=True, segment_frames=5))
    run = tmp_path / "run"
    assert report.finished and report.frames_written == 12
    info = probe(run / "video.mp4")
    assert info.frame_count == 12 and info.fps == pytest.approx(8) and (info.width, info.height) == (64, 64)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert [s["frame_count"] for s in manifest["segments"]] == [5, 5, 2]
    assert load_settings(run / "settings.json").seed == 7
    assert load_settings(run / "settings_deforum.txt").seed == 7
    assert ScheduleTable.from_csv(run / "schedule.csv").max_frames == 12
    frames = frames_of(run / "video.mp4")
    assert len(frames) == 12
    assert np.abs(frames[0].astype(int) - frames[6].astype(int)).mean() > 5  # the camera moved


def test_a_finished_run_is_never_overwritten(tmp_path: Path) -> None:
    settings = settings_file(tmp_path, max_frames=3)
    render_settings(settings, RenderOptions(out=tmp_path / "run", preview=True))
    with pytest.raises(Exception, match="--overwrite"):
        render_settings(settings, RenderOptions(out=tmp_path / "run", preview=True))
    render_settings(settings, RenderOptions(out=tmp_path / "run", preview=True, overwrite=True))


def test_cadence_writes_every_frame_including_the_last(tmp_path: Path) -> None:
    settings = settings_file(tmp_path, max_frames=10, diffusion_cadence=4)
    report = render_settings(settings, RenderOptions(out=tmp_path / "run", preview=True, segment_frames=3))
    assert report.finished
    assert len(frames_of(tmp_path / "run" / "video.mp4")) == 10


def test_stop_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    settings = settings_file(tmp_path)
    render_settings(settings, RenderOptions(out=tmp_path / "full", preview=True, segment_frames=4))
    calls = {"n": 0}

    def stop_after_two_groups() -> bool:
        calls["n"] += 1
        return calls["n"] > 7

    partial = render_settings(
        settings,
        RenderOptions(out=tmp_path / "part", preview=True, segment_frames=4),
        should_stop=stop_after_two_groups,
    )
    assert not partial.finished and partial.video is not None
    assert json.loads((tmp_path / "part" / "manifest.json").read_text())["status"] == "interrupted"
    assert len(frames_of(partial.video)) == 7  # a playable video of everything rendered so far
    resumed = resume(tmp_path / "part", RenderOptions())
    assert resumed.finished
    full = frames_of(tmp_path / "full" / "video.mp4")
    again = frames_of(tmp_path / "part" / "video.mp4")
    assert len(again) == len(full) == 16
    for index, (a, b) in enumerate(zip(full, again, strict=True)):
        assert np.array_equal(a, b), f"frame {index} differs"


def _cli(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "dreamreel.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )


def _kill_when(process: subprocess.Popen[bytes], manifest: Path, condition: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _, err = process.communicate()
            raise AssertionError(f"the render ended before the kill point {condition!r}: {err!r}")
        if manifest.exists():
            try:
                data = json.loads(manifest.read_text())
            except json.JSONDecodeError:
                data = None
            if data is not None and eval(condition, {}, {"n": data["next_frame"]}):  # noqa: S307 - test-only literal
                process.send_signal(signal.SIGKILL)
                process.communicate()
                return
        time.sleep(0.01)
    process.kill()
    process.communicate()
    raise AssertionError("timed out waiting for the kill point")


def _finish(process: subprocess.Popen[bytes]) -> None:
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]


KILL_SETTINGS = {"max_frames": 14}


@pytest.fixture(scope="module")
def kill_case(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> tuple[Path, list[str], list[np.ndarray]]:
    """Settings, CLI options and the frames of an uninterrupted tiny-model render (built once)."""
    root = tmp_path_factory.mktemp("kill")
    settings = settings_file(root, **KILL_SETTINGS)
    common = ["--model", str(tiny_model_dir), "--segment-frames", "3"]
    _finish(_cli("render", str(settings), "--out", str(root / "reference"), *common))
    return settings, common, frames_of(root / "reference" / "video.mp4")


@pytest.mark.parametrize(
    "kill_at",
    [
        "n >= 3",  # after the first committed segment, with pending frames of the next one
        pytest.param("n == 0", marks=pytest.mark.slow),  # before any segment is committed
        pytest.param("n >= 9", marks=pytest.mark.slow),  # late, several segments in
    ],
)
def test_sigkill_then_resume_is_bit_identical(
    tmp_path: Path, kill_case: tuple[Path, list[str], list[np.ndarray]], kill_at: str
) -> None:
    settings, common, expected = kill_case
    run = tmp_path / "killed"
    process = _cli("render", str(settings), "--out", str(run), *common)
    _kill_when(process, run / "manifest.json", kill_at)
    _finish(_cli("render", "--resume", str(run)))
    actual = frames_of(run / "video.mp4")
    assert len(actual) == len(expected) == 14
    for index, (a, b) in enumerate(zip(expected, actual, strict=True)):
        assert np.array_equal(a, b), f"frame {index} differs after resuming from a kill at {kill_at}"


def test_colour_reference_image_pulls_frames_towards_it(tmp_path: Path, tiny_model_dir: Path) -> None:
    from PIL import Image

    reddish = np.zeros((64, 64, 3), np.uint8)
    reddish[..., 0] = np.linspace(150, 255, 64, dtype=np.uint8)[None, :]
    Image.fromarray(reddish).save(tmp_path / "ref.png")
    colour = {"space": "rgb", "reference": "image", "image": str(tmp_path / "ref.png")}
    matched = settings_file(tmp_path, max_frames=3, color_coherence=colour)
    render_settings(matched, RenderOptions(out=tmp_path / "matched", model=str(tiny_model_dir), save_frames=True))
    after = _pngs(tmp_path / "matched")[-1].reshape(-1, 3).mean(0)
    target = reddish.reshape(-1, 3).mean(0)
    assert np.abs(after - target).max() < 15  # matched to the reference's histogram
    # a motion preview shows the camera only: no colour matching (it piles up without diffusion)
    render_settings(matched, RenderOptions(out=tmp_path / "preview", preview=True, save_frames=True))
    plain = settings_file(tmp_path, max_frames=3, color_coherence=None)
    render_settings(plain, RenderOptions(out=tmp_path / "plain", preview=True, save_frames=True))
    assert np.array_equal(_pngs(tmp_path / "preview")[-1], _pngs(tmp_path / "plain")[-1])


def test_colour_reference_video_needs_video_input(tmp_path: Path) -> None:
    settings = settings_file(tmp_path, color_coherence={"reference": "video"})
    with pytest.raises(Exception, match="needs Video Input mode"):
        render_settings(settings, RenderOptions(out=tmp_path / "run", preview=True))
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_optical_flow_cadence_renders_every_frame(tmp_path: Path) -> None:
    plain = settings_file(tmp_path, max_frames=7, diffusion_cadence=3)
    render_settings(plain, RenderOptions(out=tmp_path / "plain", preview=True, save_frames=True))
    flowing = settings_file(tmp_path, max_frames=7, diffusion_cadence=3, optical_flow_cadence="dis_medium")
    render_settings(flowing, RenderOptions(out=tmp_path / "flow", preview=True, save_frames=True))
    a, b = frames_of(tmp_path / "plain" / "video.mp4"), frames_of(tmp_path / "flow" / "video.mp4")
    assert len(a) == len(b) == 7
    # the diffused frames are the same (lossless PNGs: x264's lookahead makes decoded frames depend on their
    # neighbours, which differ here)
    first = [np.asarray(PILImage.open(tmp_path / run / "frames" / "000000000.png")) for run in ("plain", "flow")]
    assert np.array_equal(first[0], first[1])


def test_3d_preview_with_a_depth_model(tmp_path: Path) -> None:
    from dreamreel.testing import save_tiny_depth_model

    depth = save_tiny_depth_model(tmp_path / "depth")
    settings = settings_file(
        tmp_path, mode="3d", max_frames=4, schedules={"translation_z": "0:(10)", "rotation_3d_y": "0:(2)"}
    )
    report = render_settings(settings, RenderOptions(out=tmp_path / "run", preview=True, depth_model=str(depth)))
    assert report.finished and report.timer.calls["depth"] == 3  # depth of each warped frame
    frames = frames_of(tmp_path / "run" / "video.mp4")
    assert len(frames) == 4 and np.abs(frames[0].astype(int) - frames[3].astype(int)).mean() > 3


def test_settings_that_are_not_acted_on_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    settings = settings_file(
        tmp_path, max_frames=2, schedules={"model": '0:("a.safetensors")', "ddim_eta": "0:(0.2)"},
        color_coherence={"grayscale": True},
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="dreamreel"):
        render_settings(settings, RenderOptions(out=tmp_path / "run", preview=True))
    for key in ("schedules.model", "schedules.ddim_eta", "color_coherence.grayscale"):
        assert f"{key} is set but not supported yet" in caplog.text


def _pngs(run: Path) -> list[np.ndarray]:
    return [np.asarray(PILImage.open(path)) for path in sorted((run / "frames").glob("*.png"))]


def test_frames_renders_the_first_frames_of_the_full_animation(tmp_path: Path) -> None:
    """``--frames N`` keeps every schedule of the full animation: a prompt key at 200 still works."""
    settings = settings_file(tmp_path, max_frames=300, prompts={"200": "a late prompt"})
    report = render_settings(settings, RenderOptions(out=tmp_path / "run", preview=True, max_frames=5))
    assert report.finished and report.frames_written == 5 and report.total_frames == 5
    assert len(frames_of(tmp_path / "run" / "video.mp4")) == 5
    assert ScheduleTable.from_csv(tmp_path / "run" / "schedule.csv").max_frames == 300  # the whole table
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["max_frames"] == 5


def test_frames_equal_the_first_frames_of_a_full_render(tmp_path: Path) -> None:
    """A cadence group crossing N (frames 4-6 with cadence 3 and N = 5) blends towards the same diffused frame."""
    settings = settings_file(tmp_path, max_frames=12, diffusion_cadence=3)
    render_settings(settings, RenderOptions(out=tmp_path / "full", preview=True, save_frames=True))
    render_settings(settings, RenderOptions(out=tmp_path / "five", preview=True, save_frames=True, max_frames=5))
    full, five = _pngs(tmp_path / "full"), _pngs(tmp_path / "five")
    assert len(full) == 12 and len(five) == 5
    for index, (a, b) in enumerate(zip(full, five, strict=False)):
        assert np.array_equal(a, b), f"frame {index} differs"


def test_resume_refuses_another_frame_count(tmp_path: Path) -> None:
    settings = settings_file(tmp_path, max_frames=12)
    calls = {"n": 0}

    def stop_soon() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    render_settings(settings, RenderOptions(out=tmp_path / "run", preview=True, max_frames=8), should_stop=stop_soon)
    with pytest.raises(SettingsError, match="--frames"):
        resume(tmp_path / "run", RenderOptions(max_frames=10))
    report = resume(tmp_path / "run", RenderOptions(max_frames=8))
    assert report.finished and len(frames_of(tmp_path / "run" / "video.mp4")) == 8


def _stopped_tiny_run(settings: Path, run: Path, model: str, **options: object) -> None:
    calls = {"n": 0}

    def stop_after_one_group() -> bool:
        calls["n"] += 1
        return calls["n"] > 1

    report = render_settings(
        settings,
        RenderOptions(out=run, model=model, **options),
        should_stop=stop_after_one_group,  # type: ignore[arg-type]
    )
    assert not report.finished


def test_resume_from_another_folder_and_with_the_model_moved(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    settings = settings_file(tmp_path, max_frames=3)
    shutil.copytree(tiny_model_dir, tmp_path / "models" / "tiny")
    monkeypatch.chdir(tmp_path)
    _stopped_tiny_run(settings, tmp_path / "run", "models/tiny")  # a path relative to this folder
    saved = json.loads((tmp_path / "run" / "manifest.json").read_text())["options"]
    assert saved["model_path"] == str(tmp_path / "models" / "tiny") and saved["model_fingerprint"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # a different model is refused, naming the option and what the run used
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    config = other / "unet" / "config.json"
    config.write_text(config.read_text().replace("{", '{"_note": "another model",', 1))
    with pytest.raises(SettingsError, match=r"--model.*a different model would change the frames"):
        resume(tmp_path / "run", RenderOptions(model=str(other)))
    # the same model moved elsewhere is accepted
    (tmp_path / "models" / "tiny").rename(tmp_path / "moved")
    with pytest.raises(SettingsError, match=r"--model.*not there any more"):
        resume(tmp_path / "run", RenderOptions())
    report = resume(tmp_path / "run", RenderOptions(model=str(tmp_path / "moved")))
    assert report.finished
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["options"]["model_path"] == str(
        tmp_path / "moved"
    )


def test_resume_refuses_a_model_for_a_preview_and_a_different_depth_model(tmp_path: Path) -> None:
    settings = settings_file(tmp_path, max_frames=8)
    calls = {"n": 0}

    def stop_soon() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    render_settings(settings, RenderOptions(out=tmp_path / "run", preview=True), should_stop=stop_soon)
    with pytest.raises(SettingsError, match="--model"):
        resume(tmp_path / "run", RenderOptions(model="some/model"))
    from dreamreel.testing import save_tiny_depth_model

    depth = str(save_tiny_depth_model(tmp_path / "depth"))
    with pytest.raises(SettingsError, match="--depth-model"):
        resume(tmp_path / "run", RenderOptions(depth_model=depth))
    assert resume(tmp_path / "run", RenderOptions()).finished


def test_resume_says_when_the_settings_file_was_edited(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    settings = settings_file(tmp_path, max_frames=8)
    calls = {"n": 0}

    def stop_soon() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    render_settings(settings, RenderOptions(out=tmp_path / "run", preview=True), should_stop=stop_soon)
    settings.write_text(settings.read_text().replace('"a red cat"', '"a green cat"'))
    with caplog.at_level(logging.WARNING, logger="dreamreel"):
        report = resume(tmp_path / "run", RenderOptions())
    assert report.finished
    assert any(str(settings) in notice and "has changed" in notice for notice in report.notices)
    assert "settings.json" in caplog.text and "has changed" in caplog.text


def test_sigterm_stops_like_ctrl_c(tmp_path: Path, kill_case: tuple[Path, list[str], list[np.ndarray]]) -> None:
    """``kill PID`` (service managers, containers, schedulers) leaves a playable video and a run to resume."""
    settings, common, expected = kill_case
    run = tmp_path / "termed"
    process = _cli("render", str(settings), "--out", str(run), *common)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if json.loads((run / "manifest.json").read_text())["next_frame"] >= 3:
                break
        except (OSError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.01)
    assert process.poll() is None, "the render ended before it could be stopped"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err.decode(errors="replace")[-2000:]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["next_frame"] >= 3
    stopped = frames_of(run / "video.mp4")  # playable
    assert 3 <= len(stopped) < 14
    _finish(_cli("render", "--resume", str(run)))
    actual = frames_of(run / "video.mp4")
    assert len(actual) == 14
    for index, (a, b) in enumerate(zip(expected, actual, strict=True)):
        assert np.array_equal(a, b), f"frame {index} differs after SIGTERM and --resume"


def test_disk_full_is_a_clear_error_and_resume_finishes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from dreamreel.errors import RenderError
    from dreamreel.media import rundir

    settings = settings_file(tmp_path)
    render_settings(settings, RenderOptions(out=tmp_path / "full", preview=True, segment_frames=4))
    write_pending = rundir._write_pending

    def fill_up(path: Path, image: np.ndarray) -> None:
        if path.name == "000000006.npy":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write_pending(path, image)

    monkeypatch.setattr(rundir, "_write_pending", fill_up)
    run = tmp_path / "run"
    with pytest.raises(RenderError, match=r"disk full while writing .*000000006\.npy") as caught:
        render_settings(settings, RenderOptions(out=run, preview=True, segment_frames=4))
    message = str(caught.value)
    assert f"frames are safe in {run}" in message and f"dreamreel render --resume {run}" in message
    assert int(message.split(": ", 1)[1].split(" frames are safe")[0]) >= 4
    leftovers = [p for p in run.rglob("*") if p.name.endswith((".tmp", ".part", ".ffconcat"))]
    assert not leftovers and not [p for p in run.rglob("*") if p.is_file() and p.stat().st_size == 0]
    monkeypatch.setattr(rundir, "_write_pending", write_pending)  # space was freed
    assert resume(run, RenderOptions()).finished
    full, again = frames_of(tmp_path / "full" / "video.mp4"), frames_of(run / "video.mp4")
    assert len(again) == len(full) == 16
    for index, (a, b) in enumerate(zip(full, again, strict=True)):
        assert np.array_equal(a, b), f"frame {index} differs"


def test_a_preview_shows_the_camera_motion_only(tmp_path: Path) -> None:
    """No colour matching, contrast, noise or sharpening in a preview: they pile up without diffusion."""
    zoom = {"zoom": "0:(1.03)", "angle": "0:(1)"}
    effects = settings_file(
        tmp_path, max_frames=40, schedules={**zoom, "noise": "0:(0.06)", "contrast": "0:(0.95)",
                                            "antiblur_amount": "0:(0.5)"},
        color_coherence={"space": "lab"},
    )  # fmt: skip
    render_settings(effects, RenderOptions(out=tmp_path / "effects", preview=True, save_frames=True))
    plain = settings_file(tmp_path, max_frames=40, schedules=zoom, color_coherence=None)
    render_settings(plain, RenderOptions(out=tmp_path / "warp", preview=True, save_frames=True))
    with_effects, warped = _pngs(tmp_path / "effects"), _pngs(tmp_path / "warp")
    for index in (10, 39):
        a, b = with_effects[index].astype(float), warped[index].astype(float)
        assert np.abs(a.reshape(-1, 3).mean(0) - b.reshape(-1, 3).mean(0)).max() < 2, f"frame {index}"
        saturation = [np.ptp(image, axis=2).mean() for image in (a, b)]
        assert abs(saturation[0] - saturation[1]) < 2, f"frame {index}"


def test_a_2d_preview_imports_neither_torch_nor_diffusers(tmp_path: Path) -> None:
    """A 2D run needs no torch until a generator loads (about 1 s of the README preview was torch's import)."""
    example = str(Path(__file__).resolve().parents[2] / "examples" / "zoom_tunnel.json")
    code = (
        "import sys\n"
        "from dreamreel.cli import main\n"
        f"rc = main(['render', {example!r}, '--preview', '--frames', '3', '--out', {str(tmp_path / 'run')!r}])\n"
        "assert rc == 0, rc\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "run" / "video.mp4").is_file()


@pytest.mark.parametrize("old_format", [False, True])
def test_pending_frames_are_raw_arrays_and_older_png_ones_still_resume(tmp_path: Path, old_format: bool) -> None:
    settings = settings_file(tmp_path)
    render_settings(settings, RenderOptions(out=tmp_path / "full", preview=True, segment_frames=4))
    calls = {"n": 0}

    def stop_in_the_second_segment() -> bool:
        calls["n"] += 1
        return calls["n"] > 7

    render_settings(
        settings,
        RenderOptions(out=tmp_path / "part", preview=True, segment_frames=4),
        should_stop=stop_in_the_second_segment,
    )
    pending = sorted((tmp_path / "part" / "pending").glob("*.npy"))
    assert pending and not list((tmp_path / "part" / "pending").glob("*.png"))
    if old_format:  # a run directory written by an earlier version: lossless PNGs
        for path in pending:
            PILImage.fromarray(np.load(path)).save(path.with_suffix(".png"))
            path.unlink()
    assert resume(tmp_path / "part", RenderOptions()).finished
    full = frames_of(tmp_path / "full" / "video.mp4")
    again = frames_of(tmp_path / "part" / "video.mp4")
    assert len(again) == len(full) == 16
    assert all(np.array_equal(a, b) for a, b in zip(full, again, strict=True))


def test_an_encoder_failure_on_the_writer_thread_is_a_clear_render_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ffmpeg dying mid-run surfaces from the run directory's writer thread as a RenderError; resume finishes."""
    from dreamreel.errors import RenderError
    from dreamreel.media import video

    settings = settings_file(tmp_path)
    render_settings(settings, RenderOptions(out=tmp_path / "full", preview=True, segment_frames=4))
    writers: list[video.SegmentWriter] = []
    start = video.SegmentWriter._start

    def record(self: video.SegmentWriter) -> None:
        start(self)
        writers.append(self)

    monkeypatch.setattr(video.SegmentWriter, "_start", record)
    calls = {"n": 0}

    def kill_the_encoder_once() -> bool:
        calls["n"] += 1
        if calls["n"] == 6:
            deadline = time.monotonic() + 30
            while not [w for w in writers if w.pid] and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(next(w.pid for w in writers if w.pid), signal.SIGKILL)
        return False

    run = tmp_path / "run"
    with pytest.raises(RenderError, match="Encoding the video") as caught:
        render_settings(
            settings, RenderOptions(out=run, preview=True, segment_frames=4), should_stop=kill_the_encoder_once
        )
    assert "ffmpeg" in str(caught.value)
    assert json.loads((run / "manifest.json").read_text())["status"] == "interrupted"
    assert not [p for p in run.rglob("*") if p.name.endswith((".tmp", ".part", ".ffconcat"))]
    monkeypatch.setattr(video.SegmentWriter, "_start", start)
    assert resume(run, RenderOptions()).finished
    full, again = frames_of(tmp_path / "full" / "video.mp4"), frames_of(run / "video.mp4")
    assert len(again) == len(full) == 16
    assert all(np.array_equal(a, b) for a, b in zip(full, again, strict=True))


def test_checkpoints_name_only_frames_the_writer_thread_has_written_and_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop runs ahead of a slow writer thread; every commit point still names only complete, fsynced files."""
    from dreamreel.media import rundir

    settings = settings_file(tmp_path)
    render_settings(settings, RenderOptions(out=tmp_path / "full", preview=True, segment_frames=5))
    synced: set[str] = set()
    pending_commits: list[int] = []
    sync_files, write_pending, write_text = rundir._sync_files, rundir._write_pending, rundir.atomic_write_text
    commit = rundir.RunDirectory.commit

    def record_sync(files: list[Path]) -> None:
        sync_files(files)
        synced.update(file.name for file in files)

    def slow_pending(path: Path, image: np.ndarray) -> None:
        time.sleep(0.03)  # the loop gets ahead of the writer thread
        write_pending(path, image)

    def checked_write(path: Path, text: str, **kwargs: object) -> Path:
        if Path(path).name == "pending.json":
            data = json.loads(text)
            for frame in range(data["segment_start"], data["next_frame"]):
                name = f"{frame:09d}.npy"
                assert name in synced, f"pending.json names {name} before it is fsynced"
                assert np.load(Path(path).parent / name).shape == (64, 64, 3)
            pending_commits.append(data["next_frame"])
        return write_text(path, text, **kwargs)  # type: ignore[arg-type]

    def checked_commit(self: rundir.RunDirectory) -> None:
        for segment in self.manifest.segments:
            assert Path(segment["path"]).name in synced, f"the manifest names {segment['path']} before it is fsynced"
        commit(self)

    monkeypatch.setattr(rundir, "_sync_files", record_sync)
    monkeypatch.setattr(rundir, "_write_pending", slow_pending)
    monkeypatch.setattr(rundir, "atomic_write_text", checked_write)
    monkeypatch.setattr(rundir.RunDirectory, "commit", checked_commit)
    calls = {"n": 0}

    def stop_in_the_second_segment() -> bool:
        calls["n"] += 1
        return calls["n"] > 8

    run = tmp_path / "part"
    report = render_settings(
        settings, RenderOptions(out=run, preview=True, segment_frames=5), should_stop=stop_in_the_second_segment
    )
    assert not report.finished and pending_commits and pending_commits[-1] == 8  # close() waited for the thread
    assert json.loads((run / "manifest.json").read_text())["next_frame"] == 5
    assert json.loads((run / "pending" / "pending.json").read_text()) == {"segment_start": 5, "next_frame": 8}
    assert resume(run, RenderOptions()).finished
    full, again = frames_of(tmp_path / "full" / "video.mp4"), frames_of(run / "video.mp4")
    assert len(again) == len(full) == 16
    assert all(np.array_equal(a, b) for a, b in zip(full, again, strict=True))


def test_the_writer_thread_works_while_the_loop_waits_for_its_generator(tmp_path: Path) -> None:
    """Frames are encoded while the loop is in its "model" stage; when that never comes, a frame waits at most
    ``hold_seconds``, and a queue that fills up is worked off at once."""
    import threading

    from dreamreel.jobs.render import settings_files
    from dreamreel.media.rundir import RunDirectory, RunSink
    from dreamreel.media.video import VideoOptions
    from dreamreel.settings import Settings, resolve_schedules

    settings = Settings(mode="2d", width=64, height=64, max_frames=6, seed=1)
    table = resolve_schedules(settings)
    run = RunDirectory.create(tmp_path / "run", settings_files(settings), table, {})
    waiting = threading.Event()
    sink = RunSink(run, VideoOptions(width=64, height=64, fps=8), loop_waiting=waiting, hold_seconds=30)
    image = np.zeros((64, 64, 3), np.uint8)
    sink.write(image, table.row(0))
    time.sleep(0.3)
    assert not (run.root / "pending" / f"{0:09d}.npy").exists()  # held back: the loop is busy
    waiting.set()
    deadline = time.monotonic() + 10
    while not (run.root / "pending" / f"{0:09d}.npy").exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    waiting.clear()
    started = time.monotonic()
    sink.write(image, table.row(1))
    time.sleep(0.2)
    assert not (run.root / "pending" / f"{1:09d}.npy").exists()  # held back again
    for frame in range(2, 6):  # a half-full queue is worked off down to below half, loop busy or not
        sink.write(image, table.row(frame))
    deadline = time.monotonic() + 10
    while len(list((run.root / "pending").glob("*.npy"))) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    sink.close()  # the loop is done: nothing left to make way for
    assert time.monotonic() - started < 10
    assert len(list((run.root / "pending").glob("*.npy"))) == 6
