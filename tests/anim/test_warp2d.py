"""Deforum's 2D warp: matrix, directions, perspective flip, borders, validation, speed."""

from __future__ import annotations

import math
import time

import cv2
import numpy as np
import pytest

from dreamreel.anim.warp2d import (
    check_image,
    motion_matrix_2d,
    perspective_flip_matrix,
    warp_2d,
    warp_2d_flip,
    warp_with_matrix,
)
from dreamreel.errors import SettingsError

H, W = 96, 128


def _textured(height: int = H, width: int = W, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 1.5)


def _assert_within_one_level(out: np.ndarray, expected: np.ndarray) -> None:
    """The same warp, as far as OpenCV builds agree with themselves.

    OpenCV's fixed-point paths (warpAffine vs warpPerspective, 3 vs 4 channels, SIMD per border mode) round
    interpolated values differently: within one level, and in OpenCV 4.x a few values in 10,000 by two. A wrong
    matrix moves the whole picture and fails both bounds.
    """
    assert out.shape == expected.shape
    diff = np.abs(out.astype(np.int16) - expected.astype(np.int16))
    where = np.unravel_index(diff.argmax(), diff.shape)
    assert int(diff.max()) <= 2, f"max difference {int(diff.max())} levels at {where}"
    assert (diff > 1).mean() <= 1e-4, f"max difference {int(diff.max())} levels at {(diff > 1).sum()} values"


def _dot(x: int, y: int, height: int = H, width: int = W, radius: int = 1) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[y - radius : y + radius + 1, x - radius : x + radius + 1] = 255
    return image


def _centroid(image: np.ndarray) -> tuple[float, float]:
    mass = image[..., 0].astype(np.float64)
    ys, xs = np.mgrid[: image.shape[0], : image.shape[1]]
    return float((mass * xs).sum() / mass.sum()), float((mass * ys).sum() / mass.sum())


def _deforum_matrix(width, height, angle, zoom, tx, ty, cx, cy) -> np.ndarray:
    """Deforum's anim_frame_warp_2d matrix, built the way Deforum builds it (not with dreamreel)."""
    rot = np.vstack([cv2.getRotationMatrix2D((width * cx, height * cy), angle, zoom), [0, 0, 1]])
    trans = np.vstack([np.float32([[1, 0, tx], [0, 1, ty]]), [0, 0, 1]])
    return np.matmul(rot, trans)


