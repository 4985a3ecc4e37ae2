"""Every per-frame value is range-checked when the schedule table is built, so plan refuses what render would.

Each refused case is checked in both formats: the error names the file, the key as the user wrote
it (Deforum's ``strength_schedule`` or native ``schedules.strength``), the first bad frame, the
value and the allowed range.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dreamreel.errors import ScheduleError, SettingsError
from dreamreel.settings import Settings, load_settings, resolve_schedules, settings_from_mapping
from dreamreel.settings.model import NUMERIC_SCHEDULES
from dreamreel.settings.preprocessor_names import PREPROCESSOR_ALIASES, PREPROCESSOR_NAMES
from dreamreel.settings.resolve import BOUNDS, unused_columns


def resolve_file(tmp_path: Path, data: dict[str, Any], name: str = "bad.json") -> Path:
    """Write ``data`` and resolve it as the CLI does; returns the path (for the assertions)."""
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    resolve_schedules(load_settings(path), source=str(path))
    return path


# (Deforum keys, native keys, key as written in each, first bad frame, text in the message)
NUMERIC_CASES: list[tuple[str, dict[str, Any], dict[str, Any], tuple[str, str], int, str]] = [
    ("strength above 1", {"strength_schedule": "0:(0.6), 3:(0.9), 4:(1.5)"}, {"strength": "0:(0.6), 3:(0.9), 4:(1.5)"},
     ("strength_schedule", "schedules.strength"), 4, "between 0 and 1"),
    ("negative strength", {"strength_schedule": "0:(-0.1)"}, {"strength": "0:(-0.1)"},
     ("strength_schedule", "schedules.strength"), 0, "is -0.1"),
    ("negative cfg", {"cfg_scale_schedule": "0:(-5)"}, {"cfg_scale": "0:(-5)"},
     ("cfg_scale_schedule", "schedules.cfg_scale"), 0, "greater than 0"),
    ("zero steps", {"enable_steps_scheduling": True, "steps_schedule": "0:(20), 5:(0.5)"},
     {"steps": "0:(20), 5:(0.5)"}, ("steps_schedule", "schedules.steps"), 5, "between 1 and 1000"),
    ("2D zoom 0", {"zoom": "0:(1), 6:(0)"}, {"zoom": "0:(1), 6:(0)"}, ("zoom", "schedules.zoom"), 6, "greater than 0"),
    ("2D zoom -1", {"zoom": "0:(-1)"}, {"zoom": "0:(-1)"}, ("zoom", "schedules.zoom"), 0, "is -1"),
    ("negative contrast", {"contrast_schedule": "0:(1), 10:(-1)"}, {"contrast": "0:(1), 10:(-1)"},
     ("contrast_schedule", "schedules.contrast"), 6, "at least 0"),
    ("noise above 1", {"noise_schedule": "0:(2)"}, {"noise": "0:(2)"}, ("noise_schedule", "schedules.noise"), 0,
     "between 0 and 1"),
    ("log(0) noise", {"noise_schedule": "0:(where(t < 3, 0.05, log(t-3)))"},
     {"noise": "0:(where(t < 3, 0.05, log(t-3)))"}, ("noise_schedule", "schedules.noise"), 3, "is -inf"),
    ("infinite angle", {"angle": "0:(1/(t-2))"}, {"angle": "0:(1/(t-2))"}, ("angle", "schedules.angle"), 2, "is inf"),
    ("negative anti-blur amount", {"amount_schedule": "0:(-0.2)"}, {"antiblur_amount": "0:(-0.2)"},
     ("amount_schedule", "schedules.antiblur_amount"), 0, "at least 0"),
    ("negative kernel", {"kernel_schedule": "0:(-3)"}, {"antiblur_kernel": "0:(-3)"},
     ("kernel_schedule", "schedules.antiblur_kernel"), 0, "at least 0"),
    ("negative sigma", {"sigma_schedule": "0:(-1)"}, {"antiblur_sigma": "0:(-1)"},
     ("sigma_schedule", "schedules.antiblur_sigma"), 0, "at least 0"),
    ("negative threshold", {"threshold_schedule": "0:(-1)"}, {"antiblur_threshold": "0:(-1)"},
     ("threshold_schedule", "schedules.antiblur_threshold"), 0, "at least 0"),
    ("negative noise multiplier", {"enable_noise_multiplier_scheduling": True, "noise_multiplier_schedule": "0:(-1)"},
     {"noise_multiplier": "0:(-1)"}, ("noise_multiplier_schedule", "schedules.noise_multiplier"), 0, "at least 0"),
    ("clip skip 0", {"enable_clipskip_scheduling": True, "clipskip_schedule": "0:(0)"}, {"clip_skip": "0:(0)"},
     ("clipskip_schedule", "schedules.clip_skip"), 0, "at least 1"),
    ("flip fv 180", {"enable_perspective_flip": True, "perspective_flip_fv": "0:(180)"},
     {"perspective_flip_fv": "0:(180)"}, ("perspective_flip_fv", "schedules.perspective_flip_fv"), 0,
     "between 0 and 180"),
]  # fmt: skip
THREE_D_CASES: list[tuple[str, dict[str, Any], dict[str, Any], tuple[str, str], int, str]] = [
    ("fov 0", {"fov_schedule": "0:(70), 2:(0)"}, {"fov": "0:(70), 2:(0)"}, ("fov_schedule", "schedules.fov"), 2,
     "between 0 and 180"),
    ("fov 200", {"fov_schedule": "0:(200)"}, {"fov": "0:(200)"}, ("fov_schedule", "schedules.fov"), 0, "is 200"),
    ("near 0", {"near_schedule": "0:(0)"}, {"near": "0:(0)"}, ("near_schedule", "schedules.near"), 0,
     "greater than 0"),
    ("far before near", {"near_schedule": "0:(200)", "far_schedule": "0:(1000), 4:(100)"},
     {"near": "0:(200)", "far": "0:(1000), 4:(100)"}, ("far_schedule", "schedules.far"), 4, "near plane"),
    ("3D rotation inf", {"rotation_3d_y": "0:(0), 2:(1/(t-3))"}, {"rotation_3d_y": "0:(0), 2:(1/(t-3))"},
     ("rotation_3d_y", "schedules.rotation_3d_y"), 3, "finite"),
    ("aspect 0", {"aspect_ratio_schedule": "0:(0)"}, {"aspect_ratio": "0:(0)"},
     ("aspect_ratio_schedule", "schedules.aspect_ratio"), 0, "greater than 0"),
]  # fmt: skip
ALL_CASES = [(*case, "2D") for case in NUMERIC_CASES] + [(*case, "3D") for case in THREE_D_CASES]


def deforum_file(mode: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {"animation_mode": mode, "max_frames": 12, "seed": 5, "prompts": {"0": "a cat"}, **extra}


def native_file(mode: str, schedules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"dreamreel_settings": 1, "mode": mode.lower(), "max_frames": 12, "seed": 5, "schedules": schedules,
            **extra}  # fmt: skip


@pytest.mark.parametrize(("what", "deforum", "native", "keys", "frame", "words", "mode"), ALL_CASES,
                         ids=[c[0] for c in ALL_CASES])  # fmt: skip
def test_out_of_range_values_name_file_key_and_frame_in_both_formats(
    tmp_path: Path, what: str, deforum: dict[str, Any], native: dict[str, Any], keys: tuple[str, str],
    frame: int, words: str, mode: str,
) -> None:  # fmt: skip
    flip = {"perspective_flip": True} if "enable_perspective_flip" in deforum else {}
    for data, key, name in (
        (deforum_file(mode, deforum), keys[0], "deforum_settings.txt"),
        (native_file(mode, native, **flip), keys[1], "native.json"),
    ):
        with pytest.raises(ScheduleError) as caught:
            resolve_file(tmp_path, data, name)
        message = str(caught.value)
        assert message.startswith(f"{tmp_path / name}: {key} at frame {frame}: "), message
        assert words in message, message
        assert caught.value.frame == frame
        assert "\n" not in message  # one paragraph


def test_strength_is_no_longer_clamped_and_the_message_says_the_range(tmp_path: Path) -> None:
    with pytest.raises(ScheduleError) as caught:
        resolve_file(tmp_path, {"max_frames": 5, "strength_schedule": "0:(1.5)"})
    assert "strength_schedule at frame 0: is 1.5;" in str(caught.value)
    assert "between 0 and 1 (inclusive); 5 frames are outside, the last is frame 4." in str(caught.value)


@pytest.mark.parametrize(
    ("unit", "key", "frame", "words"),
    [
        ({"cn_1_weight": "0:(1), 3:(-0.5)"}, "cn_1_weight", 3, "at least 0"),
        ({"cn_1_guidance_start": "0:(1.2)"}, "cn_1_guidance_start", 0, "between 0 and 1"),
        ({"cn_1_guidance_end": "0:(1), 5:(-1)"}, "cn_1_guidance_end", 3, "between 0 and 1"),
        ({"cn_1_guidance_start": "0:(0), 4:(0.6)", "cn_1_guidance_end": "0:(0.5)"}, "cn_1_guidance_start", 4,
         "after the guidance end (cn_1_guidance_end is 0.5 there)"),
    ],
)  # fmt: skip
def test_controlnet_schedules_are_checked_with_the_deforum_key(
    tmp_path: Path, unit: dict[str, Any], key: str, frame: int, words: str
) -> None:
    data = {"max_frames": 8, "cn_1_enabled": True, "cn_1_module": "canny", **unit}
    with pytest.raises(ScheduleError) as caught:
        resolve_file(tmp_path, data, "cn_settings.txt")
    assert str(caught.value).startswith(f"{tmp_path / 'cn_settings.txt'}: {key} at frame {frame}: ")
    assert words in str(caught.value)


def test_native_controlnet_keys_are_dotted_paths(tmp_path: Path) -> None:
    data = native_file("2D", {}, controlnet=[{"preprocessor": "canny"}, {"preprocessor": "none", "weight": -1}])
    with pytest.raises(ScheduleError, match=r"native\.json: controlnet\.1\.weight at frame 0: is -1;"):
        resolve_file(tmp_path, data, "native.json")


def test_flow_guidance_outside_0_to_1_is_an_error_not_clamped(tmp_path: Path) -> None:
    data = native_file("2D", {}, temporal={"flow_guidance": "0:(0.5), 6:(1.5)"})
    with pytest.raises(ScheduleError, match=r"temporal\.flow_guidance at frame 4: is 1\.1\d+; .* between 0 and 1"):
        resolve_file(tmp_path, data, "native.json")


@pytest.mark.parametrize("module", ["depth", "reference_only", "depth_midas", "Canny Edge"])
def test_unsupported_preprocessor_names_cn_n_module_and_the_file(tmp_path: Path, module: str) -> None:
    data = {"max_frames": 4, "cn_1_enabled": False, "cn_1_module": "depth", "cn_2_enabled": True, "cn_2_module": module}
    with pytest.raises(SettingsError) as caught:
        resolve_file(tmp_path, data, "deforum.txt")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'deforum.txt'}: cn_2_module: unknown ControlNet preprocessor {module!r}")
    assert "dreamreel supports: none, canny" in message
    assert caught.value.key == "cn_2_module"


def test_unsupported_preprocessor_in_a_native_file(tmp_path: Path) -> None:
    data = native_file("2D", {}, controlnet=[{"preprocessor": "openpose_full"}, {"preprocessor": "depth"}])
    expected = r"native\.json: controlnet\.1\.preprocessor: unknown ControlNet preprocessor 'depth'"
    with pytest.raises(SettingsError, match=expected):
        resolve_file(tmp_path, data, "native.json")


def test_supported_preprocessor_spellings_pass(tmp_path: Path) -> None:
    data = {"max_frames": 4, "cn_1_enabled": True, "cn_1_module": "softedge_hed", "cn_2_enabled": True,
            "cn_2_module": "OpenPose Full", "cn_3_enabled": True, "cn_3_module": "none"}  # fmt: skip
    resolve_file(tmp_path, data, "ok.txt")


def test_the_torch_free_preprocessor_list_matches_the_detectors() -> None:
    from dreamreel.controlnet import preprocessors

    assert preprocessors.PREPROCESSOR_NAMES == PREPROCESSOR_NAMES
    assert preprocessors._ALIASES == PREPROCESSOR_ALIASES


def test_misspelt_sampler_names_the_key_and_the_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        resolve_file(tmp_path, {"max_frames": 4, "sampler": "Eular a"}, "deforum.txt")
    assert str(caught.value).startswith(f"{tmp_path / 'deforum.txt'}: sampler: unknown sampler 'Eular a'.")
    assert "Did you mean" in str(caught.value)
    with pytest.raises(SettingsError, match=re.escape("native.json: sampler: unknown sampler 'DPM+ 2M'.")):
        resolve_file(tmp_path, native_file("2D", {}, sampler="DPM+ 2M"), "native.json")


def test_misspelt_scheduled_sampler_names_the_schedule_and_its_first_frame(tmp_path: Path) -> None:
    data = {"max_frames": 12, "sampler": "Euler a", "enable_sampler_scheduling": True,
            "sampler_schedule": '0:("Euler a"), 7:("DPM++ 2M Karas"), 9:("Euler a")'}  # fmt: skip
    with pytest.raises(ScheduleError) as caught:
        resolve_file(tmp_path, data, "deforum.txt")
    assert str(caught.value).startswith(
        f"{tmp_path / 'deforum.txt'}: sampler_schedule at frame 7: unknown sampler 'DPM++ 2M Karas'."
    )
    native = native_file("2D", {"sampler": '0:("Euler a"), 3:("Eulr")'})
    with pytest.raises(ScheduleError, match=r"native\.json: schedules\.sampler at frame 3: unknown sampler 'Eulr'"):
        resolve_file(tmp_path, native, "native.json")


def test_a_sampler_schedule_that_is_switched_off_is_not_checked(tmp_path: Path) -> None:
    data = {"max_frames": 4, "enable_sampler_scheduling": False, "sampler_schedule": '0:("nonsense")'}
    resolve_file(tmp_path, data, "deforum.txt")


def test_boundary_values_are_accepted() -> None:
    settings = Settings(
        max_frames=6, seed=1,
        schedules={"strength": "0:(0), 3:(1)", "contrast": "0:(0)", "noise": "0:(1)", "cfg_scale": "0:(0.5)",
                   "antiblur_kernel": "0:(0)", "antiblur_sigma": "0:(0)", "steps": "0:(1), 5:(1000)",
                   "clip_skip": "0:(1)", "noise_multiplier": "0:(0)", "zoom": "0:(0.001)"},
        controlnet=[{"preprocessor": "none", "weight": 0, "guidance_start": 0.5, "guidance_end": 0.5}],
    )  # fmt: skip
    table = resolve_schedules(settings)
    assert table.numeric["strength"][3] == 1.0 and table.numeric["denoise"][3] == 0.0


def test_motion_a_mode_never_reads_is_not_checked() -> None:
    two_d = Settings(max_frames=3, schedules={"fov": "0:(0)", "near": "0:(-1)", "rotation_3d_x": "0:(1/(t-1))"})
    resolve_schedules(two_d)
    three_d = Settings(mode="3d", max_frames=3, schedules={"zoom": "0:(0)", "angle": "0:(log(t-1))"})
    resolve_schedules(three_d)
    flip_off = Settings(max_frames=3, schedules={"perspective_flip_fv": "0:(0)"})
    resolve_schedules(flip_off)
    still = Settings(mode="still", max_frames=3, schedules={"zoom": "0:(-1)", "fov": "0:(500)"})
    resolve_schedules(still)
    assert "translation_z" in unused_columns(two_d) and "zoom" not in unused_columns(two_d)
    assert "zoom" in unused_columns(three_d) and "fov" not in unused_columns(three_d)


def test_every_numeric_schedule_has_bounds() -> None:
    assert set(BOUNDS) == set(NUMERIC_SCHEDULES)


def test_parseq_values_are_checked_and_named_by_the_manifest(tmp_path: Path) -> None:
    frames = [{"frame": f, "strength": 0.5 if f < 3 else 1.4} for f in range(5)]
    manifest = tmp_path / "parseq.json"
    manifest.write_text(json.dumps({"rendered_frames": frames}), encoding="utf-8")
    data = {"max_frames": 5, "parseq_manifest": str(manifest)}
    with pytest.raises(ScheduleError, match=r"parseq_manifest \(strength\) at frame 3: is 1\.4;"):
        resolve_file(tmp_path, data, "deforum.txt")


def test_resolving_checks_samplers_and_preprocessors_without_torch(tmp_path: Path) -> None:
    path = tmp_path / "cn.json"
    path.write_text(json.dumps(native_file("2D", {}, sampler="Eular a", controlnet=[{"preprocessor": "canny"}])))
    code = (
        "import sys\n"
        "from dreamreel.errors import SettingsError\n"
        "from dreamreel.settings import load_settings, resolve_schedules\n"
        f"settings = load_settings({str(path)!r})\n"
        "try:\n"
        "    resolve_schedules(settings)\n"
        "except SettingsError as exc:\n"
        "    assert 'Eular a' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('no error')\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'cv2') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_values_in_range_are_unchanged_in_the_table() -> None:
    settings = settings_from_mapping({"max_frames": 4, "strength_schedule": "0:(0.9), 3:(0.3)", "cn_1_enabled": True,
                                      "cn_1_module": "canny", "cn_1_guidance_end": "0:(0.8)"})  # fmt: skip
    table = resolve_schedules(settings)
    np.testing.assert_allclose(table.numeric["strength"], [0.0, 0.7, 0.5, 0.3])
    np.testing.assert_allclose(table.numeric["cn_1_guidance_end"], [0.8] * 4)
