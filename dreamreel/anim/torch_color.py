"""Colour coherence in torch: :class:`dreamreel.anim.color.ColorMatcher` for (H, W, 3) uint8 tensors.

The mapping is ColorMatcher's (exact mode for "lab" and "hsv", the 8-bit table for "rgb"):
per-channel 256-bin histograms of the image's 8-bit encoding, the level at the same quantile of
the reference, ``np.interp`` semantics, float offsets added to the float LAB/HSV values. The
colour conversions reproduce OpenCV 5's float ones, because which 8-bit bin a pixel falls in
decides its offset, and a value on the other side of a rounding boundary can move a pixel by
several levels:

* RGB -> Lab (``COLOR_RGB2Lab`` on float32 input in 0..1): OpenCV does not evaluate the formulas
  per pixel. It rounds each channel to 1/16384 and interpolates trilinearly (4-bit weights) in a
  33x33x33 table of 16-bit Lab values (sRGB gamma, D65 white point, cube root). The table is read
  from OpenCV once (at its nodes the interpolation is the entry itself), uploaded, and the integer
  interpolation is repeated exactly on the device.
* Lab -> RGB (``COLOR_Lab2RGB``, float): OpenCV's formulas with its reciprocal constants and the
  inverse-gamma cubic spline (1024 segments, built in float32 as OpenCV builds it).
* RGB <-> HSV (float): OpenCV's SIMD formulas (hue from ``fma(d, 60 / (max - min + eps), base)``,
  sector selection by truncation).

All statistics of the reference (present levels and quantiles per channel) are built once per
matcher, on the device. Matching never reads a value back to the host.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np
import torch

from dreamreel.anim.color import ColorSpace, normalize_color_space
from dreamreel.anim.torch_ops import _has_float64, _to_u8, check_tensor_image
from dreamreel.errors import SettingsError

__all__ = ["TorchColorMatcher", "hsv_to_rgb", "lab_to_rgb", "rgb_to_hsv", "rgb_to_lab"]

f32 = np.float32


def _raw(bits: int) -> float:
    return float(np.array([bits], dtype=np.uint64).view(np.float64)[0])


# OpenCV's constants, bit for bit (color_lab.cpp).
_XYZ2SRGB = np.array(
    [
        _raw(0x4009EC804102FF8F), _raw(0xBFF8982A9930BE0E), _raw(0xBFDFE7FF583A53B9),
        _raw(0xBFEF042528AE74F3), _raw(0x3FFE040F23897204), _raw(0x3FA546D3F9E7B80B),
        _raw(0x3FAC7DE5082CF52C), _raw(0xBFCA1E14BDFD2631), _raw(0x3FF0EABEF06B3786),
    ]
).reshape(3, 3)  # fmt: skip
_D65 = (_raw(0x3FEE6A22B3892EE8), 1.0, _raw(0x3FF16B8950763A19))
_LAB_LUT_DIM = 33  # (1 << 5) + 1
_LAB_BASE = 1 << 14
_GAMMA_TAB_SIZE = 1024


@functools.lru_cache(maxsize=1)
def _lab_lut() -> np.ndarray:
    """OpenCV's RGB -> Lab interpolation table, (33, 33, 33, 3) int32 indexed [blue, green, red].

    Read from OpenCV itself: at the grid nodes (channel values k / 32, exactly 512 k sixteen-
    thousandths) all interpolation weight is on one node, so ``cvtColor`` returns the table entry.
    (Rebuilding the table from the formulas in float32 misses ~0.05% of the entries by one unit:
    OpenCV's software cbrt/pow differ from libm's in the last bit.)
    """
    axis = np.arange(_LAB_LUT_DIM, dtype=f32) / f32(_LAB_LUT_DIM - 1)
    blue, green, red = np.meshgrid(axis, axis, axis, indexing="ij")
    grid = np.stack([red, green, blue], axis=-1).reshape(_LAB_LUT_DIM * _LAB_LUT_DIM, _LAB_LUT_DIM, 3)
    lab = np.asarray(cv2.cvtColor(np.ascontiguousarray(grid), cv2.COLOR_RGB2Lab), np.float64)
    base = float(_LAB_BASE)
    table = np.stack([lab[..., 0] * base / 100.0, (lab[..., 1] + 128.0) * base / 256.0,
                      (lab[..., 2] + 128.0) * base / 256.0], axis=-1)  # fmt: skip
    return np.rint(table).astype(np.int32).reshape(_LAB_LUT_DIM, _LAB_LUT_DIM, _LAB_LUT_DIM, 3)


def _apply_inv_gamma(x: float) -> float:
    if x <= 7827 / 2500000:
        return x * (323 / 25)
    return math.pow(x, 1 / (12 / 5)) * (1 + 11 / 200) - 11 / 200


def _spline(values: list[float]) -> np.ndarray:
    """OpenCV's ``splineBuild`` in float32: (n, 4) cubic coefficients through n + 1 samples."""
    f = [f32(v) for v in values]
    n = len(f) - 1
    tab = np.zeros((n, 4), dtype=f32)
    two, three, four = f32(2), f32(3), f32(4)
    for i in range(1, n):
        t = (f[i + 1] - f[i] * two + f[i - 1]) * three
        lo = f32(1) / (four - tab[i - 1, 0])
        tab[i, 0] = lo
        tab[i, 1] = (t - tab[i - 1, 1]) * lo
    cn = f32(0)
    for i in range(n - 1, -1, -1):
        c = tab[i, 1] - tab[i, 0] * cn
        b = f[i + 1] - f[i] - (cn + c * two) / three
        d = (cn - c) / three
        tab[i] = (f[i], b, c, d)
        cn = c
    return tab


