"""Deforum's img2img noise: seeded Gaussian noise, optionally shaped by Perlin octaves, blended in.

``add_noise`` follows Deforum's recipe (``noise_type``, ``noise_schedule``, ``perlin_octaves``,
``perlin_persistence``; the hidden ``perlin_w/h`` = 8 is ``cells``)::

    n          ~ N(0, 1) per pixel and channel
    perlin:  n *= (perlin_octaves(H, W) + 1) / 2          # one field shared by the 3 channels
    noise_img  = clip(0.5 + 0.5 * n, 0, 1) * 255
    out        = addWeighted(image, 1 - amount, noise_img, amount, 0)

It is deterministic: the same seed, size and settings give the same noise on every run (numpy's
PCG64 stream; bit parity with Deforum's torch generator is not a goal).

Speed: Gaussian values come from random bytes through a 256-entry inverse-CDF table (256
equiprobable quantiles, below half a level of resolution at the output), and every Perlin octave
is evaluated for all rows at once as one batched matrix product with weights cached per size,
so a 512x512 frame needs no per-pixel Python or transcendental functions.

Differences from Deforum (see docs/compat.md):
    * Any width and height work, with the exact lattice spacing ``H / (cells * 2**octave)``.
      Deforum generated noise at the size floored to a multiple of 64 and resized only Perlin
      noise (nearest-neighbour), so "uniform" noise cannot match such a size.
    * "uniform" is Gaussian here as in Deforum (the name is historical).
    * ``noise_img`` is rounded, not truncated (Deforum's was half a level dark on average).
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from dreamreel.anim.filters import check_image, check_setting
from dreamreel.anim.timing import lower_priority
from dreamreel.errors import SettingsError, did_you_mean
from dreamreel.generation import Image

logger = logging.getLogger(__name__)

__all__ = ["NOISE_KINDS", "NoiseAhead", "NoiseKind", "add_noise", "noise_image", "perlin_octaves"]

NoiseKind = Literal["perlin", "uniform"]
NOISE_KINDS: tuple[str, ...] = ("perlin", "uniform")
MAX_OCTAVES = 16
_CHUNK_PIXELS = 65536  # Perlin noise is built and blended this many pixels at a time (cache-sized temporaries)
_SINGLE_THREAD_PRODUCT = 500_000  # OpenBLAS 0.3.x starts threads for sgemm between ~0.6M and ~1.2M MACs

_QUANTILES = [NormalDist().inv_cdf((k + 0.5) / 256) for k in range(256)]
_GAUSS_U8 = np.clip(np.rint(127.5 + 127.5 * np.asarray(_QUANTILES)), 0, 255).astype(np.uint8)
"""Random byte -> clip(0.5 + 0.5 n, 0, 1) * 255 for a standard normal n (the 'uniform' kind)."""
_GAUSS_HALF = (63.75 * np.asarray(_QUANTILES)).astype(np.float32)
"""Random byte -> 127.5 * n / 2; multiplied by (perlin + 1) this is 127.5 * n * (perlin + 1) / 2."""
_FLOOR = (-127.5, -127.5, -127.5, -127.5)


def _fade(t: NDArray[np.float64]) -> NDArray[np.float64]:
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


# How the Perlin field is evaluated
# ---------------------------------
# In a cell with corner gradients g00, g01 (right), g10 (below), g11 and in-cell position (u, v),
# gradient noise is a fade-weighted blend of the four dot products g . (offset to the corner). It
# splits into y-only weights times x-only factors built from one lattice row each:
#     n = P(v) X[r] + Q(v) X[r+1] + R(v) Y[r] + S(v) Y[r+1]
#     X[i](x) = A(u) gx[i, c] + B(u) gx[i, c+1],  Y[i](x) = C(u) gy[i, c] + D(u) gy[i, c+1]
# with U = fade(u), V = fade(v), A = (1-U)u, B = U(u-1), C = 1-U, D = U, P = 1-V, Q = V,
# R = v(1-V), S = (v-1)V. The x factors of every lattice row are cheap gathers; grouping image
# rows into batches that touch only a few lattice rows turns the whole field, all octaves at once,
# into one batched product of y weights (cached per size) and gathered x factors. Each batch's
# product is kept small enough that OpenBLAS runs it on the calling thread (its threads cost far
# more than they save for products this size, and badly so on a busy machine).


@dataclass(frozen=True)
class _Octave:
    """One octave's cached geometry: which lattice rows each row batch reads, and the x weights."""

    resolution: int
    rows: NDArray[np.intp]  # (batches, window): lattice rows read by each batch
    left: NDArray[np.intp]  # (W,): lattice column left of each pixel column
    weights_x: NDArray[np.float32]  # (4, W): A, B, C, D of each pixel column


