"""Frame interpolation with RIFE: load a Practical-RIFE ``flownet.pkl`` and make in-between frames.

:func:`load_rife` reads the file (only with ``torch.load(..., weights_only=True)``), recognises the
version from its tensors (:mod:`dreamreel.finish.rife_arch`) and returns a :class:`Rife`;
:meth:`Rife.interpolate` makes the frame at time ``t`` between two ``(H, W, 3)`` uint8 RGB images,
:meth:`Rife.interpolate_many` several at once and :meth:`Rife.interpolate_tensor` works on batches
of float tensors. :func:`in_betweens` makes the ``x - 1`` frames between one pair for a frame-rate
multiplier ``x``, holding instead of morphing across a hard cut (:func:`is_scene_cut`).

Versions (the families of :mod:`dreamreel.finish.rife_arch`): 4.6 (Deforum's "RIFE v4.6"), 4.7
(also 4.8 and 4.9, ComfyUI's recommended rife47 / rife49), 4.22 (also 4.21, 4.23) and 4.25 (also
4.26). The file decides; ``version=`` only insists on one.

How a pair is processed (as Practical-RIFE and Deforum do it):
    * the frames are padded at the right and bottom with black to a multiple of
      ``max(128, 128 / scale)`` pixels and the result is cropped back;
    * ``scale`` is the resolution the flow is estimated at: 1.0, or 0.5 when both sides are at
      least 2048 pixels (Deforum's "UHD" rule); 0.25, 2.0 and 4.0 may be asked for;
    * float16 on CUDA (``dtype="auto"``), float32 elsewhere.

Differences from Practical-RIFE:
    * the output is rounded to the nearest level; Practical-RIFE and Deforum truncate
      (``(x * 255).byte()``), which makes their frames up to one level darker;
    * ``t = 0`` and ``t = 1`` give exact copies of the two frames without running the network;
    * the scene-cut test is dreamreel's own (:func:`scene_similarity`), and across a cut the first
      half of the in-betweens holds the first frame and the second half the second frame (Deforum
      and Practical-RIFE repeat the first frame; ``hold="first"`` does that);
    * Practical-RIFE's static-frame skip (SSIM above 0.996) is not done.
"""

from __future__ import annotations

import logging
import math
import operator
import pickle
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, SupportsIndex

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from dreamreel.errors import SettingsError, check_local_path
from dreamreel.finish.rife_arch import (
    FAMILIES,
    VERSION_ALIASES,
    IFNet,
    RifeArch,
    UnknownArchitecture,
    detect_arch,
    expected_shapes,
    normalize_version,
)
from dreamreel.generation import Image

logger = logging.getLogger(__name__)

__all__ = [
    "SCALES",
    "SCENE_CUT_THRESHOLD",
    "UHD_SIZE",
    "Rife",
    "auto_scale",
    "in_between_times",
    "in_betweens",
    "is_scene_cut",
    "load_rife",
    "pad_frames",
    "pad_multiple",
    "read_flownet",
    "scene_similarity",
]

SCALES: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
"""The flow resolutions Practical-RIFE accepts (``--scale``)."""

UHD_SIZE = 2048
"""Frames whose sides are both at least this many pixels get ``scale=0.5`` by default (Deforum's rule)."""

SCENE_CUT_THRESHOLD = 0.2
"""A pair whose :func:`scene_similarity` is below this is a hard cut: in-betweens hold, not morph.

Measured on test pictures: two unrelated ones score about -0.1 ... 0.2; the same picture moved by 4%
of its width 0.7 ... 0.8, zoomed by 5% or turned by 5 degrees 0.8 ... 0.95, darkened by 30% 0.88. A
missed cut costs one morphed frame, a false one a visible hold in smooth motion, so the threshold is
low. Deforum and Practical-RIFE cut below the same number with their (windowed) SSIM of 32x32
thumbnails.
"""

THUMBNAIL = 32
"""Side of the grey thumbnails :func:`scene_similarity` compares."""

VERSIONS_TEXT = "4.6, 4.7-4.9, 4.21-4.23 and 4.25/4.26"

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")

Hold = Literal["nearest", "first"]


# --------------------------------------------------------------------------------------------- times and sizes


def in_between_times(multiplier: SupportsIndex, *, key: str = "frame_interpolation_x_amount") -> list[float]:
    """The times of the frames a multiplier puts between two frames: ``1/x, 2/x, ..., (x-1)/x``.

    Raises:
        SettingsError: ``multiplier`` is not an integer of at least 2 (named by ``key``).
    """
    try:
        count = -1 if isinstance(multiplier, bool) else operator.index(multiplier)
    except TypeError:
        count = -1
    if count < 2:
        raise SettingsError(
            f"the interpolation multiplier must be a whole number of at least 2; got {multiplier!r}", key=key
        )
    return [k / count for k in range(1, count)]


