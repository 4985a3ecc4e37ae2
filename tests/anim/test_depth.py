"""Depth models: the tiny DPT loads offline and predicts input-sized maps; missing models fail clearly."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from dreamreel.anim.depth import DepthModel, FlatDepth, TransformersDepth
from dreamreel.anim.warp3d import depth_to_z, warp_3d
from dreamreel.errors import ModelLoadError
from dreamreel.testing import save_tiny_depth_model


def _picture(height: int, width: int) -> np.ndarray:
    ys, xs = np.mgrid[:height, :width]
    return np.dstack([xs * 255 // width, ys * 255 // height, (xs + ys) % 256]).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_depth_model(tmp_path_factory.mktemp("tiny-depth"))


@pytest.fixture(scope="module")
def tiny_model(tiny_folder: Path) -> TransformersDepth:
    return TransformersDepth.from_pretrained(tiny_folder)


def test_tiny_model_is_small(tiny_folder: Path) -> None:
    files = {path.name for path in tiny_folder.iterdir()}
    assert {"config.json", "preprocessor_config.json", "model.safetensors"} <= files
    assert sum(path.stat().st_size for path in tiny_folder.iterdir()) < 2_000_000


def test_loads_with_sockets_blocked_and_predicts_input_sized_maps(tiny_folder: Path) -> None:
    with pytest.raises(RuntimeError, match="network"):  # the autouse fixture really blocks sockets
        socket.create_connection(("huggingface.co", 443))
    model = TransformersDepth.from_pretrained(str(tiny_folder), device="cpu")
    assert isinstance(model, DepthModel)
    assert model.inverse is True  # DPT predicts relative inverse depth
    for height, width in [(48, 80), (70, 33)]:
        depth = model.predict(_picture(height, width))
        assert depth.shape == (height, width)
        assert depth.dtype == np.float32
        assert np.isfinite(depth).all()
        assert np.ptp(depth) > 0  # a real map, not a constant


def test_predictions_are_deterministic(tiny_folder: Path, tiny_model: TransformersDepth, tmp_path: Path) -> None:
    image = _picture(40, 56)
    first = tiny_model.predict(image)
    assert np.array_equal(first, tiny_model.predict(image))
    again = TransformersDepth.from_pretrained(save_tiny_depth_model(tmp_path / "again"))
    assert np.array_equal(first, again.predict(image))


def test_prediction_feeds_the_3d_warp(tiny_model: TransformersDepth) -> None:
    image = _picture(48, 64)
    z = depth_to_z(tiny_model.predict(image), inverse=tiny_model.inverse)
    assert z.min() >= 1.0
    assert z.max() <= 2.0
    out = warp_3d(image, z, translation=(0.0, 0.0, 5.0))
    assert out.shape == image.shape


def test_missing_folder_is_a_model_load_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="no-such-model") as info:
        TransformersDepth.from_pretrained(missing)
    assert "local folder" in str(info.value)


def test_folder_without_config_is_a_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        TransformersDepth.from_pretrained(tmp_path)


def test_uncached_hub_id_is_a_model_load_error() -> None:
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache") as info:
        TransformersDepth.from_pretrained("dreamreel-test/no-such-depth-model")
    assert "dreamreel-test/no-such-depth-model" in str(info.value)
    assert "--local-dir" in str(info.value)


def test_flat_depth() -> None:
    model = FlatDepth(0.5)
    assert isinstance(model, DepthModel)
    depth = model.predict(_picture(10, 12))
    assert depth.shape == (10, 12)
    assert np.all(depth == 0.5)
    assert np.array_equal(depth_to_z(depth), np.ones((10, 12), np.float32))
    with pytest.raises(ValueError, match="shape"):
        model.predict(np.zeros((10, 12), np.uint8))
