"""Upscaling frames with users' upscaler files (ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT, ...) or a plain resize.

An upscaler is named the way AUTOMATIC1111 names it (:func:`find_upscaler`): a path to a file, a file
name in an A1111 install's ``models/ESRGAN``, ``models/RealESRGAN``, ``models/SwinIR``, ``models/HAT``,
``models/DAT``, ... folder (any case, with or without extension), one of A1111's display names
(``"R-ESRGAN 4x+"`` is ``RealESRGAN_x4plus.pth``) or Deforum's ``realesrgan-x4plus``-style names.
``"lanczos"``, ``"none"`` and None are the plain resize (:class:`LanczosUpscaler`).

Loading (:func:`load_upscaler`) never runs code from a file: ``.safetensors`` files are read with
safetensors, and pickles (``.pth``, ``.pt``, ``.ckpt``) only with ``torch.load(path,
map_location="cpu", weights_only=True)`` (memory-mapped when the file allows it). TorchScript
archives are refused (they are programs, not weights). spandrel detects the architecture and its
hyperparameters from the state dict (``ModelLoader().load_from_state_dict``); the non-commercial
architectures of ``spandrel_extra_arches`` are never installed here, and refused if something else in
the process installed them. Only super-resolution models of RGB
images are accepted: inpainting, 1x restoration and face-restoration models are refused. Every
problem a user can cause is a :class:`~dreamreel.errors.SettingsError` naming the option (``key``),
the file, what was wrong and what would be right.

Running (:meth:`Upscaler.upscale`) follows A1111's ``Upscaler.upscale``: the model runs at its own
scale, again while the image is still smaller than the target (at most 3 passes; at a factor below 1
not at all), and a Lanczos resize gives the requested size. Unlike A1111, whose target is floored to a
multiple of 8, the result is exactly ``H * scale`` x ``W * scale``, rounded (halves up; :func:`target_size`).

Tiling keeps memory bounded at any frame size: the model sees tiles of at most ``tile`` x ``tile``
input pixels (512 by default) that overlap by ``overlap`` pixels (32). In an overlap the two tiles are
blended with a linear ramp over its middle half; the outer quarter next to each tile's own edge, where
the tile's output is spoiled by the padding its convolutions saw, gets no weight. A model whose
receptive field reaches at most ``overlap // 4`` input pixels therefore gives the untiled result, up to
rounding. Tile outputs are blended one row of tiles at a time on the model's device, into a float32
band one tile row high (``tile * scale`` rows of the output's width), whose finished rows are copied
to the uint8 result on the host; so the device holds one tile's activations and that band whatever the
frame's height, and the host nothing but the result. On a CUDA out-of-memory error the tile (and with
it the band) is halved and the pass restarted, down to :data:`MIN_TILE`.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import pickle
import re
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from PIL import Image as PILImage

from dreamreel.errors import RenderError, SettingsError, did_you_mean, refuse_url
from dreamreel.generation import Image

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

__all__ = [
    "A1111_FOLDERS",
    "A1111_NAMES",
    "DEFAULT_OVERLAP",
    "DEFAULT_TILE",
    "MIN_TILE",
    "PLAIN_NAMES",
    "UPSCALER_SUFFIXES",
    "ImageUpscaler",
    "LanczosUpscaler",
    "Upscaler",
    "UpscalerDtype",
    "blend_weights",
    "find_upscaler",
    "is_plain",
    "lanczos_resize",
    "load_upscaler",
    "read_state_dict",
    "target_size",
    "tile_starts",
]

UpscalerDtype = Literal["auto", "fp32", "fp16", "bf16"]

DEFAULT_TILE = 512
"""Input pixels per tile side (ComfyUI's default)."""
DEFAULT_OVERLAP = 32
"""Input pixels two neighbouring tiles share (ComfyUI's default)."""
MIN_TILE = 64
"""Out-of-memory halving stops here; a tile this small that still does not fit is an error."""
MAX_PASSES = 3
"""Model passes per upscale at most, as in A1111."""

PLAIN_NAMES: tuple[str, ...] = ("lanczos", "none")
"""Names (any case) that mean the plain Lanczos resize; None means it too."""

UPSCALER_SUFFIXES: tuple[str, ...] = (".pth", ".pt", ".ckpt", ".safetensors")
PICKLE_SUFFIXES: tuple[str, ...] = (".pth", ".pt", ".ckpt")

A1111_FOLDERS: tuple[str, ...] = (
    "ESRGAN",
    "RealESRGAN",
    "SwinIR",
    "HAT",
    "DAT",
    "ScuNET",
    "BSRGAN",
    "upscale_models",
)
"""The folders under ``<models_dir>/models`` searched for upscalers, in this order (A1111's, and
ComfyUI's ``upscale_models``). Sub-folders are searched too."""

A1111_NAMES: dict[str, str] = {
    # A1111's Real-ESRGAN list (modules/realesrgan_model.py): display name -> file stem
    "R-ESRGAN General 4xV3": "realesr-general-x4v3",
    "R-ESRGAN General WDN 4xV3": "realesr-general-wdn-x4v3",
    "R-ESRGAN AnimeVideo": "realesr-animevideov3",
    "R-ESRGAN 4x+": "RealESRGAN_x4plus",
    "R-ESRGAN 4x+ Anime6B": "RealESRGAN_x4plus_anime_6B",
    "R-ESRGAN 2x+": "RealESRGAN_x2plus",
    # A1111's built-in downloads
    "SwinIR 4x": "SwinIR_4x",
    "DAT x2": "DAT_x2",
    "DAT x3": "DAT_x3",
    "DAT x4": "DAT_x4",
    "ScuNET GAN": "ScuNET",
    "ScuNET PSNR": "ScuNET_PSNR",
    # Deforum's realesrgan-ncnn-vulkan model names (r_upscale_model)
    "realesrgan-x4plus": "RealESRGAN_x4plus",
    "realesrgan-x4plus-anime": "RealESRGAN_x4plus_anime_6B",
}
"""Names A1111 and Deforum show for upscalers, and the file stem each one means."""

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def is_plain(name: str | Path | None) -> bool:
    """Whether ``name`` asks for no model: None, ``"lanczos"`` or ``"none"`` (any case)."""
    return name is None or (isinstance(name, str) and name.strip().lower() in PLAIN_NAMES)


def target_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The (height, width) an upscale by ``scale`` gives: ``H * scale`` and ``W * scale`` rounded, at least 1.

    Halves round up (21 x 2.5 = 52.5 gives 53), unlike Python's ``round``, which rounds them to even.

    Raises:
        SettingsError: ``scale`` is not a finite number above 0 (key ``scale``).
    """
    value = float(scale) if isinstance(scale, numbers.Real) and not isinstance(scale, bool) else math.nan
    if not (math.isfinite(value) and value > 0):
        raise SettingsError(f"the upscale factor must be a number above 0, not {scale!r}", key="scale")
    return max(1, math.floor(height * value + 0.5)), max(1, math.floor(width * value + 0.5))


def _check_image(image: Image) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got shape {shape} and dtype {dtype}")


def lanczos_resize(image: Image, height: int, width: int) -> Image:
    """Resize an (H, W, 3) uint8 RGB image with PIL's Lanczos filter (anti-aliased when shrinking)."""
    _check_image(image)
    if image.shape[:2] == (height, width):
        return image
    resized = PILImage.fromarray(image).resize((width, height), resample=PILImage.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.uint8)


class ImageUpscaler(Protocol):
    """What the finishing stage needs from an upscaler (:class:`Upscaler` or :class:`LanczosUpscaler`)."""

    @property
    def name(self) -> str:
        """A short name for logs and the manifest."""
        ...

    @property
    def scale(self) -> int | None:
        """The model's native factor; None for the plain resize, for which every factor costs the same."""
        ...

    def upscale(self, image: Image, scale: float) -> Image:
        """Return ``image`` enlarged to exactly :func:`target_size` of its size and ``scale``."""
        ...


@dataclass(frozen=True)
class LanczosUpscaler:
    """The plain resize: PIL's Lanczos filter to the target size ("lanczos", "none" or no model)."""

    name: str = "lanczos"

    @property
    def scale(self) -> int | None:
        """None: a plain resize has no native factor."""
        return None

    def upscale(self, image: Image, scale: float) -> Image:
        """Resize ``image`` to :func:`target_size` of its size and ``scale``."""
        _check_image(image)
        height, width = target_size(image.shape[0], image.shape[1], scale)
        return lanczos_resize(image, height, width)


# --- finding ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    path: Path
    folder: str  # the A1111 folder it was found under, e.g. "ESRGAN"
    rel: str  # relative to that folder, posix, with the suffix

    @property
    def stem_rel(self) -> str:
        return self.rel[: -len(self.path.suffix)] if self.path.suffix else self.rel

    def labels(self) -> set[str]:
        rel, stem_rel = self.rel, self.stem_rel
        names = {self.path.name, self.path.stem, rel, stem_rel, f"{self.folder}/{rel}", f"{self.folder}/{stem_rel}"}
        return {name.lower() for name in names}


def _folders(models_dir: Path) -> list[tuple[str, Path]]:
    root = Path(models_dir).expanduser() / "models"
    return [(name, root / name) for name in A1111_FOLDERS if (root / name).is_dir()]


def _walk(name: str, folder: Path) -> Iterator[_Candidate]:
    for here, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base = Path(here)
        for file in sorted(files):
            if Path(file).suffix.lower() in UPSCALER_SUFFIXES and not file.startswith("."):
                yield _Candidate(base / file, name, (base / file).relative_to(folder).as_posix())


def _matches(wanted: str, candidates: Sequence[_Candidate]) -> list[_Candidate]:
    wanted = wanted.replace("\\", "/").strip("/").lower()
    found = [c for c in candidates if wanted in c.labels()]
    # "x" names x.pth and x.safetensors side by side: take the safetensors file
    safe = [c for c in found if c.path.suffix.lower() == ".safetensors"]
    if len(found) > 1 and len(safe) == 1 and all(c.path.with_suffix("") == safe[0].path.with_suffix("") for c in found):
        return safe
    return found


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.startswith("~") or Path(text).suffix.lower() in UPSCALER_SUFFIXES


def find_upscaler(name: str | Path, models_dir: Path | None = None, *, key: str = "--model") -> Path:
    """The upscaler file ``name`` means: a path, or a name looked up in an A1111 install.

    ``name`` is tried as a path first. Otherwise, with ``models_dir`` (the A1111 folder that holds
    ``models/``), it is matched case-insensitively against the files in :data:`A1111_FOLDERS`: the file
    name with or without extension, its path relative to the folder, or ``Folder/name``
    (``"ESRGAN/4x-UltraSharp"``); then as one of :data:`A1111_NAMES`. Nothing is loaded.

    Raises:
        SettingsError: a URL, a missing path, a directory or a wrong file type; a name that matches
            nothing (with the names that were found and the closest ones) or several files.
    """
    if isinstance(name, Path):
        return _check_file(name, str(name), key)
    text = name.strip()
    if not text:
        raise SettingsError("no upscaler was named; give a file, a model name, or lanczos", key=key)
    refuse_url(text, key=key, what="upscaler")
    direct = Path(text).expanduser()
    if direct.exists() or (_looks_like_path(text) and models_dir is None):
        return _check_file(direct, text, key)
    if models_dir is None:
        raise SettingsError(
            f"the upscaler {text!r} is not a file here. Give the path of an upscaler file (.pth, .pt, .ckpt or "
            ".safetensors), lanczos for a plain resize, or --models-dir with the folder of an AUTOMATIC1111 "
            f"install to look it up by name in models/{', models/'.join(A1111_FOLDERS[:5])}",
            key=key,
        )
    folders = _folders(models_dir)
    candidates = [c for folder_name, folder in folders for c in _walk(folder_name, folder)]
    found = _matches(text, candidates)
    if not found:
        alias = {k.lower(): v for k, v in A1111_NAMES.items()}.get(text.lower())
        if alias is not None:
            found = _matches(alias, candidates)
    if len(found) == 1:
        logger.debug("upscaler %r is %s", text, found[0].path)
        return found[0].path
    if found:
        listing = ", ".join(f"{c.folder}/{c.rel}" for c in found)
        raise SettingsError(
            f"the upscaler name {text!r} matches several files: {listing}. Give one as Folder/name or as a path",
            key=key,
        )
    raise _not_found(text, Path(models_dir), folders, candidates, key)


def _not_found(
    text: str, models_dir: Path, folders: list[tuple[str, Path]], candidates: list[_Candidate], key: str
) -> SettingsError:
    searched = ", ".join(f"models/{name}" for name in A1111_FOLDERS)
    if not (models_dir.expanduser() / "models").is_dir():
        return SettingsError(
            f"the upscaler {text!r} was not found: {models_dir} has no models folder. --models-dir must be the "
            f"AUTOMATIC1111 folder itself (stable-diffusion-webui, the one that holds models/), where upscalers "
            f"live in {searched}",
            key=key,
        )
    names = sorted({c.path.stem for c in candidates}, key=str.lower)
    stems = {stem.lower() for stem in names}
    aliases = [alias for alias, stem in A1111_NAMES.items() if stem.lower() in stems]
    hint = did_you_mean(text.lower(), {n.lower() for n in [*names, *aliases]})
    for choice in [*names, *aliases]:
        hint = hint.replace(repr(choice.lower()), repr(choice))
    if names:
        shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        there = f"found {len(names)} upscaler(s) in {', '.join(f'models/{n}' for n, _ in folders)}: {shown}."
    else:
        there = f"no upscaler files (.pth, .pt, .ckpt, .safetensors) are in {models_dir}/models ({searched})."
    return SettingsError(
        f"the upscaler {text!r} was not found; {there}{hint} Give a file name (any case, with or without "
        "extension), a path, or lanczos for a plain resize",
        key=key,
    )


def _check_file(path: Path, text: str, key: str) -> Path:
    path = path.expanduser()
    if path.is_dir():
        raise SettingsError(
            f"{text} is a folder; give the upscaler file itself (.pth, .pt, .ckpt, .safetensors)", key=key
        )
    if not path.exists():
        raise SettingsError(
            f"the upscaler file {text} does not exist. Give the path of an upscaler file, or a name with --models-dir",
            key=key,
        )
    if path.suffix.lower() not in UPSCALER_SUFFIXES:
        raise SettingsError(
            f"{text} is not an upscaler file: expected a .pth, .pt, .ckpt or .safetensors file, not "
            f"{path.suffix or 'a file without extension'}",
            key=key,
        )
    return path


# --- loading ------------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with ``constants.pkl`` and compiled code beside the weights."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") or name == "constants.pkl" for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _load_pickle(path: Path, key: str) -> Any:
    import torch

    if _is_torchscript(path):
        raise SettingsError(
            f"{path} is a TorchScript file: a compiled program, not a file of weights, and dreamreel does not run "
            "programs from model files. Use the .pth or .safetensors release of this upscaler",
            key=key,
        )
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            # files saved before PyTorch 1.6 (the original ESRGAN models) cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler runs no code here, but garbage input can make it raise anything
        found = _GLOBAL.search(str(exc))
        if found:
            raise SettingsError(
                f"{path} is a pickle that asks to run code while it is loaded (it needs the Python global "
                f"{found.group(1)}), and dreamreel refuses, because a pickle can run any program on your machine. "
                "Upscaler files hold plain tensors; use the .safetensors version of this model, or, only if you fully "
                "trust where the file came from, convert it once with torch.load(..., weights_only=False) and "
                "safetensors.torch.save_file",
                key=key,
            ) from None
        reason = "" if isinstance(exc, pickle.UnpicklingError | EOFError) else f" ({_first_line(exc)})"
        raise SettingsError(
            f"{path} is not a readable PyTorch weights file{reason}: it is damaged, an incomplete download or not "
            "a model at all. Download it again, or use its .safetensors version",
            key=key,
        ) from None


def read_state_dict(path: Path, *, key: str = "--model") -> dict[str, Any]:
    """Read an upscaler file's tensors without running code from it.

    ``.safetensors`` files are read with safetensors; ``.pth``, ``.pt`` and ``.ckpt`` files only with
    ``torch.load(path, map_location="cpu", weights_only=True)``, memory-mapped when the file is in
    PyTorch's zip format. Wrappers (``params_ema``, ``params``, ``state_dict``, ...) are left for
    spandrel to unwrap.

    Raises:
        SettingsError: the file is missing, of an unknown type, TorchScript, damaged, not a dictionary,
            or a pickle that needs a Python global (refused before anything runs).
    """
    path = _check_file(Path(path), str(path), key)
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state: Any = load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise SettingsError(
                f"{path} is not a valid safetensors file ({_first_line(exc)}); it is damaged or an incomplete "
                "download. Download it again",
                key=key,
            ) from None
    else:
        state = _load_pickle(path, key)
    if not isinstance(state, dict) or not state:
        kind = "an empty dictionary" if isinstance(state, dict) else type(state).__name__
        raise SettingsError(
            f"{path} holds {kind}, not a dictionary of tensors (a state dict) as upscaler files do", key=key
        )
    return state


def _keys_preview(state: dict[str, Any]) -> str:
    keys = [str(k) for k in state]
    return f"{len(keys)} entries: {', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''}"


def _spandrel() -> Any:
    """spandrel, imported when first needed (it imports torch and every architecture)."""
    import spandrel  # type: ignore[import-untyped]

    return spandrel


def _unsupported(path: Path, state: dict[str, Any], key: str) -> SettingsError:
    spandrel = _spandrel()
    state = spandrel.canonicalize_state_dict(state)  # what spandrel looked at: params_ema, state_dict, ... unwrapped
    flat = " ".join(str(k) for k in state)
    if "model.diffusion_model." in flat or "first_stage_model." in flat:
        what = "it is a Stable Diffusion checkpoint, not an upscaler"
    elif "lora_" in flat or ".lora." in flat:
        what = "it is a LoRA, not an upscaler"
    else:
        what = f"spandrel {spandrel.__version__} does not recognise its architecture ({_keys_preview(state)})"
    own = (a.architecture for a in spandrel.MAIN_REGISTRY if type(a.architecture).__module__.startswith("spandrel."))
    known = ", ".join(sorted((arch.name for arch in own), key=str.lower))
    return SettingsError(
        f"{path} cannot be used as an upscaler: {what}. Known architectures: {known}. Architectures of "
        "spandrel-extra-arches (non-commercial licences, such as SRFormer or CodeFormer) are not loaded",
        key=key,
    )


def _descriptor(path: Path, state: dict[str, Any], key: str) -> Any:
    """spandrel's ImageModelDescriptor for a state dict, on the CPU in fp32, after every refusal."""
    spandrel = _spandrel()

    try:
        descriptor = spandrel.ModelLoader(device="cpu").load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise _unsupported(path, state, key) from None
    except Exception as exc:  # detected, but the tensors do not fit the architecture's shapes
        raise SettingsError(
            f"{path} looks like a spandrel-supported upscaler but its weights do not fit the architecture "
            f"({_first_line(exc)}); the file is damaged or a variant spandrel {spandrel.__version__} does not know",
            key=key,
        ) from None
    arch = descriptor.architecture.name
    if not type(descriptor.architecture).__module__.startswith("spandrel."):
        raise SettingsError(
            f"{path} is a {arch} model, an architecture of {type(descriptor.architecture).__module__.split('.')[0]} "
            "(spandrel-extra-arches, under non-commercial or copyleft licences), which dreamreel does not use. Give "
            "a model of an architecture spandrel itself supports, such as ESRGAN, Real-ESRGAN, SwinIR, HAT or DAT",
            key=key,
        )
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise SettingsError(
            f"{path} is a {arch} {descriptor.purpose.lower()} model (it fills masked areas), not an upscaler. Give "
            "a super-resolution model such as ESRGAN, Real-ESRGAN, SwinIR, HAT or DAT",
            key=key,
        )
    if descriptor.purpose == "FaceSR":
        raise SettingsError(
            f"{path} is a {arch} face-restoration model, made for aligned face crops, not whole frames. Give a "
            "super-resolution model such as ESRGAN, Real-ESRGAN, SwinIR, HAT or DAT",
            key=key,
        )
    if descriptor.purpose != "SR" or descriptor.scale < 2:
        raise SettingsError(
            f"{path} is a 1x {arch} restoration model (denoising, deblurring or JPEG clean-up): it does not "
            "enlarge. Give a super-resolution model (2x, 3x, 4x, ...), or lanczos for a plain resize",
            key=key,
        )
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise SettingsError(
            f"{path} is a {arch} model for {descriptor.input_channels}-channel images to "
            f"{descriptor.output_channels}-channel ones; frames are RGB, so give a model for 3 channels",
            key=key,
        )
    return descriptor


def _pick_dtype(requested: str, device: torch.device, descriptor: Any) -> torch.dtype:
    """fp16 (then bf16) on CUDA when the architecture supports it, fp32 elsewhere; or what was asked for."""
    import torch

    arch = descriptor.architecture.name
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if requested == "auto":
        if device.type == "cuda" and descriptor.supports_half:
            return torch.float16
        if device.type == "cuda" and descriptor.supports_bfloat16 and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if requested not in table:
        raise SettingsError(
            f"the upscaler precision {requested!r} is not one of auto, fp32, fp16, bf16."
            + did_you_mean(requested, table),
            key="dtype",
        )
    dtype = table[requested]
    if dtype != torch.float32 and device.type == "cpu":
        raise SettingsError(f"{requested} upscaling needs a GPU; on the CPU use fp32 or auto", key="dtype")
    if dtype == torch.float16 and not descriptor.supports_half:
        raise SettingsError(f"{arch} upscalers do not work in fp16; use auto, bf16 or fp32", key="dtype")
    if dtype == torch.bfloat16 and not descriptor.supports_bfloat16:
        raise SettingsError(f"{arch} upscalers do not work in bf16; use auto, fp16 or fp32", key="dtype")
    return dtype


def _device(requested: str | torch.device) -> torch.device:
    import torch

    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError) as exc:
        raise SettingsError(f"{requested!r} is not a device; use cuda, cuda:N, mps or cpu", key="--device") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError(
            f"{requested!r} was asked for, but this machine has no CUDA GPU that PyTorch can use; use --device cpu",
            key="--device",
        )
    return device


