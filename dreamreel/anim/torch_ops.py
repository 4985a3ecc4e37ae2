"""The per-frame 2D chain in torch, on any device: warp, contrast, anti-blur, noise, tween.

These are the OpenCV/numpy operations of :mod:`dreamreel.anim.warp2d`, :mod:`dreamreel.anim.filters`,
:mod:`dreamreel.anim.noise` and :func:`dreamreel.anim.cadence.tween` rewritten for tensors, so that
on a CUDA or MPS device a frame can stay on the device from the VAE decode to the next VAE encode
(colour matching is in :mod:`dreamreel.anim.torch_color`, the init preparer and the 2D motion in
:mod:`dreamreel.anim.torch_chain`).

Convention:
    * An image tensor is ``(H, W, 3)`` ``torch.uint8`` RGB on any device: the numpy convention of
      ``dreamreel.anim``, as a tensor. Every operation takes and returns that, on the image's own
      device, so each one rounds to whole levels exactly where the OpenCV path rounds, and a chain
      of them stays within about a level of the OpenCV chain instead of drifting. Inside an
      operation values are float32 (float64 where OpenCV's arithmetic needs it and the device has
      it; MPS has no float64) or int32.
    * No operation reads a value back from the device (no ``.item()``, no data-dependent Python
      branch), so a chain of them is queued without synchronising. Host-side inputs are the
      schedule's numbers and the 3x3 matrices, which are Python values anyway.
    * :func:`to_tensor` / :func:`to_numpy` convert at the two crossings.

Agreement with the OpenCV path (measured by ``tests/anim/test_torch_ops.py``):
    * warp: OpenCV 5 warps 8-bit images in float32 (no 1/32-pixel fixed point); here the source
      coordinates come from the same inverse matrix and ``grid_sample`` interpolates in float32:
      at most one level apart, on well under 1% of the values.
    * contrast, tween, noise blend: OpenCV's arithmetic reproduced (``addWeighted`` is
      ``round(fma(a, alpha, b * beta))`` in float32): identical on CPU and CUDA; within one level
      on MPS (no float64 to emulate the fused multiply-add).
    * anti-blur: the 8-bit Gaussian blur is OpenCV's bit-exact fixed-point one (kernel with 8
      fractional bits built by error diffusion, integer sums), reproduced in int32: identical.
    * noise: the noise image is dreamreel's own numpy noise (seeded numpy generators cannot run on
      a device), built on the host and uploaded asynchronously; the blend is the same
      ``addWeighted``: identical.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from dreamreel.anim.filters import check_setting, unsharp_settings
from dreamreel.anim.noise import NOISE_KINDS, noise_image
from dreamreel.anim.warp2d import border_flag
from dreamreel.errors import SettingsError
from dreamreel.generation import Image

__all__ = [
    "add_noise_tensor",
    "add_weighted",
    "adjust_contrast_tensor",
    "check_tensor_image",
    "gaussian_blur_tensor",
    "gaussian_kernel_fixed_point",
    "noise_tensor",
    "to_numpy",
    "to_tensor",
    "tween_tensor",
    "unsharp_mask_tensor",
    "warp_tensor",
]


def check_tensor_image(image: object, name: str = "image") -> torch.Tensor:
    """``image`` when it is an (H, W, 3) uint8 tensor (any device); ValueError otherwise."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name} must be an (H, W, 3) uint8 torch tensor; got a {type(image).__name__}.")
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(
            f"{name} must be an (H, W, 3) uint8 RGB tensor with H, W >= 1; got shape {tuple(image.shape)} "
            f"dtype {image.dtype}."
        )
    return image


def to_tensor(image: Image, device: torch.device | str = "cpu") -> torch.Tensor:
    """An (H, W, 3) uint8 numpy image as an (H, W, 3) uint8 tensor on ``device`` (asynchronous on CUDA)."""
    host = torch.from_numpy(np.ascontiguousarray(image))
    target = torch.device(device)
    if target.type == "cuda":
        return host.pin_memory().to(target, non_blocking=True)
    return host.to(target)


def to_numpy(image: torch.Tensor) -> Image:
    """An (H, W, 3) uint8 tensor back as a numpy image (synchronises with the device)."""
    array: Image = check_tensor_image(image).detach().cpu().contiguous().numpy()
    return array


