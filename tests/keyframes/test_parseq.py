"""Parseq manifest import: renames, deltas, frame extension, prompts, errors."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from dreamreel.errors import ScheduleError, SettingsError
from dreamreel.keyframes.parseq import load_parseq
from dreamreel.keyframes.prompts import FramePrompt

# A hand-written manifest in Parseq's shape: absolute values, their _delta and _pc variants,
# a prompt, and a field dreamreel does not use.
ABSOLUTE = {
    "translation_x": [0.0, 2.0, 5.0, 9.0],
    "zoom": [1.0, 1.1, 1.21, 1.21],
    "angle": [10.0, 10.0, 12.0, 11.0],
    "strength": [0.6, 0.65, 0.7, 0.75],
    "scale": [7.0, 7.0, 8.0, 9.0],
    "perspective_flip_fv": [50.0, 51.0, 52.0, 53.0],
}
PARSEQ_DELTAS = {  # what Parseq writes: delta[0] = value[0]; zoom as a ratio
    "translation_x_delta": [0.0, 2.0, 3.0, 4.0],
    "zoom_delta": [1.0, 1.1, 1.1, 1.0],
    "angle_delta": [10.0, 0.0, 2.0, -1.0],
    "strength_delta": [0.6, 0.05, 0.05, 0.05],
}
PROMPTS = ["a cat --neg blur", "a cat --neg blur", "a dog:`t/3` --neg blur, ugly", "a dog:`t/3` --neg blur, ugly"]


def manifest(*, deltas: bool = True, prompts: bool = True) -> dict[str, object]:
    frames = []
    for frame in range(4):
        record: dict[str, object] = {"frame": frame}
        record.update({field: values[frame] for field, values in ABSOLUTE.items()})
        if deltas:
            record.update({field: values[frame] for field, values in PARSEQ_DELTAS.items()})
            record["zoom_pc"] = 100 * ABSOLUTE["zoom"][frame] / 1.21
        if prompts:
            record["deforum_prompt"] = PROMPTS[frame]
        record["hybrid_comp_alpha"] = 1
        record["prompt_weight_1"] = 1
        frames.append(record)
    return {"meta": {"generated_by": "test"}, "options": {"output_fps": 20, "bpm": 140}, "rendered_frames": frames}


def test_renames_and_absolute_non_motion_fields() -> None:
    result = load_parseq(manifest())
    assert result.max_frames == 4
    assert set(result.columns) == {"translation_x", "zoom", "angle", "strength", "cfg_scale", "perspective_flip_fv"}
    np.testing.assert_array_equal(result.columns["cfg_scale"], [7, 7, 8, 9])
    np.testing.assert_array_equal(result.columns["strength"], ABSOLUTE["strength"])  # never a delta
    np.testing.assert_array_equal(result.columns["perspective_flip_fv"], [50, 51, 52, 53])
    assert all(column.dtype == np.float64 for column in result.columns.values())


def test_use_deltas_takes_the_manifest_deltas() -> None:
    result = load_parseq(manifest(), use_deltas=True)
    np.testing.assert_array_equal(result.columns["translation_x"], [0, 2, 3, 4])
    np.testing.assert_array_equal(result.columns["zoom"], [1.0, 1.1, 1.1, 1.0])
    np.testing.assert_array_equal(result.columns["angle"], [10, 0, 2, -1])


def test_without_deltas_the_absolute_values_are_used() -> None:
    result = load_parseq(manifest(), use_deltas=False)
    np.testing.assert_array_equal(result.columns["translation_x"], [0, 2, 5, 9])
    np.testing.assert_array_equal(result.columns["zoom"], [1.0, 1.1, 1.21, 1.21])


def test_deltas_are_computed_when_the_manifest_has_none(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="dreamreel.keyframes.parseq"):
        result = load_parseq(manifest(deltas=False))
    np.testing.assert_allclose(result.columns["translation_x"], [0, 2, 3, 4])
    np.testing.assert_allclose(result.columns["zoom"], [1.0, 1.1, 1.1, 1.0])
    np.testing.assert_allclose(result.columns["angle"], [10, 0, 2, -1])
    np.testing.assert_allclose(result.columns["strength"], ABSOLUTE["strength"])
    assert any("computed per-frame deltas" in r.getMessage() and "zoom" in r.getMessage() for r in caplog.records)


def test_frames_past_the_end_repeat_the_last_value(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="dreamreel.keyframes.parseq"):
        result = load_parseq(manifest(), 7)
    assert result.max_frames == 7
    np.testing.assert_array_equal(result.columns["cfg_scale"], [7, 7, 8, 9, 9, 9, 9])
    # a delta repeats too: the motion keeps its last speed, as in Deforum
    np.testing.assert_array_equal(result.columns["translation_x"], [0, 2, 3, 4, 4, 4, 4])
    assert result.prompts is not None
    assert len(result.prompts) == 7
    assert result.prompts[6] == FramePrompt("a dog:2", "blur, ugly")
    repeats = [r for r in caplog.records if "repeat its last frame" in r.getMessage()]
    assert len(repeats) == 1


def test_computed_deltas_continue_past_the_end() -> None:
    result = load_parseq(manifest(deltas=False), 6)
    np.testing.assert_allclose(result.columns["translation_x"], [0, 2, 3, 4, 4, 4])


def test_shorter_run_uses_the_first_frames() -> None:
    result = load_parseq(manifest(), 2)
    np.testing.assert_array_equal(result.columns["cfg_scale"], [7, 7])
    assert result.prompts is not None
    assert len(result.prompts) == 2


def test_prompts_are_split_and_backticks_evaluated() -> None:
    result = load_parseq(manifest())
    assert result.prompts == [
        FramePrompt("a cat", "blur"),
        FramePrompt("a cat", "blur"),
        FramePrompt("a dog:0.666667", "blur, ugly"),
        FramePrompt("a dog:1", "blur, ugly"),
    ]


def test_composable_prompt_text_passes_through() -> None:
    frames = [{"frame": 0, "deforum_prompt": "cat : 0.5 AND dog : 0.5 --neg blurry"}]
    result = load_parseq({"rendered_frames": frames}, 2)
    assert result.prompts == [FramePrompt("cat : 0.5 AND dog : 0.5", "blurry")] * 2
    assert result.columns == {}


def test_no_prompt_field_means_no_prompts() -> None:
    assert load_parseq(manifest(prompts=False)).prompts is None


def test_json_text_and_file_path_give_the_same_result(tmp_path: Path) -> None:
    text = json.dumps(manifest())
    path = tmp_path / "parseq.json"
    path.write_text(text, encoding="utf-8")
    from_dict = load_parseq(manifest())
    for source in (text, "\n  " + text, str(path), path):
        result = load_parseq(source)
        assert result.prompts == from_dict.prompts
        assert result.columns.keys() == from_dict.columns.keys()
        for name, column in result.columns.items():
            np.testing.assert_array_equal(column, from_dict.columns[name])


def test_unknown_fields_are_listed_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="dreamreel.keyframes.parseq"):
        load_parseq(manifest())
    listed = [r.getMessage() for r in caplog.records if "ignoring Parseq fields" in r.getMessage()]
    assert listed == ["parseq_manifest: ignoring Parseq fields dreamreel does not use: hybrid_comp_alpha"]


def test_all_mapped_fields() -> None:
    fields = {
        "noise": "noise", "contrast": "contrast", "seed": "seed", "fov": "fov", "near": "near", "far": "far",
        "subseed": "subseed", "subseed_strength": "subseed_strength", "antiblur_kernel": "antiblur_kernel",
        "antiblur_sigma": "antiblur_sigma", "antiblur_amount": "antiblur_amount",
        "antiblur_threshold": "antiblur_threshold", "steps": "steps", "transform_center_x": "transform_center_x",
        "transform_center_y": "transform_center_y", "rotation_3d_x": "rotation_3d_x", "translation_z": "translation_z",
        "perspective_flip_theta": "perspective_flip_theta",
    }  # fmt: skip
    frames = [{"frame": f, **{field: float(f + i) for i, field in enumerate(fields)}} for f in range(3)]
    result = load_parseq({"rendered_frames": frames}, use_deltas=False)
    assert set(result.columns) == set(fields.values())
    np.testing.assert_array_equal(result.columns["far"], [5, 6, 7])


def test_duplicate_and_missing_frames(caplog: pytest.LogCaptureFixture) -> None:
    frames = [
        {"frame": 1, "scale": 5},
        {"frame": 3, "scale": 9, "deforum_prompt": "late"},
        {"frame": 1, "scale": 6, "deforum_prompt": "early"},
    ]
    with caplog.at_level(logging.WARNING, logger="dreamreel.keyframes.parseq"):
        result = load_parseq({"rendered_frames": frames})
    assert result.max_frames == 4
    # frame 0 takes the first defined value, frame 2 the previous one; the later frame 1 wins
    np.testing.assert_array_equal(result.columns["cfg_scale"], [6, 6, 6, 9])
    assert result.prompts is not None
    assert [p.prompt for p in result.prompts] == ["early", "early", "early", "late"]
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "defined more than once" in messages
    assert "2 frames are missing" in messages


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["https://sd-parseq.web.app/api/manifest?docId=x", "  http://example.com/m.json"])
def test_urls_are_refused(url: str) -> None:
    with pytest.raises(SettingsError, match="does not download") as info:
        load_parseq(url)
    assert "save the JSON to a file" in str(info.value)
    assert info.value.source == "parseq_manifest"


def test_not_json_is_an_error() -> None:
    with pytest.raises(SettingsError, match=r"not valid JSON: .* line 1"):
        load_parseq('{"rendered_frames": [')


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="neither JSON text nor a readable file"):
        load_parseq(str(tmp_path / "absent.json"))


@pytest.mark.parametrize("document", [{"options": {}}, {"rendered_frames": []}, {"rendered_frames": "x"}])
def test_missing_rendered_frames_is_an_error(document: dict[str, object]) -> None:
    with pytest.raises(SettingsError, match="no 'rendered_frames' list"):
        load_parseq(document)


def test_json_that_is_not_an_object_is_an_error() -> None:
    with pytest.raises(SettingsError, match="must be a JSON object"):
        load_parseq("[1, 2]")


@pytest.mark.parametrize("frame", [None, -1, "3", 1.5, True])
def test_bad_frame_number_is_an_error(frame: object) -> None:
    with pytest.raises(SettingsError, match="needs a 'frame' number") as info:
        load_parseq({"rendered_frames": [{"frame": 0, "zoom": 1}, {"frame": frame, "zoom": 1}]})
    assert info.value.key == "rendered_frames[1]"


@pytest.mark.parametrize("value", ["fast", None, True, [1], float("nan")])
def test_non_numeric_value_names_frame_and_field(value: object) -> None:
    document = copy.deepcopy(manifest())
    document["rendered_frames"][2]["scale"] = value  # type: ignore[index]
    with pytest.raises(SettingsError, match=r"frame 2: scale must be a finite number") as info:
        load_parseq(document)
    assert info.value.key == "rendered_frames[frame=2].scale"


def test_non_text_prompt_is_an_error() -> None:
    document = copy.deepcopy(manifest())
    document["rendered_frames"][1]["deforum_prompt"] = 3  # type: ignore[index]
    with pytest.raises(SettingsError, match="frame 1: deforum_prompt must be text"):
        load_parseq(document)


def test_bad_backtick_in_a_prompt_names_the_frame() -> None:
    frames = [{"frame": 0, "deforum_prompt": "a"}, {"frame": 1, "deforum_prompt": "b:`t/`"}]
    with pytest.raises(ScheduleError, match=r"rendered_frames\[frame=1\]\.deforum_prompt"):
        load_parseq({"rendered_frames": frames})


def test_zero_zoom_cannot_give_a_delta() -> None:
    frames = [{"frame": 0, "zoom": 1.0}, {"frame": 1, "zoom": 0.0}, {"frame": 2, "zoom": 1.0}]
    with pytest.raises(SettingsError, match="frame 1: zoom is 0"):
        load_parseq({"rendered_frames": frames})
    np.testing.assert_array_equal(load_parseq({"rendered_frames": frames}, use_deltas=False).columns["zoom"], [1, 0, 1])


def test_max_frames_must_be_positive() -> None:
    with pytest.raises(SettingsError, match="at least 1"):
        load_parseq(manifest(), 0)
