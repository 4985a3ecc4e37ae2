"""In-between frames for diffusion cadence: plain cross-fades and optical-flow-aligned cross-fades.

With cadence ``c`` only every c-th frame is diffused; the frames between two diffusions are blends
``previous * (1 - w) + following * w`` (:func:`tween`). With optical-flow cadence (Deforum's
``optical_flow_cadence``) the two images are first moved toward each other along the flow between
them (:func:`flow_tween`), so moving content is not ghosted.

Flow convention (OpenCV's): ``flow(a, b)[y, x] = (dx, dy)`` means the content at (x, y) in ``a``
is at (x + dx, y + dy) in ``b``. :func:`warp_by_flow` moves content along the flow, so
``warp_by_flow(a, flow(a, b))`` approximates ``b``.

Differences from Deforum (see docs/compat.md):
    * "RAFT" is not offered (it needs torchvision weights); "DIS Medium", "DIS Fine" and
      "Farneback" are. OpenCV has no FINE preset: "DIS Fine" is the MEDIUM preset run down to
      full resolution (finest scale 0) instead of half resolution.
    * :func:`flow_tween` takes the flow once per cadence group (pass ``flow_field=``) and places both
      images at the in-between time; Deforum halved the flow, pre-warped the next image and then
      advanced both images by increments that were themselves warped by the frame's motion.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from dreamreel.anim.filters import check_image
from dreamreel.errors import SettingsError, did_you_mean
from dreamreel.generation import Image

logger = logging.getLogger(__name__)

__all__ = ["FLOW_METHODS", "FlowMethod", "flow", "flow_tween", "normalize_flow_method", "tween", "warp_by_flow"]

FlowMethod = Literal["dis_medium", "dis_fine", "farneback"]
FLOW_METHODS: tuple[str, ...] = ("dis_medium", "dis_fine", "farneback")

Flow = NDArray[np.float32]
"""An (H, W, 2) float32 array of (dx, dy) pixel displacements."""


def normalize_flow_method(method: str) -> FlowMethod:
    """``"DIS Medium"`` / ``"dis-medium"`` / ``"dis_medium"`` -> ``"dis_medium"``, and so on.

    Raises:
        SettingsError: unknown method, or "RAFT" (key ``optical_flow_cadence``).
    """
    name = "_".join(str(method).strip().lower().replace("-", " ").split())
    if name not in FLOW_METHODS:
        hint = (
            " RAFT needs torchvision model weights and is not supported; use 'DIS Fine' instead."
            if name == "raft"
            else ""
        )
        raise SettingsError(
            f"Unknown optical-flow method {method!r}; use 'DIS Medium', 'DIS Fine' or 'Farneback'.{hint}"
            f"{did_you_mean(name, FLOW_METHODS) if not hint else ''}",
            key="optical_flow_cadence",
        )
    return name  # type: ignore[return-value]


def _check_weight(weight: float) -> float:
    value = float(weight)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"A tween weight must be between 0 and 1; got {weight!r}.")
    return value


def _check_pair(previous: object, following: object) -> tuple[Image, Image]:
    previous = check_image(previous, "the previous image")
    following = check_image(following, "the following image")
    if previous.shape != following.shape:
        raise ValueError(
            f"Both images of a tween must have the same size; got {previous.shape[1]}x{previous.shape[0]} "
            f"and {following.shape[1]}x{following.shape[0]}."
        )
    return previous, following


def tween(previous: Image, following: Image, weight: float) -> Image:
    """``previous * (1 - weight) + following * weight``, rounded to uint8.

    Args:
        previous: (H, W, 3) uint8 RGB.
        following: (H, W, 3) uint8 RGB, same size.
        weight: 0..1; 0 returns a copy of ``previous`` and 1 a copy of ``following`` exactly.

    Returns:
        A new (H, W, 3) uint8 array.
    """
    previous, following = _check_pair(previous, following)
    weight = _check_weight(weight)
    if weight == 0.0:
        return previous.copy()
    if weight == 1.0:
        return following.copy()
    return np.asarray(cv2.addWeighted(previous, 1.0 - weight, following, weight, 0.0), np.uint8)


def _gray(image: Image) -> NDArray[np.uint8]:
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), np.uint8)


def flow(a: Image, b: Image, method: str = "dis_medium") -> Flow:
    """Dense optical flow from ``a`` to ``b`` (on luma), as (H, W, 2) float32 (dx, dy).

    Args:
        a: (H, W, 3) uint8 RGB.
        b: (H, W, 3) uint8 RGB, same size.
        method: "dis_medium", "dis_fine" or "farneback" (Deforum's names also work).

    Raises:
        SettingsError: unknown method.
        ValueError: the images are not (H, W, 3) uint8 or differ in size.
    """
    a, b = _check_pair(a, b)
    name = normalize_flow_method(method)
    if name == "farneback":
        result = cv2.calcOpticalFlowFarneback(
            _gray(a),
            _gray(b),
            None,
            pyr_scale=0.5,
            levels=5,
            winsize=21,
            iterations=3,
            poly_n=5,
            poly_sigma=1.2,
            flags=0,
        )
    else:
        dis = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        if name == "dis_fine":
            dis.setFinestScale(0)
        result = dis.calc(_gray(a), _gray(b), None)  # type: ignore[call-overload]  # cv2 stubs: flow may be None
    return np.ascontiguousarray(result, dtype=np.float32)


@functools.lru_cache(maxsize=8)
def _pixel_grid(height: int, width: int) -> NDArray[np.float32]:
    grid = np.empty((height, width, 2), dtype=np.float32)
    grid[..., 0] = np.arange(width, dtype=np.float32)
    grid[..., 1] = np.arange(height, dtype=np.float32)[:, None]
    grid.flags.writeable = False
    return grid


def warp_by_flow(image: Image, flow: Flow, factor: float = 1.0) -> Image:
    """Move ``image``'s content along ``factor * flow``: ``out(p) = image(p - factor * flow(p))``.

    Bilinear sampling, borders mirrored (``BORDER_REFLECT_101``). ``factor`` 0 returns a copy;
    negative factors move content backwards.

    Args:
        image: (H, W, 3) uint8 RGB.
        flow: (H, W, 2) float displacements, e.g. from :func:`flow`.
        factor: flow multiplier (Deforum's ``cadence_flow_factor_schedule``).

    Raises:
        ValueError: wrong image or flow shape, or a non-finite factor.
    """
    image = check_image(image)
    factor = float(factor)
    if not math.isfinite(factor):
        raise ValueError(f"The flow factor must be a finite number; got {factor!r}.")
    height, width = image.shape[:2]
    if not isinstance(flow, np.ndarray) or flow.shape != (height, width, 2):
        got = flow.shape if isinstance(flow, np.ndarray) else type(flow).__name__
        raise ValueError(f"The flow for a {width}x{height} image must have shape ({height}, {width}, 2); got {got}.")
    if factor == 0.0:
        return image.copy()
    coordinates = cv2.scaleAdd(np.asarray(flow, dtype=np.float32), -factor, _pixel_grid(height, width))
    warped = cv2.remap(image, coordinates, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return np.asarray(warped, np.uint8)


def flow_tween(
    previous: Image,
    following: Image,
    weight: float,
    method: str = "dis_medium",
    factor: float = 1.0,
    *,
    flow_field: Flow | None = None,
) -> Image:
    """A tween with both images first moved to the in-between position along their optical flow.

    With ``F = flow(previous, following)``, ``previous`` is moved forward by ``weight * F`` and
    ``following`` backward by ``(1 - weight) * F`` (both times ``factor``), then they are blended
    with :func:`tween`. ``weight`` 0 and 1 return the inputs exactly.

    Args:
        previous: (H, W, 3) uint8 RGB, the earlier key image.
        following: (H, W, 3) uint8 RGB, the later key image.
        weight: 0..1, the in-between time.
        method: flow method when ``flow_field`` is not given.
        factor: flow multiplier; 0 gives a plain :func:`tween`.
        flow_field: ``flow(previous, following, method)`` computed once per cadence group; computing
            it costs tens of milliseconds, so pass it for every tween of the group.

    Returns:
        A new (H, W, 3) uint8 array.
    """
    previous, following = _check_pair(previous, following)
    weight = _check_weight(weight)
    if weight in (0.0, 1.0) or float(factor) == 0.0:
        return tween(previous, following, weight)
    motion = flow(previous, following, method) if flow_field is None else flow_field
    moved_previous = warp_by_flow(previous, motion, weight * factor)
    moved_following = warp_by_flow(following, motion, -(1.0 - weight) * factor)
    return tween(moved_previous, moved_following, weight)
