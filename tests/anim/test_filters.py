"""Contrast and anti-blur (unsharp mask) against straightforward float64 references."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dreamreel.anim.filters import adjust_contrast, check_image, odd_kernel, unsharp_mask
from dreamreel.errors import SettingsError


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(3)
    noisy = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    return cv2.addWeighted(noisy, 0.5, cv2.GaussianBlur(noisy, (0, 0), 3), 0.5, 0)


def _reference_unsharp(image: np.ndarray, amount: float, size: int, sigma: float, threshold: float) -> np.ndarray:
    blurred = cv2.GaussianBlur(image, (size, size), sigma, borderType=cv2.BORDER_REFLECT_101)
    sharp = np.clip(np.rint((1 + amount) * image.astype(np.float64) - amount * blurred), 0, 255).astype(np.uint8)
    if threshold > 0:
        keep = np.abs(image.astype(np.int16) - blurred.astype(np.int16)) < threshold
        sharp[keep] = image[keep]
    return sharp


def test_check_image_accepts_rgb_and_names_what_it_got() -> None:
    good = np.zeros((2, 3, 3), np.uint8)
    assert check_image(good) is good
    view = np.zeros((4, 6, 3), np.uint8)[::2, ::2]
    checked = check_image(view)
    assert checked.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(checked, view)
    with pytest.raises(TypeError, match="got a list"):
        check_image([[1, 2, 3]])
    with pytest.raises(ValueError, match=r"shape \(4, 4\) dtype uint8"):
        check_image(np.zeros((4, 4), np.uint8), "init")
    with pytest.raises(ValueError, match=r"init must be .* got shape \(4, 4, 4\)"):
        check_image(np.zeros((4, 4, 4), np.uint8), "init")
    with pytest.raises(ValueError, match="dtype float32"):
        adjust_contrast(np.zeros((4, 4, 3), np.float32), 1.0)
    with pytest.raises(ValueError, match=r"shape \(0, 4, 3\)"):
        unsharp_mask(np.zeros((0, 4, 3), np.uint8), amount=1)


def test_contrast_one_is_identity_copy(image: np.ndarray) -> None:
    out = adjust_contrast(image, 1.0)
    np.testing.assert_array_equal(out, image)
    assert out is not image and not np.shares_memory(out, image)


@pytest.mark.parametrize("factor", [0.0, 0.5, 0.97, 1.05, 1.1, 2.0])
def test_contrast_multiplies_rounds_and_clips(image: np.ndarray, factor: float) -> None:
    exact = image.astype(np.float64) * factor
    expected = np.clip(np.rint(exact), 0, 255).astype(np.uint8)
    out = adjust_contrast(image, factor)
    tie = np.abs(exact - np.floor(exact) - 0.5) < 1e-9  # e.g. 5 * 1.1; float32 may round either way
    np.testing.assert_array_equal(out[~tie], expected[~tie])
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_contrast_clips_where_deforum_wrapped() -> None:
    bright = np.full((2, 2, 3), 250, np.uint8)
    assert (adjust_contrast(bright, 1.1) == 255).all()  # Deforum: round(275) -> uint8 19


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "x"])
def test_contrast_rejects_bad_factor(image: np.ndarray, bad: object) -> None:
    with pytest.raises(SettingsError, match="contrast_schedule"):
        adjust_contrast(image, bad)  # type: ignore[arg-type]


def test_odd_kernel() -> None:
    assert [odd_kernel(k) for k in (-3, 0, 1, 2, 3, 4, 5.9, 6)] == [1, 1, 1, 3, 3, 5, 5, 7]


@pytest.mark.parametrize(
    ("amount", "kernel", "sigma", "threshold"),
    [(0.1, 5, 1.0, 0), (1.0, 3, 0.7, 0), (2.5, 7, 2.0, 0), (0.8, 5, 1.0, 4), (0.8, 5, 1.0, 2.5), (0.5, 9, 0.0, 1)],
)
def test_unsharp_matches_reference(
    image: np.ndarray, amount: float, kernel: int, sigma: float, threshold: float
) -> None:
    out = unsharp_mask(image, amount=amount, kernel=kernel, sigma=sigma, threshold=threshold)
    expected = _reference_unsharp(image, amount, kernel, sigma, threshold)
    # Exact .5 ties (frequent: 1.1 * x - 0.1 * b) may round either way in float32/float64; all else is exact.
    blurred = cv2.GaussianBlur(image, (kernel, kernel), sigma, borderType=cv2.BORDER_REFLECT_101).astype(np.float64)
    exact = (1 + amount) * image - amount * blurred
    tie = np.abs(exact - np.floor(exact) - 0.5) < 1e-6
    assert np.abs(out.astype(int) - expected).max() <= 1
    np.testing.assert_array_equal(out[~tie], expected[~tie])


def test_unsharp_really_sharpens(image: np.ndarray) -> None:
    edge = np.zeros((16, 16, 3), np.uint8)
    edge[:, 8:] = 200
    edge[:, :8] = 50
    soft = cv2.GaussianBlur(edge, (5, 5), 1.0)
    sharp = unsharp_mask(soft, amount=1.0, kernel=5, sigma=1.0)
    # The step gets steeper: overshoot on both sides, flat areas untouched.
    assert sharp[8, 7, 0] < soft[8, 7, 0] and sharp[8, 8, 0] > soft[8, 8, 0]
    assert sharp[8, 0, 0] == soft[8, 0, 0] and sharp[8, 15, 0] == soft[8, 15, 0]


def test_unsharp_even_kernel_is_forced_odd(image: np.ndarray) -> None:
    np.testing.assert_array_equal(
        unsharp_mask(image, amount=0.7, kernel=4, sigma=1.0), unsharp_mask(image, amount=0.7, kernel=5, sigma=1.0)
    )


def test_unsharp_threshold_uses_true_difference() -> None:
    # image - blurred = 3 - 5 is -2: below threshold 3, so the pixel is kept. Wrapped uint8 gave 254.
    image = np.full((9, 9, 3), 5, np.uint8)
    image[4, 4] = 3
    out = unsharp_mask(image, amount=2.0, kernel=3, sigma=1.0, threshold=3)
    np.testing.assert_array_equal(out, image)
    changed = unsharp_mask(image, amount=2.0, kernel=3, sigma=1.0, threshold=0)
    assert changed[4, 4, 0] < 3


@pytest.mark.parametrize("kwargs", [{"amount": 0.0}, {"amount": 1.0, "kernel": 1}, {"amount": 1.0, "threshold": 256}])
def test_unsharp_identity_cases(image: np.ndarray, kwargs: dict[str, float]) -> None:
    out = unsharp_mask(image, **kwargs)
    np.testing.assert_array_equal(out, image)
    assert not np.shares_memory(out, image)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"amount": -1.0}, "amount_schedule"),
        ({"amount": 1.0, "sigma": -1.0}, "sigma_schedule"),
        ({"amount": 1.0, "threshold": float("nan")}, "threshold_schedule"),
        ({"amount": 1.0, "kernel": float("inf")}, "kernel_schedule"),
    ],
)
def test_unsharp_rejects_bad_settings(image: np.ndarray, kwargs: dict[str, float], key: str) -> None:
    with pytest.raises(SettingsError, match=key):
        unsharp_mask(image, **kwargs)
