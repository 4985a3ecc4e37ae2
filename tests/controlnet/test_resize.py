"""Control-map resizing: A1111 resize modes and spellings, exact output sizes, crisp lines."""

from __future__ import annotations

import numpy as np
import pytest

from dreamreel.controlnet.resize import normalize_resize_mode, resize_map, scale_map
from dreamreel.errors import SettingsError


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("just_resize", "just_resize"),
        ("Just Resize", "just_resize"),
        ("Just resize (latent upscale)", "just_resize"),
        ("Crop and Resize", "crop_and_resize"),
        ("Inner Fit (Scale to Fit)", "crop_and_resize"),
        ("crop-and-resize", "crop_and_resize"),
        ("Resize and Fill", "resize_and_fill"),
        ("Outer Fit (Shrink to Fit)", "resize_and_fill"),
        ("fill", "resize_and_fill"),
        (0, "just_resize"),
        (1, "crop_and_resize"),
        (2, "resize_and_fill"),
        (3, "just_resize"),
        ("2", "resize_and_fill"),
    ],
)
def test_resize_mode_spellings(spelling: str | int, expected: str) -> None:
    assert normalize_resize_mode(spelling) == expected


def test_unknown_resize_mode_lists_the_modes_and_suggests() -> None:
    with pytest.raises(SettingsError, match=r"Did you mean.*'Crop and Resize'") as info:
        normalize_resize_mode("Crop and Resise", key="controlnet.0.resize_mode")
    message = str(info.value)
    assert message.startswith("controlnet.0.resize_mode: ")
    assert "resize_and_fill" in message
    assert "Outer Fit (Shrink to Fit)" in message
    with pytest.raises(SettingsError, match="not 0, 1, 2 or 3"):
        normalize_resize_mode(7)
    with pytest.raises(SettingsError):
        normalize_resize_mode(True)


def _marker_map(height: int, width: int, size: int) -> np.ndarray:
    """Black map with a white ``size`` x ``size`` square in the middle."""
    image = np.zeros((height, width, 3), np.uint8)
    top, left = (height - size) // 2, (width - size) // 2
    image[top : top + size, left : left + size] = 255
    return image


def _box(image: np.ndarray) -> tuple[int, int]:
    """(height, width) of the bounding box of pixels brighter than half."""
    ys, xs = np.nonzero(image[:, :, 0] > 127)
    return int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)


def test_just_resize_stretches_to_the_exact_size() -> None:
    out = resize_map(_marker_map(100, 200, 40), 64, 64, "just_resize")
    assert out.shape == (64, 64, 3)
    assert out.dtype == np.uint8
    height, width = _box(out)
    assert height == pytest.approx(2 * width, abs=2)  # 200 -> 64 squeezes x twice as much as y


def test_crop_and_resize_keeps_the_aspect_by_cropping_the_sides() -> None:
    source = np.zeros((100, 200, 3), np.uint8)
    source[:, :50] = (255, 0, 0)  # left quarter red
    source[:, 150:] = (0, 0, 255)  # right quarter blue
    source[30:70, 80:120] = 255  # a 40x40 white square in the middle
    out = resize_map(source, 64, 64, "Inner Fit (Scale to Fit)")
    assert out.shape == (64, 64, 3)
    height, width = _box(out)
    assert height == width  # the square stays square
    assert height == pytest.approx(40 * 0.64, abs=1.5)
    inner = out[:, 1:-1].astype(int)  # the red and blue quarters are cropped away (a 1-px seam at most)
    assert np.all(inner[:, :, 0] == inner[:, :, 1])
    assert np.all(inner[:, :, 2] == inner[:, :, 1])
    stretched = resize_map(source, 64, 64, "just_resize")  # just resize keeps them
    assert np.any((stretched[:, :, 2] == 255) & (stretched[:, :, 0] == 0))


def test_resize_and_fill_pads_with_the_border_colour() -> None:
    source = _marker_map(100, 200, 40)
    out = resize_map(source, 64, 64, "resize_and_fill")
    assert out.shape == (64, 64, 3)
    # 200x100 scaled by 0.32 is 64x32, centred: 16 rows of padding above and below
    assert np.all(out[:16] == 0)
    assert np.all(out[48:] == 0)
    height, width = _box(out)
    assert height == width == pytest.approx(40 * 0.32, abs=1.5)
    grey = np.full((100, 200, 3), 90, np.uint8)
    assert np.all(resize_map(grey, 64, 64, "resize_and_fill") == 90)  # median border colour
    red = resize_map(source, 64, 64, "Outer Fit (Shrink to Fit)", fill=(255, 0, 0))
    assert np.all(red[:16] == (255, 0, 0))
    assert np.array_equal(red[16:48], out[16:48])


def test_tall_maps_crop_rows_and_pad_columns() -> None:
    source = _marker_map(200, 100, 20)
    cropped = resize_map(source, 96, 48, "crop_and_resize")
    assert cropped.shape == (48, 96, 3)
    filled = resize_map(source, 96, 48, "resize_and_fill")
    assert filled.shape == (48, 96, 3)
    assert np.all(filled[:, :36] == 0)  # 100x200 scaled to 24x48, centred in 96 columns
    assert np.all(filled[:, 60:] == 0)


def test_same_size_returns_an_equal_copy_and_grey_maps_get_three_channels() -> None:
    source = _marker_map(48, 64, 10)
    for mode in ("just_resize", "crop_and_resize", "resize_and_fill"):
        out = resize_map(source, 64, 48, mode)
        assert np.array_equal(out, source)
        assert out is not source
    grey = resize_map(source[:, :, 0], 32, 24)
    assert grey.shape == (24, 32, 3)
    assert np.array_equal(grey[:, :, 0], grey[:, :, 2])


def test_thin_lines_survive_shrinking_and_growing() -> None:
    lines = np.zeros((64, 64, 3), np.uint8)
    lines[33] = 255  # a one-pixel line on an odd row: nearest-neighbour halving would drop it
    lines[:, 17] = 255
    half = scale_map(lines, 32, 32)
    assert half[16, :, 0].max() >= 120
    assert half[:, 8, 0].max() >= 120
    double = scale_map(lines, 128, 128)
    assert double[66:68, :, 0].min() >= 120  # the row grows to about two pixels, still bright
    mixed = scale_map(lines, 128, 32)  # x grows, y shrinks: one pass per axis
    assert mixed.shape == (32, 128, 3)
    assert mixed[16, :, 0].max() >= 120


def test_bad_sizes_and_images_are_value_errors() -> None:
    source = _marker_map(8, 8, 2)
    with pytest.raises(ValueError, match="positive"):
        resize_map(source, 0, 8)
    with pytest.raises(ValueError, match="positive"):
        resize_map(source, 8.5, 8)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uint8"):
        resize_map(source.astype(np.float32), 8, 8)
    with pytest.raises(ValueError, match="shape"):
        resize_map(np.zeros((8, 8, 4), np.uint8), 8, 8)
