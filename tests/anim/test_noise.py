"""Seeded img2img noise: determinism, any size, the Perlin field against a direct formula, statistics."""

from __future__ import annotations

from statistics import NormalDist

import cv2
import numpy as np
import pytest

from dreamreel.anim.noise import NoiseAhead, add_noise, noise_image, perlin_octaves
from dreamreel.errors import SettingsError


def _fade(t: np.ndarray) -> np.ndarray:
    return 6 * t**5 - 15 * t**4 + 10 * t**3


def _direct_octave(height: int, width: int, res: int, angles: np.ndarray) -> np.ndarray:
    """One octave of textbook gradient noise, every pixel by broadcasting (no matrix tricks)."""
    gx, gy = np.cos(angles).astype(np.float64), np.sin(angles).astype(np.float64)
    ty, tx = np.arange(height) * res / height, np.arange(width) * res / width
    cy, cx = np.floor(ty).astype(int)[:, None], np.floor(tx).astype(int)[None, :]
    v, u = ty[:, None] - cy, tx[None, :] - cx
    dots = {
        (dy, dx): gx[cy + dy, cx + dx] * (u - dx) + gy[cy + dy, cx + dx] * (v - dy) for dy in (0, 1) for dx in (0, 1)
    }
    fu, fv = _fade(u), _fade(v)
    top = dots[0, 0] * (1 - fu) + dots[0, 1] * fu
    bottom = dots[1, 0] * (1 - fu) + dots[1, 1] * fu
    return np.sqrt(2) * (top * (1 - fv) + bottom * fv)


def _direct_perlin(height: int, width: int, seed: int, octaves: int, persistence: float, cells: int) -> np.ndarray:
    """Octaves summed, with the gradients drawn the same way as the module does (angles from
    default_rng(seed), one (res + 1)^2 block per octave, coarsest first)."""
    rng = np.random.default_rng(seed)
    total = np.zeros((height, width))
    for octave in range(octaves):
        res = cells * 2**octave
        angles = rng.random((res + 1, res + 1), dtype=np.float32) * np.float32(2 * np.pi)
        total += persistence**octave * _direct_octave(height, width, res, angles)
    return total


@pytest.mark.parametrize(
    ("height", "width", "octaves", "persistence", "cells"),
    [(64, 64, 4, 0.5, 8), (37, 100, 3, 0.7, 8), (600, 800, 4, 0.5, 8), (50, 30, 2, 1.0, 5), (512, 512, 4, 0.5, 8)],
)
def test_perlin_matches_direct_formula(height: int, width: int, octaves: int, persistence: float, cells: int) -> None:
    ours = perlin_octaves(height, width, seed=11, octaves=octaves, persistence=persistence, cells=cells)
    assert ours.shape == (height, width) and ours.dtype == np.float32
    expected = _direct_perlin(height, width, 11, octaves, persistence, cells)
    assert np.abs(ours - expected).max() < 1e-4


def test_perlin_is_zero_on_the_lattice_and_smooth() -> None:
    field = perlin_octaves(64, 96, seed=5, octaves=1, cells=8)  # cells of 8 x 12 pixels
    assert np.abs(field[::8, ::12]).max() < 1e-6
    assert field.std() > 0.1
    full = perlin_octaves(256, 256, seed=5)
    step = np.abs(np.diff(full, axis=1)).mean()
    assert step < 0.1 * full.std() * 2  # neighbours are strongly correlated, unlike white noise
    assert -2.0 < full.min() < -0.3 and 0.3 < full.max() < 2.0


def test_octaves_finer_than_a_pixel_are_skipped() -> None:
    # 16 x 16 px: octaves with 32, 64 and 128 cells would be sub-pixel; they are dropped, not aliased.
    np.testing.assert_array_equal(
        perlin_octaves(16, 16, seed=1, octaves=5, cells=8), perlin_octaves(16, 16, seed=1, octaves=2, cells=8)
    )


@pytest.mark.parametrize("kind", ["perlin", "uniform"])
def test_deterministic_and_seed_dependent(kind: str) -> None:
    first = noise_image(48, 80, seed=1234, kind=kind)
    np.testing.assert_array_equal(first, noise_image(48, 80, seed=1234, kind=kind))
    other = noise_image(48, 80, seed=1235, kind=kind)
    assert (first != other).mean() > 0.9


@pytest.mark.parametrize("kind", ["perlin", "uniform"])
@pytest.mark.parametrize(("height", "width"), [(512, 512), (600, 800), (37, 101), (1, 1), (3, 500), (700, 5)])
def test_any_size_and_add_noise_is_the_documented_blend(kind: str, height: int, width: int) -> None:
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    noise = noise_image(height, width, seed=9, kind=kind)
    assert noise.shape == (height, width, 3) and noise.dtype == np.uint8
    out = add_noise(image, 0.3, seed=9, kind=kind)
    np.testing.assert_array_equal(out, cv2.addWeighted(image, 0.7, noise, 0.3, 0))


def test_amount_zero_is_identity_and_amount_one_is_noise() -> None:
    image = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    out = add_noise(image, 0.0, seed=3)
    np.testing.assert_array_equal(out, image)
    assert not np.shares_memory(out, image)
    np.testing.assert_array_equal(add_noise(image, 1.0, seed=3), noise_image(20, 30, seed=3))