def _has_float64(device: torch.device) -> bool:
    return device.type != "mps"


def _to_u8(values: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``saturate_cast<uchar>(float)``: round half to even, then clip to 0..255."""
    return values.round().clamp_(0, 255).to(torch.uint8)


def add_weighted(a: torch.Tensor, alpha: float, b: torch.Tensor, beta: float) -> torch.Tensor:
    """``cv2.addWeighted(a, alpha, b, beta, 0)`` for uint8 tensors, OpenCV's arithmetic included.

    OpenCV computes ``fma(a, alpha, b * beta)`` in float32 (``alpha``/``beta`` rounded to
    float32) and rounds half to even; the fused multiply-add is emulated in float64 where the
    device has it (exact: an 8-bit value times a float32 needs 32 bits), else plain float32.
    """
    alpha32, beta32 = float(np.float32(alpha)), float(np.float32(beta))
    second = b.to(torch.float32) * beta32
    if _has_float64(a.device):
        mixed = (a.to(torch.float64) * alpha32 + second.to(torch.float64)).to(torch.float32)
    else:
        mixed = a.to(torch.float32) * alpha32 + second
    return _to_u8(mixed)


# --------------------------------------------------------------------------------------------- warp


@functools.lru_cache(maxsize=8)
def _pixel_grid(height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(height, dtype=torch.float32, device=device)[:, None].expand(height, width)
    xs = torch.arange(width, dtype=torch.float32, device=device)[None, :].expand(height, width)
    return xs, ys


def _inverse(matrix: np.ndarray) -> np.ndarray:
    """The destination-to-source map OpenCV samples with (its analytic 2x3 inverse for affine matrices)."""
    m = np.asarray(matrix, dtype=np.float64)
    if m[2, 0] == 0.0 and m[2, 1] == 0.0 and m[2, 2] == 1.0:
        det = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
        d = 1.0 / det if det != 0 else 0.0
        a11, a22 = m[1, 1] * d, m[0, 0] * d
        a12, a21 = -m[0, 1] * d, -m[1, 0] * d
        b1 = -a11 * m[0, 2] - a12 * m[1, 2]
        b2 = -a21 * m[0, 2] - a22 * m[1, 2]
        return np.array([[a11, a12, b1], [a21, a22, b2], [0.0, 0.0, 1.0]])
    return np.asarray(np.linalg.inv(m), dtype=np.float64)


def warp_tensor(image: torch.Tensor, matrix: np.ndarray, *, border: str = "replicate") -> torch.Tensor:
    """:func:`dreamreel.anim.warp2d.warp_with_matrix` on a tensor: ``dst(matrix @ p) = src(p)``, bilinear.

    Pixel centres are at integer coordinates (OpenCV's convention); every output pixel samples
    the source at ``inverse(matrix) @ (x, y, 1)``. ``grid_sample`` (``align_corners=False``, so
    normalised coordinate ``(2x + 1) / W - 1`` is pixel ``x``'s centre) interpolates; "replicate"
    is its "border" padding (clamping the coordinate clamps both neighbours, as OpenCV does) and
    "wrap" takes the coordinate modulo the size and samples a copy with the first row and column
    appended, so the pixels past the last one are the first ones.

    Args:
        image: (H, W, 3) uint8 tensor.
        matrix: 3x3 source-to-destination matrix (host array).
        border: "replicate" or "wrap".

    Returns:
        A new (H, W, 3) uint8 tensor on the image's device.
    """
    image = check_tensor_image(image)
    border_flag(border)  # validates the name
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (3, 3) or not np.isfinite(matrix).all():
        raise ValueError(f"matrix must be a finite 3x3 array, got shape {matrix.shape}.")
    if np.array_equal(matrix, np.eye(3)):
        return image.clone()
    height, width = image.shape[:2]
    inv = [[float(v) for v in row] for row in _inverse(matrix)]
    xs, ys = _pixel_grid(height, width, image.device)
    sx = xs * inv[0][0] + ys * inv[0][1] + inv[0][2]
    sy = xs * inv[1][0] + ys * inv[1][1] + inv[1][2]
    if inv[2] != [0.0, 0.0, 1.0]:
        w = xs * inv[2][0] + ys * inv[2][1] + inv[2][2]
        w = torch.where(w == 0, torch.ones_like(w), w)  # OpenCV: W = W ? 1/W : 0 -> sample (0, 0)
        sx, sy = sx / w, sy / w
    source = image.permute(2, 0, 1).to(torch.float32)[None]
    if border == "wrap":
        sx = sx - torch.floor(sx / width) * width
        sy = sy - torch.floor(sy / height) * height
        source = torch.cat([source, source[:, :, :1]], dim=2)
        source = torch.cat([source, source[:, :, :, :1]], dim=3)
    size_y, size_x = source.shape[2], source.shape[3]
    grid = torch.stack([(2.0 * sx + 1.0) / size_x - 1.0, (2.0 * sy + 1.0) / size_y - 1.0], dim=-1)[None]
    warped = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return _to_u8(warped[0].permute(1, 2, 0))


# ------------------------------------------------------------------------------------------ filters


def adjust_contrast_tensor(image: torch.Tensor, factor: float) -> torch.Tensor:
    """:func:`dreamreel.anim.filters.adjust_contrast`: ``saturate(round(|x * factor|))`` in float32."""
    image = check_tensor_image(image)
    factor = check_setting(factor, key="contrast_schedule", what="The contrast factor")
    if factor == 1.0:
        return image.clone()
    return _to_u8(image.to(torch.float32) * float(np.float32(factor)))


_SMALL_GAUSSIAN = {
    1: (1.0,),
    3: (0.25, 0.5, 0.25),
    5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
    7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
}


@functools.lru_cache(maxsize=64)
def gaussian_kernel_fixed_point(size: int, sigma: float) -> tuple[int, ...]:
    """OpenCV's 8-bit Gaussian kernel: ``size`` integers summing to 256 (``getGaussianKernelBitExact``
    followed by error-diffusion rounding to 8 fractional bits), as ``GaussianBlur`` uses on uint8."""
    if size % 2 != 1 or size < 1:
        raise ValueError(f"The Gaussian kernel size must be odd and positive; got {size}.")
    if sigma <= 0 and size in _SMALL_GAUSSIAN:
        exact = list(_SMALL_GAUSSIAN[size])
    else:
        s = sigma if sigma > 0 else size * 0.15 + 0.35
        scale = -0.5 * 0.25 / (s * s)
        half = (size - 1) // 2
        values = [math.exp(float(x * x) * scale) for x in range(1 - size, 1 - size + 2 * half, 2)]
        total = sum(values) * 2.0 + 1.0
        inverse = 1.0 / total
        exact = [v * inverse for v in values] + [inverse] + [v * inverse for v in reversed(values)]
    half = size // 2
    fixed = [0] * size
    error, used = 0.0, 0
    for i in range(half):
        adjusted = exact[i] * 256.0 + error
        rounded = round(adjusted)  # Python's round is half to even, like cvRound
        error = adjusted - rounded
        fixed[i] = fixed[size - 1 - i] = rounded
        used += rounded
    fixed[half] = 256 - 2 * used
    return tuple(fixed)


@functools.lru_cache(maxsize=32)
def _reflect101(length: int, radius: int, device: torch.device) -> torch.Tensor:
    """Indices of a row padded by ``radius`` on both sides with BORDER_REFLECT_101 (any radius)."""
    positions = np.arange(-radius, length + radius)
    if length == 1:
        index = np.zeros_like(positions)
    else:
        period = 2 * (length - 1)
        folded = np.mod(positions, period)
        index = np.where(folded < length, folded, period - folded)
    return torch.as_tensor(index, dtype=torch.long, device=device)


def gaussian_blur_tensor(image: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """``cv2.GaussianBlur(image, (size, size), sigma, borderType=BORDER_REFLECT_101)`` for uint8, bit-exact.

    OpenCV blurs 8-bit images with a fixed-point kernel (:func:`gaussian_kernel_fixed_point`):
    ``out = (sum_y ky * sum_x kx * src + 2**15) >> 16`` with exact integer sums. Here the same
    sums run in int32 (the largest is 255 * 256 * 256 < 2**24), so the result is identical. The
    taps are shifted slices, not a convolution, which CUDA may run in TF32.
    """
    image = check_tensor_image(image)
    kernel = gaussian_kernel_fixed_point(int(size), float(sigma))
    if len(kernel) == 1:
        return image.clone()
    height, width = image.shape[:2]
    radius = len(kernel) // 2
    values = image.to(torch.int32)
    padded = values.index_select(1, _reflect101(width, radius, image.device))
    rows = sum(padded[:, i : i + width] * k for i, k in enumerate(kernel) if k)
    assert isinstance(rows, torch.Tensor)
    padded = rows.index_select(0, _reflect101(height, radius, image.device))
    total = sum(padded[i : i + height] * k for i, k in enumerate(kernel) if k)
    assert isinstance(total, torch.Tensor)
    return ((total + (1 << 15)) >> 16).clamp_(0, 255).to(torch.uint8)


def unsharp_mask_tensor(
    image: torch.Tensor, *, amount: float, kernel: float = 5, sigma: float = 1.0, threshold: float = 0
) -> torch.Tensor:
    """:func:`dreamreel.anim.filters.unsharp_mask` on a tensor (same parameters, same validation)."""
    image = check_tensor_image(image)
    amount, size, sigma, threshold = unsharp_settings(amount, kernel, sigma, threshold)
    if amount == 0.0 or size == 1 or threshold > 255:
        return image.clone()
    blurred = gaussian_blur_tensor(image, size, sigma)
    sharp = add_weighted(image, 1.0 + amount, blurred, -amount)
    if threshold > 0:
        keep = (image.to(torch.int16) - blurred.to(torch.int16)).abs() < math.ceil(threshold)
        sharp = torch.where(keep, image, sharp)
    return sharp


# ------------------------------------------------------------------------------------ noise, tween


def noise_tensor(
    height: int,
    width: int,
    *,
    seed: int,
    kind: str = "perlin",
    octaves: int = 4,
    persistence: float = 0.5,
    cells: int = 8,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """:func:`dreamreel.anim.noise.noise_image` on ``device``: built on the host, uploaded asynchronously.

    The noise depends only on the seed, the size and the settings (numpy's PCG64 stream, which
    no device reproduces), so it is computed where it is defined and only ever copied host to
    device: the device never waits for the host, and the host never waits for the device.
    """
    noise = noise_image(height, width, seed=seed, kind=kind, octaves=octaves, persistence=persistence, cells=cells)
    return to_tensor(noise, device)


def add_noise_tensor(
    image: torch.Tensor,
    amount: float,
    *,
    seed: int,
    kind: str = "perlin",
    octaves: int = 4,
    persistence: float = 0.5,
    cells: int = 8,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`dreamreel.anim.noise.add_noise` on a tensor: ``addWeighted(image, 1 - amount, noise, amount, 0)``.

    Args:
        noise: the frame's :func:`noise_tensor`, when it was prepared ahead (e.g. while the
            device was busy); built here otherwise.
    """
    image = check_tensor_image(image)
    amount = check_setting(amount, key="noise_schedule", what="The noise amount")
    if amount > 1.0:
        raise SettingsError(f"The noise amount must be between 0 and 1; got {amount!r}.", key="noise_schedule")
    if str(kind).strip().lower() not in NOISE_KINDS:
        noise_image(1, 1, seed=0, kind=kind)  # raises the SettingsError
    if amount == 0.0:
        return image.clone()
    if noise is None:
        noise = noise_tensor(
            image.shape[0],
            image.shape[1],
            seed=seed,
            kind=kind,
            octaves=octaves,
            persistence=persistence,
            cells=cells,
            device=image.device,
        )
    return add_weighted(image, 1.0 - amount, check_tensor_image(noise, "noise"), amount)


def tween_tensor(previous: torch.Tensor, following: torch.Tensor, weight: float) -> torch.Tensor:
    """:func:`dreamreel.anim.cadence.tween` on tensors: ``previous * (1 - weight) + following * weight``."""
    previous = check_tensor_image(previous, "the previous image")
    following = check_tensor_image(following, "the following image")
    if previous.shape != following.shape:
        raise ValueError(
            f"Both images of a tween must have the same size; got {tuple(previous.shape)} and {tuple(following.shape)}."
        )
    weight = float(weight)
    if not (math.isfinite(weight) and 0.0 <= weight <= 1.0):
        raise ValueError(f"A tween weight must be between 0 and 1; got {weight!r}.")
    if weight == 0.0:
        return previous.clone()
    if weight == 1.0:
        return following.clone()
    return add_weighted(previous, 1.0 - weight, following, weight)
