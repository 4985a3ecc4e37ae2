"""Per-frame pixel filters of the init chain: contrast (a gain) and anti-blur (an unsharp mask).

Both work on (H, W, 3) uint8 RGB arrays and return a new array. They are built from single
OpenCV passes (one scaling pass; one Gaussian blur and one weighted sum), about 0.2 ms and 1 ms
at 512x512 on one CPU thread.

Differences from Deforum (see docs/compat.md):
    * ``adjust_contrast`` clips to 0..255; Deforum's ``(img * c).round().astype(uint8)`` wraps
      around, so 250 * 1.1 = 275 became 19.
    * ``unsharp_mask``'s threshold compares ``|image - blurred|`` computed without wrap-around;
      Deforum subtracted uint8 arrays, so ``3 - 5`` was 254 and the threshold rarely applied.
    * ``unsharp_mask`` forces an even or zero kernel size to the next odd size (OpenCV rejects
      even sizes, which crashed Deforum).
"""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np

from dreamreel.anim.images import check_image
from dreamreel.errors import SettingsError
from dreamreel.generation import Image

logger = logging.getLogger(__name__)

__all__ = ["adjust_contrast", "check_image", "check_setting", "odd_kernel", "unsharp_mask"]


def check_setting(value: float, *, key: str, what: str, minimum: float = 0.0) -> float:
    """``value`` as a float, or a SettingsError naming ``key`` when it is not finite or below ``minimum``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number < minimum:
        raise SettingsError(f"{what} must be a finite number >= {minimum:g}; got {value!r}.", key=key)
    return number


def adjust_contrast(image: Image, factor: float) -> Image:
    """Multiply every channel value by ``factor`` and clip to 0..255 (Deforum's ``contrast_schedule``).

    Deforum's "contrast" is a plain gain, not a stretch about mid-grey: 0.9 darkens, 1.1
    brightens. Values are rounded (an exact .5 may go either way: the product is float32) and
    clipped; Deforum wrapped around instead.

    Args:
        image: (H, W, 3) uint8 RGB.
        factor: the gain, >= 0. 1 returns an unchanged copy.

    Returns:
        A new (H, W, 3) uint8 array.

    Raises:
        SettingsError: ``factor`` is negative or not finite.
    """
    image = check_image(image)
    factor = check_setting(factor, key="contrast_schedule", what="The contrast factor")
    if factor == 1.0:
        return image.copy()
    # saturate(round(|x * factor|)); factor >= 0, so the absolute value changes nothing.
    return np.asarray(cv2.convertScaleAbs(image, alpha=factor), np.uint8)


def odd_kernel(kernel: float) -> int:
    """The Gaussian kernel size actually used: ``int(kernel)``, at least 1, even sizes rounded up to odd."""
    size = max(1, int(kernel))
    return size if size % 2 == 1 else size + 1


def unsharp_settings(amount: float, kernel: float, sigma: float, threshold: float) -> tuple[float, int, float, float]:
    """The anti-blur settings checked (finite, >= 0, named by their Deforum keys): (amount, odd kernel size,
    sigma, threshold). Shared by the OpenCV and the torch unsharp mask."""
    return (
        check_setting(amount, key="amount_schedule", what="The anti-blur amount"),
        odd_kernel(check_setting(kernel, key="kernel_schedule", what="The anti-blur kernel size")),
        check_setting(sigma, key="sigma_schedule", what="The anti-blur sigma"),
        check_setting(threshold, key="threshold_schedule", what="The anti-blur threshold"),
    )


def unsharp_mask(image: Image, *, amount: float, kernel: float = 5, sigma: float = 1.0, threshold: float = 0) -> Image:
    """Deforum's anti-blur: sharpen by ``amount`` against a Gaussian blur.

    ``blurred = GaussianBlur(image, (k, k), sigma)`` and
    ``sharp = clip(round((1 + amount) * image - amount * blurred), 0, 255)``. With
    ``threshold > 0``, channel values whose ``|image - blurred|`` (exact, not wrapped) is below
    ``threshold`` keep their original value, so flat areas are not sharpened.

    Args:
        image: (H, W, 3) uint8 RGB.
        amount: sharpening strength (``amount_schedule``), >= 0; 0 returns an unchanged copy.
        kernel: Gaussian kernel size (``kernel_schedule``); truncated to an integer, at least 1,
            and an even size becomes the next odd one.
        sigma: Gaussian sigma (``sigma_schedule``), >= 0; 0 lets OpenCV derive it from the kernel size.
        threshold: minimum local contrast to sharpen (``threshold_schedule``), >= 0.

    Returns:
        A new (H, W, 3) uint8 array.

    Raises:
        SettingsError: a parameter is negative or not finite.
    """
    image = check_image(image)
    amount, size, sigma, threshold = unsharp_settings(amount, kernel, sigma, threshold)
    if amount == 0.0 or size == 1 or threshold > 255:
        return image.copy()
    blurred = cv2.GaussianBlur(image, (size, size), sigma, borderType=cv2.BORDER_REFLECT_101)
    sharp = np.asarray(cv2.addWeighted(image, 1.0 + amount, blurred, -amount, 0.0), np.uint8)
    if threshold > 0:
        # Integer differences: |d| < t  <=>  |d| < ceil(t); 256 is out of uint8 range, handled above.
        # Compared per channel value with numpy: OpenCV 5's cv2.compare against a scalar tests channel 0 only.
        keep = cv2.absdiff(image, blurred) < math.ceil(threshold)
        np.copyto(sharp, image, where=keep)
    return sharp
