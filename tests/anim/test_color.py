"""Colour coherence: agreement with skimage, identity cases, strength, and no drift over long runs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage.exposure import match_histograms

from dreamreel.anim.color import ColorMatcher, match_colors, normalize_color_space
from dreamreel.errors import SettingsError

SPACES = ["lab", "hsv", "rgb"]
TO_SPACE = {"lab": (cv2.COLOR_RGB2LAB, cv2.COLOR_LAB2RGB), "hsv": (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB)}


def _natural(seed: int, size: tuple[int, int] = (96, 128), tint: tuple[float, float, float] = (1, 1, 1)) -> np.ndarray:
    """A smooth, photo-like test image: blurred noise plus a gradient, tinted."""
    rng = np.random.default_rng(seed)
    height, width = size
    noise = cv2.GaussianBlur(rng.normal(0, 1, (height, width, 3)), (0, 0), 4)
    ramp = np.linspace(-1, 1, width)[None, :, None]
    value = 120 + 35 * noise / noise.std() + 30 * ramp
    return np.clip(value * np.asarray(tint), 0, 255).astype(np.uint8)


def _stats(image: np.ndarray, space: str = "rgb") -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std, in ``space`` (the space histogram matching controls)."""
    if space != "rgb":
        image = cv2.cvtColor(image, TO_SPACE[space][0])
    pixels = image.reshape(-1, 3).astype(np.float64)
    return pixels.mean(axis=0), pixels.std(axis=0)


def test_rgb_matches_skimage_on_random_images() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
        reference = (rng.random((30, 70, 3)) ** rng.uniform(0.3, 3) * 255).astype(np.uint8)
        ours = ColorMatcher(reference, "rgb").match(image).astype(int)
        theirs = match_histograms(image, reference, channel_axis=-1).astype(int)
        # skimage truncates the interpolated level, we round: ours is theirs or one above.
        assert set(np.unique(ours - theirs)) <= {0, 1}


@pytest.mark.parametrize("space", ["lab", "hsv"])
def test_lab_hsv_tables_match_skimage_in_that_space(space: str) -> None:
    image, reference = _natural(1), _natural(2, (80, 100), tint=(1.2, 0.8, 0.6))
    forward, back = TO_SPACE[space]
    image_in_space = cv2.cvtColor(image, forward)
    theirs_in_space = match_histograms(image_in_space, cv2.cvtColor(reference, forward), channel_axis=-1)
    matcher = ColorMatcher(reference, space, exact=False)
    ours_in_space = cv2.LUT(image_in_space, matcher.table(image_in_space))
    assert set(np.unique(ours_in_space.astype(int) - theirs_in_space)) <= {0, 1}  # round vs truncate
    theirs = cv2.cvtColor(theirs_in_space, back)
    for exact in (False, True):
        # Through the conversion back to RGB, a level in LAB/HSV can move RGB by a few levels. The
        # exact path bins hue by floor(H / 2) where OpenCV's 8-bit HSV rounds; where the hue table
        # is steep (a strongly tinted reference) a pixel near a bin edge can land on another hue.
        difference = np.abs(ColorMatcher(reference, space, exact=exact).match(image).astype(int) - theirs)
        loose = space == "hsv" and exact
        assert np.percentile(difference, 95 if loose else 99) <= 5, exact
        assert difference.mean() < (2.0 if loose else 1.0), exact


@pytest.mark.parametrize("space", SPACES)
def test_match_moves_statistics_to_reference(space: str) -> None:
    image, reference = _natural(3), _natural(4, tint=(1.3, 0.9, 0.5))
    out = ColorMatcher(reference, space).match(image)
    mean_out, std_out = _stats(out, space)
    mean_ref, std_ref = _stats(reference, space)
    mean_in, _ = _stats(image, space)
    assert np.abs(mean_out - mean_ref).max() < 1.5
    assert np.abs(std_out - std_ref).max() < 1.5
    assert np.abs(mean_in - mean_ref).max() > 10  # the test is not trivially satisfied
    rgb_out, rgb_ref = _stats(out)[0], _stats(reference)[0]
    assert np.abs(rgb_out - rgb_ref).max() < 6


@pytest.mark.parametrize("space", SPACES)
def test_self_match_changes_at_most_two_levels(space: str) -> None:
    image = _natural(5)
    matcher = ColorMatcher(image, space)
    out = matcher.match(image)
    np.testing.assert_array_equal(out, image)
    assert not np.shares_memory(out, image)
    # A slightly different image of the same scene: every level is remapped by at most a level
    # or so, and pixels that were not nudged come back within 2 levels.
    nudged = image.copy()
    nudged[::7, ::5] = np.clip(nudged[::7, ::5].astype(int) + 3, 0, 255).astype(np.uint8)
    difference = np.abs(matcher.match(nudged).astype(int) - image)
    assert difference[1::7, 1::5].max() <= 2
    assert difference.max() <= 6
    assert difference.mean() < 0.5


