""":class:`TorchOps`: the loop's per-frame operations on ``(H, W, 3)`` uint8 tensors on one device.

With these, :class:`dreamreel.anim.steps.InitPreparer`, :class:`dreamreel.anim.motion.Motion2D`
and the frame loop keep a frame on the generator's device from the VAE decode to the next VAE
encode (see :mod:`dreamreel.anim.frame_ops`). The operations are those of
:mod:`dreamreel.anim.torch_ops` and :mod:`dreamreel.anim.torch_color`, where their agreement with
the OpenCV path is documented. Nothing here synchronises with the device except :meth:`TorchOps.download`.
"""

from __future__ import annotations

from typing import Any

import torch

from dreamreel.anim.torch_color import TorchColorMatcher
from dreamreel.anim.torch_ops import (
    add_noise_tensor,
    adjust_contrast_tensor,
    to_numpy,
    to_tensor,
    tween_tensor,
    unsharp_mask_tensor,
    warp_tensor,
)
from dreamreel.anim.warp2d import Matrix
from dreamreel.errors import SettingsError
from dreamreel.generation import FrameGenerator, GenerationRequest, Image

__all__ = ["TorchOps"]


class TorchOps:
    """Frames are ``(H, W, 3)`` uint8 tensors on ``device`` (see :class:`dreamreel.anim.frame_ops.FrameOps`).

    The generator must offer ``generate_tensor(request, init)`` (diffusers' pipelines take and
    return device tensors); the noise image is built on the host, where it is defined (numpy's
    seeded generators), and uploaded without waiting.
    """

    name = "torch"

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)

    def __repr__(self) -> str:
        return f"TorchOps({str(self.device)!r})"

    def upload(self, image: Image) -> torch.Tensor:
        return to_tensor(image, self.device)

    def download(self, frame: torch.Tensor) -> Image:
        return to_numpy(frame)

    def color_matcher(self, reference: torch.Tensor, space: str) -> TorchColorMatcher:
        return TorchColorMatcher(reference, space)

    def adjust_contrast(self, frame: torch.Tensor, factor: float) -> torch.Tensor:
        return adjust_contrast_tensor(frame, factor)

    def unsharp_mask(
        self, frame: torch.Tensor, *, amount: float, kernel: int, sigma: float, threshold: float
    ) -> torch.Tensor:
        return unsharp_mask_tensor(frame, amount=amount, kernel=kernel, sigma=sigma, threshold=threshold)

    def add_noise(
        self,
        frame: torch.Tensor,
        amount: float,
        *,
        seed: int,
        kind: str,
        octaves: int,
        persistence: float,
        ready: Image | None = None,
    ) -> torch.Tensor:
        usable = ready is not None and tuple(ready.shape) == tuple(frame.shape)
        return add_noise_tensor(
            frame,
            amount,
            seed=seed,
            kind=kind,
            octaves=octaves,
            persistence=persistence,
            noise=to_tensor(ready, frame.device) if usable and ready is not None else None,
        )

    def warp(self, frame: torch.Tensor, matrix: Matrix, *, border: str) -> torch.Tensor:
        return warp_tensor(frame, matrix, border=border)

    def tween(self, previous: torch.Tensor, following: torch.Tensor, weight: float) -> torch.Tensor:
        return tween_tensor(previous, following, weight)

    def generate(
        self, generator: FrameGenerator, request: GenerationRequest, init: torch.Tensor | None
    ) -> torch.Tensor:
        run: Any = getattr(generator, "generate_tensor", None)
        if run is None:
            raise SettingsError(
                f"the generator {type(generator).__name__} cannot take frames on a device; use --frame-ops host",
                key="--frame-ops",
            )
        frame = run(request, None if init is None else init.to(self.device))
        if not isinstance(frame, torch.Tensor):
            raise TypeError(f"{type(generator).__name__}.generate_tensor returned a {type(frame).__name__}")
        return frame.to(self.device)