def auto_scale(height: int, width: int) -> float:
    """Deforum's choice of flow resolution: 0.5 when both sides are at least :data:`UHD_SIZE`, else 1.0."""
    return 0.5 if height >= UHD_SIZE and width >= UHD_SIZE else 1.0


def pad_multiple(scale: float) -> int:
    """The frame size the network runs at is a multiple of this: ``max(128, 128 / scale)``.

    That is Practical-RIFE's and Deforum's padding; it is at least what every supported version
    needs (4 times the coarsest block's downscale, ``64 / scale`` for 4.25).
    """
    return max(128, int(128 / scale))


def _check_scale(scale: float) -> float:
    value = float(scale)
    if value not in SCALES:
        raise SettingsError(
            f"the RIFE scale must be one of {', '.join(str(s) for s in SCALES)}; got {scale!r}", key="scale"
        )
    return value


def pad_frames(frames: torch.Tensor, multiple: int) -> torch.Tensor:
    """``(N, C, H, W)`` padded with zeros at the right and bottom to multiples of ``multiple``."""
    height, width = frames.shape[-2:]
    bottom = -height % multiple
    right = -width % multiple
    if bottom == 0 and right == 0:
        return frames
    return F.pad(frames, (0, right, 0, bottom))


# --------------------------------------------------------------------------------------------- scene cuts


def _check_image(image: object, name: str) -> Image:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be an (H, W, 3) uint8 numpy array; got a {type(image).__name__}.")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(f"{name} must be an (H, W, 3) uint8 RGB image; got shape {image.shape} dtype {image.dtype}.")
    return image


def _check_pair(a: object, b: object) -> tuple[Image, Image]:
    first, second = _check_image(a, "the first frame"), _check_image(b, "the second frame")
    if first.shape != second.shape:
        raise ValueError(
            f"both frames must have the same size; got {first.shape[1]}x{first.shape[0]} "
            f"and {second.shape[1]}x{second.shape[0]}."
        )
    return first, second


def _thumbnail(image: Image) -> np.ndarray:
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (THUMBNAIL, THUMBNAIL), interpolation=cv2.INTER_AREA)
    return small.astype(np.float64) / 255.0


def scene_similarity(a: Image, b: Image) -> float:
    """How alike two frames are, from 1 (the same) down to about -1 (one the negative of the other).

    The SSIM formula over the whole of two 32x32 grey thumbnails (area-averaged): the product of a
    brightness term ``(2 mu_a mu_b + c1) / (mu_a^2 + mu_b^2 + c1)`` and a structure term
    ``(2 cov + c2) / (var_a + var_b + c2)`` with ``c1 = 0.01^2``, ``c2 = 0.03^2`` on 0..1 values. One
    window instead of SSIM's sliding ones: cheap (well under a millisecond for a 4K pair after the
    resize) and forgiving of motion, since a thumbnail pixel covers 1/32 of the frame.
    """
    first, second = _check_pair(a, b)
    x, y = _thumbnail(first), _thumbnail(second)
    mean_x, mean_y = float(x.mean()), float(y.mean())
    var_x, var_y = float(x.var()), float(y.var())
    cov = float(((x - mean_x) * (y - mean_y)).mean())
    c1, c2 = 0.01**2, 0.03**2
    brightness = (2 * mean_x * mean_y + c1) / (mean_x**2 + mean_y**2 + c1)
    structure = (2 * cov + c2) / (var_x + var_y + c2)
    return brightness * structure


def is_scene_cut(a: Image, b: Image, threshold: float = SCENE_CUT_THRESHOLD) -> bool:
    """Whether ``b`` starts a new shot: :func:`scene_similarity` below ``threshold``."""
    return scene_similarity(a, b) < threshold


# --------------------------------------------------------------------------------------------- loading


def _refusal(path: Path, needed: str) -> str:
    return (
        f"{path}: this pickle file asks to run code while it is being loaded (it needs the Python global "
        f"{needed}), and dreamreel refuses to do that, because a pickle can run any program on your machine. "
        "A RIFE flownet.pkl holds nothing but tensors; download it again from the Practical-RIFE release "
        "(or the ComfyUI / Deforum model folder it came from)."
    )


