"""The image convention of ``dreamreel.anim`` and its one input check."""

from __future__ import annotations

import numpy as np

from dreamreel.generation import Image


class ImageTypeError(TypeError, ValueError):
    """Not a numpy array at all (a TypeError, and a ValueError like every other bad-image error)."""


def check_image(image: object, name: str = "image") -> Image:
    """Check that ``image`` is an (H, W, 3) uint8 RGB array and return it C-contiguous.

    Args:
        image: the value to check.
        name: what the value is, for the error message.

    Returns:
        ``image`` itself when it is already C-contiguous, else a contiguous copy.

    Raises:
        ImageTypeError: ``image`` is not a numpy array.
        ValueError: the array has the wrong shape, dtype or an empty side.
    """
    if not isinstance(image, np.ndarray):
        raise ImageTypeError(f"{name} must be an (H, W, 3) uint8 RGB numpy array; got a {type(image).__name__}.")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(
            f"{name} must be an (H, W, 3) uint8 RGB array with H, W >= 1; got shape {image.shape} dtype "
            f"{image.dtype}. Convert it first (e.g. PIL's image.convert('RGB') or arr.astype(np.uint8))."
        )
    return np.ascontiguousarray(image)
