"""Seeds and noise with AUTOMATIC1111's semantics.

:class:`LatentNoise` yields the initial latent noise of one image, then the noise an ancestral or
SDE sampler draws at each step, as the WebUI draws them (its ``modules/rng.py``, ``ImageRNG``):

- ``rng="cpu"``: ``torch.randn`` from a CPU ``torch.Generator`` seeded with the seed (the WebUI's
  "CPU" noise source, identical on every machine);
- ``rng="gpu"``: ``torch.randn`` from a CUDA generator (the WebUI's "GPU" source; needs CUDA);
- ``rng="nv"``: the WebUI's "NV" source, a NumPy Philox 4x32-10 generator with the Box-Muller
  transform that reproduces NVIDIA GPU ``torch.randn`` noise on any device.

A variation seed (``subseed``) is mixed in with the WebUI's :func:`slerp`; ``seed_resize_from``
draws the noise at another size and pastes it centred into noise of the target size; with
``eta_noise_seed_delta`` (ENSD) the per-step noise comes from generators seeded with
``seed + ENSD`` while the initial noise is unchanged.

Example:
    >>> noise = LatentNoise(512, 512, 1234)
    >>> tuple(next(noise).shape)
    (4, 64, 64)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt
import torch

from dreamreel.errors import SettingsError

logger = logging.getLogger(__name__)

__all__ = ["RNG_SOURCES", "LatentNoise", "NvGenerator", "philox4x32_10", "slerp"]

RNG_SOURCES: Final = ("cpu", "gpu", "nv")
"""The noise sources, as ``--rng`` spells them (the WebUI's "CPU", "GPU" and "NV")."""

_MAX_SEED: Final = 2**32 - 1
_MAX_GENERATOR_SEED: Final = 2**64 - 1

_PHILOX_M0: Final = 0xD2511F53
_PHILOX_M1: Final = 0xCD9E8D57
_PHILOX_W0: Final = 0x9E3779B9
_PHILOX_W1: Final = 0xBB67AE85
_MASK32: Final = 0xFFFFFFFF

# The WebUI's Box-Muller constants are float32 arrays; NumPy promotes uint32 * float32 arrays to
# float64, so the arithmetic runs in float64 on these float32-rounded values.
_TWO_POW32_INV: Final = float(np.float32(2.3283064e-10))
_TWO_POW32_INV_2PI: Final = float(np.float32(2.3283064e-10 * 6.2831855))
_HALF_TWO_POW32_INV: Final = float(np.float32(_TWO_POW32_INV) / np.float32(2))
_HALF_TWO_POW32_INV_2PI: Final = float(np.float32(_TWO_POW32_INV_2PI) / np.float32(2))

Uint32Array = npt.NDArray[np.uint32]


def philox4x32_10(counter: npt.ArrayLike, key: npt.ArrayLike) -> Uint32Array:
    """Philox 4x32 with 10 rounds (Random123), vectorised over columns.

    Args:
        counter: four rows of 32-bit counter words, shape ``(4,)`` or ``(4, N)``.
        key: two rows of 32-bit key words, shape ``(2,)`` or ``(2, N)``.

    Returns:
        The four output words per column, ``uint32``, the shape of ``counter``.
    """
    ctr = np.asarray(counter, dtype=np.uint64) & _MASK32
    k = np.asarray(key, dtype=np.uint64) & _MASK32
    shape = ctr.shape
    c0, c1, c2, c3 = (row.copy() for row in ctr.reshape(4, -1))
    k0, k1 = (np.broadcast_to(row, c0.shape).copy() for row in k.reshape(2, -1))
    m0, m1 = np.uint64(_PHILOX_M0), np.uint64(_PHILOX_M1)
    w0, w1 = np.uint64(_PHILOX_W0), np.uint64(_PHILOX_W1)
    mask, shift = np.uint64(_MASK32), np.uint64(32)
    for round_ in range(10):
        if round_:
            k0 = (k0 + w0) & mask
            k1 = (k1 + w1) & mask
        p0 = c0 * m0
        p1 = c2 * m1
        c0, c1, c2, c3 = (p1 >> shift) ^ c1 ^ k0, p1 & mask, (p0 >> shift) ^ c3 ^ k1, p0 & mask
    return np.stack([c0, c1, c2, c3]).astype(np.uint32).reshape(shape)


def _box_muller_first(x: Uint32Array, y: Uint32Array) -> npt.NDArray[np.float32]:
    """The first of the two normal numbers of the Box-Muller transform, as the WebUI computes it."""
    u = x.astype(np.float64) * _TWO_POW32_INV + _HALF_TWO_POW32_INV
    v = y.astype(np.float64) * _TWO_POW32_INV_2PI + _HALF_TWO_POW32_INV_2PI
    return (np.sqrt(-2.0 * np.log(u)) * np.sin(v)).astype(np.float32)


class NvGenerator:
    """The WebUI's "NV" generator: NVIDIA GPU ``torch.randn`` noise on any device.

    Each :meth:`randn` call uses counter ``(offset, 0, index, 0)`` for the ``index``-th number and
    the seed's low and high 32 bits as the key, keeps the first two output words for Box-Muller,
    and then advances ``offset`` by one.

    Args:
        seed: the seed, ``0 .. 2**64 - 1``.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self.offset = 0

    def randn(self, shape: Sequence[int]) -> npt.NDArray[np.float32]:
        """Draw standard normal float32 numbers of ``shape`` and advance the offset."""
        n = int(np.prod(shape, dtype=np.int64))
        counter = np.zeros((4, n), dtype=np.uint64)
        counter[0] = self.offset & _MASK32
        counter[2] = np.arange(n, dtype=np.uint64) & _MASK32
        key = np.array([self.seed & _MASK32, (self.seed >> 32) & _MASK32], dtype=np.uint64)
        self.offset += 1
        words = philox4x32_10(counter, key)
        return _box_muller_first(words[0], words[1]).reshape(tuple(shape))


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """The WebUI's spherical interpolation of two noise tensors.

    Normalises along dimension 1 (the latent's rows for one ``(C, H, W)`` image), so the angle is
    taken per channel and column. When the mean cosine is above 0.9995 the WebUI falls back to
    ``low * val + high * (1 - val)`` (its weights, reproduced as they are).

    Args:
        val: the interpolation weight, 0 gives ``low`` and 1 gives ``high``.
        low: the first tensor, at least two dimensions.
        high: the second tensor, the shape of ``low``.

    Returns:
        The interpolated tensor.
    """
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


class _Source:
    """One seeded generator of the chosen noise source."""

    def __init__(self, rng: str, seed: int) -> None:
        self._nv: NvGenerator | None = None
        self._torch: torch.Generator | None = None
        if rng == "nv":
            self._nv = NvGenerator(seed)
        else:
            self._torch = torch.Generator("cuda" if rng == "gpu" else "cpu").manual_seed(seed)

    def randn(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Draw the next float32 tensor of ``shape`` (on the generator's device)."""
        if self._nv is not None:
            return torch.from_numpy(self._nv.randn(shape))
        assert self._torch is not None
        return torch.randn(shape, generator=self._torch, device=self._torch.device, dtype=torch.float32)


def _check_int(value: object, key: str, low: int, high: int, what: str) -> int:
    """``value`` as an ``int`` in ``low .. high``, else a :class:`SettingsError` naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not low <= int(value) <= high:
        raise SettingsError(f"{value!r} is not a valid {what}; use a whole number from {low} to {high}", key=key)
    return int(value)


class LatentNoise(Iterator[torch.Tensor]):
    """The latent noise of one image, as the AUTOMATIC1111 WebUI draws it (``ImageRNG``).

    The first item is the initial noise; every later item is the noise for the next sampler step.
    Items are float32 CPU tensors of shape ``(channels, height // 8, width // 8)``.

    Args:
        width: image width in pixels, a multiple of 8.
        height: image height in pixels, a multiple of 8.
        seed: ``--seed``, ``0 .. 2**32 - 1``.
        subseed: ``--subseed``, the variation seed; needed when ``subseed_strength`` is above 0.
        subseed_strength: ``--subseed-strength``, 0 (the seed's noise) to 1 (the subseed's).
        seed_resize_from: ``(width, height)`` to draw the seed's noise at; ``(0, 0)`` (or any 0)
            draws it at the image size.
        rng: ``--rng``, one of :data:`RNG_SOURCES`.
        eta_noise_seed_delta: ENSD; when not 0 the per-step noise comes from ``seed + ENSD``.
        channels: latent channels.

    Raises:
        SettingsError: a value is out of range, or ``rng="gpu"`` without a CUDA GPU.
    """

    def __init__(
        self,
        width: int,
        height: int,
        seed: int,
        *,
        subseed: int | None = None,
        subseed_strength: float = 0.0,
        seed_resize_from: tuple[int, int] = (0, 0),
        rng: str = "cpu",
        eta_noise_seed_delta: int = 0,
        channels: int = 4,
    ) -> None:
        for value, key in ((width, "--width"), (height, "--height")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 8 or value % 8:
                raise SettingsError(f"{value!r} is not a valid image size; use a multiple of 8 (8 or more)", key=key)
        self.seed = _check_int(seed, "--seed", 0, _MAX_SEED, "seed")
        strength = subseed_strength
        if isinstance(strength, bool) or not isinstance(strength, int | float) or not 0.0 <= strength <= 1.0:
            raise SettingsError(
                f"{strength!r} is not a valid strength; use a number from 0 to 1", key="--subseed-strength"
            )
        self.subseed_strength = float(strength)
        if subseed is None:
            if self.subseed_strength != 0:
                raise SettingsError(
                    "a variation seed is needed when --subseed-strength is above 0; give --subseed", key="--subseed"
                )
            self.subseed = None
        else:
            self.subseed = _check_int(subseed, "--subseed", 0, _MAX_SEED, "seed")
        if rng not in RNG_SOURCES:
            raise SettingsError(f"{rng!r} is not a noise source; use one of {', '.join(RNG_SOURCES)}", key="--rng")
        if rng == "gpu" and not torch.cuda.is_available():
            raise SettingsError(
                "GPU noise needs a CUDA GPU and none is available; use --rng nv to reproduce NVIDIA GPU noise on "
                "any device, or --rng cpu",
                key="--rng",
            )
        self.rng = rng
        resize = tuple(seed_resize_from)
        if len(resize) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 or 0 < v < 8 for v in resize):
            raise SettingsError(
                f"{seed_resize_from!r} is not a valid size to resize the seed from; use (width, height) with 0 "
                "(off) or 8 or more pixels each",
                key="--seed-resize-from",
            )
        self.seed_resize_from = (int(resize[0]), int(resize[1]))
        self.eta_noise_seed_delta = _check_int(
            eta_noise_seed_delta, "--eta-noise-seed-delta", -self.seed, _MAX_GENERATOR_SEED - self.seed, "ENSD"
        )
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise SettingsError(f"{channels!r} is not a valid number of latent channels", key="channels")
        self.shape = (channels, height // 8, width // 8)
        self._generator = _Source(rng, self.seed)
        self._first = True

    def __iter__(self) -> LatentNoise:
        """The noise stream itself."""
        return self

    def __next__(self) -> torch.Tensor:
        """The initial noise on the first call, then the next step's noise."""
        if self._first:
            self._first = False
            return self._initial().cpu()
        return self._generator.randn(self.shape).cpu()

    def _initial(self) -> torch.Tensor:
        """``ImageRNG.first`` for one image."""
        from_w, from_h = self.seed_resize_from
        resized = from_w > 0 and from_h > 0
        noise_shape = (self.shape[0], from_h // 8, from_w // 8) if resized else self.shape
        subnoise = None
        if self.subseed is not None and self.subseed_strength != 0:
            subnoise = _Source(self.rng, self.subseed).randn(noise_shape)
        if noise_shape != self.shape:
            noise = _Source(self.rng, self.seed).randn(noise_shape)
        else:
            noise = self._generator.randn(self.shape)
        if subnoise is not None:
            noise = slerp(self.subseed_strength, noise, subnoise)
        if noise_shape != self.shape:
            x = self._generator.randn(self.shape)
            dx = (self.shape[2] - noise_shape[2]) // 2
            dy = (self.shape[1] - noise_shape[1]) // 2
            w = noise_shape[2] if dx >= 0 else noise_shape[2] + 2 * dx
            h = noise_shape[1] if dy >= 0 else noise_shape[1] + 2 * dy
            tx, ty = max(dx, 0), max(dy, 0)
            sx, sy = max(-dx, 0), max(-dy, 0)
            x[:, ty : ty + h, tx : tx + w] = noise[:, sy : sy + h, sx : sx + w]
            noise = x
        if self.eta_noise_seed_delta:
            self._generator = _Source(self.rng, self.seed + self.eta_noise_seed_delta)
        logger.debug("initial noise: seed %d, rng %s, shape %s", self.seed, self.rng, self.shape)
        return noise