def read_flownet(path: str | Path, *, key: str = "--model") -> dict[str, torch.Tensor]:
    """Read a ``flownet.pkl`` (or ComfyUI's ``rife4x.pth``) into a state dict on the CPU, safely.

    The file is opened only with ``torch.load(path, map_location="cpu", weights_only=True)`` (with
    ``mmap=True`` for files in torch's zip format), which refuses any pickle that would run code. A
    ``state_dict`` entry is unwrapped, ``module.`` prefixes (Practical-RIFE saves the
    DistributedDataParallel wrapper's names) are stripped and values that are not tensors dropped.

    Raises:
        SettingsError: the file is missing, unsafe, unreadable or holds no tensors (named by ``key``).
    """
    checked = check_local_path(str(path), key=key, what="RIFE flownet.pkl")
    try:
        data: Any = torch.load(checked, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(checked))
    except Exception as exc:  # the restricted unpickler runs no code, but garbage input can make it raise anything
        found = _GLOBAL.search(str(exc))
        if found:
            raise SettingsError(_refusal(checked, found.group(1)), key=key) from None
        reason = "" if isinstance(exc, pickle.UnpicklingError) else f" ({_first_line(exc)})"
        raise SettingsError(
            f"{checked}: not a readable PyTorch file{reason}; it is damaged, an incomplete download or not a RIFE "
            "flownet.pkl at all. Download it again.",
            key=key,
        ) from None
    while isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise SettingsError(
            f"{checked}: expected a dictionary of tensors (a RIFE flownet.pkl), found a {type(data).__name__}.",
            key=key,
        )
    state = {
        str(name).removeprefix("module."): value for name, value in data.items() if isinstance(value, torch.Tensor)
    }
    if not state:
        raise SettingsError(f"{checked}: holds no tensors; it is not a RIFE flownet.pkl.", key=key)
    return state


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _device(device: str | torch.device) -> torch.device:
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise SettingsError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps", key="--device") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError(f"the device {device} was asked for, but torch sees no CUDA device", key="--device")
    if target.type == "mps" and not torch.backends.mps.is_available():
        raise SettingsError(f"the device {device} was asked for, but torch sees no MPS device", key="--device")
    return target


def _dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16}
    if isinstance(dtype, torch.dtype):
        chosen = dtype
    elif str(dtype).lower() == "auto":
        chosen = torch.float16 if device.type == "cuda" else torch.float32
    elif str(dtype).lower() in names:
        chosen = names[str(dtype).lower()]
    else:
        raise SettingsError(f"unknown RIFE dtype {dtype!r}; use auto, float32 or float16", key="dtype")
    if chosen not in (torch.float32, torch.float16):
        raise SettingsError(f"RIFE runs in float32 or float16, not {chosen}", key="dtype")
    if chosen == torch.float16 and device.type != "cuda":
        raise SettingsError(f"float16 RIFE runs on CUDA only; on {device} use float32 (or auto)", key="dtype")
    return chosen


def load_rife(
    path: str | Path,
    *,
    version: str | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "auto",
    scale: float | None = None,
    key: str = "--model",
    version_key: str = "--rife-version",
) -> Rife:
    """Load a Practical-RIFE ``flownet.pkl`` and recognise its version.

    Args:
        path: the ``flownet.pkl`` (``train_log/flownet.pkl`` of a Practical-RIFE release, Deforum's
            ``RIFE46.pkl``, ComfyUI's ``rife49.pth``).
        version: insist on a release (``"4.6"``, ``"4.9"``, ``"4.26"``); None to take the file's.
        device: where the network runs.
        dtype: ``"auto"`` (float16 on CUDA, else float32), ``"float32"`` or ``"float16"`` (CUDA only).
        scale: the flow resolution, one of :data:`SCALES`; None to choose per frame size
            (:func:`auto_scale`).
        key: the option or settings key that named the file, for error messages.
        version_key: the option or settings key that named ``version``, for error messages.

    Raises:
        SettingsError: the file is missing, unsafe or unreadable, or not the network of a version
            dreamreel runs (the message says what it holds), or the device / dtype / scale is wrong.
    """
    if version is not None:
        try:
            normalize_version(version)
        except ValueError as exc:
            raise SettingsError(str(exc), key=version_key) from None
    target = _device(device)
    chosen = _dtype(dtype, target)
    if scale is not None:
        _check_scale(scale)
    state = read_flownet(path, key=key)
    source = Path(path).expanduser()
    try:
        arch = detect_arch({name: tuple(value.shape) for name, value in state.items()}, version)
    except ValueError as exc:
        advice = (
            ""
            if isinstance(exc, UnknownArchitecture) and exc.refused_variant
            else f" dreamreel runs the flownet.pkl of Practical-RIFE {VERSIONS_TEXT} (and the 4.22.lite, 4.25.heavy "
            "and 4.26.heavy files); give one of those"
            + (", or leave the version out to take the file's" if version is not None else "")
            + "."
        )
        raise SettingsError(f"{source}: not a RIFE network dreamreel can run: {exc}.{advice}", key=key) from None
    names = expected_shapes(arch)
    ignored = sorted(set(state) - set(names))
    with torch.device("meta"):
        net = IFNet(arch)
    weights = {name: state[name].to(device=target, dtype=chosen, copy=True) for name in names}
    net.load_state_dict(weights, strict=True, assign=True)
    net.eval().requires_grad_(False)
    if ignored:
        logger.info("%s: ignoring %d tensors inference does not use (%s ...)", source, len(ignored), ignored[0])
    if arch.variant == "custom":
        logger.warning(
            "%s: the layers are those of RIFE %s, the sizes those of no published release (%s has %s); "
            "running it with its own sizes",
            source,
            arch.family,
            arch.family,
            FAMILIES[arch.family].describe().split("(", 1)[1].rstrip(")"),
        )
    logger.info("loaded %s from %s on %s (%s)", arch.describe(), source, target, str(chosen).removeprefix("torch."))
    return Rife(net, path=source, device=target, dtype=chosen, scale=scale, ignored_keys=tuple(ignored))