@pytest.mark.parametrize("space", ["lab", "hsv"])
def test_exact_false_round_trips_through_8_bit_like_deforum(space: str) -> None:
    image = _natural(5)
    nudged = image.copy()
    nudged[::7, ::5] = np.clip(nudged[::7, ::5].astype(int) + 3, 0, 255).astype(np.uint8)
    out = ColorMatcher(image, space, exact=False).match(nudged)
    forward, back = TO_SPACE[space]
    round_trip = cv2.cvtColor(cv2.cvtColor(image, forward), back)
    # Unchanged pixels land on the 8-bit round trip of the original, not on the original.
    unchanged = np.abs(out.astype(int) - round_trip)[1::7, 1::5]
    assert np.percentile(unchanged, 99) <= 2
    assert np.abs(round_trip.astype(int) - image).max() >= 3


@pytest.mark.parametrize("space", SPACES)
def test_no_drift_over_200_iterations(space: str) -> None:
    reference = _natural(6, (64, 80), tint=(1.1, 0.95, 0.8))
    matcher = ColorMatcher(reference, space)  # exact (default)
    mean_ref, std_ref = _stats(reference, space)
    rng = np.random.default_rng(7)
    image = _natural(8, (64, 80))
    rgb_history = []
    for step in range(200):
        image = matcher.match(image)
        mean_out, std_out = _stats(image, space)
        assert np.abs(mean_out - mean_ref).max() < 1.0, step
        assert np.abs(std_out - std_ref).max() < 1.0, step
        rgb_history.append(_stats(image)[0])
        # Perturb like a frame loop would: slight blur, brightening, noise and a shift.
        image = cv2.GaussianBlur(image, (3, 3), 0.6)
        image = np.clip(image * 1.02 + rng.normal(0, 2, image.shape) + 1, 0, 255).astype(np.uint8)
        image = np.roll(image, 1, axis=1)
    # RGB means stay near the reference's. Only the per-channel histograms in the matching space are
    # pinned, so in HSV the RGB means may wander a little as the blur changes how channels co-vary.
    rgb = np.asarray(rgb_history)
    tolerance = 6.0 if space == "hsv" else 1.5
    assert np.abs(rgb[10:] - _stats(reference)[0]).max() < tolerance


def test_strength_blends_tables() -> None:
    image, reference = _natural(9), _natural(10, tint=(0.6, 1.0, 1.3))
    matcher = ColorMatcher(reference, "rgb")
    full = matcher.match(image).astype(float)
    half = matcher.match(image, strength=0.5).astype(float)
    np.testing.assert_array_equal(matcher.match(image, strength=0.0), image)
    assert np.abs(half - (image + full) / 2).max() <= 1.0
    with pytest.raises(SettingsError, match="between 0 and 1"):
        matcher.match(image, strength=1.5)


def test_reference_size_does_not_matter_and_one_off_helper() -> None:
    image, reference = _natural(11), _natural(12, (50, 60), tint=(1.1, 1.0, 0.7))
    big_reference = cv2.resize(reference, (120, 100), interpolation=cv2.INTER_NEAREST)  # same histogram, 4x counts
    np.testing.assert_array_equal(
        ColorMatcher(reference, "RGB").match(image), match_colors(image, big_reference, "rgb")
    )


def test_space_names_and_errors() -> None:
    assert normalize_color_space(" LAB ") == "lab"
    assert normalize_color_space("Hsv") == "hsv"
    with pytest.raises(SettingsError, match=r"color_coherence.*'LAB', 'HSV' or 'RGB'.*Did you mean 'lab'"):
        normalize_color_space("lba")
    with pytest.raises(ValueError, match=r"colour-coherence reference must be .* got shape \(8, 8\)"):
        ColorMatcher(np.zeros((8, 8), np.uint8), "lab")
    with pytest.raises(ValueError, match="dtype float64"):
        ColorMatcher(_natural(1), "lab").match(np.zeros((8, 8, 3)))


def test_flat_reference_channel() -> None:
    reference = np.zeros((10, 10, 3), np.uint8)
    reference[..., 1] = 77
    out = ColorMatcher(reference, "rgb").match(_natural(13, (20, 20)))
    assert (out[..., 0] == 0).all() and (out[..., 1] == 77).all()
