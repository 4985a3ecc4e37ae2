"""Deforum's 2D warp (angle, zoom, translation about a centre) and its perspective flip.

The matrices are Deforum's (``anim_frame_warp_2d`` and ``get_flip_perspective_matrix``), rebuilt
here from their formulas, and the pixels come from OpenCV's bilinear warp with the same border
modes, so a frame warps to Deforum's pixels up to OpenCV's interpolation rounding.

Convention:
    * Images are (H, W, 3) uint8 RGB numpy arrays, in and out.
    * Pixel coordinates are (x, y) with the origin at the top-left pixel's centre, x to the right,
      y down (OpenCV's convention).
    * Matrices are 3x3 float64 and map source pixel coordinates to destination pixel coordinates
      (``dst(M @ p) = src(p)``), as ``cv2.warpPerspective`` without ``WARP_INVERSE_MAP``.
    * A positive ``angle`` turns the picture counter-clockwise on screen; ``zoom`` > 1 enlarges
      it; a positive ``translation_x`` / ``translation_y`` moves it right / down, in pixels.

Divergence from Deforum: with the perspective flip on, Deforum silently drops the translation
(``np.matmul(bM, R, T)`` passes ``T`` as numpy's ``out=`` argument); dreamreel keeps it
(``bM @ R @ T``).
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from dreamreel.anim.images import check_image
from dreamreel.errors import SettingsError, did_you_mean

logger = logging.getLogger(__name__)

Border = Literal["replicate", "wrap"]
"""Deforum's ``border`` setting: what the warp shows where the picture has moved away."""

Image = NDArray[np.uint8]
Matrix = NDArray[np.float64]

_BORDERS: dict[str, int] = {"replicate": cv2.BORDER_REPLICATE, "wrap": cv2.BORDER_WRAP}
_BUFFERS = threading.local()


def border_flag(border: str) -> int:
    """Return OpenCV's border flag for Deforum's ``border`` value ("replicate" or "wrap").

    Raises:
        SettingsError: an unknown border name.
    """
    try:
        return _BORDERS[border]
    except (KeyError, TypeError):
        raise SettingsError(
            f"unknown border mode {border!r}; use 'replicate' (repeat the edge pixels) or 'wrap' (tile the "
            f"picture).{did_you_mean(str(border), _BORDERS)}",
            key="border",
        ) from None


def _finite(**values: float) -> None:
    for name, value in values.items():
        if not math.isfinite(value):
            raise SettingsError(f"the 2D motion value is {value}; it must be a finite number.", key=name)


def motion_matrix_2d(
    width: int,
    height: int,
    *,
    angle: float = 0.0,
    zoom: float = 1.0,
    translation_x: float = 0.0,
    translation_y: float = 0.0,
    transform_center_x: float = 0.5,
    transform_center_y: float = 0.5,
) -> Matrix:
    """Return Deforum's 2D motion matrix ``M = R @ T`` (pure, no image needed).

    Convention:
        * ``T`` translates by (``translation_x``, ``translation_y``) pixels first; then ``R``
          rotates by ``angle`` degrees (positive = counter-clockwise on screen) and scales by
          ``zoom`` about the centre ``c = (width * transform_center_x, height * transform_center_y)``,
          exactly like ``cv2.getRotationMatrix2D(c, angle, zoom)``. The translation is therefore
          itself rotated and scaled.
        * The centre uses ``width * 0.5`` (e.g. 256 for 512 px), not ``(width - 1) / 2``.
        * The centre and the translation are rounded to float32 first, as in Deforum.
        * The result maps source pixel coordinates to destination ones (``dst(M @ p) = src(p)``).

    Args:
        width: image width in pixels.
        height: image height in pixels.
        angle: rotation in degrees, positive = counter-clockwise.
        zoom: scale factor, > 1 enlarges.
        translation_x: pixels, positive moves the picture right.
        translation_y: pixels, positive moves the picture down.
        transform_center_x: rotation/zoom centre as a fraction of the width.
        transform_center_y: rotation/zoom centre as a fraction of the height.

    Returns:
        A new 3x3 float64 matrix.

    Example:
        >>> float(motion_matrix_2d(512, 512, translation_x=10.0)[0, 2])
        10.0
    """
    _finite(
        angle=angle,
        zoom=zoom,
        translation_x=translation_x,
        translation_y=translation_y,
        transform_center_x=transform_center_x,
        transform_center_y=transform_center_y,
    )
    # Deforum's values pass through float32 (OpenCV's Point2f centre, its np.float32 translation
    # matrix); rounding them the same way keeps the matrix equal to Deforum's to ~1e-12.
    cx, cy = (float(value) for value in np.array([width * transform_center_x, height * transform_center_y], np.float32))
    tx, ty = (float(value) for value in np.array([translation_x, translation_y], np.float32))
    radians = math.radians(angle)
    a, b = zoom * math.cos(radians), zoom * math.sin(radians)
    rotate = np.array(
        [[a, b, (1.0 - a) * cx - b * cy], [-b, a, b * cx + (1.0 - a) * cy], [0.0, 0.0, 1.0]], dtype=np.float64
    )
    translate = np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]], dtype=np.float64)
    return rotate @ translate