# --------------------------------------------------------------------------------------------- inference


class Rife:
    """A loaded RIFE network; make it with :func:`load_rife`.

    Attributes:
        arch: the network's :class:`~dreamreel.finish.rife_arch.RifeArch`.
        version: its family: ``"4.6"``, ``"4.7"``, ``"4.22"`` or ``"4.25"``.
        releases: the Practical-RIFE releases with that network (``("4.7", "4.8", "4.9")``).
        path: the file it came from.
        device, dtype: where and in what precision it runs.
        scale: the flow resolution, or None to choose per frame size (:func:`auto_scale`).
        ignored_keys: tensors of the file that inference does not use.
    """

    def __init__(
        self,
        net: IFNet,
        *,
        path: Path | None = None,
        device: torch.device,
        dtype: torch.dtype,
        scale: float | None = None,
        ignored_keys: tuple[str, ...] = (),
    ) -> None:
        self.net = net
        self.arch: RifeArch = net.arch
        self.version = net.arch.family
        self.releases = tuple(release for release, family in VERSION_ALIASES.items() if family == self.version)
        self.path = path
        self.device = device
        self.dtype = dtype
        self.scale = None if scale is None else _check_scale(scale)
        self.ignored_keys = ignored_keys

    def __repr__(self) -> str:
        return f"Rife({self.arch.describe()}, device={self.device}, dtype={str(self.dtype).removeprefix('torch.')})"

    def scale_for(self, height: int, width: int, scale: float | None = None) -> float:
        """The flow resolution for a frame size: ``scale``, else the one given at load, else :func:`auto_scale`."""
        if scale is not None:
            return _check_scale(scale)
        return self.scale if self.scale is not None else auto_scale(height, width)

    def _times(self, t: float | Sequence[float] | torch.Tensor, count: int) -> torch.Tensor:
        if isinstance(t, torch.Tensor):
            times = t.detach().to(device=self.device, dtype=torch.float32).flatten()
        elif isinstance(t, int | float | np.floating | np.integer):
            times = torch.full((1,), float(t), device=self.device)
        else:
            times = torch.tensor([float(v) for v in t], dtype=torch.float32, device=self.device)
        if times.numel() == 1:
            times = times.expand(count)
        if times.numel() != count:
            raise ValueError(f"give one time or one per frame pair; got {times.numel()} times for {count} pairs.")
        values = times.cpu().tolist()
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
            raise ValueError(f"interpolation times must be between 0 and 1; got {values}.")
        return times

    @torch.inference_mode()
    def interpolate_tensor(
        self, a: torch.Tensor, b: torch.Tensor, t: float | Sequence[float] | torch.Tensor, *, scale: float | None = None
    ) -> torch.Tensor:
        """The frames at times ``t`` between batches of frame pairs.

        Args:
            a, b: ``(N, 3, H, W)`` float RGB in 0..1 (clamped), on any device; any H and W.
            t: one time for all pairs or one per pair (a sequence or an ``(N,)`` tensor), 0..1.
            scale: the flow resolution (one of :data:`SCALES`); None for the Rife's own.

        Returns:
            ``(N, 3, H, W)`` float32 in 0..1 on the Rife's device. A pair at ``t == 0`` gives ``a``,
            at ``t == 1`` gives ``b``, exactly.
        """
        if a.shape != b.shape or a.dim() != 4 or a.shape[1] != 3 or 0 in a.shape:
            raise ValueError(
                f"give two (N, 3, H, W) batches of the same shape; got {tuple(a.shape)} and {tuple(b.shape)}."
            )
        count, _, height, width = a.shape
        times = self._times(t, count)
        chosen = self.scale_for(height, width, scale)
        first = a.to(device=self.device, dtype=torch.float32).clamp(0.0, 1.0)
        second = b.to(device=self.device, dtype=torch.float32).clamp(0.0, 1.0)
        inside = (times > 0) & (times < 1)
        if not bool(inside.any()):
            return torch.where((times == 0).view(count, 1, 1, 1), first, second)
        multiple = pad_multiple(chosen)
        img0 = pad_frames(first.to(self.dtype), multiple)
        img1 = pad_frames(second.to(self.dtype), multiple)
        out = self.net(img0, img1, times.view(count, 1, 1, 1).to(self.dtype), chosen)
        out = out[:, :, :height, :width].float().clamp_(0.0, 1.0)
        out = torch.where((times == 0).view(count, 1, 1, 1), first, out)
        return torch.where((times == 1).view(count, 1, 1, 1), second, out)

    def interpolate(self, a: Image, b: Image, t: float, *, scale: float | None = None) -> Image:
        """The frame at time ``t`` (0..1) between ``a`` (t=0) and ``b`` (t=1), both (H, W, 3) uint8 RGB.

        ``t`` 0 and 1 return copies of ``a`` and ``b``; ``scale`` as in :meth:`interpolate_tensor`.
        """
        return self.interpolate_many(a, b, [t], scale=scale)[0]

    def interpolate_many(
        self, a: Image, b: Image, times: Sequence[float], *, scale: float | None = None, batch_size: int = 4
    ) -> list[Image]:
        """The frames at several times between one pair, run ``batch_size`` at a time.

        Returns:
            One (H, W, 3) uint8 RGB image per time, in the order given.
        """
        first, second = _check_pair(a, b)
        values = [float(t) for t in times]
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
            raise ValueError(f"interpolation times must be between 0 and 1; got {values}.")
        results: list[Image | None] = [first.copy() if v == 0 else second.copy() if v == 1 else None for v in values]
        todo = [index for index, v in enumerate(values) if results[index] is None]
        if not todo:
            return [image for image in results if image is not None]
        x0, x1 = _to_tensor(first, self.device), _to_tensor(second, self.device)
        for start in range(0, len(todo), max(1, batch_size)):
            chunk = todo[start : start + max(1, batch_size)]
            n = len(chunk)
            out = self.interpolate_tensor(
                x0.expand(n, -1, -1, -1), x1.expand(n, -1, -1, -1), [values[i] for i in chunk], scale=scale
            )
            for index, image in zip(chunk, _to_images(out), strict=True):
                results[index] = image
        return [image for image in results if image is not None]


