"""Reading weight files without running code from them.

``.safetensors`` files are read with safetensors. Pickle-based files (``.ckpt``, ``.pt``, ``.pth``,
``.bin``) are opened only with ``torch.load(path, map_location="cpu", weights_only=True)``, which
accepts tensors and plain containers and refuses any other global. A pickle that needs one asks to
run code while it is unpickled; dreamreel refuses it with a :class:`ModelLoadError` that says how
to get a safetensors file instead.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from dreamreel.errors import ModelLoadError

logger = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES: tuple[str, ...] = (".safetensors",)
PICKLE_SUFFIXES: tuple[str, ...] = (".ckpt", ".pt", ".pth", ".bin")
WEIGHT_SUFFIXES: tuple[str, ...] = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def is_pickle(path: Path) -> bool:
    """Whether a weight file is pickle-based (judged by its suffix)."""
    return Path(path).suffix.lower() in PICKLE_SUFFIXES


def _refusal(path: Path, needed: str) -> ModelLoadError:
    return ModelLoadError(
        f"{path}: this pickle file asks to run code while it is being loaded (it needs the Python global "
        f"{needed}), and dreamreel refuses to do that, because a pickle can run any program on your machine. "
        "Only files that hold plain tensors are accepted. Download the .safetensors version of this model "
        "(most model pages offer one), or, only if you fully trust where the file came from, convert it once "
        "with a script that calls torch.load(..., weights_only=False) and safetensors.torch.save_file on the "
        "tensors, then use the .safetensors file."
    )


def load_pickle(path: Path) -> Any:
    """Unpickle a PyTorch file with ``weights_only=True`` on the CPU.

    Raises:
        ModelLoadError: the file needs arbitrary globals (refused), or it is not a readable
            PyTorch file.
    """
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler runs no code here, but garbage input can make it raise anything
        found = _GLOBAL.search(str(exc))
        if found:
            raise _refusal(path, found.group(1)) from None
        reason = "" if isinstance(exc, pickle.UnpicklingError) else f" ({_first_line(exc)})"
        raise ModelLoadError(
            f"{path}: not a readable PyTorch weights file{reason}; it is damaged, an incomplete download or "
            "not a PyTorch file at all. Download it again."
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _unwrap(data: Any, path: Path) -> dict[str, Any]:
    while isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a dictionary of tensors, found {type(data).__name__}.")
    return data


def load_state_dict(path: Path) -> dict[str, Any]:
    """Read a weight file into a dict, unwrapping a ``state_dict`` entry if there is one.

    Args:
        path: a ``.safetensors``, ``.ckpt``, ``.pt``, ``.pth`` or ``.bin`` file.

    Returns:
        The state dict on the CPU (pickles may also hold plain non-tensor values).

    Raises:
        ModelLoadError: the file is missing, unsafe, damaged or of an unknown kind.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file.")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelLoadError(
                f"{path}: not a valid safetensors file ({_first_line(exc)}); it may be an incomplete download."
            ) from None
    if suffix in PICKLE_SUFFIXES:
        return _unwrap(load_pickle(path), path)
    raise ModelLoadError(f"{path}: unknown weight file type {suffix!r}; expected one of {', '.join(WEIGHT_SUFFIXES)}.")


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Return the name and shape of every tensor in a weight file.

    A ``.safetensors`` file is read from its header only. A pickle is loaded (safely) in full.
    """
    path = Path(path)
    if path.suffix.lower() in SAFETENSORS_SUFFIXES and path.is_file():
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelLoadError(
                f"{path}: not a valid safetensors file ({_first_line(exc)}); it may be an incomplete download."
            ) from None
    state = load_state_dict(path)
    return {key: tuple(value.shape) for key, value in state.items() if isinstance(value, torch.Tensor)}