def _axis_rotation(axis: int, degrees: float) -> Matrix:
    """4x4 homogeneous rotation about x (0), y (1) or z (2), right-handed."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    i, j = {0: (1, 2), 1: (2, 0), 2: (0, 1)}[axis]
    matrix = np.eye(4)
    matrix[i, i] = matrix[j, j] = c
    matrix[i, j], matrix[j, i] = -s, s
    return matrix


@functools.lru_cache(maxsize=64)
def _flip_matrix(theta: float, phi: float, gamma: float, fv: float, width: int, height: int) -> Matrix:
    half = math.radians(fv) / 2.0
    diagonal = math.hypot(width, height)
    side = diagonal / math.cos(half)
    distance = diagonal / (2.0 * math.sin(half))
    near, far = distance - diagonal / 2.0, distance + diagonal / 2.0
    projection = np.zeros((4, 4))
    projection[0, 0] = projection[1, 1] = 1.0 / math.tan(half)
    projection[2, 2] = -(far + near) / (far - near)
    projection[2, 3] = -2.0 * far * near / (far - near)
    projection[3, 2] = -1.0
    push = np.eye(4)
    push[2, 3] = -distance
    full = projection @ push @ _axis_rotation(0, phi) @ _axis_rotation(1, gamma) @ _axis_rotation(2, theta)
    half_w, half_h = width / 2.0, height / 2.0
    corners = np.array([[-half_w, half_h, 0.0, 1.0], [half_w, half_h, 0.0, 1.0], [half_w, -half_h, 0.0, 1.0]])
    corners = np.vstack([corners, [-half_w, -half_h, 0.0, 1.0]])
    projected = corners @ full.T
    ndc = projected[:, :2] / projected[:, 3:4]
    source = (corners[:, :2] + (half_w, half_h)).astype(np.float32)
    target = ((ndc + 1.0) * (side / 2.0)).astype(np.float32)
    corner_map = cv2.getPerspectiveTransform(source, target)
    # Deforum builds this post-translation in float32; keep its rounding.
    shift = np.array([(width - side) / 2.0, (height - side) / 2.0], np.float32).astype(np.float64)
    post = np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]], [0.0, 0.0, 1.0]])
    result = np.asarray(corner_map @ post, dtype=np.float64)
    result.setflags(write=False)
    return result


def perspective_flip_matrix(theta: float, phi: float, gamma: float, fv: float, width: int, height: int) -> Matrix:
    """Return Deforum's perspective-flip matrix ``bM`` (3x3 float64, source to destination pixels).

    The picture is placed as a plane facing the camera, rotated in 3D, and projected back: the
    four corners go through ``P @ Tz(-h) @ Rx(phi) @ Ry(gamma) @ Rz(theta)`` where ``P`` is an
    OpenGL perspective projection with field of view ``fv`` and ``h`` puts the picture's diagonal
    exactly in view; the homography fitting the corners (float32 points, as OpenCV requires) is
    followed by Deforum's re-centring. With all angles 0 the result is the identity up to float32
    rounding.

    Convention:
        ``theta`` rolls about the viewing axis (z; positive turns the picture clockwise on screen,
        the opposite of the 2D ``angle``), ``phi`` tilts about the horizontal axis (x), ``gamma``
        pans about the vertical axis (y), all in degrees; ``fv`` is the field of view in degrees
        (Deforum's default 53, sensible 30..160).

    Deforum quirk, kept: the re-centring shift is applied *before* the corner homography
    (``M33 @ shift`` instead of ``shift @ M33``), so the pivot is not the picture's centre and a
    roll also moves the picture (``theta = 5`` at 512x512 moves the centre about 18 px).

    Raises:
        SettingsError: ``fv`` outside (0, 180) or a non-finite angle.
    """
    _finite(perspective_flip_theta=theta, perspective_flip_phi=phi, perspective_flip_gamma=gamma)
    if not 0.0 < fv < 180.0:
        raise SettingsError(
            f"the field of view is {fv} degrees; it must be between 0 and 180.", key="perspective_flip_fv"
        )
    return _flip_matrix(float(theta), float(phi), float(gamma), float(fv), int(width), int(height)).copy()


def _integer_shift(image: Image, dx: int, dy: int, border: str) -> Image:
    """Translate by whole pixels; the same pixels as OpenCV's bilinear warp, several times faster."""
    height, width = image.shape[:2]
    if border == "wrap":
        return np.roll(image, (dy, dx), axis=(0, 1))
    dx = max(-(width - 1), min(width - 1, dx))
    dy = max(-(height - 1), min(height - 1, dy))
    crop = image[max(0, -dy) : height - max(0, dy), max(0, -dx) : width - max(0, dx)]
    shifted = cv2.copyMakeBorder(crop, max(0, dy), max(0, -dy), max(0, dx), max(0, -dx), cv2.BORDER_REPLICATE)
    return np.asarray(shifted, np.uint8)


def warp_with_matrix(image: Image, matrix: Matrix, *, border: Border = "replicate") -> Image:
    """Warp ``image`` by a 3x3 source-to-destination ``matrix`` with OpenCV's bilinear interpolation.

    The pixels are those of ``cv2.warpPerspective(image, matrix, (W, H))`` with default flags
    (INTER_LINEAR) and the border mode, computed faster: affine matrices go through
    ``cv2.warpAffine`` (identical pixels), the picture is warped as RGBA (identical pixels, OpenCV's
    4-channel path is several times faster), whole-pixel translations are copied without
    resampling (identical pixels) and the identity returns a copy.

    Args:
        image: (H, W, 3) uint8 RGB.
        matrix: 3x3 matrix, ``dst(matrix @ p) = src(p)``.
        border: "replicate" or "wrap".

    Returns:
        A new (H, W, 3) uint8 array.
    """
    image = check_image(image)
    flag = border_flag(border)
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (3, 3) or not np.isfinite(matrix).all():
        raise ValueError(f"matrix must be a finite 3x3 array, got shape {matrix.shape}.")
    affine = matrix[2, 0] == 0.0 and matrix[2, 1] == 0.0 and matrix[2, 2] == 1.0
    if affine and np.array_equal(matrix[:2, :2], np.eye(2)):
        dx, dy = matrix[0, 2], matrix[1, 2]
        if float(dx).is_integer() and float(dy).is_integer():
            return _integer_shift(image, int(dx), int(dy), border) if dx or dy else image.copy()
    return _warp_rgba(image, matrix, affine=affine, flag=flag)


def _warp_rgba(image: Image, matrix: Matrix, *, affine: bool, flag: int) -> Image:
    """Bilinear OpenCV warp through a reused 4-channel buffer.

    OpenCV's vectorised bilinear path handles 4 channels several times faster than 3, and each
    channel is interpolated independently, so the RGB result is identical to warping the RGB
    array directly. The two RGBA buffers are kept per thread and per size.
    """
    height, width = image.shape[:2]
    buffers = getattr(_BUFFERS, "pair", None)
    if buffers is None or buffers[0].shape[:2] != (height, width):
        buffers = (np.empty((height, width, 4), np.uint8), np.empty((height, width, 4), np.uint8))
        _BUFFERS.pair = buffers
    source, warped = buffers
    cv2.cvtColor(image, cv2.COLOR_RGB2RGBA, dst=source)
    if affine:
        cv2.warpAffine(source, matrix[:2], (width, height), dst=warped, flags=cv2.INTER_LINEAR, borderMode=flag)
    else:
        cv2.warpPerspective(source, matrix, (width, height), dst=warped, flags=cv2.INTER_LINEAR, borderMode=flag)
    return np.asarray(cv2.cvtColor(warped, cv2.COLOR_RGBA2RGB), np.uint8)


def warp_2d(
    image: Image,
    *,
    angle: float = 0.0,
    zoom: float = 1.0,
    translation_x: float = 0.0,
    translation_y: float = 0.0,
    transform_center_x: float = 0.5,
    transform_center_y: float = 0.5,
    border: Border = "replicate",
) -> Image:
    """Apply one frame of Deforum's 2D motion to ``image``.

    Same matrix as Deforum (:func:`motion_matrix_2d`: translate, then rotate/zoom about the
    centre) and the same OpenCV bilinear warp and border handling, so the pixels match Deforum's
    up to OpenCV's interpolation rounding.

    Args:
        image: (H, W, 3) uint8 RGB.
        angle: degrees, positive = counter-clockwise.
        zoom: scale, > 1 zooms in.
        translation_x: pixels, positive moves the picture right.
        translation_y: pixels, positive moves the picture down.
        transform_center_x: centre of rotation/zoom as a fraction of the width.
        transform_center_y: centre of rotation/zoom as a fraction of the height.
        border: "replicate" (repeat edge pixels) or "wrap" (tile).

    Returns:
        A new (H, W, 3) uint8 RGB array of the same size.

    Raises:
        ValueError: ``image`` is not (H, W, 3) uint8.
        SettingsError: unknown ``border`` or a non-finite motion value.
    """
    image = check_image(image)
    height, width = image.shape[:2]
    matrix = motion_matrix_2d(
        width,
        height,
        angle=angle,
        zoom=zoom,
        translation_x=translation_x,
        translation_y=translation_y,
        transform_center_x=transform_center_x,
        transform_center_y=transform_center_y,
    )
    return warp_with_matrix(image, matrix, border=border)


def warp_2d_flip(
    image: Image,
    *,
    theta: float = 0.0,
    phi: float = 0.0,
    gamma: float = 0.0,
    fv: float = 53.0,
    angle: float = 0.0,
    zoom: float = 1.0,
    translation_x: float = 0.0,
    translation_y: float = 0.0,
    transform_center_x: float = 0.5,
    transform_center_y: float = 0.5,
    border: Border = "replicate",
) -> Image:
    """Deforum's 2D motion with the perspective flip on: one warp by ``bM @ R @ T``.

    ``theta``, ``phi``, ``gamma`` and ``fv`` are Deforum's ``perspective_flip_*`` values (see
    :func:`perspective_flip_matrix`); the other arguments are :func:`warp_2d`'s.

    Divergence from Deforum: the translation is kept. Deforum's ``np.matmul(bM, R, T)`` writes
    ``bM @ R`` into ``T`` (numpy's ``out=`` argument), so Deforum ignores translation_x/y
    whenever the perspective flip is enabled in 2D mode.
    """
    image = check_image(image)
    height, width = image.shape[:2]
    motion = motion_matrix_2d(
        width,
        height,
        angle=angle,
        zoom=zoom,
        translation_x=translation_x,
        translation_y=translation_y,
        transform_center_x=transform_center_x,
        transform_center_y=transform_center_y,
    )
    flip = perspective_flip_matrix(theta, phi, gamma, fv, width, height)
    return warp_with_matrix(image, flip @ motion, border=border)
