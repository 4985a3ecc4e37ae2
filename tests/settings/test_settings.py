"""Settings: both formats load, validate with clear errors, and round-trip."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from dreamreel.errors import ScheduleError, SettingsError
from dreamreel.settings import (
    Settings,
    load_settings,
    resolve_schedules,
    save_settings,
    settings_from_mapping,
    to_deforum,
)
from dreamreel.settings.deforum import deforum_defaults

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))
RUN_FILE = ROOT / "tests" / "fixtures" / "deforum_run_settings.txt"


def write(tmp_path: Path, data: object, name: str = "settings.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def full_deforum_file(tmp_path: Path) -> Path:
    """A settings file with every key sd-webui-deforum saves (as its 'Save settings' run file does)."""
    data = dict(deforum_defaults())
    data["animation_mode"] = "3D"
    data["prompts"] = {
        "0": " tiny cute swamp bunny, highly detailed --neg nsfw, nude",
        "30": " anthropomorphic clean cat, 3d --neg nsfw, nude",
        "60": " a beautiful coconut --neg photo, realistic  nsfw, nude",
    }
    data["positive_prompts"] = ""
    data["negative_prompts"] = "nsfw, nude"
    data.update(batch_name="Deforum_20230812221310", sd_model_name="x.safetensors", sd_model_hash="3f4fefd9",
                deforum_git_commit_id="eb16c856")  # fmt: skip
    return write(tmp_path, data, "full_settings.txt")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_load_and_resolve(path: Path) -> None:
    settings = load_settings(path)
    table = resolve_schedules(settings, source=str(path))
    assert table.max_frames == settings.max_frames
    assert all(prompt for prompt in table.text["prompt"])


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_native_round_trip(path: Path, tmp_path: Path) -> None:
    settings = load_settings(path)
    saved = save_settings(settings, tmp_path / "saved.json")
    again = load_settings(saved)
    assert again == settings
    assert json.loads(saved.read_text())["dreamreel_settings"] == 1


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_deforum_form_round_trip(path: Path, tmp_path: Path) -> None:
    settings = load_settings(path)
    saved = save_settings(settings, tmp_path / "deforum.txt", deforum=True)
    data = json.loads(saved.read_text())
    assert "dreamreel_settings" not in data
    assert data["W"] == settings.width and data["max_frames"] == settings.max_frames
    assert load_settings(saved) == settings


def test_full_deforum_file_lists_unsupported_keys_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = full_deforum_file(tmp_path)
    with caplog.at_level(logging.WARNING, logger="dreamreel"):
        settings = load_settings(path)
    warnings = [r for r in caplog.records if "not supported" in r.getMessage()]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    for key in ("hybrid_composite", "use_looper", "tiling"):
        assert key in message
    assert "frame_interpolation_engine" not in message and "r_upscale_video" not in message  # finishing is supported
    assert "cn_1_enabled" not in message  # disabled ControlNet units do nothing, in Deforum too
    for key in ("zoom", "strength_schedule", "W", "prompts", "diffusion_cadence"):
        assert f" {key}," not in message and not message.endswith(key)
    assert "nothing is lost" in message
    assert settings.mode == "3d"
    assert settings.width == 512 and settings.steps == 25 and settings.sampler == "Euler a"
    assert settings.diffusion_cadence == 2
    assert settings.schedules.zoom == "0: (1.0025+0.002*sin(1.25*3.14*t/30))"
    assert settings.schedules.translation_z == "0: (1.75)"
    assert settings.schedules.noise_multiplier == "0: (1.05)"
    assert settings.schedules.steps is None and settings.schedules.sampler is None
    assert settings.color_coherence is not None and settings.color_coherence.space == "lab"
    table = resolve_schedules(settings)
    # the run file's prompts are already merged: the negative appears once, not twice
    assert table.text["negative_prompt"][0] == "nsfw, nude"
    assert table.text["prompt"][45] == "anthropomorphic clean cat, 3d"
    assert table.text["negative_prompt"][60] == "photo, realistic  nsfw, nude"


def test_non_default_unsupported_keys_are_called_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dreamreel"):
        settings = load_settings(RUN_FILE)
    message = next(r.getMessage() for r in caplog.records if "not supported" in r.getMessage())
    assert "hybrid_composite" in message and "non-default" in message
    assert settings.width == 640 and settings.height == 384 and settings.border == "wrap"


def test_deforum_controlnet_units(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = {
        "max_frames": 4, "cn_1_enabled": True, "cn_1_module": "openpose_full", "cn_1_weight": "0:(1), 3:(0.4)",
        "cn_1_model": "control_v11p_sd15_openpose [cab727d4]", "cn_1_resize_mode": "Just Resize",
        "cn_1_control_mode": "ControlNet is more important", "cn_1_loopback_mode": True,
        "cn_2_enabled": False, "cn_2_module": "canny", "cn_3_enabled": True, "cn_3_module": "softedge_hed",
        "cn_3_vid_path": "hed.mp4", "cn_3_resize_mode": "Sideways",
    }  # fmt: skip
    with pytest.raises(SettingsError, match=r"cn_3_resize_mode: is 'Sideways'; allowed: 'Inner Fit"):
        load_settings(write(tmp_path, data))
    data["cn_3_resize_mode"] = "Outer Fit (Shrink to Fit)"
    with caplog.at_level(logging.WARNING, logger="dreamreel"):
        settings = load_settings(write(tmp_path, data))
    assert [u.preprocessor for u in settings.controlnet] == ["openpose_full", "softedge_hed"]
    first, second = settings.controlnet
    assert first.model == "control_v11p_sd15_openpose [cab727d4]" and first.resize_mode == "just_resize"
    assert first.control_mode == "controlnet" and second.resize_mode == "resize_and_fill"
    assert second.input == str(tmp_path / "hed.mp4")  # relative to the settings file
    assert "cn_1_loopback_mode" in caplog.text and "cn_2_module" not in caplog.text
    table = resolve_schedules(settings)
    assert table.row(3).controlnet[0] == (0.4, 0.0, 1.0)
    assert table.row(0).controlnet[1] == (1.0, 0.0, 1.0)
    assert settings_from_mapping(to_deforum(settings)) == settings


def test_deforum_run_file_values(tmp_path: Path) -> None:
    settings = load_settings(RUN_FILE)
    table = resolve_schedules(settings)
    assert settings.seed_iter_n == 2
    assert table.text["prompt"][0] == "hq a red fox in the snow"
    assert table.text["negative_prompt"][0] == "blurry,  nsfw"
    assert table.text["negative_prompt"][25] == "nsfw"
    assert table.text["sampler"][19] == "DPM++ 2M Karras" and table.text["sampler"][20] == "Euler a"
    assert table.numeric["steps"][0] == 30 and table.numeric["steps"][39] == 20
    assert table.numeric["angle"][10] == pytest.approx(1.0)
    # iter with seed_iter_N = 2: first seed once, then each later seed twice
    assert table.numeric["seed"][:5].tolist() == [3141592, 3141593, 3141593, 3141594, 3141594]


def test_ui_saved_file_merges_global_prompts(tmp_path: Path) -> None:
    path = write(tmp_path, {
        "max_frames": 5, "seed": 1, "prompts": {"0": "owl --neg blur", "3": "fox"},
        "animation_prompts_positive": "hq", "animation_prompts_negative": "bad",
    })  # fmt: skip
    table = resolve_schedules(load_settings(path))
    assert table.text["prompt"][0] == "hq owl"
    assert table.text["negative_prompt"][0] == "blur  bad"
    assert (table.text["prompt"][4], table.text["negative_prompt"][4]) == ("hq fox", "bad")


def test_old_key_names_are_migrated(tmp_path: Path) -> None:
    path = write(tmp_path, {"animation_prompts": {"0": "a cat"}, "flip_2d_perspective": True,
                            "color_coherence": "Match Frame 0 HSV", "max_frames": 3})  # fmt: skip
    settings = load_settings(path)
    assert settings.prompts == {"0": "a cat"}
    assert settings.perspective_flip is True
    assert settings.color_coherence is not None and settings.color_coherence.space == "hsv"


def test_bare_number_schedules_are_constants(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, {"cfg_scale_schedule": 7, "strength_schedule": "0.5", "max_frames": 4}))
    table = resolve_schedules(settings)
    assert table.numeric["cfg_scale"].tolist() == [7.0] * 4
    assert table.numeric["strength"][1:].tolist() == [0.5] * 3


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"W": "wide"}, ["W", "wide", "integer"]),
        ({"W": 4}, ["W", "greater than or equal to 8"]),
        ({"animation_mode": "4D"}, ["animation_mode", "'4D'", "'2D'", "'3D'", "Did you mean"]),
        ({"seed_behavior": "sometimes"}, ["seed_behavior", "sometimes", "'iter'"]),
        ({"sampler": 3}, ["sampler", "index", "Euler a"]),
        ({"color_coherence": "Lab"}, ["color_coherence", "'Lab'", "Did you mean 'LAB'"]),
        ({"max_frames": 0}, ["max_frames", "greater than or equal to 1"]),
    ],
)
def test_deforum_value_errors_name_the_key(tmp_path: Path, data: dict[str, object], expected: list[str]) -> None:
    path = write(tmp_path, data)
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    message = str(info.value)
    assert message.startswith(str(path))
    for part in expected:
        assert part in message


def test_native_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    path = write(tmp_path, {"dreamreel_settings": 1, "max_frame": 10, "schedules": {"zom": "0:(1)"}})
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    message = str(info.value)
    assert "2 invalid settings" in message
    assert "max_frame: unknown setting. Did you mean 'max_frames'?" in message
    assert "schedules.zom: unknown setting. Did you mean 'zoom'?" in message


def test_unknown_deforum_key_is_reported_with_suggestion(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dreamreel"):
        load_settings(write(tmp_path, {"max_frames": 3, "zoom_schedule": "0:(1.1)"}))
    assert "'zoom_schedule' Did you mean 'noise_schedule'?" in caplog.text or "zoom_schedule" in caplog.text
    assert "not Deforum or dreamreel settings" in caplog.text


def test_invalid_json_reports_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.txt"
    path.write_text('{\n  "W": 512,\n  "H": 512\n  "seed": 1\n}\n', encoding="utf-8")
    with pytest.raises(SettingsError, match=r"not valid JSON: Expecting ',' delimiter at line 4, column 3"):
        load_settings(path)


def test_missing_file_and_wrong_top_level(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="file not found"):
        load_settings(tmp_path / "nope.json")
    with pytest.raises(SettingsError, match="must be a JSON object"):
        load_settings(write(tmp_path, [1, 2, 3]))


def test_schedule_error_names_file_deforum_key_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, {"max_frames": 40, "zoom": "0:(1.0), 30:(1.02+sin(t)"})
    settings = load_settings(path)
    with pytest.raises(ScheduleError) as info:
        resolve_schedules(settings, source=str(path))
    message = str(info.value)
    assert message.startswith(f"{path}: zoom")
    assert "^" in message.splitlines()[-1]


def test_native_schedule_error_uses_native_key(tmp_path: Path) -> None:
    path = write(tmp_path, {"dreamreel_settings": 1, "max_frames": 10, "schedules": {"angle": "0:(foo)"}})
    with pytest.raises(ScheduleError, match=r"schedules\.angle.*unknown name 'foo'"):
        resolve_schedules(load_settings(path), source=str(path))


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.width = 640  # type: ignore[misc]


def test_copies_keep_the_key_names_but_do_not_share_them() -> None:
    import copy

    original = settings_from_mapping({"W": 640, "strength_schedule": "0:(0.6)"})  # Deforum keys
    assert original.key_names["width"] == "W"
    for duplicate in (original.model_copy(), original.model_copy(update={"fps": 24.0}), copy.copy(original)):
        assert duplicate.key_names == original.key_names  # names carry over without help
        duplicate.key_names["width"] = "--width"
        duplicate.key_names["fps"] = "--fps"
        assert original.key_names["width"] == "W" and "fps" not in original.key_names
    original.key_names["height"] = "H"
    deep = original.model_copy(deep=True)
    assert deep.key_names["height"] == "H"
    deep.key_names["height"] = "--height"
    assert original.key_names["height"] == "H"


def test_to_deforum_has_every_deforum_key() -> None:
    data = to_deforum(Settings(bpm=120, prompt_blend=True))
    assert set(deforum_defaults()) <= set(data)
    assert data["bpm"] == 120 and data["prompt_blend"] is True
    assert settings_from_mapping(data) == Settings(bpm=120, prompt_blend=True)


def test_importing_settings_does_not_import_torch() -> None:
    code = (
        "import sys, dreamreel, dreamreel.settings, dreamreel.keyframes, dreamreel.plan; print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_settings_reference_is_up_to_date() -> None:
    from dreamreel.settings.reference import settings_reference

    committed = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert committed == settings_reference(), "run: python -m dreamreel.settings.reference > docs/settings.md"
