"""ControlNet models: the default model of each preprocessor, and refusing models for another map."""

from __future__ import annotations

import pytest

from dreamreel.controlnet.models import DEFAULT_CONTROLNET_MODELS, check_model_matches, model_families
from dreamreel.controlnet.preprocessors import PREPROCESSOR_NAMES, canonical_name
from dreamreel.errors import SettingsError


def test_default_models_exist_for_every_detector_and_fit() -> None:
    assert set(DEFAULT_CONTROLNET_MODELS) == set(PREPROCESSOR_NAMES) - {"none"}
    assert DEFAULT_CONTROLNET_MODELS["openpose"] == "lllyasviel/control_v11p_sd15_openpose"
    assert DEFAULT_CONTROLNET_MODELS["hed"] == "lllyasviel/control_v11p_sd15_softedge"
    assert DEFAULT_CONTROLNET_MODELS["canny"] == "lllyasviel/control_v11p_sd15_canny"
    for name, model in DEFAULT_CONTROLNET_MODELS.items():
        check_model_matches(name, model)


@pytest.mark.parametrize(
    ("preprocessor", "model"),
    [
        ("openpose", "lllyasviel/control_v11p_sd15_openpose"),
        ("openpose_full", "models/ControlNet/control_openpose-fp16.safetensors"),
        ("openpose", "thibaud_xl_openpose"),
        ("openpose", "my-controlnet"),  # neutral names pass
        ("openpose", "/work/depth-tests/controlnet/model.safetensors"),  # only the last part counts
        ("hed", "tiny/controlnet-hed"),
        ("softedge_hed", "control_v11p_sd15_softedge"),
        ("hed", "control_sd15_scribble.pth"),
        ("canny", "control_v11p_sd15_lineart"),
        ("canny", "purpose_model"),  # "pose" only counts as a whole word
        ("none", "control_v11f1p_sd15_depth"),
    ],
)
def test_fitting_or_neutral_models_pass(preprocessor: str, model: str) -> None:
    check_model_matches(preprocessor, model)


@pytest.mark.parametrize(
    ("preprocessor", "model", "said"),
    [
        ("openpose", "lllyasviel/control_v11p_sd15_canny", "canny"),
        ("openpose_full", "control_v11p_sd15_softedge.safetensors", "softedge"),
        ("openpose", "models/control_v11f1p_sd15_depth/", "depth"),
        ("hed", "control_v11p_sd15_openpose", "openpose"),
        ("canny", "t2iadapter_seg_sd14v1.pth", "segmentation"),
        ("softedge_hedsafe", "control_v11f1e_sd15_tile", "tile"),
    ],
)
def test_mismatched_models_are_settings_errors(preprocessor: str, model: str, said: str) -> None:
    with pytest.raises(SettingsError, match=f"is a {said} model") as info:
        check_model_matches(preprocessor, model, key="controlnet.0.model")
    message = str(info.value)
    assert message.startswith("controlnet.0.model: ")
    assert DEFAULT_CONTROLNET_MODELS[canonical_name(preprocessor)] in message


def test_model_families() -> None:
    assert model_families("control_v11p_sd15_openpose") == {"openpose"}
    assert model_families("C:\\models\\control_sd15_hed.safetensors") == {"softedge"}
    assert model_families("controlnet_union_openpose_depth") == {"openpose", "depth"}
    assert model_families("sd15-controlnet") == set()