def test_uniform_kind_is_clipped_gaussian() -> None:
    values = noise_image(256, 256, seed=2, kind="uniform").astype(float)
    below = NormalDist().cdf(-1)  # clip(0.5 + 0.5 n) saturates for |n| >= 1
    assert abs((values == 0).mean() - below) < 0.005
    assert abs((values == 255).mean() - below) < 0.005
    assert abs(values.mean() - 127.5) < 0.5
    inner = values[(values > 0) & (values < 255)]
    # Std of a standard normal truncated to (-1, 1) is 0.5380; in levels that is 127.5 * 0.538.
    assert abs(inner.std() - 127.5 * 0.5380) < 1.0
    channels = values.reshape(-1, 3)
    assert abs(np.corrcoef(channels.T)[0, 1]) < 0.02  # channels are independent


def test_perlin_kind_scales_noise_by_the_field() -> None:
    seed = 21
    noise = noise_image(256, 256, seed=seed).astype(float)
    # Reproduce the field: the gradients are the first draws from the seed's generator.
    field = _direct_perlin(256, 256, seed, 4, 0.5, 8)
    scale = (field + 1) / 2
    amplitude = np.abs(noise - 127.5).mean(axis=2)
    low, high = scale < np.quantile(scale, 0.2), scale > np.quantile(scale, 0.8)
    assert amplitude[high].mean() > 2.0 * amplitude[low].mean()
    assert abs(noise.mean() - 127.5) < 1.0
    # Where the field is ~0.5 the values follow clip(127.5 + 63.75 n): about 0.046 % at the clip.
    mid = (np.abs(scale - 0.5) < 0.05)[..., None].repeat(3, axis=2)
    expected_std = 127.5 * 0.5
    assert abs(noise[mid].std() - expected_std) < 0.1 * expected_std


@pytest.mark.parametrize("kind", ["perlin", "uniform"])
def test_noise_image_values_follow_the_formula(kind: str) -> None:
    height, width, seed = 40, 72, 77
    # The stream: Perlin gradients first (for "perlin"), then one random byte per channel value.
    rng = np.random.default_rng(seed)
    field = np.ones((height, width))  # "uniform": (1 + 1) / 2 = no shaping
    if kind == "perlin":
        field = _direct_perlin(height, width, seed, 4, 0.5, 8)
        for octave in range(4):
            rng.random((8 * 2**octave + 1,) * 2, dtype=np.float32)
    count = height * width * 3
    raw = rng.bit_generator.random_raw(-(-count // 8)).view(np.uint8)[:count].reshape(height, width, 3)
    gaussian = np.array([NormalDist().inv_cdf((k + 0.5) / 256) for k in range(256)])[raw]
    expected = np.clip(np.rint(127.5 + 127.5 * gaussian * (field[..., None] + 1) / 2), 0, 255)
    ours = noise_image(height, width, seed=seed, kind=kind).astype(int)
    assert np.abs(ours - expected).max() <= 1  # float32 vs float64 at .5 ties
    assert (ours == expected).mean() > 0.995
    assert (ours == 0).any() and (ours == 255).any()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"amount": 1.5}, SettingsError, "noise_schedule"),
        ({"amount": -0.1}, SettingsError, "noise_schedule"),
        ({"amount": float("nan")}, SettingsError, "noise_schedule"),
        ({"amount": 0.1, "kind": "perlyn"}, SettingsError, "noise_type.*Did you mean 'perlin'"),
        ({"amount": 0.1, "octaves": 0}, SettingsError, "perlin_octaves"),
        ({"amount": 0.1, "octaves": 17}, SettingsError, "perlin_octaves"),
        ({"amount": 0.1, "octaves": 2.5}, SettingsError, "perlin_octaves"),
        ({"amount": 0.1, "persistence": -1}, SettingsError, "perlin_persistence"),
        ({"amount": 0.1, "seed": -1}, ValueError, "seed must be >= 0"),
    ],
)
def test_bad_settings(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    arguments: dict[str, object] = {"seed": 1, **kwargs}
    with pytest.raises(error, match=match):
        add_noise(image, **arguments)  # type: ignore[arg-type]


def test_bad_image() -> None:
    with pytest.raises(ValueError, match=r"got shape \(8, 8, 4\)"):
        add_noise(np.zeros((8, 8, 4), np.uint8), 0.1, seed=1)
    with pytest.raises(ValueError, match="at least 1x1"):
        noise_image(0, 5, seed=1)


@pytest.mark.parametrize("kind", ["perlin", "uniform"])
def test_noise_computed_ahead_gives_the_same_bits(kind: str) -> None:
    """The frame loop computes the next init's noise on a background thread; only the blend is left, bit for bit."""
    rng = np.random.default_rng(3)
    for height, width in [(64, 64), (37, 91), (200, 328), (512, 512)]:
        ahead = NoiseAhead(kind, octaves=3, persistence=0.6)
        for seed in (0, 41):
            ahead.request(height, width, seed)
        for seed in (0, 41):
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            ready = ahead.take(height, width, seed)
            assert ready is not None
            for amount in (0.065, 0.7):
                expected = add_noise(image, amount, seed=seed, kind=kind, octaves=3, persistence=0.6)
                blended = add_noise(image, amount, seed=seed, kind=kind, octaves=3, persistence=0.6, ready=ready)
                assert np.array_equal(blended, expected), (height, width, seed, amount)
        assert ahead.take(height, width, 0) is None  # taken once; never asked for -> computed in the loop as before