def _to_tensor(image: Image, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in 0..1 on ``device``."""
    host = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0)
    return host.to(device).float().div_(255.0)


def _to_images(frames: torch.Tensor) -> list[Image]:
    """(N, 3, H, W) float in 0..1 -> N (H, W, 3) uint8 images, rounded to the nearest level."""
    levels = (frames * 255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [np.ascontiguousarray(levels[i]) for i in range(levels.shape[0])]


def in_betweens(
    rife: Rife,
    a: Image,
    b: Image,
    multiplier: SupportsIndex,
    *,
    threshold: float = SCENE_CUT_THRESHOLD,
    scale: float | None = None,
    hold: Hold = "nearest",
    key: str = "frame_interpolation_x_amount",
) -> list[Image]:
    """The ``multiplier - 1`` frames between ``a`` and ``b`` (at :func:`in_between_times`).

    Across a hard cut (:func:`is_scene_cut` with ``threshold``; a threshold below -1 never cuts) the
    in-betweens are copies: with ``hold="nearest"`` those before the middle (``t < 0.5``) are ``a``
    and the rest ``b``, so the cut falls where it falls in time; with ``hold="first"`` all are
    ``a``, as in Deforum and Practical-RIFE.

    Raises:
        SettingsError: ``multiplier`` is not an integer of at least 2 (named by ``key``).
    """
    times = in_between_times(multiplier, key=key)
    first, second = _check_pair(a, b)
    if hold not in ("nearest", "first"):
        raise ValueError(f"hold must be 'nearest' or 'first'; got {hold!r}.")
    if is_scene_cut(first, second, threshold):
        logger.debug("scene cut: %d in-between frames hold instead of morphing", len(times))
        return [first.copy() if hold == "first" or t < 0.5 else second.copy() for t in times]
    return rife.interpolate_many(first, second, times, scale=scale)