def load_upscaler(
    name_or_path: str | Path | None,
    *,
    models_dir: Path | None = None,
    device: str | torch.device = "cpu",
    dtype: UpscalerDtype = "auto",
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    key: str = "--model",
) -> Upscaler | LanczosUpscaler:
    """Find and load an upscaler: a model file (see :func:`find_upscaler`) or the plain Lanczos resize.

    Args:
        name_or_path: a path, a name in the A1111 install ``models_dir``, or ``"lanczos"``/``"none"``/None.
        models_dir: the AUTOMATIC1111 folder that holds ``models/``, for names.
        device: where the model runs.
        dtype: ``"auto"`` is fp16 on CUDA when the architecture supports it (else bf16 when both the GPU
            and the architecture do), fp32 elsewhere; ``"fp16"``/``"bf16"`` need a GPU.
        tile: input pixels per tile side (halved on CUDA out-of-memory errors).
        overlap: input pixels shared by neighbouring tiles.
        key: the option or settings key the name came from, for error messages.

    Raises:
        SettingsError: see :func:`find_upscaler`, :func:`read_state_dict`; an architecture spandrel does
            not know; a model that is not an RGB super-resolution model; an unusable precision or device.
    """
    if is_plain(name_or_path):
        return LanczosUpscaler()
    assert name_or_path is not None  # is_plain(None) is True
    path = find_upscaler(name_or_path, models_dir, key=key)
    return Upscaler.from_file(path, device=device, dtype=dtype, tile=tile, overlap=overlap, key=key)


