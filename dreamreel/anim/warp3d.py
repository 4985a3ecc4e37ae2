"""Deforum's 3D warp (``transform_image_3d_new``) in plain torch, and the depth-to-z preparation.

Each pixel is a point ``(x, y, z)``: ``x`` and ``y`` run from -1 to 1 across the picture and
``z`` comes from the depth map (1 when flat). The camera moves by ``translation`` and turns by
``rotation_deg``; every pixel is projected by a field-of-view camera before and after the move,
and the picture is resampled (``torch.nn.functional.grid_sample``) by the difference.

Convention:
    * Images are (H, W, 3) uint8 RGB numpy arrays, in and out; depth is (H, W) ``z``, from
      :func:`depth_to_z` (1 = nearest, 2 = farthest), or None for a flat picture at ``z = 1``.
    * Screen axes: x to the right, y down (grid_sample's normalised coordinates).
    * ``translation`` is Deforum's (translation_x, translation_y, translation_z), in units of
      1/200 of the half-picture; it moves the **camera**: +x moves the picture **left** (the
      opposite of the 2D warp), +y moves it **down**, +z moves forward (zooms in).
    * ``rotation_deg`` is Deforum's (rotation_3d_x, rotation_3d_y, rotation_3d_z) in degrees, XYZ
      Euler angles ``R = Rx @ Ry @ Rz`` applied to row vectors (``[x, y, z] @ R + T``, pytorch3d's
      convention): +x moves the picture down (tilt), +y moves it left (pan), +z turns it
      counter-clockwise on screen (roll).
    * ``fov_deg`` and ``aspect_ratio`` set the focal scales ``ky = 1 / tan(fov / 2)`` and
      ``kx = ky / aspect_ratio``; ``near`` and ``far`` cancel out of the x/y projection and have no
      effect (they are accepted because Deforum has them).

Divergence from Deforum: the float result is rounded to the nearest integer before the uint8
conversion; Deforum truncates (``astype``), which darkens every warped frame by half a level on
average and makes even a zero-motion warp lose a level on some pixels.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from dreamreel.anim.images import check_image
from dreamreel.errors import SettingsError, did_you_mean

logger = logging.getLogger(__name__)

PaddingMode = Literal["border", "reflection", "zeros"]
SamplingMode = Literal["bicubic", "bilinear", "nearest"]

TRANSLATION_SCALE = 1.0 / 200.0
"""Deforum's 3D translation unit ("matches Disco"): 1 unit = 1/200 of the half-picture (before FoV)."""

EQUALIZE_BINS = 1024
_PADDING_MODES = ("border", "reflection", "zeros")
_SAMPLING_MODES = ("bicubic", "bilinear", "nearest")
_GRID_LIMIT = 1.0e3  # far outside [-1, 1]; keeps points behind the camera finite for grid_sample


def rotation_matrix_3d(rotation_deg: Sequence[float]) -> NDArray[np.float64]:
    """Return ``R = Rx(rx) @ Ry(ry) @ Rz(rz)`` for XYZ Euler angles in degrees (pytorch3d "XYZ").

    ``Rx = [[1, 0, 0], [0, c, -s], [0, s, c]]``, ``Ry = [[c, 0, s], [0, 1, 0], [-s, 0, c]]``,
    ``Rz = [[c, -s, 0], [s, c, 0], [0, 0, 1]]``; points are row vectors (``p @ R``).
    """
    rx, ry, rz = (math.radians(float(value)) for value in rotation_deg)
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    rot_x = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    rot_y = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rot_z = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    rotation: NDArray[np.float64] = rot_x @ rot_y @ rot_z
    return rotation


