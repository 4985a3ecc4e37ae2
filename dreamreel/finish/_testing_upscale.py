"""Tiny random-weight upscaler files for tests, in the key layouts users' files have.

Each writer builds a seeded state dict at a tiny size and saves it the way the real files are
saved: a ``.pth``/``.pt``/``.ckpt`` path gets ``torch.save`` of plain tensors inside the wrapper
the original training code used; a ``.safetensors`` path gets the flat state dict (safetensors
cannot nest). spandrel detects each file as the architecture named below, at the scale asked for.

- :func:`write_tiny_esrgan`: ESRGAN/RRDBNet in BasicSR's "new-arch" layout, the layout of
  ``RealESRGAN_x4plus.pth`` and ``RealESRGAN_x2plus.pth`` (``conv_first``, ``body.N.rdbK.convJ``,
  ``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last`` in ``{"params_ema": ...}``).
  spandrel: ``ESRGAN``. Scale 2 and 1 use BasicSR's pixel-unshuffled input (12 or 48 channels into
  ``conv_first``), as the real x2 model does; scale 1 is a restoration model (spandrel's purpose
  ``"Restoration"``), which the upscaler refuses.
- :func:`write_tiny_compact`: Real-ESRGAN's SRVGGNetCompact (``realesr-animevideov3.pth``,
  ``realesr-general-x4v3.pth``): ``body.0`` conv, ``body.1`` PReLU, ..., the last conv feeding a pixel
  shuffle, in ``{"params": ...}``. spandrel: ``Compact`` ("RealESRGAN Compact"). Its receptive field is
  ``num_conv + 2`` input pixels, which makes it the model for exact tiling tests.
- :func:`write_tiny_swinir`: SwinIR with one residual group of two Swin blocks (the second shifted),
  window 8 and the "nearest+conv" real-world upsampler of A1111's ``SwinIR_4x.pth``, in
  ``{"params_ema": ...}``. It is built from spandrel's own SwinIR module (a port of the original code,
  with the original's parameter and buffer names) because its relative-position buffers must be
  consistent. spandrel: ``SwinIR``.

Nothing here is imported by dreamreel itself.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import save_file

__all__ = ["compact_state_dict", "esrgan_state_dict", "write_tiny_compact", "write_tiny_esrgan", "write_tiny_swinir"]

GROW_CHANNELS = 32
"""The growth channels of every RRDB dense block; BasicSR's default, which spandrel assumes."""


def _conv(generator: torch.Generator, out_ch: int, in_ch: int, *, gain: float = 1.0) -> dict[str, torch.Tensor]:
    """A 3x3 convolution's weight and bias, He-scaled by ``gain``."""
    std = gain * math.sqrt(2.0 / (in_ch * 9))
    weight = torch.randn(out_ch, in_ch, 3, 3, generator=generator) * std
    bias = torch.randn(out_ch, generator=generator) * 0.01
    return {"weight": weight, "bias": bias}


def _prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{name}": value for name, value in tensors.items()}