# --- tiled inference ----------------------------------------------------------------------------


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where tiles of ``tile`` pixels start along a side of ``length`` pixels.

    Neighbours overlap by at least ``overlap``; the last tile ends at the edge (it may overlap its
    neighbour by more), so every tile has the full size unless the side is shorter than one tile.
    """
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def blend_weights(length: int, starts: Sequence[int], size: int, overlap: int) -> list[np.ndarray]:
    """Per-tile 1D blend weights along one side (any unit: input or output pixels), summing to 1.

    The tile starting at ``s`` covers ``[s, min(s + size, length))``. Next to an edge it shares with
    a neighbour its weight is 0 over ``overlap // 4`` pixels, then rises linearly over the middle half
    of the overlap to 1; at the image's own border it is 1. The weights are then divided by their
    sum, so in a plain overlap the two ramps add up to 1 and elsewhere the result is an average.
    """
    margin = overlap // 4
    ramp = overlap - 2 * margin
    rising = np.ones(size, np.float64)
    rising[:margin] = 0.0
    if ramp > 0:
        rising[margin : margin + ramp] = (np.arange(ramp) + 0.5) / ramp
    raw = []
    for start in starts:
        end = min(start + size, length)
        weight = np.ones(end - start, np.float64)
        if start > 0:
            weight *= rising[: end - start]
        if end < length:
            weight *= rising[: end - start][::-1]
        raw.append(weight)
    total = np.zeros(length, np.float64)
    for start, weight in zip(starts, raw, strict=True):
        total[start : start + len(weight)] += weight
    if np.any(total <= 0):  # cannot happen while overlap < size / 2; guards a misuse
        raise ValueError(f"tiles of {size} with overlap {overlap} leave pixels of a {length}-pixel side uncovered")
    return [
        (weight / total[start : start + len(weight)]).astype(np.float32)
        for start, weight in zip(starts, raw, strict=True)
    ]


class Upscaler:
    """A loaded spandrel super-resolution model that upscales (H, W, 3) uint8 RGB frames, tiled.

    Made by :func:`load_upscaler`. ``descriptor`` is spandrel's ``ImageModelDescriptor``, already on
    its device and in its precision.
    """

    def __init__(
        self,
        descriptor: Any,
        *,
        name: str,
        path: Path | None = None,
        tile: int = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
    ) -> None:
        multiple = max(1, int(descriptor.size_requirements.multiple_of))
        rounded = tile // multiple * multiple  # tiles need no padding to the model's size multiple
        if rounded < 16 or not 0 <= overlap < rounded // 2:
            raise SettingsError(
                f"upscaler tiles need a size of at least 16 pixels and an overlap from 0 to under half the tile; "
                f"got tile {tile} and overlap {overlap}",
                key="tile",
            )
        self.descriptor = descriptor
        self._name = name
        self.path = path
        self.tile = rounded
        self.overlap = overlap
        self.architecture: str = descriptor.architecture.name
        self.tiled = descriptor.tiling.name != "INTERNAL"
        if descriptor.tiling.name == "DISCOURAGED":
            logger.info("%s models may show faint tile seams; a larger tile helps", self.architecture)

    @classmethod
    def from_file(
        cls,
        path: Path,
        *,
        device: str | torch.device = "cpu",
        dtype: UpscalerDtype = "auto",
        tile: int = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
        key: str = "--model",
    ) -> Upscaler:
        """Load the upscaler file ``path`` (no name lookup; see :func:`load_upscaler` for the arguments).

        Raises:
            SettingsError: see :func:`load_upscaler`.
        """
        path = Path(path)
        torch_device = _device(device)
        state = read_state_dict(path, key=key)
        descriptor = _descriptor(path, state, key)
        del state
        torch_dtype = _pick_dtype(dtype, torch_device, descriptor)
        descriptor.to(torch_device, torch_dtype)
        descriptor.eval()
        upscaler = cls(descriptor, name=path.stem, path=path, tile=tile, overlap=overlap)
        logger.info("upscaler %s: %s", path, upscaler.description)
        return upscaler

    @property
    def name(self) -> str:
        """The file's stem (``RealESRGAN_x4plus``)."""
        return self._name

    @property
    def scale(self) -> int:
        """The model's native factor (2, 3, 4, ...)."""
        return int(self.descriptor.scale)

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        device: torch.device = self.descriptor.device
        return device

    @property
    def dtype(self) -> torch.dtype:
        """The model's precision."""
        dtype: torch.dtype = self.descriptor.dtype
        return dtype

    @property
    def description(self) -> str:
        """``"ESRGAN 4x (64nf, 23nb), fp16 on cuda"``."""
        tags = ", ".join(self.descriptor.tags)
        precision = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get(str(self.dtype).split(".")[-1])
        return f"{self.architecture} {self.scale}x ({tags}), {precision} on {self.device}"

    def passes(self, height: int, width: int, scale: float) -> int:
        """How many times the model runs to upscale an image by ``scale`` (as A1111 does).

        None at a factor below 1; once at 1 and up; again while the result is still smaller than the
        target, up to :data:`MAX_PASSES`. A Lanczos resize then gives the exact size.
        """
        out_h, out_w = target_size(height, width, scale)
        if scale < 1:
            return 0
        count, h, w = 1, height * self.scale, width * self.scale
        while count < MAX_PASSES and (h < out_h or w < out_w):
            count, h, w = count + 1, h * self.scale, w * self.scale
        return count

    def upscale(self, image: Image, scale: float) -> Image:
        """Upscale an (H, W, 3) uint8 RGB image to exactly :func:`target_size` of its size and ``scale``.

        The model runs :meth:`passes` times at its native scale, then PIL's Lanczos filter resizes
        to the target (it anti-aliases when shrinking, so a 4x model asked for 2x gives a clean
        downscale of its 4x result).
        """
        _check_image(image)
        height, width = target_size(image.shape[0], image.shape[1], scale)
        for _ in range(self.passes(image.shape[0], image.shape[1], scale)):
            image = self.upscale_native(image)
        return lanczos_resize(image, height, width)

    def upscale_native(self, image: Image) -> Image:
        """One pass of the model: an (H, W, 3) uint8 image to (H * scale, W * scale, 3), tiled.

        On a CUDA out-of-memory error the tile is halved (the overlap kept under a quarter of it)
        and the pass restarted, down to :data:`MIN_TILE`.

        Raises:
            RenderError: the GPU ran out of memory even with the smallest tile.
        """
        import torch

        _check_image(image)
        tile, overlap = self.tile, self.overlap
        while True:
            try:
                return self._tiled(image, tile, overlap)
            except torch.cuda.OutOfMemoryError:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                multiple = max(1, int(self.descriptor.size_requirements.multiple_of))
                smaller = tile // 2 // multiple * multiple
                if smaller < MIN_TILE or not self.tiled:
                    raise RenderError(
                        f"the GPU ran out of memory upscaling a {image.shape[1]}x{image.shape[0]} frame with "
                        f"{self.name} even in tiles of {tile} pixels. Free GPU memory, use a smaller model, or "
                        "run the upscaler with --device cpu"
                    ) from None
                logger.warning("upscaler out of GPU memory with %d-pixel tiles; retrying with %d", tile, smaller)
                tile, overlap = smaller, min(overlap, smaller // 4)

    def _forward(self, tile: torch.Tensor) -> torch.Tensor:
        """Run the model on one (1, 3, h, w) tile in [0, 1] (spandrel pads to its size requirements)."""
        out: torch.Tensor = self.descriptor(tile)
        return out

    def _tiled(self, image: Image, tile: int, overlap: int) -> Image:
        import torch

        with torch.inference_mode():  # the model's outputs are inference tensors; blend them in place
            return self._tiled_inference(image, tile, overlap)

    def _tiled_inference(self, image: Image, tile: int, overlap: int) -> Image:
        import torch

        height, width = image.shape[:2]
        scale, device = self.scale, self.device
        out_h, out_w = height * scale, width * scale
        if not self.tiled:
            tile = max(height, width)
        ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
        weights_y = blend_weights(out_h, [y * scale for y in ys], tile * scale, overlap * scale)
        weights_x = blend_weights(out_w, [x * scale for x in xs], tile * scale, overlap * scale)
        wy = [torch.from_numpy(w).to(device)[:, None] for w in weights_y]
        wx = [torch.from_numpy(w).to(device) for w in weights_x]
        source = torch.from_numpy(np.require(image, requirements=["C", "W"]))  # a read-only frame is copied
        result = np.empty((out_h, out_w, 3), np.uint8)
        target = torch.from_numpy(result)
        # output rows [done, done + pending rows) that a later row of tiles may still add to, on the device
        pending = torch.zeros(3, 0, out_w, device=device)
        done = 0
        for row, y0 in enumerate(ys):
            y1 = min(y0 + tile, height)
            end = y1 * scale
            if end - done > pending.shape[1]:
                grow = torch.zeros(3, end - done - pending.shape[1], out_w, device=device)
                pending = torch.cat([pending, grow], dim=1)
            rows = pending[:, y0 * scale - done : end - done]
            for column, x0 in enumerate(xs):
                x1 = min(x0 + tile, width)
                piece = source[y0:y1, x0:x1].permute(2, 0, 1).unsqueeze(0)
                piece = piece.to(device=device, dtype=self.dtype).div_(255)
                out = self._forward(piece)[0].float()
                rows[:, :, x0 * scale : x1 * scale].addcmul_(out.mul_(wy[row]), wx[column])
                del piece, out
            final = ys[row + 1] * scale if row + 1 < len(ys) else out_h
            if final > done:
                ready = pending[:, : final - done].mul(255).round_().clamp_(0, 255).to(torch.uint8)
                target[done:final].copy_(ready.permute(1, 2, 0))
                pending = pending[:, final - done :].clone()
                done = final
        return result
