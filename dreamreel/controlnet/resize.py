"""Resize control maps to the generation size with A1111 ControlNet's three resize modes.

- ``just_resize`` ("Just Resize"): stretch to ``width x height``; the aspect ratio may change.
- ``crop_and_resize`` ("Crop and Resize", ControlNet's "Inner Fit (Scale to Fit)"): scale until the
  map covers the output, then crop the overflow equally from both sides.
- ``resize_and_fill`` ("Resize and Fill", ControlNet's "Outer Fit (Shrink to Fit)"): scale until
  the map fits inside the output, then pad both sides. The padding is the median colour of the
  map's border pixels (what sd-webui-controlnet does for maps), which is black for edge and pose
  maps; pass ``fill`` to choose another colour.

Interpolation: edge and pose maps must stay crisp and must not alias. Each axis that shrinks is
resampled with ``cv2.INTER_AREA`` (averages the covered pixels, so thin lines fade a little but
never break up); each axis that grows uses ``cv2.INTER_LINEAR`` (smooth line borders, no
staircase or uneven line widths that ``INTER_NEAREST`` gives at non-integer factors). When one
axis grows and the other shrinks, the two axes are resized one after the other, each with its
own interpolation.
"""

from __future__ import annotations

import re
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from dreamreel.errors import SettingsError, did_you_mean

ResizeMode = Literal["just_resize", "crop_and_resize", "resize_and_fill"]
"""The canonical resize mode names."""

RESIZE_MODES: tuple[ResizeMode, ...] = ("just_resize", "crop_and_resize", "resize_and_fill")

_SPELLINGS: dict[str, ResizeMode] = {
    "just resize": "just_resize",
    "just resize latent upscale": "just_resize",  # A1111 img2img mode 3: for a map it is just a resize
    "resize": "just_resize",
    "default": "just_resize",  # diffusers' VaeImageProcessor.resize names
    "crop and resize": "crop_and_resize",
    "inner fit scale to fit": "crop_and_resize",
    "inner fit": "crop_and_resize",
    "scale to fit": "crop_and_resize",
    "crop": "crop_and_resize",
    "resize and fill": "resize_and_fill",
    "outer fit shrink to fit": "resize_and_fill",
    "outer fit": "resize_and_fill",
    "shrink to fit": "resize_and_fill",
    "fill": "resize_and_fill",
}
_BY_INDEX: dict[int, ResizeMode] = {0: "just_resize", 1: "crop_and_resize", 2: "resize_and_fill", 3: "just_resize"}
_ALLOWED_TEXT = (
    '\'just_resize\' ("Just Resize"), \'crop_and_resize\' ("Crop and Resize", "Inner Fit (Scale to Fit)") '
    'or \'resize_and_fill\' ("Resize and Fill", "Outer Fit (Shrink to Fit)")'
)


def normalize_resize_mode(mode: str | int, *, key: str | None = None) -> ResizeMode:
    """Return the canonical name of a resize mode given in any A1111 / Deforum / dreamreel spelling.

    Accepts the canonical names, A1111 img2img's labels ("Just resize", "Crop and resize",
    "Resize and fill", "Just resize (latent upscale)"), sd-webui-controlnet's ("Just Resize",
    "Inner Fit (Scale to Fit)", "Outer Fit (Shrink to Fit)"), diffusers' ("default", "crop",
    "fill") and A1111's API indices 0-3. Case, spaces, ``_``, ``-`` and brackets do not matter.

    Args:
        mode: the spelling to normalise.
        key: the settings key the value came from, for the error message.

    Raises:
        SettingsError: the mode is none of these; the message lists the allowed ones.
    """
    if isinstance(mode, bool):
        raise SettingsError(f"resize mode {mode!r} is not a resize mode; use {_ALLOWED_TEXT}.", key=key)
    if isinstance(mode, int):
        if mode in _BY_INDEX:
            return _BY_INDEX[mode]
        raise SettingsError(f"resize mode {mode} is not 0, 1, 2 or 3; use {_ALLOWED_TEXT}.", key=key)
    text = str(mode)
    words = " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())
    if words.isdigit() and int(words) in _BY_INDEX:
        return _BY_INDEX[int(words)]
    canonical = words.replace(" ", "_")
    if canonical in RESIZE_MODES:
        return canonical
    if words in _SPELLINGS:
        return _SPELLINGS[words]
    hint = did_you_mean(text, [*RESIZE_MODES, "Just Resize", "Crop and Resize", "Resize and Fill"])
    raise SettingsError(f"unknown resize mode {text!r}.{hint} Use {_ALLOWED_TEXT}.", key=key)


