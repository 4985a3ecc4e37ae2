"""Colour coherence: histogram matching against a fixed reference with 256-entry lookup tables.

:class:`ColorMatcher` is built once per reference image. It stores the reference's per-channel
histogram quantiles in the chosen colour space, so matching a frame costs one colour conversion
each way, one histogram per channel and one lookup-table pass (no sorting, no per-frame work on
the reference).

The mapping is skimage's ``match_histograms`` on 8-bit channels: a channel level ``v`` of the
image goes to the reference level at the same quantile, ``interp(cdf_image(v), cdf_ref, levels_ref)``.
Histograms use OpenCV's 8-bit encodings (LAB: ``L * 255 / 100``, ``a + 128``, ``b + 128``;
HSV: ``H / 2``, ``S * 255``, ``V * 255``).

With ``exact=True`` (the default) LAB and HSV values are kept in float32 between the two
conversions and the table is applied as a per-level offset, so a pixel whose levels map to
themselves comes back unchanged (within one level) and matching an image to a reference with the
same histograms changes nothing. ``exact=False`` converts to 8-bit LAB/HSV and back like Deforum
(about 40% faster); that round trip alone moves saturated dark colours by up to ~20 levels.

Differences from Deforum (see docs/compat.md):
    * Images are RGB and converted with ``COLOR_RGB2LAB`` / ``COLOR_RGB2HSV``. Deforum passed
      BGR frames to the same RGB conversions, so its "LAB" and "HSV" matching happened in a
      channel-swapped space (blue treated as red); results differ slightly, mostly in hue.
    * Mapped levels are not truncated: skimage assigns its float result into a uint8 array
      (half a level darker on average); here the 8-bit table rounds and the exact path keeps
      fractions.
    * The exact path (default) avoids the 8-bit LAB/HSV round trip described above.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Literal, NamedTuple

import cv2
import numpy as np
from numpy.typing import NDArray

from dreamreel.anim.filters import check_image
from dreamreel.errors import SettingsError, did_you_mean
from dreamreel.generation import Image

logger = logging.getLogger(__name__)

__all__ = ["COLOR_SPACES", "ColorMatcher", "ColorSpace", "match_colors", "normalize_color_space", "warm_up"]

ColorSpace = Literal["lab", "hsv", "rgb"]


class _Space(NamedTuple):
    to_u8: int | None  # cv2 code RGB uint8 -> 8-bit space
    from_u8: int | None
    to_float: int | None  # cv2 code RGB float32 0..1 -> float space
    from_float: int | None
    scale: tuple[float, float, float]  # float space -> 8-bit encoding: value * scale + offset
    offset: tuple[float, float, float]


COLOR_SPACES: dict[str, _Space] = {
    "lab": _Space(
        cv2.COLOR_RGB2LAB, cv2.COLOR_LAB2RGB, cv2.COLOR_RGB2Lab, cv2.COLOR_Lab2RGB, (255 / 100, 1, 1), (0, 128, 128)
    ),
    # Hue 0..360 -> levels 0..179 by floor(H / 2) (the -0.5 offset), so 359.5 degrees does not become 180.
    "hsv": _Space(
        cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB, cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB, (0.5, 255, 255), (-0.5, 0, 0)
    ),
    "rgb": _Space(None, None, None, None, (1, 1, 1), (0, 0, 0)),
}
"""Colour space name -> OpenCV conversions and the 8-bit encoding of the float space."""

_LEVELS_F = np.arange(256, dtype=np.float64)
_LEVELS_U8 = np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None], (256, 3))
_TO_UNIT = (np.arange(256, dtype=np.float32) / np.float32(255)).astype(np.float32)
_EXACT_HISTOGRAM_PIXELS = 2**24  # cv2.calcHist counts in float32: exact below this many pixels.


def normalize_color_space(space: str) -> ColorSpace:
    """``"LAB"``, ``"Lab"``, ``" hsv "``... -> ``"lab" | "hsv" | "rgb"``.

    Raises:
        SettingsError: the name is not one of the three spaces (key ``color_coherence``).
    """
    name = str(space).strip().lower()
    if name not in COLOR_SPACES:
        raise SettingsError(
            f"Unknown colour-matching space {space!r}; use 'LAB', 'HSV' or 'RGB'. (Deforum's 'Image' and "
            f"'Video Input' choose where the reference comes from and match in LAB; 'None' turns colour "
            f"coherence off before any matcher is built.){did_you_mean(name, COLOR_SPACES)}",
            key="color_coherence",
        )
    return name  # type: ignore[return-value]


@functools.cache
def warm_up(space: str) -> None:
    """Run ``space``'s conversions on one pixel, so OpenCV builds its tables now, not in a frame's time.

    OpenCV fills its float Lab tables on the first float Lab conversion, and its worker threads
    start on the first conversion big enough to be split (together 20-60 ms); call this when a run
    that matches colours loads. Unknown names are left to :func:`normalize_color_space`.
    """
    spec = COLOR_SPACES.get(str(space).strip().lower())
    if spec is None:
        return
    ramp = np.linspace(0, 255, 128 * 128 * 3).astype(np.uint8).reshape(128, 128, 3)  # big enough to go parallel
    if spec.to_float is not None and spec.from_float is not None:
        cv2.cvtColor(cv2.cvtColor(cv2.LUT(ramp, _TO_UNIT), spec.to_float), spec.from_float)
    if spec.to_u8 is not None and spec.from_u8 is not None:
        cv2.cvtColor(cv2.cvtColor(ramp, spec.to_u8), spec.from_u8)


def _histograms(image: NDArray[np.uint8]) -> NDArray[np.float64]:
    """Per-channel counts of each level 0..255, shape (3, 256)."""
    if image.shape[0] * image.shape[1] < _EXACT_HISTOGRAM_PIXELS:
        counts = [cv2.calcHist([image], [channel], None, [256], [0, 256]).ravel() for channel in range(3)]
        return np.asarray(counts, dtype=np.float64)
    flat = image.reshape(-1, 3)
    return np.asarray([np.bincount(flat[:, c], minlength=256) for c in range(3)], dtype=np.float64)


class ColorMatcher:
    """Matches images to the colour histograms of one reference image.

    Example:
        >>> matcher = ColorMatcher(first_frame, "lab")   # doctest: +SKIP
        >>> init = matcher.match(warped_previous)        # doctest: +SKIP

    Args:
        reference: (H, W, 3) uint8 RGB; any size (quantiles are normalised by pixel count).
        space: "lab", "hsv" or "rgb" (case-insensitive, Deforum's "LAB"/"HSV"/"RGB" work).
        exact: keep LAB/HSV in float32 between the conversions (see the module docstring);
            no effect for "rgb", which needs no conversion.

    Raises:
        SettingsError: unknown ``space``.
        ValueError: ``reference`` is not an (H, W, 3) uint8 array.
    """

    def __init__(self, reference: Image, space: str = "lab", *, exact: bool = True) -> None:
        reference = check_image(reference, "the colour-coherence reference")
        self.space: ColorSpace = normalize_color_space(space)
        self.exact = bool(exact) and self.space != "rgb"
        self._spec = COLOR_SPACES[self.space]
        scale, offset = np.asarray(self._spec.scale, np.float32), np.asarray(self._spec.offset, np.float32)
        self._encode = np.concatenate([np.diag(scale), offset[:, None]], axis=1).astype(np.float32)
        self._scale = np.asarray(self._spec.scale, dtype=np.float64)
        counts = _histograms(self._encoded(reference)[0])
        total = float(reference.shape[0] * reference.shape[1])
        self._levels: list[NDArray[np.float64]] = []
        self._quantiles: list[NDArray[np.float64]] = []
        for channel_counts in counts:
            present = np.flatnonzero(channel_counts)
            self._levels.append(present.astype(np.float64))
            self._quantiles.append(np.cumsum(channel_counts[present]) / total)

    def _encoded(self, image: Image) -> tuple[NDArray[np.uint8], NDArray[np.float32] | None]:
        """The image's 8-bit encoding in the space, and (exact mode) its float32 values there."""
        if not self.exact:
            if self._spec.to_u8 is None:
                return image, None
            return np.asarray(cv2.cvtColor(image, self._spec.to_u8), np.uint8), None
        assert self._spec.to_float is not None  # exact mode is never "rgb"
        values = np.asarray(cv2.cvtColor(cv2.LUT(image, _TO_UNIT), self._spec.to_float), np.float32)
        return np.asarray(cv2.convertScaleAbs(cv2.transform(values, self._encode)), np.uint8), values

    def _mapped(self, counts: NDArray[np.float64], strength: float) -> NDArray[np.float64]:
        """(256, 3) target level of every level, as floats."""
        cdf = np.cumsum(counts, axis=1)
        cdf /= cdf[:, -1:]
        mapped = np.empty((256, 3))
        for channel in range(3):
            mapped[:, channel] = np.interp(cdf[channel], self._quantiles[channel], self._levels[channel])
        return _LEVELS_F[:, None] + strength * (mapped - _LEVELS_F[:, None])

    def table(self, encoded: NDArray[np.uint8], strength: float = 1.0) -> NDArray[np.uint8]:
        """The (256, 1, 3) uint8 lookup table mapping an 8-bit encoded image onto the reference.

        Args:
            encoded: the image in this matcher's space, OpenCV 8-bit encoding (e.g. ``COLOR_RGB2LAB``).
            strength: 0..1 blend between the identity table and the full match.
        """
        mapped = self._mapped(_histograms(encoded), strength)
        return np.clip(np.rint(mapped), 0, 255).astype(np.uint8)[:, None, :]

    def match(self, image: Image, strength: float = 1.0) -> Image:
        """``image`` with each channel's histogram mapped onto the reference's, in this matcher's space.

        Args:
            image: (H, W, 3) uint8 RGB.
            strength: 0..1; levels move by ``strength`` times their full-match offset, so 0
                returns the image unchanged and 1 is the full match.

        Returns:
            A new (H, W, 3) uint8 RGB array.

        Raises:
            SettingsError: ``strength`` is outside 0..1.
            ValueError: ``image`` is not an (H, W, 3) uint8 array.
        """
        image = check_image(image)
        strength = float(strength)
        if not (math.isfinite(strength) and 0.0 <= strength <= 1.0):
            raise SettingsError(f"The colour-match strength must be between 0 and 1; got {strength!r}.")
        encoded, values = self._encoded(image)
        counts = _histograms(encoded)
        mapped = self._mapped(counts, strength)
        present = counts.T > 0
        if values is None:
            table = np.clip(np.rint(mapped), 0, 255).astype(np.uint8)
            if np.array_equal(table[present], _LEVELS_U8[present]):
                return image.copy()
            out = cv2.LUT(encoded, table[:, None, :])
            return np.asarray(out if self._spec.from_u8 is None else cv2.cvtColor(out, self._spec.from_u8), np.uint8)
        offsets = (mapped - _LEVELS_F[:, None]) / self._scale  # in float-space units
        if not offsets[present].any():
            return image.copy()
        cv2.add(values, cv2.LUT(encoded, offsets.astype(np.float32)[:, None, :]), dst=values)
        assert self._spec.from_float is not None  # values is None in "rgb"
        rgb = cv2.cvtColor(values, self._spec.from_float)
        return np.asarray(cv2.addWeighted(rgb, 255.0, rgb, 0.0, 0.0, dtype=cv2.CV_8U), np.uint8)


def match_colors(image: Image, reference: Image, space: str = "lab", strength: float = 1.0) -> Image:
    """One-off :meth:`ColorMatcher.match`; build a :class:`ColorMatcher` when the reference is reused."""
    return ColorMatcher(reference, space).match(image, strength)
