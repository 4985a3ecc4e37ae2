"""Tests for dreamreel.pipelines.noise: A1111 seeds, variation seeds, seed resize, ENSD and the NV generator."""

from __future__ import annotations

import math
from itertools import islice

import numpy as np
import pytest
import torch

from dreamreel.errors import SettingsError
from dreamreel.pipelines.noise import RNG_SOURCES, LatentNoise, NvGenerator, philox4x32_10, slerp

MASK = 0xFFFFFFFF


def _draws(noise: LatentNoise, n: int) -> list[torch.Tensor]:
    return list(islice(noise, n))


# --- Philox 4x32-10 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counter", "key", "expected"),
    [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((MASK, MASK, MASK, MASK), (MASK, MASK), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ],
)
def test_philox_known_answers(counter: tuple[int, ...], key: tuple[int, int], expected: tuple[int, ...]) -> None:
    """Random123's kat_vectors for philox4x32 with 10 rounds."""
    assert tuple(int(v) for v in philox4x32_10(counter, key)) == expected


def _philox_scalar(counter: list[int], key: list[int]) -> list[int]:
    """Philox 4x32-10 written out with Python integers, one block at a time."""
    c, k = list(counter), list(key)
    for round_ in range(10):
        if round_:
            k = [(k[0] + 0x9E3779B9) & MASK, (k[1] + 0xBB67AE85) & MASK]
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & MASK, (p0 >> 32) ^ c[3] ^ k[1], p0 & MASK]
    return c


def test_philox_vectorised_matches_scalar() -> None:
    rng = np.random.default_rng(0)
    counters = rng.integers(0, 2**32, size=(4, 16), dtype=np.uint64)
    keys = rng.integers(0, 2**32, size=(2, 16), dtype=np.uint64)
    out = philox4x32_10(counters, keys)
    for i in range(16):
        expected = _philox_scalar([int(v) for v in counters[:, i]], [int(v) for v in keys[:, i]])
        assert [int(v) for v in out[:, i]] == expected


def _nv_by_hand(seed: int, offset: int, index: int) -> np.float32:
    """One NV number derived from the algorithm: counter (offset, 0, index, 0), key (seed lo, seed hi),
    Box-Muller on the first two words with the WebUI's float32-rounded constants, in float64."""
    words = _philox_scalar([offset, 0, index, 0], [seed & MASK, seed >> 32])
    inv = float(np.float32(2.3283064e-10))
    inv_2pi = float(np.float32(2.3283064e-10 * 6.2831855))
    u = words[0] * inv + float(np.float32(inv) / np.float32(2))
    v = words[1] * inv_2pi + float(np.float32(inv_2pi) / np.float32(2))
    return np.float32(math.sqrt(-2.0 * math.log(u)) * math.sin(v))


@pytest.mark.parametrize("seed", [0, 1234, 2**32 - 1, 2**32 + 5])
def test_nv_first_values_derived_by_hand(seed: int) -> None:
    gen = NvGenerator(seed)
    first = gen.randn((2, 3))
    second = gen.randn((5,))
    assert first.dtype == np.float32
    for i in range(6):
        assert first.reshape(-1)[i] == _nv_by_hand(seed, 0, i)
    for i in range(5):
        assert second[i] == _nv_by_hand(seed, 1, i)