@dataclass(frozen=True)
class _Geometry:
    """Everything about a Perlin field that depends on its size and settings but not on the seed."""

    batch_rows: int
    octaves: tuple[_Octave, ...]
    weights_y: NDArray[np.float32]  # (batches, batch_rows, K): y weights times amplitude, last column = 1
    ones: NDArray[np.float32]  # (batches, 1, W): the x factor of that last column
    chunk_batches: int  # batches per chunk when the field is built and used piecewise


def _lattice(size: int, resolution: int, padded: int) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """Cell index and position inside the cell of every pixel (rows past ``size`` repeat the last)."""
    coords = np.minimum(np.arange(padded), size - 1) * (resolution / size)
    cells = np.minimum(np.floor(coords).astype(np.intp), resolution - 1)
    return cells, coords - cells


def _window(cells: NDArray[np.intp], batch_rows: int) -> tuple[NDArray[np.intp], int]:
    """First lattice row of each batch and the number of lattice rows any batch touches."""
    per_batch = cells.reshape(-1, batch_rows)
    first = per_batch[:, 0]
    return first, int((per_batch[:, -1] - first).max()) + 2


def _depth(height: int, resolutions: list[int], batch_rows: int) -> int:
    """K, the inner dimension of the batched product, for a batch height."""
    padded = -(-height // batch_rows) * batch_rows
    return 1 + sum(2 * _window(_lattice(height, r, padded)[0], batch_rows)[1] for r in resolutions)


def _batch_rows(height: int, width: int, resolutions: list[int]) -> int:
    """The batch height with the least work whose per-batch product OpenBLAS keeps on one thread."""
    candidates = {2**i for i in range(height.bit_length() + 1)} | {max(1, round(height / r)) for r in resolutions}
    costs = {}
    for rows in sorted(candidates):
        depth = _depth(height, resolutions, rows)
        padded = -(-height // rows) * rows
        # matmul multiply-adds + gathering the x factors of every batch
        cost = padded * width * depth + 4.0 * (padded // rows) * depth * width
        costs[rows] = cost if rows * depth * width <= _SINGLE_THREAD_PRODUCT else cost * 1e6
    return min(costs, key=lambda rows: costs[rows])


def _octave_geometry(
    height: int, width: int, resolution: int, amplitude: NDArray[np.float64], batch_rows: int
) -> tuple[NDArray[np.float64], _Octave]:
    """The octave's (padded rows, 2 * window) y-weight block and its cached x geometry."""
    padded = amplitude.shape[0]
    cells_y, v = _lattice(height, resolution, padded)
    first, window = _window(cells_y, batch_rows)
    local = cells_y - np.repeat(first, batch_rows)
    fade_v, rows = _fade(v), np.arange(padded)
    block = np.zeros((padded, 2 * window))
    block[rows, local] = (1.0 - fade_v) * amplitude  # P
    block[rows, local + 1] = fade_v * amplitude  # Q
    block[rows, window + local] = v * (1.0 - fade_v) * amplitude  # R
    block[rows, window + local + 1] = (v - 1.0) * fade_v * amplitude  # S
    cells_x, u = _lattice(width, resolution, width)
    fade_u = _fade(u)
    weights_x = np.stack([(1.0 - fade_u) * u, fade_u * (u - 1.0), 1.0 - fade_u, fade_u]).astype(np.float32)
    lattice_rows = np.minimum(first[:, None] + np.arange(window), resolution)
    for array in (cells_x, weights_x, lattice_rows):
        array.flags.writeable = False
    return block, _Octave(resolution, lattice_rows, cells_x, weights_x)


@functools.lru_cache(maxsize=16)
def _geometry(height: int, width: int, cells: int, octaves: int, persistence: float) -> _Geometry:
    resolutions = [cells * 2**o for o in range(octaves) if cells * 2**o <= max(height, width)]
    if len(resolutions) < octaves:
        logger.debug("perlin: %d sub-pixel octave(s) skipped at %dx%d", octaves - len(resolutions), width, height)
    batch_rows = _batch_rows(height, width, resolutions)
    padded = -(-height // batch_rows) * batch_rows
    valid = (np.arange(padded) < height).astype(np.float64)
    blocks: list[NDArray[np.float64]] = []
    octave_list: list[_Octave] = []
    for index, resolution in enumerate(resolutions):
        amplitude = math.sqrt(2.0) * persistence**index * valid
        block, octave = _octave_geometry(height, width, resolution, amplitude, batch_rows)
        blocks.append(block)
        octave_list.append(octave)
    blocks.append(valid[:, None])  # the "+ 1" of (perlin + 1), as one more column
    batches = padded // batch_rows
    weights_y = np.concatenate(blocks, axis=1).astype(np.float32).reshape(batches, batch_rows, -1)
    ones = np.ones((batches, 1, width), dtype=np.float32)
    for array in (weights_y, ones):
        array.flags.writeable = False
    chunk_batches = max(1, _CHUNK_PIXELS // (batch_rows * width))
    return _Geometry(batch_rows, tuple(octave_list), weights_y, ones, chunk_batches)


def _gradient_factors(
    geometry: _Geometry, rng: np.random.Generator
) -> list[tuple[NDArray[np.float32], NDArray[np.float32]]]:
    """Draw each octave's random gradients; return their x-interpolated rows ``(along_x, along_y)``.

    Gathers, not matrix products: a (res + 1)^2 x W product is big enough for OpenBLAS to start
    threads, which costs far more than it saves on a busy machine.
    """
    factors = []
    for octave in geometry.octaves:
        angles = rng.random((octave.resolution + 1, octave.resolution + 1), dtype=np.float32) * np.float32(2 * np.pi)
        a, b, c, d = octave.weights_x
        right = octave.left + 1
        grad_x, grad_y = np.cos(angles), np.sin(angles)
        along_x = a * grad_x[:, octave.left] + b * grad_x[:, right]
        along_y = c * grad_y[:, octave.left] + d * grad_y[:, right]
        factors.append((along_x, along_y))
    return factors


def _field_rows(
    geometry: _Geometry, factors: list[tuple[NDArray[np.float32], NDArray[np.float32]]], batches: slice
) -> NDArray[np.float32]:
    """``perlin + 1`` for the rows of ``batches`` (row batches of ``geometry.batch_rows``), shape (rows, W)."""
    parts = []
    for octave, (along_x, along_y) in zip(geometry.octaves, factors, strict=True):
        parts += [along_x[octave.rows[batches]], along_y[octave.rows[batches]]]
    parts.append(geometry.ones[batches])
    field: NDArray[np.float32] = np.matmul(geometry.weights_y[batches], np.concatenate(parts, axis=1))
    return field.reshape(-1, field.shape[-1])


def _perlin_plus_one(
    height: int, width: int, rng: np.random.Generator, cells: int, octaves: int, persistence: float
) -> NDArray[np.float32]:
    """``perlin_octaves(...) + 1`` as an (H, W) float32 array."""
    geometry = _geometry(height, width, cells, octaves, persistence)
    factors = _gradient_factors(geometry, rng)
    return _field_rows(geometry, factors, slice(None))[:height]


def perlin_octaves(
    height: int, width: int, *, seed: int, octaves: int = 4, persistence: float = 0.5, cells: int = 8
) -> NDArray[np.float32]:
    """A fractal Perlin field of shape (height, width), roughly in -1..1 (before Deforum's ``(p + 1) / 2``).

    Octave ``o`` has ``cells * 2**o`` lattice cells along each side and amplitude
    ``persistence**o``; each octave is scaled by sqrt(2) as in the classic formulation. Octaves whose
    cells would be smaller than a pixel are skipped.
    """
    cells, octaves, persistence = _perlin_settings(octaves, persistence, cells)
    field = _perlin_plus_one(height, width, np.random.default_rng(seed), cells, octaves, persistence)
    return field - np.float32(1.0)


def _perlin_settings(octaves: int, persistence: float, cells: int) -> tuple[int, int, float]:
    """Validated ``(cells, octaves, persistence)``, the order :func:`_geometry` takes."""
    if isinstance(octaves, bool) or not isinstance(octaves, int | np.integer) or not 1 <= octaves <= MAX_OCTAVES:
        raise SettingsError(
            f"perlin_octaves must be a whole number from 1 to {MAX_OCTAVES}; got {octaves!r}.", key="perlin_octaves"
        )
    persistence = check_setting(persistence, key="perlin_persistence", what="The Perlin persistence")
    if isinstance(cells, bool) or not isinstance(cells, int | np.integer) or cells < 1:
        raise SettingsError(f"The Perlin cell count must be a whole number >= 1; got {cells!r}.", key="perlin_w")
    return int(cells), int(octaves), persistence


def _random_bytes(rng: np.random.Generator, shape: tuple[int, ...]) -> NDArray[np.uint8]:
    count = math.prod(shape)
    raw = rng.bit_generator.random_raw(-(-count // 8))
    return raw.view(np.uint8)[:count].reshape(shape)


def _check_kind(kind: str) -> NoiseKind:
    name = str(kind).strip().lower()
    if name not in NOISE_KINDS:
        raise SettingsError(
            f"Unknown noise type {kind!r}; use 'perlin' or 'uniform'.{did_you_mean(name, NOISE_KINDS)}",
            key="noise_type",
        )
    return name  # type: ignore[return-value]


def _noise(
    image: Image | None,
    amount: float,
    shape: tuple[int, int],
    seed: int,
    kind: NoiseKind,
    perlin: tuple[int, int, float],
    ready: Image | None = None,
) -> Image:
    """The noise image, or ``image`` blended with it when given; built in row chunks for Perlin noise.

    ``ready`` is the noise image of these arguments computed ahead; it is blended in the same row
    chunks with the same calls, so the result is bit-identical to computing it here.
    """
    if int(seed) < 0:
        raise ValueError(f"The noise seed must be >= 0 (resolve -1 before the frame loop); got {seed!r}.")
    height, width = shape
    if ready is not None and image is not None:
        if ready.shape != image.shape or ready.dtype != np.uint8:
            raise ValueError(f"the noise computed ahead is {ready.dtype} {ready.shape}; expected uint8 {image.shape}")
        if kind == "uniform":
            return np.asarray(cv2.addWeighted(image, 1.0 - amount, ready, amount, 0.0), np.uint8)
        geometry = _geometry(height, width, *perlin)
        out = np.empty((height, width, 3), dtype=np.uint8)
        chunk = geometry.chunk_batches * geometry.batch_rows
        for top in range(0, height, chunk):
            rows = slice(top, min(top + chunk, height))
            cv2.addWeighted(image[rows], 1.0 - amount, ready[rows], amount, 0.0, dst=out[rows])
        return out
    rng = np.random.default_rng(int(seed))
    if kind == "uniform":
        noise = cv2.LUT(_random_bytes(rng, (height, width, 3)), _GAUSS_U8)
        mixed = noise if image is None else cv2.addWeighted(image, 1.0 - amount, noise, amount, 0.0, dst=noise)
        return np.asarray(mixed, np.uint8)
    geometry = _geometry(height, width, *perlin)
    factors = _gradient_factors(geometry, rng)
    uniform = _random_bytes(rng, (height, width, 3))
    out = np.empty((height, width, 3), dtype=np.uint8)
    step = geometry.chunk_batches
    for first in range(0, geometry.weights_y.shape[0], step):
        top = first * geometry.batch_rows
        if top >= height:
            break
        field = _field_rows(geometry, factors, slice(first, first + step))[: height - top]
        rows = slice(top, top + field.shape[0])
        values = cv2.LUT(uniform[rows], _GAUSS_HALF)
        cv2.multiply(values, cv2.cvtColor(field, cv2.COLOR_GRAY2RGB), dst=values)
        # clip(127.5 + values) as uint8: floor at -127.5, then round |x + 127.5| (a plain float would
        # be Scalar(x, 0, 0, 0) to OpenCV, hence the 4-tuple).
        cv2.max(values, _FLOOR, dst=values)
        if image is None:
            cv2.convertScaleAbs(values, dst=out[rows], alpha=1.0, beta=127.5)
        else:
            noise = cv2.convertScaleAbs(values, alpha=1.0, beta=127.5)
            cv2.addWeighted(image[rows], 1.0 - amount, noise, amount, 0.0, dst=out[rows])
    return out


def noise_image(
    height: int,
    width: int,
    *,
    seed: int,
    kind: str = "perlin",
    octaves: int = 4,
    persistence: float = 0.5,
    cells: int = 8,
) -> Image:
    """Deforum's ``noise_img``: ``clip(0.5 + 0.5 * n * shape, 0, 1) * 255`` as (H, W, 3) uint8, mean ~127.5.

    Args:
        height: rows.
        width: columns.
        seed: any integer >= 0; the same seed gives the same image.
        kind: "perlin" (Gaussian noise scaled by ``(perlin + 1) / 2``) or "uniform" (plain Gaussian).
        octaves: Perlin octaves (``perlin_octaves``).
        persistence: amplitude ratio between octaves (``perlin_persistence``).
        cells: lattice cells along each side in the first octave (Deforum's hidden ``perlin_w/h``).

    Raises:
        SettingsError: unknown ``kind`` or a bad Perlin setting.
        ValueError: ``seed`` is negative or a size is below 1.
    """
    if int(height) < 1 or int(width) < 1:
        raise ValueError(f"The noise size must be at least 1x1; got {width}x{height}.")
    perlin = _perlin_settings(octaves, persistence, cells)
    return _noise(None, 0.0, (int(height), int(width)), seed, _check_kind(kind), perlin)


def add_noise(
    image: Image,
    amount: float,
    *,
    seed: int,
    kind: str = "perlin",
    octaves: int = 4,
    persistence: float = 0.5,
    cells: int = 8,
    ready: Image | None = None,
) -> Image:
    """Blend seeded noise into ``image``: ``addWeighted(image, 1 - amount, noise_img, amount, 0)``.

    Args:
        image: (H, W, 3) uint8 RGB, any size.
        amount: 0..1 (``noise_schedule``; Deforum's default is 0.065); 0 returns an unchanged copy.
        seed: the frame's seed (Deforum uses the current diffusion seed), >= 0.
        kind: "perlin" or "uniform" (``noise_type``).
        octaves: Perlin octaves (``perlin_octaves``).
        persistence: Perlin amplitude ratio between octaves (``perlin_persistence``).
        cells: first-octave lattice cells per side (Deforum's hidden ``perlin_w/h``, 8).
        ready: :func:`noise_image` of the same seed, size and settings, computed ahead (see
            :class:`NoiseAhead`); only the blend is left to do. The result is the same.

    Returns:
        A new (H, W, 3) uint8 RGB array, identical to blending :func:`noise_image` with the same arguments.

    Raises:
        SettingsError: ``amount`` is outside 0..1, or an unknown ``kind`` / bad Perlin setting.
        ValueError: ``image`` is not an (H, W, 3) uint8 array, or ``seed`` is negative.
    """
    image = check_image(image)
    amount = check_setting(amount, key="noise_schedule", what="The noise amount")
    if amount > 1.0:
        raise SettingsError(f"The noise amount must be between 0 and 1; got {amount!r}.", key="noise_schedule")
    kind_name = _check_kind(kind)
    perlin = _perlin_settings(octaves, persistence, cells)
    if amount == 0.0:
        return image.copy()
    return _noise(image, amount, image.shape[:2], seed, kind_name, perlin, ready)


_AHEAD_LOCK = threading.Lock()
_AHEAD_POOL: ThreadPoolExecutor | None = None


def _ahead_pool() -> ThreadPoolExecutor:
    global _AHEAD_POOL
    with _AHEAD_LOCK:
        if _AHEAD_POOL is None:
            _AHEAD_POOL = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="dreamreel-noise", initializer=lower_priority
            )
        return _AHEAD_POOL


class NoiseAhead:
    """Noise images computed on a background thread before they are needed.

    The noise of a frame depends only on its seed, the size and the noise settings, never on the
    image, so the frame loop asks for the next diffused frame's noise while the generator runs
    (:meth:`request`) and :func:`add_noise` only blends it in (``ready=``:meth:`take`).

    Args:
        kind, octaves, persistence, cells: as for :func:`noise_image`.
        keep: at most this many noise images are held (the oldest requests are dropped).
    """

    def __init__(
        self, kind: str = "perlin", *, octaves: int = 4, persistence: float = 0.5, cells: int = 8, keep: int = 3
    ) -> None:
        self.settings = (str(kind), int(octaves), float(persistence), int(cells))
        self.keep = max(1, keep)
        self._futures: dict[tuple[int, int, int], Future[Image]] = {}

    def request(self, height: int, width: int, seed: int) -> None:
        """Start computing the noise image of ``seed`` at this size (nothing when it is already asked for)."""
        key = (int(height), int(width), int(seed))
        if key in self._futures:
            return
        kind, octaves, persistence, cells = self.settings
        call = functools.partial(
            noise_image, key[0], key[1], seed=key[2], kind=kind, octaves=octaves, persistence=persistence, cells=cells
        )
        self._futures[key] = _ahead_pool().submit(call)
        while len(self._futures) > self.keep:
            self._futures.pop(next(iter(self._futures))).cancel()

    def take(self, height: int, width: int, seed: int) -> Image | None:
        """The noise image asked for with :meth:`request` (waiting for it if needed), or None if it was not."""
        future = self._futures.pop((int(height), int(width), int(seed)), None)
        return None if future is None else future.result()
