"""Deforum's 3D warp: axis conventions on synthetic pictures, depth preparation, validation, speed."""

from __future__ import annotations

import math
import time

import cv2
import numpy as np
import pytest
import torch

from dreamreel.anim.warp2d import warp_2d
from dreamreel.anim.warp3d import depth_to_z, rotation_matrix_3d, sampling_grid_3d, warp_3d, warp_3d_tensor
from dreamreel.errors import SettingsError

H, W = 96, 128


def _textured(height: int = H, width: int = W, seed: int = 0, blur: float = 3.0) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), blur)


def _dot(x: int, y: int, height: int = H, width: int = W) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[y - 2 : y + 3, x - 2 : x + 3] = 255
    return image


def _centroid(image: np.ndarray) -> tuple[float, float]:
    mass = image[..., 0].astype(np.float64)
    ys, xs = np.mgrid[: image.shape[0], : image.shape[1]]
    return float((mass * xs).sum() / mass.sum()), float((mass * ys).sum() / mass.sum())


K70 = 1.0 / math.tan(math.radians(35.0))  # focal scale at Deforum's default fov of 70


@pytest.mark.parametrize("mode", ["bicubic", "bilinear", "nearest"])
def test_zero_motion_is_the_identity(mode: str) -> None:
    image = _textured(blur=0.7)
    z = depth_to_z(np.random.default_rng(1).random((H, W)))
    for depth in (None, z):
        out = warp_3d(image, depth, sampling_mode=mode)
        assert out.dtype == np.uint8
        assert out.shape == image.shape
        assert np.abs(out.astype(int) - image).max() <= 1


def test_translation_x_moves_the_picture_left_by_the_documented_amount() -> None:
    image = _dot(64, 48)
    x, y = _centroid(warp_3d(image, None, translation=(10.0, 0.0, 0.0), sampling_mode="bilinear"))
    # 10 units = 10/200 of the half-width in NDC, times the focal scale: k * 10/200 * W/2 pixels
    assert x == pytest.approx(64 - K70 * 10 / 200 * W / 2, abs=0.1)
    assert y == pytest.approx(48, abs=0.05)
    # the opposite of the 2D warp, where +translation_x moves the picture right
    assert _centroid(warp_2d(image, translation_x=10.0))[0] > 64


def test_translation_y_moves_the_picture_down() -> None:
    image = _dot(64, 48)
    x, y = _centroid(warp_3d(image, None, translation=(0.0, 10.0, 0.0), sampling_mode="bilinear"))
    assert y == pytest.approx(48 + K70 * 10 / 200 * H / 2, abs=0.1)
    assert x == pytest.approx(64, abs=0.05)


def test_rotation_y_pans_the_picture_left() -> None:
    image = _dot(64, 48)
    x, y = _centroid(warp_3d(image, None, rotation_deg=(0.0, 2.0, 0.0), sampling_mode="bilinear"))
    assert x == pytest.approx(64 - K70 * math.tan(math.radians(2.0)) * W / 2, abs=0.2)
    assert y == pytest.approx(48, abs=0.1)
    x, _ = _centroid(warp_3d(image, None, rotation_deg=(0.0, -2.0, 0.0), sampling_mode="bilinear"))
    assert x > 66


def test_rotation_x_tilts_the_picture_down_and_z_rolls_it_counter_clockwise() -> None:
    x, y = _centroid(warp_3d(_dot(64, 48), None, rotation_deg=(2.0, 0.0, 0.0), sampling_mode="bilinear"))
    assert y == pytest.approx(48 + K70 * math.tan(math.radians(2.0)) * H / 2, abs=0.2)
    assert x == pytest.approx(64, abs=0.1)
    # a dot right of the centre goes up under +z: counter-clockwise on screen
    x, y = _centroid(warp_3d(_dot(96, 48), None, rotation_deg=(0.0, 0.0, 10.0), sampling_mode="bilinear"))
    assert y < 44
    assert 90 < x < 96


