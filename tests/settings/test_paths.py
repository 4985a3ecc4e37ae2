"""Relative paths in a settings file are relative to that file, whatever the working directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamreel.cli import main
from dreamreel.errors import SettingsError
from dreamreel.settings import load_settings, save_settings


def write(path: Path, data: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``project/settings.json`` with ``init.png`` next to it; the working directory is elsewhere."""
    folder = tmp_path / "project"
    folder.mkdir()
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(folder / "init.png")
    write(folder / "settings.json", {"dreamreel_settings": 1, "width": 64, "height": 64, "max_frames": 2, "fps": 4,
                                     "init_image": "init.png", "prompts": {"0": "a cat"}})  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return folder


def test_native_paths_are_relative_to_the_file(project: Path) -> None:
    settings = load_settings(Path("..") / "project" / "settings.json")
    assert settings.init_image == str(project / "init.png")


def test_plan_and_preview_find_the_init_image_next_to_the_file(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Path("..") / "project" / "settings.json"
    assert main(["plan", str(settings)]) == 0
    assert main(["render", str(settings), "--preview", "--out", str(tmp_path / "run")]) == 0
    assert "error" not in capsys.readouterr().err
    # the run directory's settings hold the absolute path, so --resume works from anywhere
    assert json.loads((tmp_path / "run" / "settings.json").read_text())["init_image"] == str(project / "init.png")


def test_a_missing_relative_file_is_reported_where_it_was_looked_for(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "init.png").unlink()
    assert main(["render", str(project / "settings.json"), "--preview", "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert "init_image" in error and str(project / "init.png") in error and "Traceback" not in error


def test_deforum_paths_are_relative_to_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "deforum"
    write(folder / "settings.txt", {
        "animation_mode": "Video Input", "video_init_path": "clips/in.mp4", "use_mask_video": True,
        "video_mask_path": "clips/mask.mp4", "use_init": True, "init_image": "init.png", "max_frames": 4,
        "add_soundtrack": "File", "soundtrack_path": "../music/song.mp3", "color_coherence": "Image",
        "color_coherence_image_path": "palette.png", "parseq_manifest": "parseq.json", "cn_1_enabled": True,
        "cn_1_module": "canny", "cn_1_vid_path": "edges", "cn_1_model": "control_v11p_sd15_canny",
        "prompts": {"0": "a cat"},
    })  # fmt: skip
    monkeypatch.chdir(tmp_path.anchor)
    settings = load_settings(folder / "settings.txt")
    assert settings.video_input is not None and settings.color_coherence is not None and settings.parseq is not None
    assert settings.video_input.path == str(folder / "clips" / "in.mp4")
    assert settings.video_input.mask_path == str(folder / "clips" / "mask.mp4")
    assert settings.init_image == str(folder / "init.png")
    assert settings.output.audio == str(tmp_path / "music" / "song.mp3")
    assert settings.color_coherence.image == str(folder / "palette.png")
    assert settings.parseq.manifest == str(folder / "parseq.json")
    assert settings.controlnet[0].input == str(folder / "edges")
    assert settings.controlnet[0].model == "control_v11p_sd15_canny"  # a name, not a file next to the settings
    # where each value came from is kept (errors name the Deforum key)
    assert settings.key_names["init_image"] == "init_image"
    assert settings.key_names["video_input.path"] == "video_init_path"
    assert settings.key_names["output.audio"] == "soundtrack_path"


def test_model_paths_change_only_when_the_file_exists(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "cn.safetensors").write_bytes(b"")
    data = {"dreamreel_settings": 1, "model": "v1-5-pruned-emaonly",
            "controlnet": [{"preprocessor": "canny", "model": "models/cn.safetensors"}]}  # fmt: skip
    settings = load_settings(write(tmp_path / "s.json", data))
    assert settings.model == "v1-5-pruned-emaonly"
    assert settings.controlnet[0].model == str(tmp_path / "models" / "cn.safetensors")


def test_home_is_expanded_and_urls_and_inline_manifests_stay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    manifest = '{"rendered_frames": []}'
    data = {"dreamreel_settings": 1, "init_image": "~/pictures/init.png", "parseq": {"manifest": manifest},
            "output": {"audio": "https://example.com/song.mp3"}}  # fmt: skip
    settings = load_settings(write(tmp_path / "s.json", data))
    assert settings.init_image == str(tmp_path / "home" / "pictures" / "init.png")
    assert settings.parseq is not None and settings.parseq.manifest == manifest
    assert settings.output.audio == "https://example.com/song.mp3"  # refused with its key where it is opened


def test_saved_settings_round_trip(project: Path, tmp_path: Path) -> None:
    settings = load_settings(project / "settings.json")
    saved = save_settings(settings, tmp_path / "run" / "settings.json")
    assert load_settings(saved) == settings
    deforum = save_settings(settings, tmp_path / "run" / "settings_deforum.txt", deforum=True)
    assert load_settings(deforum) == settings


@pytest.mark.parametrize(
    ("soundtrack", "written"),
    [("File", "soundtrack_path"), ("Init Video", "video_init_path (add_soundtrack 'Init Video')")],
)
def test_the_soundtrack_is_named_as_the_deforum_file_names_it(tmp_path: Path, soundtrack: str, written: str) -> None:
    data = {"animation_mode": "Video Input", "video_init_path": "in.mp4", "add_soundtrack": soundtrack,
            "soundtrack_path": "song.mp3", "prompts": {"0": "a cat"}}  # fmt: skip
    settings = load_settings(write(tmp_path / "s.txt", data))
    assert settings.key_names["output.audio"] == written


def test_pydantic_errors_name_the_deforum_key(tmp_path: Path) -> None:
    data = {"animation_mode": "2D", "color_coherence": "LAB", "color_coherence_video_every_N_frames": 0,
            "prompts": {"0": "a cat"}}  # fmt: skip
    with pytest.raises(SettingsError, match="color_coherence_video_every_N_frames: Input should be greater"):
        load_settings(write(tmp_path / "s.txt", data))


def test_a_controlnet_resolution_that_is_not_a_number_is_a_settings_error(tmp_path: Path) -> None:
    data = {"cn_1_enabled": True, "cn_1_module": "canny", "cn_1_processor_res": "big", "prompts": {"0": "a cat"}}
    with pytest.raises(SettingsError, match=r"cn_1_processor_res: is 'big'"):
        load_settings(write(tmp_path / "s.txt", data))