@functools.lru_cache(maxsize=1)
def _inv_gamma_spline() -> np.ndarray:
    scale = f32(1) / f32(_GAMMA_TAB_SIZE)
    return _spline([_apply_inv_gamma(float(scale * f32(i))) for i in range(_GAMMA_TAB_SIZE + 1)])


@functools.lru_cache(maxsize=8)
def _lab_device_tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(flat Lab table (33**3, 3) int32, per-level 1/16384 steps (256,) int32, inverse-gamma spline (1024, 4))."""
    unit = np.arange(256, dtype=f32) / f32(255)
    steps = np.rint(unit * f32(_LAB_BASE)).astype(np.int32)
    return (
        torch.as_tensor(_lab_lut().reshape(-1, 3), device=device),
        torch.as_tensor(steps, device=device),
        torch.as_tensor(_inv_gamma_spline(), device=device),
    )


def rgb_to_lab(image: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``cvtColor(image / 255, COLOR_RGB2Lab)`` of a uint8 (H, W, 3) tensor, as float32 (L, a, b)."""
    image = check_tensor_image(image)
    table, steps, _ = _lab_device_tables(image.device)
    levels = steps[image.to(torch.long)]  # (H, W, 3): r, g, b in 1/16384
    cells = levels >> 9
    weights = (levels >> 5) & 15
    red, green, blue = cells.unbind(-1)
    wr, wg, wb = weights.unbind(-1)
    total = torch.zeros(image.shape, dtype=torch.int32, device=image.device)
    dim = _LAB_LUT_DIM
    for db in (0, 1):
        index_b = (blue + db).clamp_(max=dim - 1) * (dim * dim)
        weight_b = wb if db else 16 - wb
        for dg in (0, 1):
            index_bg = index_b + (green + dg).clamp_(max=dim - 1) * dim
            weight_bg = weight_b * (wg if dg else 16 - wg)
            for dr in (0, 1):
                index = index_bg + (red + dr).clamp_(max=dim - 1)
                weight = weight_bg * (wr if dr else 16 - wr)
                total += table[index] * weight[..., None]
    lab = ((total + (1 << 11)) >> 12).to(torch.float32)
    lightness = lab[..., 0] * float(f32(100) / f32(_LAB_BASE))
    ab = lab[..., 1:] * float(f32(256) / f32(_LAB_BASE)) - 128.0
    return torch.cat([lightness[..., None], ab], dim=-1)


def _spline_eval(x: torch.Tensor, tab: torch.Tensor) -> torch.Tensor:
    index = x.to(torch.int32).clamp_(0, tab.shape[0] - 1)
    t = x - index.to(torch.float32)
    c = tab[index.to(torch.long)]
    return ((c[..., 3] * t + c[..., 2]) * t + c[..., 1]) * t + c[..., 0]


@functools.lru_cache(maxsize=1)
def _lab_to_rgb_coefficients() -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(f32(_XYZ2SRGB[row, i] * _D65[i])) for i in range(3)) for row in range(3))


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """OpenCV's float ``cvtColor(lab, COLOR_Lab2RGB)``: (H, W, 3) float32 Lab -> float32 RGB in 0..1."""
    li, ai, bi = lab.unbind(-1)
    low = li <= 8.0
    y_low = li * float(f32(1) / f32(903.3))
    fy_low = y_low * float(f32(7.787)) + float(f32(16) / f32(116))
    fy_high = (li + 16.0) * float(f32(1) / f32(116))
    y_high = fy_high * fy_high * fy_high
    y = torch.where(low, y_low, y_high)
    fy = torch.where(low, fy_low, fy_high)
    xz = []
    for value in (ai * float(f32(1) / f32(500)) + fy, bi * float(f32(-1) / f32(200)) + fy):
        linear = (value - float(f32(16) / f32(116))) * float(f32(1) / f32(7.787))
        xz.append(torch.where(value <= float(f32(6) / f32(29)), linear, value * value * value))
    x, z = xz
    _, _, spline = _lab_device_tables(lab.device)
    channels = []
    for c0, c1, c2 in _lab_to_rgb_coefficients():
        linear_rgb = (c0 * x + (c1 * y + c2 * z)).clamp_(0.0, 1.0)
        channels.append(_spline_eval(linear_rgb * float(_GAMMA_TAB_SIZE), spline))
    return torch.stack(channels, dim=-1)