def test_flat_translation_z_equals_a_2d_zoom_about_the_centre() -> None:
    image = _textured()
    tz = 10.0
    s = tz / 200
    zoom = 1.0 / (1.0 - K70 * s / (1.0 - s))  # grid = p * (1 - k s / (1 - s)) on a flat picture at z = 1
    assert zoom > 1.05  # +z zooms in
    for depth in (None, np.ones((H, W), np.float32)):
        out = warp_3d(image, depth, translation=(0.0, 0.0, tz), sampling_mode="bilinear").astype(int)
        expected = warp_2d(image, zoom=zoom).astype(int)
        inner = np.abs(out - expected)[6:-6, 6:-6]
        assert inner.max() <= 3
        assert inner.mean() < 0.5


def test_near_things_move_more_than_far_things() -> None:
    image = _dot(64, 48)
    near = warp_3d(image, np.full((H, W), 1.0, np.float32), translation=(10.0, 0, 0), sampling_mode="bilinear")
    far = warp_3d(image, np.full((H, W), 2.0, np.float32), translation=(10.0, 0, 0), sampling_mode="bilinear")
    assert 64 - _centroid(near)[0] == pytest.approx(2 * (64 - _centroid(far)[0]), abs=0.1)


def test_near_and_far_have_no_effect() -> None:
    image = _textured(seed=2)
    z = depth_to_z(np.random.default_rng(3).random((H, W)))
    kwargs = {"translation": (3.0, -2.0, 5.0), "rotation_deg": (1.0, -2.0, 3.0)}
    reference = warp_3d(image, z, **kwargs)
    assert not np.array_equal(reference, image)
    for near, far in [(0.1, 1.0), (200.0, 10000.0), (5000.0, 6000.0)]:
        assert np.array_equal(warp_3d(image, z, near=near, far=far, **kwargs), reference)


def test_grid_matches_the_pytorch3d_formulas_written_out() -> None:
    rng = np.random.default_rng(4)
    z = 1.0 + rng.random((H, W))
    translation, rotation, fov, aspect = (4.0, -3.0, 6.0), (2.0, -3.0, 5.0), 60.0, 1.3
    grid = sampling_grid_3d(torch.from_numpy(z).float(), H, W, translation=translation, rotation_deg=rotation,
                            fov_deg=fov, aspect_ratio=aspect)  # fmt: skip
    ys, xs = np.meshgrid(np.linspace(-1, 1, H), np.linspace(-1, 1, W), indexing="ij")
    points = np.stack([xs, ys, z], axis=-1).reshape(-1, 3)
    a, b, c = np.radians(rotation)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    np.testing.assert_allclose(rotation_matrix_3d(rotation), rx @ ry @ rz, atol=1e-12)
    moved = points @ (rx @ ry @ rz) + np.array([-4.0, -3.0, -6.0]) / 200
    k = 1 / np.tan(np.radians(fov) / 2)
    scale = np.array([k / aspect, k])
    offset = scale * (moved[:, :2] / moved[:, 2:] - points[:, :2] / points[:, 2:])
    base_x = (2 * np.arange(W) + 1) / W - 1
    base_y = (2 * np.arange(H) + 1) / H - 1
    base = np.stack(np.meshgrid(base_x, base_y), axis=-1).reshape(-1, 2)
    np.testing.assert_allclose(grid[0].reshape(-1, 2).numpy(), base - offset, atol=2e-5)


@pytest.mark.parametrize("padding", ["border", "reflection", "zeros"])
def test_padding_modes(padding: str) -> None:
    image = np.full((H, W, 3), 200, np.uint8)
    out = warp_3d(image, None, translation=(0.0, 0.0, -30.0), padding_mode=padding, sampling_mode="bilinear")
    corner, centre = out[0, 0], out[H // 2, W // 2]
    assert np.array_equal(centre, [200, 200, 200])
    if padding == "zeros":
        assert np.array_equal(corner, [0, 0, 0])
    else:
        assert np.array_equal(corner, [200, 200, 200])


def test_points_behind_the_camera_do_not_crash() -> None:
    image = _textured(seed=5)
    out = warp_3d(image, None, translation=(0.0, 0.0, 200.0))  # moves the camera onto the picture plane
    assert out.shape == image.shape
    out = warp_3d(image, None, rotation_deg=(0.0, 120.0, 0.0))
    assert out.dtype == np.uint8


def test_tensor_api_keeps_float_results() -> None:
    image = torch.rand(1, 4, H, W) * 300 - 20
    out = warp_3d_tensor(image, None, sampling_mode="bilinear")
    assert out.shape == image.shape
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), image.numpy(), atol=5e-3, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\(1, C, H, W\)"):
        warp_3d_tensor(image[0], None)


