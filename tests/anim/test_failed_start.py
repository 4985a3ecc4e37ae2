"""A failed start never blocks the next attempt.

Everything a render needs (model, device, depth model, annotator weights, init image, audio) is
found and checked before the run directory is written, and a run directory whose render stopped
before its first frame is replaced by the next plain render.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dreamreel.errors import DreamreelError, ModelLoadError, SettingsError
from dreamreel.jobs.render import PreviewGenerator, RenderOptions, render_settings

from .test_render import settings_file


def _fails_cleanly(settings: Path, options: RenderOptions, match: str, error: type[Exception] = DreamreelError) -> None:
    assert options.out is not None
    with pytest.raises(error, match=match):
        render_settings(settings, options)
    assert not options.out.exists(), "a failed start left its run directory behind"


def test_no_model_names_the_option(tmp_path: Path) -> None:
    _fails_cleanly(settings_file(tmp_path), RenderOptions(out=tmp_path / "run"), "--model", SettingsError)


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "bogus"])
def test_a_device_this_machine_lacks_names_the_option(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    options = RenderOptions(out=tmp_path / "run", model=str(tiny_model_dir), device=device)
    _fails_cleanly(settings_file(tmp_path), options, "--device", SettingsError)


def test_a_missing_depth_model_names_the_option(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = settings_file(tmp_path, mode="3d", schedules={"translation_z": "0:(5)"})
    options = RenderOptions(out=tmp_path / "run", model=str(tiny_model_dir), depth_model=str(tmp_path / "no-depth"))
    _fails_cleanly(settings, options, "--depth-model", SettingsError)


def test_a_missing_depth_model_from_the_settings_names_the_key(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = settings_file(tmp_path, mode="3d", depth={"model": str(tmp_path / "no-depth")})
    options = RenderOptions(out=tmp_path / "run", model=str(tiny_model_dir))
    _fails_cleanly(settings, options, r"depth\.model \(or --depth-model\)", SettingsError)


def test_a_missing_depth_model_in_a_preview_falls_back_to_flat_depth(tmp_path: Path) -> None:
    settings = settings_file(tmp_path, mode="3d", max_frames=3, schedules={"translation_z": "0:(5)"})
    options = RenderOptions(out=tmp_path / "run", preview=True, depth_model=str(tmp_path / "no-depth"))
    assert render_settings(settings, options).finished


def test_missing_annotator_weights_fail_before_the_run_directory(tmp_path: Path) -> None:
    from dreamreel.testing import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny", controlnets=("hed",))
    settings = settings_file(tmp_path, controlnet=[{"preprocessor": "hed", "model": str(model / "controlnet-hed")}])
    options = RenderOptions(out=tmp_path / "run", model=str(model), annotators=tmp_path / "annotators")
    _fails_cleanly(settings, options, "ControlNetHED.pth", ModelLoadError)


def test_an_unreadable_init_image_fails_before_the_run_directory(tmp_path: Path) -> None:
    (tmp_path / "init.png").write_bytes(b"not a png")
    settings = settings_file(tmp_path, init_image=str(tmp_path / "init.png"))
    _fails_cleanly(settings, RenderOptions(out=tmp_path / "run", preview=True), "init", SettingsError)


def test_unreadable_audio_fails_before_the_run_directory(tmp_path: Path) -> None:
    (tmp_path / "song.mp3").write_bytes(b"not audio")
    options = RenderOptions(out=tmp_path / "run", preview=True, audio=tmp_path / "song.mp3")
    _fails_cleanly(settings_file(tmp_path), options, "song.mp3")


def test_a_garbage_checkpoint_fails_before_the_run_directory(tmp_path: Path) -> None:
    (tmp_path / "model.ckpt").write_bytes(os.urandom(4096))
    options = RenderOptions(out=tmp_path / "run", model=str(tmp_path / "model.ckpt"))
    _fails_cleanly(settings_file(tmp_path), options, "model.ckpt", ModelLoadError)


def test_a_run_that_failed_at_its_first_frame_is_started_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_file(tmp_path, max_frames=4)
    run = tmp_path / "run"
    original = PreviewGenerator.generate

    def broken(self: PreviewGenerator, request: object) -> object:
        raise RuntimeError("out of memory at frame 0")

    monkeypatch.setattr(PreviewGenerator, "generate", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        render_settings(settings, RenderOptions(out=run, preview=True))
    assert (run / "manifest.json").exists()  # the directory is there, with nothing rendered
    monkeypatch.setattr(PreviewGenerator, "generate", original)
    report = render_settings(settings, RenderOptions(out=run, preview=True))  # no --overwrite needed
    assert report.finished and report.frames_written == 4


def test_a_run_killed_before_its_first_frame_is_started_again(tmp_path: Path) -> None:
    """A manifest left at frame 0 by a process that is gone (SIGKILL, power cut) does not block."""
    settings = settings_file(tmp_path, max_frames=3)
    run = tmp_path / "run"
    render_settings(settings, RenderOptions(out=run, preview=True))
    manifest = json.loads((run / "manifest.json").read_text())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    manifest.update(status="rendering", next_frame=0, segments=[], state=None, video=None)
    manifest.update(pid=int(dead.stdout), host=socket.gethostname())
    for path in [*(run / "segments").iterdir(), run / "video.mp4"]:
        path.unlink()
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert render_settings(settings, RenderOptions(out=run, preview=True)).finished


def test_a_run_holding_frames_is_never_replaced_without_overwrite(tmp_path: Path) -> None:
    settings = settings_file(tmp_path, max_frames=8)
    run = tmp_path / "run"
    calls = {"n": 0}

    def stop_after_two_groups() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    partial = render_settings(settings, RenderOptions(out=run, preview=True), should_stop=stop_after_two_groups)
    assert not partial.finished
    with pytest.raises(SettingsError, match="--resume"):
        render_settings(settings, RenderOptions(out=run, preview=True))
    assert (run / "video.mp4").exists()


def test_a_folder_that_is_not_a_run_directory_is_never_taken(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(SettingsError, match="not empty"):
        render_settings(settings_file(tmp_path), RenderOptions(out=tmp_path / "run", preview=True))
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


def test_a_run_another_process_is_rendering_is_not_touched(tmp_path: Path) -> None:
    settings = settings_file(tmp_path, max_frames=3)
    run = tmp_path / "run"
    run.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        manifest = {"status": "rendering", "max_frames": 3, "next_frame": 0, "pid": other.pid}
        (run / "manifest.json").write_text(json.dumps({**manifest, "host": socket.gethostname()}))
        with pytest.raises(SettingsError, match=f"another process \\(pid {other.pid}\\)"):
            render_settings(settings, RenderOptions(out=run, preview=True))
    finally:
        other.kill()
        other.wait()
    assert render_settings(settings, RenderOptions(out=run, preview=True)).finished


def test_a_missing_lora_fails_before_the_run_directory(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = settings_file(tmp_path, prompts={"0": "a cat", "8": "a dog <lora:no_such_lora:0.7>"})
    options = RenderOptions(out=tmp_path / "run", model=str(tiny_model_dir))
    _fails_cleanly(settings, options, "no_such_lora", ModelLoadError)