def _deforum_flip(width, height, theta, phi, gamma, fv) -> np.ndarray:
    """Deforum's perspective-flip bM, written out independently from §5.2 of the semantics notes."""
    half = np.deg2rad(fv / 2.0)
    d = np.sqrt(width**2 + height**2)
    side = d / np.cos(half)
    h = d / (2.0 * np.sin(half))
    n, f = h - d / 2.0, h + d / 2.0
    p = np.eye(4)
    p[0, 0] = p[1, 1] = 1.0 / np.tan(half)
    p[2, 2] = -(f + n) / (f - n)
    p[2, 3] = -(2.0 * f * n) / (f - n)
    p[3, 2] = -1.0
    p[3, 3] = 0.0
    t = np.eye(4)
    t[2, 3] = -h
    a, b, c = np.deg2rad([phi, gamma, theta])
    rx = np.array([[1, 0, 0, 0], [0, np.cos(a), -np.sin(a), 0], [0, np.sin(a), np.cos(a), 0], [0, 0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b), 0], [0, 1, 0, 0], [-np.sin(b), 0, np.cos(b), 0], [0, 0, 0, 1]])
    rz = np.array([[np.cos(c), -np.sin(c), 0, 0], [np.sin(c), np.cos(c), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    full = p @ t @ rx @ ry @ rz
    pts_in = np.array([[[-width / 2, height / 2, 0], [width / 2, height / 2, 0], [width / 2, -height / 2, 0]]])
    pts_in = np.concatenate([pts_in, [[[-width / 2, -height / 2, 0]]]], axis=1)
    pts_out = cv2.perspectiveTransform(pts_in, full)
    src = (pts_in[0, :, :2] + [width / 2, height / 2]).astype(np.float32)
    dst = ((pts_out[0, :, :2] + 1.0) * (0.5 * side)).astype(np.float32)
    m33 = cv2.getPerspectiveTransform(src, dst)
    post = np.vstack([np.float32([[1, 0, (width - side) / 2], [0, 1, (height - side) / 2]]), [0, 0, 1]])
    return np.matmul(m33, post)


def test_identity_is_exact_and_a_copy() -> None:
    image = _textured()
    out = warp_2d(image)
    assert np.array_equal(out, image)
    assert out is not image
    assert np.array_equal(warp_2d(image, angle=360.0 * 0, zoom=1.0, border="wrap"), image)


@pytest.mark.parametrize("flip", [False, True])
def test_translation_moves_a_dot_right_and_down(flip: bool) -> None:
    image = _dot(40, 30)
    if flip:  # regression for Deforum's np.matmul(out=) bug: the translation must survive the flip
        out = warp_2d_flip(image, theta=0.0, phi=0.0, gamma=0.0, translation_x=10.0)
    else:
        out = warp_2d(image, translation_x=10.0)
    x, y = _centroid(out)
    assert x == pytest.approx(50.0, abs=0.05)
    assert y == pytest.approx(30.0, abs=0.05)
    x, y = _centroid(warp_2d(image, translation_y=7.0))
    assert (x, y) == pytest.approx((40.0, 37.0), abs=0.05)


def test_positive_angle_turns_counter_clockwise() -> None:
    # a dot to the right of the centre goes up (counter-clockwise on a y-down screen)
    cx, cy = W / 2, H / 2
    image = _dot(int(cx) + 30, int(cy))
    x, y = _centroid(warp_2d(image, angle=90.0))
    assert x == pytest.approx(cx, abs=0.6)
    assert y == pytest.approx(cy - 30, abs=0.6)
    x, y = _centroid(warp_2d(image, angle=-90.0))
    assert y == pytest.approx(cy + 30, abs=0.6)


def test_zoom_two_doubles_distances_from_the_centre() -> None:
    cx, cy = W * 0.5, H * 0.5
    for dx, dy in [(10, 0), (0, -12), (-8, 6)]:
        image = _dot(int(cx) + dx, int(cy) + dy)
        x, y = _centroid(warp_2d(image, zoom=2.0))
        assert x - cx == pytest.approx(2 * dx, abs=0.6)
        assert y - cy == pytest.approx(2 * dy, abs=0.6)


def test_transform_center_is_a_fraction_of_the_size() -> None:
    image = _dot(32, 24)  # exactly at (0.25 W, 0.25 H): a fixed point of a zoom about it
    x, y = _centroid(warp_2d(image, zoom=1.5, angle=20.0, transform_center_x=0.25, transform_center_y=0.25))
    assert (x, y) == pytest.approx((32.0, 24.0), abs=0.3)


def test_matrix_is_deforums_r_times_t() -> None:
    for params in [(0, 1, 0, 0, 0.5, 0.5), (13.5, 1.07, 3.25, -2.5, 0.5, 0.5), (-40, 0.8, -11, 6, 0.2, 0.9)]:
        angle, zoom, tx, ty, cx, cy = params
        ours = motion_matrix_2d(
            W, H, angle=angle, zoom=zoom, translation_x=tx, translation_y=ty, transform_center_x=cx,
            transform_center_y=cy,
        )  # fmt: skip
        assert ours.dtype == np.float64
        assert ours.shape == (3, 3)
        np.testing.assert_allclose(ours, _deforum_matrix(W, H, *params), rtol=0, atol=1e-9)


@pytest.mark.parametrize("border", ["replicate", "wrap"])
def test_pixels_equal_cv2_warp_perspective_with_deforums_matrix(border: str) -> None:
    image = _textured(seed=1)
    flag = cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_WRAP
    for params in [
        (7.0, 1.04, 3.5, -2.25, 0.5, 0.5),
        (-25.0, 0.9, -6.0, 4.0, 0.3, 0.7),
        (0.0, 1.0, 5.0, -3.0, 0.5, 0.5),
    ]:
        angle, zoom, tx, ty, cx, cy = params
        expected = cv2.warpPerspective(image, _deforum_matrix(W, H, *params), (W, H), borderMode=flag)
        out = warp_2d(
            image, angle=angle, zoom=zoom, translation_x=tx, translation_y=ty, transform_center_x=cx,
            transform_center_y=cy, border=border,
        )  # fmt: skip
        assert out.dtype == np.uint8
        assert out.shape == image.shape
        _assert_within_one_level(out, expected)


def test_flip_matrix_matches_deforums_and_is_identity_at_zero() -> None:
    for theta, phi, gamma, fv in [(0, 0, 0, 53), (10, 0, 0, 53), (0, 15, -5, 70), (-20, 8, 12, 120)]:
        ours = perspective_flip_matrix(theta, phi, gamma, fv, W, H)
        np.testing.assert_allclose(ours, _deforum_flip(W, H, theta, phi, gamma, fv), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(perspective_flip_matrix(0, 0, 0, 53, W, H), np.eye(3), atol=1e-4)


@pytest.mark.parametrize("border", ["replicate", "wrap"])
def test_flip_warp_equals_cv2_with_bm_r_t(border: str) -> None:
    image = _textured(seed=2)
    flag = cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_WRAP
    matrix = _deforum_flip(W, H, 12, -6, 9, 53) @ _deforum_matrix(W, H, 5.0, 1.02, 4.0, -3.0, 0.5, 0.5)
    expected = cv2.warpPerspective(image, matrix, (W, H), borderMode=flag)
    out = warp_2d_flip(
        image, theta=12, phi=-6, gamma=9, fv=53, angle=5.0, zoom=1.02, translation_x=4.0, translation_y=-3.0,
        border=border,
    )  # fmt: skip
    _assert_within_one_level(out, expected)


def test_flip_theta_is_a_clockwise_roll_with_deforums_off_centre_pivot() -> None:
    matrix = perspective_flip_matrix(90.0, 0.0, 0.0, 53.0, 512, 512)
    # linear part: (1, 0) -> (0, 1), i.e. right becomes down: clockwise on a y-down screen
    np.testing.assert_allclose(matrix[:2, :2] / matrix[2, 2], [[0, -1], [1, 0]], atol=1e-6)
    centre = perspective_flip_matrix(5.0, 0.0, 0.0, 53.0, 512, 512) @ [256.0, 256.0, 1.0]
    moved = centre[:2] / centre[2] - 256.0
    assert 15.0 < np.hypot(*moved) < 21.0  # Deforum's M33 @ shift order: the pivot is not the centre


def test_wrap_and_replicate_differ_only_where_the_border_shows() -> None:
    image = _textured(seed=3)
    wrap = warp_2d(image, translation_x=10.5, border="wrap")
    replicate = warp_2d(image, translation_x=10.5, border="replicate")
    # the exposed strip on the left: wrap shows the right edge, replicate smears column 0
    assert not np.array_equal(wrap[:, :10], replicate[:, :10])
    assert np.array_equal(replicate[:, :10], np.repeat(image[:, :1], 10, axis=1))
    _assert_within_one_level(wrap[:, 12:], replicate[:, 12:])
    # whole-pixel wrap is a roll
    assert np.array_equal(
        warp_2d(image, translation_x=-7, translation_y=5, border="wrap"), np.roll(image, (5, -7), (0, 1))
    )


@pytest.mark.parametrize("border", ["replicate", "wrap"])
@pytest.mark.parametrize("shift", [(3, 0), (-5, 2), (0, -4), (200, -150)])
def test_whole_pixel_shortcut_equals_cv2(border: str, shift: tuple[int, int]) -> None:
    image = _textured(seed=4)
    flag = cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_WRAP
    matrix = np.array([[1.0, 0, shift[0]], [0, 1, shift[1]], [0, 0, 1]])
    expected = cv2.warpPerspective(image, matrix, (W, H), borderMode=flag)
    _assert_within_one_level(warp_with_matrix(image, matrix, border=border), expected)


def test_non_contiguous_input_is_accepted() -> None:
    image = _textured(height=H, width=2 * W)[:, ::2]
    assert not image.flags.c_contiguous
    assert np.array_equal(warp_2d(image, translation_x=0.5), warp_2d(image.copy(), translation_x=0.5))


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        (np.zeros((H, W), np.uint8), "(96, 128)"),
        (np.zeros((H, W, 4), np.uint8), "(96, 128, 4)"),
        (np.zeros((H, W, 3), np.float32), "float32"),
        (np.zeros((0, W, 3), np.uint8), "(0, 128, 3)"),
        ([[0, 0, 0]], "list"),
    ],
)
def test_bad_images_raise_value_error_naming_the_shape(bad: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=r"shape|dtype|numpy") as info:
        warp_2d(bad)  # type: ignore[arg-type]
    assert fragment in str(info.value)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)|uint8"):
        check_image(bad)


def test_bad_border_and_values_are_settings_errors() -> None:
    image = _textured()
    with pytest.raises(SettingsError, match=r"border.*'replicate'") as info:
        warp_2d(image, border="wrapp")  # type: ignore[arg-type]
    assert "Did you mean 'wrap'" in str(info.value)
    with pytest.raises(SettingsError, match="zoom"):
        warp_2d(image, zoom=math.inf)
    with pytest.raises(SettingsError, match="perspective_flip_fv"):
        warp_2d_flip(image, fv=180.0)


def test_speed_512() -> None:
    image = _textured(512, 512)
    warp_2d(image, angle=1.0, zoom=1.01, translation_x=0.5)
    times = []
    for _ in range(30):
        start = time.perf_counter()
        warp_2d(image, angle=1.0, zoom=1.01, translation_x=0.5)
        times.append(time.perf_counter() - start)
    # about 1 ms on an idle 2-core machine; the bound is loose for busy CI runners
    assert min(times) < 0.006


def test_the_one_level_tolerance_still_catches_a_wrong_matrix() -> None:
    image = _textured(seed=1)
    params = (7.0, 1.04, 3.5, -2.25, 0.5, 0.5)
    expected = cv2.warpPerspective(image, _deforum_matrix(W, H, *params), (W, H), borderMode=cv2.BORDER_REPLICATE)
    for angle, zoom, tx, ty in [(7.5, 1.04, 3.5, -2.25), (7.0, 1.05, 3.5, -2.25), (7.0, 1.04, 4.5, -2.25)]:
        out = warp_2d(image, angle=angle, zoom=zoom, translation_x=tx, translation_y=ty, border="replicate")
        with pytest.raises(AssertionError, match="max difference"):
            _assert_within_one_level(out, expected)