def _fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | float) -> torch.Tensor:
    """float32 ``a * b + c`` with one rounding where the device has float64."""
    if _has_float64(a.device):
        return (a.to(torch.float64) * b.to(torch.float64) + c).to(torch.float32)
    return a * b + c


def rgb_to_hsv(unit: torch.Tensor) -> torch.Tensor:
    """OpenCV's float ``COLOR_RGB2HSV`` of (H, W, 3) float32 RGB in 0..1: H in degrees, S and V in 0..1."""
    r, g, b = unit.unbind(-1)
    vmax = torch.maximum(torch.maximum(r, g), b)
    vmin = torch.minimum(torch.minimum(r, g), b)
    eps = float(np.finfo(f32).eps)
    diff = vmax - vmin
    s = diff / (vmax.abs() + eps)
    r_max, g_max = r == vmax, g == vmax
    delta = torch.where(r_max, g - b, torch.where(g_max, b - r, r - g))
    zero = torch.zeros_like(r)
    base = torch.where(r_max, torch.where(g < b, zero + 360.0, zero), torch.where(g_max, zero + 120.0, zero + 240.0))
    hue = _fma(delta, 60.0 / (diff + eps), base)
    return torch.stack([hue, s, vmax], dim=-1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """OpenCV's float ``COLOR_HSV2RGB`` (its SIMD path): H in degrees, S, V in 0..1 -> RGB in 0..1."""
    h, s, v = hsv.unbind(-1)
    h = h * float(f32(6) / f32(360))
    pre = torch.trunc(h)
    h = h - pre
    tab0 = v
    tab1 = v * (1.0 - s)
    tab2 = v * (1.0 - s * h)
    tab3 = v * (1.0 - s * (1.0 - h))
    sector = pre - torch.trunc(pre * float(f32(1) / f32(6))) * 6.0
    tabs = torch.stack([tab0, tab1, tab2, tab3], dim=-1)
    index = sector.clamp(-1, 6).to(torch.long) + 1  # sectors -1 (any negative) .. 6 -> table rows
    return torch.gather(tabs, -1, _hsv_pick(hsv.device)[index])


@functools.lru_cache(maxsize=8)
def _hsv_pick(device: torch.device) -> torch.Tensor:
    """Which of tab0..tab3 OpenCV's SIMD HSV -> RGB returns as (r, g, b), per sector -1 (any negative) .. 6."""
    # OpenCV's masks (sector < 2, == 2, == 3, == 4, > 4, ...) select its three outputs, which it
    # stores as (third, second, first) = (r, g, b) for RGB output.
    rows = []
    for sector in range(-1, 7):
        first = 1 if sector < 2 else 3 if sector == 2 else 0 if sector in (3, 4) else 2
        second = 3 if sector < 1 else 0 if sector in (1, 2) else 2 if sector == 3 else 1
        third = 0 if sector < 1 else 2 if sector == 1 else 1 if sector in (2, 3) else 3 if sector == 4 else 0
        rows.append((third, second, first))
    return torch.as_tensor(rows, dtype=torch.long, device=device)


class _Spec:
    def __init__(self, scale: tuple[float, float, float], offset: tuple[float, float, float]) -> None:
        self.scale = scale
        self.offset = offset


_SPECS = {"lab": _Spec((255 / 100, 1, 1), (0, 128, 128)), "hsv": _Spec((0.5, 255, 255), (-0.5, 0, 0))}


class TorchColorMatcher:
    """:class:`dreamreel.anim.color.ColorMatcher` (``exact=True``) for (H, W, 3) uint8 tensors.

    Args:
        reference: (H, W, 3) uint8 tensor; its statistics live on its device.
        space: "lab", "hsv" or "rgb" (case-insensitive).
    """

    def __init__(self, reference: torch.Tensor, space: str = "lab") -> None:
        reference = check_tensor_image(reference, "the colour-coherence reference")
        self.space: ColorSpace = normalize_color_space(space)
        self.device = reference.device
        self._dtype = torch.float64 if _has_float64(self.device) else torch.float32
        self._levels = torch.arange(256, dtype=self._dtype, device=self.device)
        spec = _SPECS.get(self.space, _Spec((1, 1, 1), (0, 0, 0)))
        self._scale = torch.as_tensor(spec.scale, dtype=self._dtype, device=self.device)
        self._scale32 = [float(f32(v)) for v in spec.scale]
        self._offset32 = [float(f32(v)) for v in spec.offset]
        counts = self._histograms(self._encoded(reference)[0])
        total = float(reference.shape[0] * reference.shape[1])
        # Present levels and their quantiles per channel, padded past the end with quantile 2
        # (above any cdf) and the last level, so one searchsorted serves all three channels.
        quantiles = torch.full((3, 257), 2.0, dtype=self._dtype, device=self.device)
        levels = torch.zeros((3, 257), dtype=self._dtype, device=self.device)
        sizes = []
        for channel in range(3):
            present = torch.nonzero(counts[channel] > 0).flatten()  # reference-time sync is fine
            size = int(present.numel())
            sizes.append(size)
            quantiles[channel, :size] = torch.cumsum(counts[channel, present], 0) / total
            levels[channel, :size] = present.to(self._dtype)
            levels[channel, size:] = levels[channel, size - 1]
        self._quantiles, self._present_levels = quantiles, levels
        self._last = torch.as_tensor(sizes, device=self.device) - 1

    def _encoded(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(8-bit encoding as int64 (H, W, 3), float values in the space or None for "rgb")."""
        if self.space == "rgb":
            return image.to(torch.long), None
        if self.space == "lab":
            values = rgb_to_lab(image)
        else:
            unit = image.to(torch.float32) / 255.0
            values = rgb_to_hsv(unit)
        encoded = torch.stack(
            [(values[..., c] * self._scale32[c] + self._offset32[c]).abs().round() for c in range(3)], dim=-1
        )
        return encoded.clamp_(0, 255).to(torch.long), values

    def _histograms(self, encoded: torch.Tensor) -> torch.Tensor:
        flat = (encoded.reshape(-1, 3) + torch.arange(3, device=encoded.device) * 256).flatten()
        counts = torch.zeros(768, dtype=self._dtype, device=encoded.device)
        counts.index_add_(0, flat, torch.ones_like(flat, dtype=self._dtype))
        return counts.reshape(3, 256)

    def _mapped(self, counts: torch.Tensor, strength: float) -> torch.Tensor:
        """(3, 256) target level of every level (``np.interp`` of the cdf on the reference quantiles)."""
        cdf = torch.cumsum(counts, dim=1)
        cdf = cdf / cdf[:, -1:]
        upper = torch.searchsorted(self._quantiles, cdf, right=True)  # number of quantiles <= cdf
        j = (upper - 1).clamp(min=0)
        j1 = torch.minimum(j + 1, self._last[:, None])
        xp0, xp1 = self._quantiles.gather(1, j), self._quantiles.gather(1, j1)
        fp0, fp1 = self._present_levels.gather(1, j), self._present_levels.gather(1, j1)
        slope = (fp1 - fp0) / torch.where(j1 > j, xp1 - xp0, torch.ones_like(xp0))
        inside = slope * (cdf - xp0) + fp0
        mapped = torch.where(upper == 0, self._present_levels[:, :1], inside)
        mapped = torch.where(upper > self._last[:, None], fp0, mapped)
        return self._levels + strength * (mapped - self._levels)

    def match(self, image: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        """``image`` with each channel's histogram mapped onto the reference's (see ColorMatcher.match)."""
        image = check_tensor_image(image)
        strength = float(strength)
        if not (math.isfinite(strength) and 0.0 <= strength <= 1.0):
            raise SettingsError(f"The colour-match strength must be between 0 and 1; got {strength!r}.")
        if image.device != self.device:
            raise ValueError(f"The image is on {image.device}, the reference statistics on {self.device}.")
        encoded, values = self._encoded(image)
        counts = self._histograms(encoded)
        mapped = self._mapped(counts, strength)
        present = counts > 0
        channel = torch.arange(3, device=self.device)
        if values is None:
            table = mapped.round().clamp(0, 255)
            changed = ((table != self._levels) & present).any()
            out = table.to(torch.uint8)[channel, encoded]
            return torch.where(changed, out, image)
        offsets = ((mapped - self._levels) / self._scale[:, None]).to(torch.float32)
        changed = ((offsets != 0) & present).any()
        shifted = values + offsets[channel, encoded]
        rgb = lab_to_rgb(shifted) if self.space == "lab" else hsv_to_rgb(shifted)
        return torch.where(changed, _to_u8(rgb * 255.0), image)