def test_depth_to_z_equalizes_into_one_to_two() -> None:
    rng = np.random.default_rng(6)
    depth = (rng.random((H, W)) ** 3) * 40 + 5  # skewed: equalisation spreads it out
    z = depth_to_z(depth)
    assert z.dtype == np.float32
    assert z.shape == (H, W)
    assert 1.0 <= z.min() < 1.001
    nearest, farthest = np.unravel_index(depth.argmax(), depth.shape), np.unravel_index(depth.argmin(), depth.shape)
    assert z[nearest] == pytest.approx(1.0)  # inverse depth: the largest value is the nearest, z = 1
    # Deforum interpolates the CDF at the bins' left edges, so the farthest pixel gets
    # 2 - (share of pixels in the first bin), not exactly 2
    first_bin = np.mean((depth - depth.min()) / np.ptp(depth) < 1 / 1024)
    assert first_bin > 0.05
    assert z.max() == pytest.approx(2.0 - first_bin, abs=1e-6)
    assert z[farthest] == z.max()
    assert abs(np.median(z) - (2.0 - 0.5)) < 0.02  # equalised: the median lands in the middle
    metric = depth_to_z(depth, inverse=False)
    np.testing.assert_allclose(metric, 3.0 - z, atol=1e-6)  # d + 1 instead of 2 - d


def test_depth_to_z_matches_numpy_histogram_and_interp() -> None:
    depth = np.random.default_rng(7).normal(size=(H, W)) ** 2
    normalized = (depth - depth.min()) / (depth.max() - depth.min())
    counts, edges = np.histogram(normalized, bins=1024, range=(0, 1))
    cdf = np.cumsum(counts) / counts.sum()
    expected = 2.0 - np.interp(normalized, edges[:-1], cdf)
    np.testing.assert_allclose(depth_to_z(depth), expected, atol=1e-6)
    np.testing.assert_allclose(depth_to_z(torch.from_numpy(depth)[None]), expected, atol=1e-6)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_invalid_or_constant_depth_is_flat(value: float, caplog: pytest.LogCaptureFixture) -> None:
    depth = np.random.default_rng(8).random((H, W))
    depth[3, 4] = value
    assert np.array_equal(depth_to_z(depth), np.ones((H, W), np.float32))
    assert "flat depth" in caplog.text
    assert np.array_equal(depth_to_z(np.full((H, W), 0.3)), np.ones((H, W), np.float32))


def test_validation() -> None:
    image = _textured()
    with pytest.raises(ValueError, match=r"\(96, 64\)"):
        warp_3d(image, np.ones((96, 64), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\).*shape \(96, 128\)"):
        warp_3d(image[..., 0], None)
    with pytest.raises(SettingsError, match="Did you mean 'reflection'"):
        warp_3d(image, None, padding_mode="reflect")  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match="sampling_mode"):
        warp_3d(image, None, sampling_mode="lanczos")  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match="fov"):
        warp_3d(image, None, fov_deg=180.0)
    with pytest.raises(SettingsError, match="translation_z"):
        warp_3d(image, None, translation=(0.0, 0.0, math.nan))
    with pytest.raises(ValueError, match="3 values"):
        warp_3d(image, None, translation=(0.0, 0.0))


def test_speed_512() -> None:
    image = _textured(512, 512)
    z = depth_to_z(np.random.default_rng(9).random((512, 512)))
    kwargs = {"translation": (1.0, 2.0, 3.0), "rotation_deg": (0.5, 1.0, 1.5)}
    warp_3d(image, z, **kwargs)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        warp_3d(image, z, **kwargs)
        times.append(time.perf_counter() - start)
    # ~30 ms bicubic on one idle core; loose bound for busy machines
    assert min(times) < 0.15