@functools.lru_cache(maxsize=8)
def _base_grids(height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (H, W) x/y point grids (``linspace(-1, 1)``) and grid_sample's identity grid (1, H, W, 2)."""
    ys = torch.linspace(-1.0, 1.0, height, dtype=torch.float32, device=device)
    xs = torch.linspace(-1.0, 1.0, width, dtype=torch.float32, device=device)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=torch.float32, device=device)
    base = F.affine_grid(identity, [1, 1, height, width], align_corners=False)
    return x, y, base


def _check_modes(padding_mode: str, sampling_mode: str) -> None:
    if padding_mode not in _PADDING_MODES:
        raise SettingsError(
            f"unknown padding mode {padding_mode!r}; use one of {', '.join(_PADDING_MODES)}."
            f"{did_you_mean(str(padding_mode), _PADDING_MODES)}",
            key="padding_mode",
        )
    if sampling_mode not in _SAMPLING_MODES:
        raise SettingsError(
            f"unknown sampling mode {sampling_mode!r}; use one of {', '.join(_SAMPLING_MODES)}."
            f"{did_you_mean(str(sampling_mode), _SAMPLING_MODES)}",
            key="sampling_mode",
        )


def _check_camera(translation: Sequence[float], rotation_deg: Sequence[float], fov_deg: float, aspect: float) -> None:
    if len(translation) != 3 or len(rotation_deg) != 3:
        raise ValueError(
            "translation and rotation_deg must have 3 values (x, y, z), "
            f"got {len(translation)} and {len(rotation_deg)}."
        )
    for name, value in zip(
        ("translation_x", "translation_y", "translation_z", "rotation_3d_x", "rotation_3d_y", "rotation_3d_z"),
        (*translation, *rotation_deg),
        strict=True,
    ):
        if not math.isfinite(float(value)):
            raise SettingsError(f"the 3D motion value is {value}; it must be a finite number.", key=name)
    if not 0.0 < fov_deg < 180.0:
        raise SettingsError(f"the field of view is {fov_deg} degrees; it must be between 0 and 180.", key="fov")
    if not (math.isfinite(aspect) and aspect > 0.0):
        raise SettingsError(f"the aspect ratio is {aspect}; it must be a positive number.", key="aspect_ratio")


