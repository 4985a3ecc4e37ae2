"""Cadence tweens and optical-flow tweens on synthetic shifted textures."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dreamreel.anim.cadence import FLOW_METHODS, flow, flow_tween, normalize_flow_method, tween, warp_by_flow
from dreamreel.errors import SettingsError

SHIFT = 5


def _texture(seed: int, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blurred = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 2.0)
    return cv2.normalize(blurred, None, 0, 255, cv2.NORM_MINMAX)


def _shifted(dx: float, height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """The texture moved right by ``dx`` pixels (sub-pixel allowed): out(x) = base(x - dx)."""
    base = _texture(seed, height, width + 40)
    matrix = np.float32([[1, 0, 20 - dx], [0, 1, 0]])
    return cv2.warpAffine(base, matrix, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    return _shifted(0), _shifted(SHIFT)


def test_tween_endpoints_are_exact_and_middle_is_rounded_blend() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    for weight, expected in ((0.0, a), (1.0, b)):
        out = tween(a, b, weight)
        np.testing.assert_array_equal(out, expected)
        assert not np.shares_memory(out, expected)
    for weight in (0.25, 0.5, 0.75):
        exact = a * (1 - weight) + b * weight
        out = tween(a, b, weight)
        assert np.abs(out - exact).max() <= 0.5 + 1e-3  # rounded, not truncated


def test_tween_validates() -> None:
    a = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="between 0 and 1"):
        tween(a, a, 1.5)
    with pytest.raises(ValueError, match="same size; got 4x4 and 5x4"):
        tween(a, np.zeros((4, 5, 3), np.uint8), 0.5)
    with pytest.raises(ValueError, match=r"following image must be .* got shape \(4, 4\)"):
        tween(a, np.zeros((4, 4), np.uint8), 0.5)


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_flow_finds_a_five_pixel_shift(pair: tuple[np.ndarray, np.ndarray], method: str) -> None:
    a, b = pair
    field = flow(a, b, method)
    assert field.shape == (96, 128, 2) and field.dtype == np.float32
    interior = field[16:-16, 16:-16]
    tolerance = 0.5 if method == "farneback" else 0.25
    assert abs(float(np.median(interior[..., 0])) - SHIFT) < tolerance
    assert abs(float(np.median(interior[..., 1]))) < tolerance
    assert np.mean(np.abs(interior[..., 0] - SHIFT) < 1.0) > 0.9


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_warp_by_flow_brings_a_onto_b(pair: tuple[np.ndarray, np.ndarray], method: str) -> None:
    a, b = pair
    warped = warp_by_flow(a, flow(a, b, method))
    before = np.abs(a.astype(int) - b)[16:-16, 16:-16].mean()
    after = np.abs(warped.astype(int) - b)[16:-16, 16:-16].mean()
    assert before > 10
    assert after < 0.1 * before


def test_warp_by_flow_is_exact_for_whole_pixel_flow_and_factor() -> None:
    image = _texture(3, 20, 30)
    field = np.zeros((20, 30, 2), np.float32)
    field[..., 0] = 2.0  # move content 2 px right (factor 0.5 of 4 px)
    np.testing.assert_array_equal(warp_by_flow(image, field * 2, factor=0.5)[:, 2:], image[:, :-2])
    # Border: mirrored (REFLECT_101), so column 0 samples column 2 and column 1 samples column 1.
    np.testing.assert_array_equal(warp_by_flow(image, field)[:, 0], image[:, 2])
    out = warp_by_flow(image, field, factor=0.0)
    np.testing.assert_array_equal(out, image)
    assert not np.shares_memory(out, image)
    with pytest.raises(ValueError, match=r"shape \(20, 30, 2\); got \(20, 30\)"):
        warp_by_flow(image, field[..., 0])


def test_flow_tween_places_content_in_between(pair: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = pair
    field = flow(a, b, "dis_medium")
    for weight in (0.25, 0.5, 0.75):
        expected = _shifted(SHIFT * weight)
        aligned = flow_tween(a, b, weight, flow_field=field)
        ghosted = tween(a, b, weight)
        aligned_error = np.abs(aligned.astype(int) - expected)[16:-16, 16:-16].mean()
        ghost_error = np.abs(ghosted.astype(int) - expected)[16:-16, 16:-16].mean()
        assert aligned_error < 1.5
        assert ghost_error > 4 * aligned_error
    # Without a precomputed flow it computes one with the method.
    np.testing.assert_array_equal(flow_tween(a, b, 0.5, "dis_medium"), flow_tween(a, b, 0.5, flow_field=field))


def test_flow_tween_endpoints_and_zero_factor(pair: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = pair
    field = flow(a, b)
    np.testing.assert_array_equal(flow_tween(a, b, 0.0, flow_field=field), a)
    np.testing.assert_array_equal(flow_tween(a, b, 1.0, flow_field=field), b)
    np.testing.assert_array_equal(flow_tween(a, b, 0.4, factor=0.0, flow_field=field), tween(a, b, 0.4))


def test_method_names() -> None:
    assert normalize_flow_method("DIS Medium") == "dis_medium"
    assert normalize_flow_method("dis-fine") == "dis_fine"
    assert normalize_flow_method("Farneback") == "farneback"
    with pytest.raises(SettingsError, match=r"optical_flow_cadence.*RAFT needs torchvision"):
        normalize_flow_method("RAFT")
    with pytest.raises(SettingsError, match="Did you mean 'farneback'"):
        normalize_flow_method("farnebak")