def _as_rgb(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"a control map must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3) or 0 in array.shape:
        raise ValueError(f"a control map must have shape (H, W, 3), (H, W, 1) or (H, W); got {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return array


def _interpolation(old: int, new: int) -> int:
    return cv2.INTER_AREA if new < old else cv2.INTER_LINEAR


def scale_map(image: NDArray[np.uint8], width: int, height: int) -> NDArray[np.uint8]:
    """Resize to exactly ``width x height`` (no aspect handling), INTER_AREA down, INTER_LINEAR up."""
    image = _as_rgb(image)
    old_h, old_w = image.shape[:2]
    if (old_w, old_h) == (width, height):
        return np.ascontiguousarray(image)
    x_interp, y_interp = _interpolation(old_w, width), _interpolation(old_h, height)
    if x_interp == y_interp or old_w == width or old_h == height:
        interp = x_interp if old_w != width else y_interp
        out = cv2.resize(image, (width, height), interpolation=interp)
    else:  # one axis shrinks, the other grows: one pass per axis
        out = cv2.resize(image, (width, old_h), interpolation=x_interp)
        out = cv2.resize(out, (width, height), interpolation=y_interp)
    return np.asarray(out, np.uint8).reshape(height, width, 3)


def _border_median(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]], axis=0)
    return np.asarray(np.median(border, axis=0)).astype(np.uint8)


def resize_map(
    image: NDArray[np.uint8],
    width: int,
    height: int,
    mode: ResizeMode | str | int = "just_resize",
    *,
    fill: tuple[int, int, int] | None = None,
) -> NDArray[np.uint8]:
    """Resize a control map to the generation size with an A1111 ControlNet resize mode.

    Args:
        image: the map, (H, W, 3) uint8 (grayscale (H, W) or (H, W, 1) is expanded to 3 channels).
        width: output width in pixels.
        height: output height in pixels.
        mode: ``just_resize``, ``crop_and_resize`` or ``resize_and_fill``, in any spelling
            :func:`normalize_resize_mode` accepts.
        fill: padding colour for ``resize_and_fill``; default: the median colour of the map's
            border pixels.

    Returns:
        A new (height, width, 3) uint8 array.

    Raises:
        SettingsError: unknown mode.
        ValueError: a non-positive size or an image that is not a uint8 map.
    """
    if int(width) != width or int(height) != height or width < 1 or height < 1:
        raise ValueError(f"the output size must be positive whole numbers, got {width}x{height}")
    width, height = int(width), int(height)
    canonical = normalize_resize_mode(mode)
    image = _as_rgb(image)
    old_h, old_w = image.shape[:2]
    if canonical == "just_resize" or (old_w, old_h) == (width, height):
        return scale_map(image, width, height).copy()
    if canonical == "crop_and_resize":
        scale = max(width / old_w, height / old_h)
        new_w, new_h = max(width, round(old_w * scale)), max(height, round(old_h * scale))
        scaled = scale_map(image, new_w, new_h)
        left, top = (new_w - width) // 2, (new_h - height) // 2
        return np.ascontiguousarray(scaled[top : top + height, left : left + width])
    scale = min(width / old_w, height / old_h)
    new_w, new_h = min(width, max(1, round(old_w * scale))), min(height, max(1, round(old_h * scale)))
    colour = _border_median(image) if fill is None else np.asarray(fill, dtype=np.uint8).reshape(3)
    out = np.empty((height, width, 3), dtype=np.uint8)
    out[:] = colour
    left, top = (width - new_w) // 2, (height - new_h) // 2
    out[top : top + new_h, left : left + new_w] = scale_map(image, new_w, new_h)
    return out