def sampling_grid_3d(
    z: torch.Tensor | None,
    height: int,
    width: int,
    *,
    translation: Sequence[float] = (0.0, 0.0, 0.0),
    rotation_deg: Sequence[float] = (0.0, 0.0, 0.0),
    fov_deg: float = 70.0,
    aspect_ratio: float = 1.0,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Return the (1, H, W, 2) float32 grid_sample grid (align_corners=False) for one 3D move.

    ``grid = identity - (project(p @ R + T) - project(p))`` with ``project(X, Y, Z) = (kx X / Z,
    ky Y / Z)``; see the module docstring for the conventions. ``z`` is (H, W) float or None (flat).
    """
    _check_camera(translation, rotation_deg, fov_deg, aspect_ratio)
    if z is not None and tuple(z.shape) != (height, width):
        raise ValueError(f"depth must have shape (H, W) = {(height, width)} like the image, got {tuple(z.shape)}.")
    x, y, base = _base_grids(height, width, torch.device(device))
    k = 1.0 / math.tan(math.radians(fov_deg) / 2.0)
    kx, ky = k / aspect_ratio, k
    tx, ty, tz = (float(value) * TRANSLATION_SCALE for value in translation)
    shift = (-tx, ty, -tz)
    r = rotation_matrix_3d(rotation_deg).tolist()
    # In-place arithmetic: every fresh (H, W) tensor costs page faults, which dominate at 512 px.
    inv_z = None if z is None else torch.reciprocal(z)
    moved = []  # the columns of [x, y, z] @ R + T
    for column in range(3):
        if z is None:
            value = torch.full_like(x, r[2][column] + shift[column])
        else:
            value = torch.mul(z, r[2][column]).add_(shift[column])
        moved.append(value.add_(x, alpha=r[0][column]).add_(y, alpha=r[1][column]))
    inv_new_z = moved[2].reciprocal_()
    grid = torch.empty((1, height, width, 2), dtype=torch.float32, device=x.device)
    for axis, (point, scale) in enumerate(((x, kx), (y, ky))):
        offset = moved[axis].mul_(inv_new_z)
        if inv_z is None:
            offset.sub_(point)
        else:
            offset.addcmul_(point, inv_z, value=-1.0)
        torch.add(base[..., axis], offset, alpha=-scale, out=grid[..., axis])
    return torch.nan_to_num_(grid, nan=_GRID_LIMIT, posinf=_GRID_LIMIT, neginf=-_GRID_LIMIT).clamp_(
        -_GRID_LIMIT, _GRID_LIMIT
    )


def warp_3d_tensor(
    image: torch.Tensor,
    z: torch.Tensor | None,
    *,
    translation: Sequence[float] = (0.0, 0.0, 0.0),
    rotation_deg: Sequence[float] = (0.0, 0.0, 0.0),
    fov_deg: float = 70.0,
    aspect_ratio: float = 1.0,
    padding_mode: PaddingMode = "border",
    sampling_mode: SamplingMode = "bicubic",
) -> torch.Tensor:
    """The 3D warp on a (1, C, H, W) float tensor, on its device; returns the unclamped float result.

    For a fast path that keeps frames on the GPU. ``z`` is (H, W) on the same device, or None.
    """
    _check_modes(padding_mode, sampling_mode)
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"image must be a (1, C, H, W) tensor, got shape {tuple(image.shape)}.")
    height, width = image.shape[-2:]
    grid = sampling_grid_3d(
        z,
        height,
        width,
        translation=translation,
        rotation_deg=rotation_deg,
        fov_deg=fov_deg,
        aspect_ratio=aspect_ratio,
        device=image.device,
    )
    grid = grid.to(image.dtype)
    return F.grid_sample(image, grid, mode=sampling_mode, padding_mode=padding_mode, align_corners=False)


def _as_z(depth: object, height: int, width: int, device: torch.device) -> torch.Tensor | None:
    if depth is None:
        return None
    z = torch.as_tensor(np.asarray(depth) if not isinstance(depth, torch.Tensor) else depth)
    if z.ndim == 3 and 1 in (z.shape[0], z.shape[-1]):
        z = z.squeeze(0) if z.shape[0] == 1 else z.squeeze(-1)
    if tuple(z.shape) != (height, width):
        raise ValueError(f"depth must have shape (H, W) = {(height, width)} like the image, got {tuple(z.shape)}.")
    return z.to(device=device, dtype=torch.float32)


def warp_3d(
    image: NDArray[np.uint8],
    depth: NDArray[np.floating] | torch.Tensor | None,
    *,
    translation: Sequence[float] = (0.0, 0.0, 0.0),
    rotation_deg: Sequence[float] = (0.0, 0.0, 0.0),
    fov_deg: float = 70.0,
    aspect_ratio: float = 1.0,
    near: float = 200.0,
    far: float = 10000.0,
    padding_mode: PaddingMode = "border",
    sampling_mode: SamplingMode = "bicubic",
    device: str | torch.device = "cpu",
) -> NDArray[np.uint8]:
    """Apply one frame of Deforum's 3D camera motion to ``image``.

    Args:
        image: (H, W, 3) uint8 RGB.
        depth: (H, W) ``z`` from :func:`depth_to_z` (1 near .. 2 far), or None for flat (z = 1).
        translation: (translation_x, translation_y, translation_z), Deforum units (1/200);
            +x moves the picture left, +y down, +z zooms in.
        rotation_deg: (rotation_3d_x, rotation_3d_y, rotation_3d_z) in degrees; +x moves the
            picture down, +y left, +z turns it counter-clockwise.
        fov_deg: field of view in degrees (Deforum's fov_schedule).
        aspect_ratio: divides the x focal scale (Deforum's aspect_ratio_schedule).
        near: accepted for Deforum compatibility; no effect.
        far: accepted for Deforum compatibility; no effect.
        padding_mode: grid_sample padding: "border", "reflection" or "zeros".
        sampling_mode: grid_sample interpolation: "bicubic", "bilinear" or "nearest".
        device: torch device for the computation.

    Returns:
        A new (H, W, 3) uint8 RGB array.

    Raises:
        ValueError: wrong image or depth shape/dtype.
        SettingsError: an unknown mode or an impossible camera value.
    """
    del near, far  # they cancel out of the x/y projection (Deforum passes them to the camera only)
    image = check_image(image)
    _check_modes(padding_mode, sampling_mode)
    device = torch.device(device)
    height, width = image.shape[:2]
    z = _as_z(depth, height, width, device)
    tensor = torch.from_numpy(image).to(device).permute(2, 0, 1).contiguous().unsqueeze(0).float()
    with torch.no_grad():
        warped = warp_3d_tensor(
            tensor,
            z,
            translation=translation,
            rotation_deg=rotation_deg,
            fov_deg=fov_deg,
            aspect_ratio=aspect_ratio,
            padding_mode=padding_mode,
            sampling_mode=sampling_mode,
        )
        result = warped[0].round_().clamp_(0.0, 255.0).to(torch.uint8).permute(1, 2, 0)
    return np.ascontiguousarray(result.cpu().numpy())


def depth_to_z(depth: NDArray[np.floating] | torch.Tensor, *, inverse: bool = True) -> NDArray[np.float32]:
    """Turn a depth model's map into the ``z`` the 3D warp uses (Deforum's new depth path).

    Steps: min-max normalise to [0, 1]; histogram-equalise with a 1024-bin CDF over [0, 1]
    (each value maps to the CDF interpolated at the bins' left edges, as Deforum does); then
    ``z = 2 - d`` for relative inverse depth (MiDaS/DPT, Depth Anything: large = near) or
    ``z = d + 1`` for metric depth (ZoeDepth, AdaBins: large = far). So ``z`` lies in [1, 2] with
    the nearest pixels at 1. A constant map, or one with NaN/inf values, gives flat ``z = 1``.

    Args:
        depth: (H, W) depth map (numpy or torch).
        inverse: True for inverse depth (MiDaS-style), False for metric depth.

    Returns:
        (H, W) float32 ``z``.
    """
    values = depth.detach().cpu().numpy() if isinstance(depth, torch.Tensor) else np.asarray(depth)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 3 and 1 in (values.shape[0], values.shape[-1]):
        values = values.reshape(values.shape[1:] if values.shape[0] == 1 else values.shape[:-1])
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"depth must be an (H, W) map, got shape {values.shape}.")
    if not np.isfinite(values).all():
        logger.warning("The depth map contains NaN or infinite values; using flat depth for this frame.")
        return np.ones(values.shape, dtype=np.float32)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        logger.warning("The depth map is constant; using flat depth for this frame.")
        return np.ones(values.shape, dtype=np.float32)
    # Histogram over [0, 1] with 1024 equal bins (the last one closed), then the CDF interpolated
    # at the bins' left edges: np.histogram + np.interp(v, edges[:-1], cdf), computed directly
    # because the bins are uniform (several times faster; v * 1024 is exact in float64).
    scaled = (values - low) / (high - low) * EQUALIZE_BINS
    index = np.minimum(scaled.astype(np.intp), EQUALIZE_BINS - 1)
    cdf = np.cumsum(np.bincount(index.ravel(), minlength=EQUALIZE_BINS)) / values.size
    cdf = np.append(cdf, 1.0)
    low_cdf = cdf[index]
    equalized = low_cdf + (scaled - index) * (cdf[index + 1] - low_cdf)
    z: NDArray[np.float64] = 2.0 - equalized if inverse else equalized + 1.0
    return z.astype(np.float32)
