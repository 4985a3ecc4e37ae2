"""Preprocessors: names, map sizes and content, weight loading (folder, hub cache, errors)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamreel import testing
from dreamreel.controlnet.preprocessors import (
    CannyPreprocessor,
    HedPreprocessor,
    OpenposePreprocessor,
    PassthroughPreprocessor,
    Preprocessor,
    canonical_name,
    load_annotator_network,
    make_preprocessor,
    required_weight_files,
)
from dreamreel.errors import ModelLoadError, SettingsError
from dreamreel.testing import tiny_annotator_network


def _picture(height: int, width: int, seed: int = 0) -> np.ndarray:
    ys, xs = np.mgrid[:height, :width]
    noise = np.random.default_rng(seed).integers(0, 60, (height, width))
    red = (xs * 255 // width + noise) % 256
    return np.dstack([red, ys * 255 // height, ((xs // 8 + ys // 8) % 2) * 200]).astype(np.uint8)


# --- names ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("openpose", "openpose"),
        ("OpenPose", "openpose"),
        ("openpose_full", "openpose_full"),
        ("openpose-full", "openpose_full"),
        ("openpose_hand", "openpose_hand"),
        ("openpose_face", "openpose_face"),
        ("openpose_faceonly", "openpose_faceonly"),
        ("hed", "hed"),
        ("softedge_hed", "hed"),
        ("SoftEdge_HED", "hed"),
        ("softedge_hedsafe", "hed_safe"),
        ("canny", "canny"),
        ("Canny", "canny"),
        (" None ", "none"),
    ],
)
def test_names_and_a1111_spellings(spelling: str, expected: str) -> None:
    assert canonical_name(spelling) == expected


def test_unknown_name_suggests_and_lists() -> None:
    with pytest.raises(SettingsError, match="Did you mean") as info:
        canonical_name("opnpose", key="controlnet.0.preprocessor")
    message = str(info.value)
    assert message.startswith("controlnet.0.preprocessor: unknown ControlNet preprocessor 'opnpose'")
    assert "'openpose'" in message
    for name in ("openpose_full", "softedge_hed", "canny", "none"):
        assert name in message
    with pytest.raises(SettingsError, match="depth_midas"):
        make_preprocessor("depth_midas")


def test_required_weight_files() -> None:
    assert required_weight_files("openpose") == ("body_pose_model.pth",)
    assert required_weight_files("openpose_hand") == ("body_pose_model.pth", "hand_pose_model.pth")
    assert required_weight_files("openpose_full") == ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")
    assert required_weight_files("softedge_hedsafe") == ("ControlNetHED.pth",)
    assert required_weight_files("canny") == ()
    assert required_weight_files("none") == ()


# --- none and canny ---------------------------------------------------------------------------------


def test_none_passes_the_image_through() -> None:
    preprocessor = make_preprocessor("None", detect_resolution=64)
    assert isinstance(preprocessor, PassthroughPreprocessor)
    assert isinstance(preprocessor, Preprocessor)
    image = _picture(30, 50)
    out = preprocessor(image)
    assert out is image
    assert preprocessor.key == "none"
    with pytest.raises(ValueError, match="uint8"):
        preprocessor(image.astype(np.float32))


def _square(size: int = 64, value: int = 255) -> np.ndarray:
    image = np.zeros((size, size, 3), np.uint8)
    image[16:48, 16:48] = value
    return image


def test_canny_finds_the_edges_of_a_square() -> None:
    preprocessor = make_preprocessor("canny", detect_resolution=64)
    assert isinstance(preprocessor, CannyPreprocessor)
    edges = preprocessor(_square())
    assert edges.shape == (64, 64, 3)
    assert edges.dtype == np.uint8
    assert np.array_equal(edges[:, :, 0], edges[:, :, 2])
    assert set(np.unique(edges)) == {0, 255}
    ys, xs = np.nonzero(edges[:, :, 0])
    near_border = (np.minimum(np.abs(ys - 15.5), np.abs(ys - 47.5)) <= 1) | (
        np.minimum(np.abs(xs - 15.5), np.abs(xs - 47.5)) <= 1
    )
    assert near_border.all()  # every edge pixel is on the square's outline
    assert np.all((ys >= 14) & (ys <= 49) & (xs >= 14) & (xs <= 49))
    assert len(ys) >= 4 * 30  # and the outline is (nearly) complete
    assert edges[20:44, 20:44].max() == 0


def test_canny_thresholds_change_the_map_and_the_key() -> None:
    faint = _square(value=40)  # Sobel L1 magnitude of this step is about 160
    sensitive = make_preprocessor("canny", detect_resolution=64, low_threshold=50, high_threshold=100)
    strict = make_preprocessor("canny", detect_resolution=64, low_threshold=100.0, high_threshold=250.0)
    assert sensitive(faint).max() == 255
    assert strict(faint).max() == 0
    assert sensitive.key != strict.key
    assert strict.key == "canny|v1|res=64|low=100|high=250"


def test_canny_map_follows_the_input_aspect() -> None:
    preprocessor = make_preprocessor("canny", detect_resolution=64)
    assert preprocessor(_picture(96, 128)).shape == (64, 85, 3)
    assert preprocessor(_picture(200, 50)).shape == (256, 64, 3)


@pytest.mark.parametrize(
    "options",
    [{"low_threshold": 300}, {"high_threshold": -1}, {"low_threshold": "100"}, {"threshold_a": 100}],
)
def test_bad_canny_options_are_settings_errors(options: dict[str, object]) -> None:
    with pytest.raises(SettingsError, match=next(iter(options))):
        make_preprocessor("canny", **options)


def test_option_errors_name_the_unit_key() -> None:
    with pytest.raises(SettingsError) as info:
        make_preprocessor("canny", key="controlnet.1", high_threshold=999)
    assert str(info.value).startswith("controlnet.1.high_threshold: high_threshold of the 'canny' preprocessor")
    with pytest.raises(SettingsError, match=r"^controlnet\.1\.preprocessor: unknown"):
        make_preprocessor("cany", key="controlnet.1")


@pytest.mark.parametrize("resolution", [32, 5000, 100.5, True])
def test_bad_detect_resolution_is_a_settings_error(resolution: object) -> None:
    with pytest.raises(SettingsError, match="detect_resolution"):
        make_preprocessor("canny", detect_resolution=resolution)  # type: ignore[arg-type]


# --- HED ----------------------------------------------------------------------------------------


def test_hed_map_shape_and_content(hed_network: torch.nn.Module) -> None:
    preprocessor = HedPreprocessor(hed_network, detect_resolution=64)
    assert isinstance(preprocessor, Preprocessor)
    assert preprocessor.name == "hed"
    first, second = _picture(48, 64, seed=1), _picture(48, 64, seed=2)[:, ::-1].copy()
    map_one = preprocessor(first)
    assert map_one.shape == (64, 85, 3)  # short side 64, the input's 4:3 aspect (not controlnet-aux's 64x128)
    assert map_one.dtype == np.uint8
    assert np.array_equal(map_one[:, :, 0], map_one[:, :, 1])
    assert np.ptp(map_one) > 20
    assert np.array_equal(map_one, preprocessor(first))  # deterministic
    map_two = preprocessor(second)
    assert np.abs(map_one.astype(int) - map_two).mean() > 1.0  # another picture, another map
    assert preprocessor(_picture(30, 120)).shape == (64, 256, 3)


def test_hed_safe_quantises(hed_network: torch.nn.Module) -> None:
    safe = HedPreprocessor(hed_network, safe=True, detect_resolution=64)
    assert safe.name == "hed_safe"
    out = safe(_picture(64, 64))  # square: no resize after the detector
    assert set(np.unique(out)) <= {0, 127, 255}
    assert len(np.unique(out)) >= 2
    assert safe.key != HedPreprocessor(hed_network, detect_resolution=64).key


def test_hed_key_names_settings_and_weights(hed_network: torch.nn.Module) -> None:
    base = HedPreprocessor(hed_network, detect_resolution=64)
    assert base.key.startswith("hed|v1|res=64|weights=")
    assert base.key == HedPreprocessor(tiny_annotator_network("hed", seed=0), detect_resolution=64).key
    assert base.key != HedPreprocessor(hed_network, detect_resolution=128).key
    assert base.key != HedPreprocessor(tiny_annotator_network("hed", seed=5), detect_resolution=64).key


def test_hed_loads_from_a_tiny_annotators_folder(annotators_dir: Path, hed_network: torch.nn.Module) -> None:
    weights = annotators_dir / "ControlNetHED.pth"
    assert weights.stat().st_size < 32_000_000  # fp16
    state = torch.load(weights, weights_only=True)
    assert {tensor.dtype for tensor in state.values()} == {torch.float16}
    preprocessor = make_preprocessor("softedge_hed", annotators=annotators_dir, detect_resolution=64, low_threshold=1)
    assert isinstance(preprocessor, HedPreprocessor)
    assert "low" not in preprocessor.key  # thresholds are accepted and ignored
    image = _picture(48, 64)
    from_file = preprocessor(image)
    in_memory = HedPreprocessor(hed_network, detect_resolution=64)(image)
    assert from_file.shape == in_memory.shape
    assert np.abs(from_file.astype(int) - in_memory).max() <= 2  # same weights up to fp16 rounding


def test_weights_are_found_one_folder_below_and_in_the_hub_cache(
    annotators_dir: Path, tmp_path: Path, empty_hub_cache: Path
) -> None:
    below = tmp_path / "annotator" / "downloads"
    (below / "hed").mkdir(parents=True)
    os.symlink(annotators_dir / "ControlNetHED.pth", below / "hed" / "ControlNetHED.pth")
    assert make_preprocessor("hed", annotators=below, detect_resolution=64).name == "hed"

    snapshot = empty_hub_cache / "models--lllyasviel--Annotators" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (empty_hub_cache / "models--lllyasviel--Annotators" / "refs").mkdir()
    (empty_hub_cache / "models--lllyasviel--Annotators" / "refs" / "main").write_text("0" * 40)
    os.symlink(annotators_dir / "ControlNetHED.pth", snapshot / "ControlNetHED.pth")
    assert make_preprocessor("hed", detect_resolution=64).name == "hed"
    assert make_preprocessor("hed", annotators=tmp_path / "elsewhere", detect_resolution=64).name == "hed"


# --- OpenPose -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def body_network() -> torch.nn.Module:
    return tiny_annotator_network("body", seed=1)


def test_openpose_with_random_weights_draws_a_black_map(body_network: torch.nn.Module) -> None:
    preprocessor = OpenposePreprocessor(body_network, detect_resolution=64)
    assert isinstance(preprocessor, Preprocessor)
    assert preprocessor.name == "openpose"
    out = preprocessor(np.zeros((48, 64, 3), np.uint8))  # random weights find nobody
    assert out.shape == (64, 85, 3)
    assert out.dtype == np.uint8
    assert out.max() == 0


def test_openpose_face_wiring_and_keys(body_network: torch.nn.Module) -> None:
    face = tiny_annotator_network("face", seed=3)
    preprocessor = OpenposePreprocessor(body_network, None, face, include_face=True, detect_resolution=64)
    assert preprocessor.name == "openpose_face"
    assert preprocessor._detector.face_estimation.model is face
    assert preprocessor._detector.hand_estimation is None
    body_only = OpenposePreprocessor(body_network, None, face, detect_resolution=64)
    assert body_only.name == "openpose"
    assert "body=1|hand=0|face=1" in preprocessor.key
    assert "body=1|hand=0|face=0" in body_only.key
    only_face = OpenposePreprocessor(body_network, None, face, include_body=False, include_face=True)
    assert only_face.name == "openpose_faceonly"
    with pytest.raises(ValueError, match="hand network"):
        OpenposePreprocessor(body_network, include_hand=True)


@pytest.mark.slow
def test_openpose_face_and_hand_nets_run(body_network: torch.nn.Module) -> None:
    face, hand = tiny_annotator_network("face", seed=3), tiny_annotator_network("hand", seed=2)
    preprocessor = OpenposePreprocessor(
        body_network, hand, face, include_hand=True, include_face=True, detect_resolution=64
    )
    assert preprocessor.name == "openpose_full"
    heatmaps = preprocessor._detector.face_estimation(np.zeros((24, 24, 3), np.uint8))
    assert heatmaps.shape == (71, 24, 24)  # wired without controlnet-aux's file-loading constructors
    peaks = preprocessor._detector.hand_estimation(np.zeros((24, 24, 3), np.uint8))
    assert peaks.shape == (21, 2)
    assert preprocessor(np.zeros((48, 64, 3), np.uint8)).shape == (64, 85, 3)


# --- weight files -----------------------------------------------------------------------------------


def test_missing_weights_say_which_file_and_where(tmp_path: Path, empty_hub_cache: Path) -> None:
    with pytest.raises(ModelLoadError) as info:
        make_preprocessor("openpose", annotators=tmp_path)
    message = str(info.value)
    assert "'body_pose_model.pth'" in message
    assert "hand_pose_model.pth" not in message  # body-only OpenPose needs only the body file
    assert "facenet.pth" not in message
    assert str(tmp_path) in message
    assert f"`hf download lllyasviel/Annotators body_pose_model.pth --local-dir {tmp_path}`" in message
    with pytest.raises(ModelLoadError) as info:
        make_preprocessor("openpose_full")
    message = str(info.value)
    for name in ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"):
        assert f"hf download lllyasviel/Annotators {name} --local-dir models/annotators" in message
    assert "no annotators folder was given" in message


class _NotWeights:
    def __init__(self) -> None:
        self.value = 1


def test_bad_weight_files_are_model_load_errors(tmp_path: Path, hed_network: torch.nn.Module) -> None:
    path = tmp_path / "ControlNetHED.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match=r"ControlNetHED\.pth") as info:
        make_preprocessor("hed", annotators=tmp_path)
    assert "--local-dir" in str(info.value)
    torch.save({"net": _NotWeights()}, path)  # weights_only=True refuses arbitrary objects
    with pytest.raises(ModelLoadError, match="ControlNetHED"):
        load_annotator_network("hed", path)
    state = dict(hed_network.state_dict())
    state.pop("block1.projection.weight")
    torch.save(state, path)
    with pytest.raises(ModelLoadError, match="do not fit"):
        load_annotator_network("hed", path)
    torch.save({"conv1_1.weight": torch.zeros(1)}, path)
    with pytest.raises(ModelLoadError, match="do not fit"):
        load_annotator_network("body", path)


def test_tiny_annotators_command_line(tmp_path: Path) -> None:
    assert testing.main(["tiny-annotators", str(tmp_path / "ann")]) == 0
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == ["ControlNetHED.pth"]
    network = load_annotator_network("hed", tmp_path / "ann" / "ControlNetHED.pth")
    assert network.block1.convs[0].weight.dtype == torch.float32