def esrgan_state_dict(*, scale: int = 4, blocks: int = 1, features: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """The state dict of a random BasicSR RRDBNet (new-arch key names, no wrapper).

    Args:
        scale: 4, 2 or 1 (2 and 1 unshuffle the input by 2 or 4, as BasicSR's RRDBNet does).
        blocks: the number of RRDB blocks (``num_block``; 23 in RealESRGAN_x4plus).
        features: the feature channels (``num_feat``; 64 in the real models).
        seed: the seed of the random weights.
    """
    unshuffle = {4: 1, 2: 2, 1: 4}.get(scale)
    if unshuffle is None:
        raise ValueError(f"scale must be 4, 2 or 1 (BasicSR's RRDBNet), not {scale}")
    if blocks < 1 or features < 1:
        raise ValueError(f"blocks and features must be positive, not {blocks} and {features}")
    generator = torch.Generator().manual_seed(seed)
    state = _prefixed("conv_first", _conv(generator, features, 3 * unshuffle**2))
    grow = GROW_CHANNELS
    for block in range(blocks):
        for rdb in (1, 2, 3):
            for index in range(1, 5):
                conv = _conv(generator, grow, features + (index - 1) * grow, gain=0.1)
                state |= _prefixed(f"body.{block}.rdb{rdb}.conv{index}", conv)
            state |= _prefixed(
                f"body.{block}.rdb{rdb}.conv5", _conv(generator, features, features + 4 * grow, gain=0.1)
            )
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        state |= _prefixed(name, _conv(generator, features, features))
    state |= _prefixed("conv_last", _conv(generator, 3, features, gain=0.2))
    state["conv_last.bias"] += 0.5  # outputs around mid-grey rather than clamped to black
    return state


def compact_state_dict(
    *, scale: int = 4, num_conv: int = 1, features: int = 8, seed: int = 0
) -> dict[str, torch.Tensor]:
    """The state dict of a random SRVGGNetCompact with PReLU activations (no wrapper).

    Args:
        scale: the upscale factor of the final pixel shuffle (2, 3, 4, ...).
        num_conv: the convolutions between the first and the last (16 in realesr-animevideov3).
        features: the feature channels (64 in the real models).
        seed: the seed of the random weights.
    """
    if scale < 1 or num_conv < 0 or features < 1:
        raise ValueError(f"need scale >= 1, num_conv >= 0 and features >= 1, not {scale}, {num_conv}, {features}")
    generator = torch.Generator().manual_seed(seed)
    state = _prefixed("body.0", _conv(generator, features, 3))
    state["body.1.weight"] = torch.full((features,), 0.25)  # PReLU slopes
    for index in range(num_conv):
        state |= _prefixed(f"body.{2 * index + 2}", _conv(generator, features, features))
        state[f"body.{2 * index + 3}.weight"] = torch.full((features,), 0.25)
    # the last conv predicts a residual over the nearest-neighbour upscale: keep it small
    state |= _prefixed(f"body.{2 * num_conv + 2}", _conv(generator, 3 * scale * scale, features, gain=0.2))
    return state


def _save(state: dict[str, torch.Tensor], path: Path, wrapper: str | None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: value.contiguous() for name, value in state.items()}
    if path.suffix.lower() == ".safetensors":
        save_file(state, str(path))
    elif path.suffix.lower() in (".pth", ".pt", ".ckpt"):
        torch.save({wrapper: state} if wrapper else state, path)
    else:
        raise ValueError(f"{path}: give a .pth, .pt, .ckpt or .safetensors path")
    return path


def write_tiny_esrgan(
    path: Path, *, scale: int = 4, blocks: int = 1, features: int = 8, seed: int = 0, wrapper: str | None = "params_ema"
) -> Path:
    """Write a tiny ESRGAN/RRDBNet upscaler in RealESRGAN_x4plus.pth's layout (see :func:`esrgan_state_dict`).

    ``wrapper`` is the key the tensors sit under in a pickle (``params_ema`` as in Real-ESRGAN's
    releases; None for a bare state dict); ``.safetensors`` files are always flat. Returns ``path``.
    """
    return _save(esrgan_state_dict(scale=scale, blocks=blocks, features=features, seed=seed), path, wrapper)


def write_tiny_compact(
    path: Path, *, scale: int = 4, num_conv: int = 1, features: int = 8, seed: int = 0, wrapper: str | None = "params"
) -> Path:
    """Write a tiny Real-ESRGAN Compact upscaler in realesr-animevideov3.pth's layout (see :func:`compact_state_dict`).

    ``wrapper`` as in :func:`write_tiny_esrgan` (``params`` in Real-ESRGAN's releases). Returns ``path``.
    """
    return _save(compact_state_dict(scale=scale, num_conv=num_conv, features=features, seed=seed), path, wrapper)


def write_tiny_swinir(
    path: Path, *, scale: int = 4, embed_dim: int = 12, seed: int = 0, wrapper: str | None = "params_ema"
) -> Path:
    """Write a tiny SwinIR upscaler (one group of two blocks, window 8, nearest+conv upsampling).

    Args:
        path: the file to write (``.pth``/``.pt``/``.ckpt`` or ``.safetensors``).
        scale: 2 or 4 (the nearest+conv upsampler doubles once or twice).
        embed_dim: the transformer width (180 in SwinIR-M, 240 in SwinIR-L); a multiple of 2.
        seed: the seed of the random weights.
        wrapper: as in :func:`write_tiny_esrgan`.

    Returns:
        ``path``.
    """
    from spandrel.architectures.SwinIR import SwinIR  # type: ignore[import-untyped]

    if scale not in (2, 4):
        raise ValueError(f"scale must be 2 or 4 for SwinIR's nearest+conv upsampler, not {scale}")
    with torch.random.fork_rng(devices=[]):  # the module initialises itself from the global generator
        torch.manual_seed(seed)
        model = SwinIR(
            img_size=16,
            in_chans=3,
            embed_dim=embed_dim,
            depths=[2],
            num_heads=[2],
            window_size=8,
            mlp_ratio=2.0,
            upscale=scale,
            img_range=1.0,
            upsampler="nearest+conv",
            resi_connection="1conv",
        )
    return _save(dict(model.state_dict()), path, wrapper)