def test_nv_near_webui_documented_output() -> None:
    """rng_philox.py's docstring lists Generator(0).randn((3, 4)); its printed values agree to 1e-6."""
    documented = np.array(
        [
            [-0.92466259, -0.42534415, -2.6438457, 0.14518388],
            [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
            [-1.07454231, -0.36314407, -1.67105067, 2.26550497],
        ]
    )
    np.testing.assert_allclose(NvGenerator(0).randn((3, 4)), documented, atol=1e-6)


def test_nv_distribution_and_determinism() -> None:
    a = NvGenerator(42).randn((200_000,))
    assert abs(float(a.mean())) < 0.01
    assert abs(float(a.std()) - 1.0) < 0.01
    assert abs(float((np.abs(a) < 1).mean()) - 0.6827) < 0.01
    np.testing.assert_array_equal(a, NvGenerator(42).randn((200_000,)))
    assert not np.array_equal(a[:10], NvGenerator(43).randn((10,)))


# --- LatentNoise ------------------------------------------------------------------------------


@pytest.mark.parametrize("rng", ["cpu", "nv"])
def test_shapes_dtypes_determinism(rng: str) -> None:
    a = _draws(LatentNoise(64, 48, 7, rng=rng), 3)
    b = _draws(LatentNoise(64, 48, 7, rng=rng), 3)
    for x, y in zip(a, b, strict=True):
        assert x.shape == (4, 6, 8)
        assert x.dtype == torch.float32
        assert x.device.type == "cpu"
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert not torch.equal(a[0], a[1])
    assert next(LatentNoise(64, 64, 7, channels=16)).shape == (16, 8, 8)


def test_cpu_noise_is_torch_randn_with_cpu_generator() -> None:
    gen = torch.Generator("cpu").manual_seed(1234)
    expected = [torch.randn((4, 8, 8), generator=gen) for _ in range(3)]
    got = _draws(LatentNoise(64, 64, 1234), 3)
    for x, y in zip(got, expected, strict=True):
        assert torch.equal(x, y)


def test_nv_noise_is_nv_generator_offsets() -> None:
    gen = NvGenerator(99)
    expected = [torch.from_numpy(gen.randn((4, 8, 8))) for _ in range(3)]
    for x, y in zip(_draws(LatentNoise(64, 64, 99, rng="nv"), 3), expected, strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("rng", ["cpu", "nv"])
def test_subseed_endpoints(rng: str) -> None:
    plain = _draws(LatentNoise(64, 64, 1, rng=rng), 2)
    sub = next(LatentNoise(64, 64, 2, rng=rng))
    at0 = _draws(LatentNoise(64, 64, 1, subseed=2, subseed_strength=0.0, rng=rng), 2)
    assert torch.equal(at0[0], plain[0])
    at1 = _draws(LatentNoise(64, 64, 1, subseed=2, subseed_strength=1.0, rng=rng), 2)
    torch.testing.assert_close(at1[0], sub, rtol=0, atol=1e-5)
    assert torch.equal(at1[1], plain[1])  # the subseed does not touch the per-step noise
    mid = next(LatentNoise(64, 64, 1, subseed=2, subseed_strength=0.5, rng=rng))
    torch.testing.assert_close(mid, slerp(0.5, plain[0], sub))


def test_slerp_properties() -> None:
    gen = torch.Generator().manual_seed(0)
    low, high = torch.randn((4, 8, 8), generator=gen), torch.randn((4, 8, 8), generator=gen)
    torch.testing.assert_close(slerp(0.0, low, high), low, rtol=0, atol=1e-5)
    torch.testing.assert_close(slerp(1.0, low, high), high, rtol=0, atol=1e-5)
    # On unit columns the result stays on the unit sphere, halfway along each (channel, column) arc.
    low, high = low / low.norm(dim=1, keepdim=True), high / high.norm(dim=1, keepdim=True)
    mid = slerp(0.5, low, high)
    torch.testing.assert_close(mid.norm(dim=1), torch.ones(4, 8), rtol=0, atol=1e-5)
    cos_low = torch.nn.functional.cosine_similarity(mid, low, dim=1)
    cos_high = torch.nn.functional.cosine_similarity(mid, high, dim=1)
    torch.testing.assert_close(cos_low, cos_high, rtol=0, atol=1e-5)
    # Near-parallel inputs take the WebUI's linear fallback with its weights: low * val + high * (1 - val).
    near = low * 2.0 + 1e-4
    torch.testing.assert_close(slerp(0.25, low, near), low * 0.25 + near * 0.75)


@pytest.mark.parametrize("rng", ["cpu", "nv"])
def test_seed_resize_equal_size_is_identity(rng: str) -> None:
    plain = _draws(LatentNoise(64, 48, 5, rng=rng), 2)
    same = _draws(LatentNoise(64, 48, 5, rng=rng, seed_resize_from=(64, 48)), 2)
    for x, y in zip(plain, same, strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("rng", ["cpu", "nv"])
def test_seed_resize_smaller_pastes_centre(rng: str) -> None:
    got = _draws(LatentNoise(96, 64, 5, rng=rng, seed_resize_from=(48, 32)), 2)
    small = next(LatentNoise(48, 32, 5, rng=rng))  # (4, 4, 6)
    full = _draws(LatentNoise(96, 64, 5, rng=rng), 2)  # (4, 8, 12)
    # dx = (12 - 6) // 2 = 3, dy = (8 - 4) // 2 = 2
    assert torch.equal(got[0][:, 2:6, 3:9], small)
    outside = torch.ones(8, 12, dtype=torch.bool)
    outside[2:6, 3:9] = False
    assert torch.equal(got[0][:, outside], full[0][:, outside])
    assert torch.equal(got[1], full[1])


def test_seed_resize_larger_crops_centre() -> None:
    got = next(LatentNoise(48, 32, 5, seed_resize_from=(96, 64)))  # target (4, 4, 6), from (4, 8, 12)
    big = next(LatentNoise(96, 64, 5))
    # dx = (6 - 12) // 2 = -3, dy = -2: the from-noise's centre fills the whole target.
    assert torch.equal(got, big[:, 2:6, 3:9])


@pytest.mark.parametrize("rng", ["cpu", "nv"])
def test_ensd_changes_only_step_noise(rng: str) -> None:
    plain = _draws(LatentNoise(64, 64, 10, rng=rng), 3)
    ensd = _draws(LatentNoise(64, 64, 10, rng=rng, eta_noise_seed_delta=31337), 3)
    assert torch.equal(plain[0], ensd[0])
    assert not torch.equal(plain[1], ensd[1])
    # The step noise is a fresh generator of seed + ENSD, from its first draw on.
    fresh = _draws(LatentNoise(64, 64, 10 + 31337, rng=rng), 2)
    assert torch.equal(ensd[1], fresh[0])
    assert torch.equal(ensd[2], fresh[1])


def test_rng_sources() -> None:
    assert RNG_SOURCES == ("cpu", "gpu", "nv")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_gpu_without_cuda_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="CUDA GPU") as info:
        LatentNoise(64, 64, 1, rng="gpu")
    assert info.value.key == "--rng"
    assert "nv" in str(info.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_noise_is_cuda_randn() -> None:
    gen = torch.Generator("cuda").manual_seed(3)
    expected = torch.randn((4, 8, 8), generator=gen, device="cuda").cpu()
    assert torch.equal(next(LatentNoise(64, 64, 3, rng="gpu")), expected)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"width": 60}, "--width"),
        ({"height": 0}, "--height"),
        ({"seed": -1}, "--seed"),
        ({"seed": 2**32}, "--seed"),
        ({"subseed": 2**32, "subseed_strength": 0.5}, "--subseed"),
        ({"subseed_strength": 0.5}, "--subseed"),
        ({"subseed": 1, "subseed_strength": 1.5}, "--subseed-strength"),
        ({"subseed": 1, "subseed_strength": -0.1}, "--subseed-strength"),
        ({"rng": "tpu"}, "--rng"),
        ({"seed_resize_from": (4, 64)}, "--seed-resize-from"),
    ],
)
def test_validation(kwargs: dict[str, object], key: str) -> None:
    args: dict[str, object] = {"width": 64, "height": 64, "seed": 1} | kwargs
    with pytest.raises(SettingsError) as info:
        LatentNoise(**args)  # type: ignore[arg-type]
    assert info.value.key == key
