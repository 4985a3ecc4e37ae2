"""Device-resident versions of the loop's per-frame helpers: :class:`TorchInitPreparer`, :class:`TorchMotion2D`.

They mirror :class:`dreamreel.anim.steps.InitPreparer` and :class:`dreamreel.anim.motion.Motion2D`
call for call, with (H, W, 3) uint8 tensors instead of numpy arrays (see
:mod:`dreamreel.anim.torch_ops` for the convention and the agreement with the OpenCV path), so a
loop running its generator on CUDA/MPS can keep a frame on the device from the VAE decode to the
next VAE encode. Nothing here synchronises with the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from dreamreel.anim.motion import Border, Motion2D
from dreamreel.anim.timing import StageTimer
from dreamreel.anim.torch_color import TorchColorMatcher
from dreamreel.anim.torch_ops import (
    add_noise_tensor,
    adjust_contrast_tensor,
    noise_tensor,
    unsharp_mask_tensor,
    warp_tensor,
)
from dreamreel.keyframes.table import FrameParams

__all__ = ["TorchInitPreparer", "TorchMotion2D"]


@dataclass
class TorchInitPreparer:
    """:class:`dreamreel.anim.steps.InitPreparer` for tensors: colour match, contrast, anti-blur, noise.

    Same attributes and order as InitPreparer. The noise image is built on the host (it only
    depends on the seed, size and settings) after the device work of the other steps has been
    queued, so on a GPU the two overlap; it is then uploaded without waiting.
    """

    color_space: str | None = "lab"
    noise_kind: str = "perlin"
    perlin_octaves: int = 4
    perlin_persistence: float = 0.5
    add_noise: bool = True
    sharpen: bool = True
    contrast: bool = True
    _matchers: dict[int, tuple[torch.Tensor, TorchColorMatcher]] = field(default_factory=dict, repr=False)

    def match_colors(self, image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """``image`` with the colour histograms of ``reference`` (statistics built once per reference tensor)."""
        if self.color_space is None:
            return image
        cached = self._matchers.get(id(reference))
        if cached is None or cached[0] is not reference:
            cached = (reference, TorchColorMatcher(reference, self.color_space))
            self._matchers = {id(reference): cached}
        return cached[1].match(image)

    def __call__(
        self, image: torch.Tensor, params: FrameParams, reference: torch.Tensor | None, timer: StageTimer
    ) -> torch.Tensor:
        if reference is not None and self.color_space is not None:
            with timer.stage("color"):
                image = self.match_colors(image, reference)
        with timer.stage("filters"):
            if self.contrast and params.contrast != 1.0:
                image = adjust_contrast_tensor(image, params.contrast)
            if self.sharpen and params.antiblur_amount > 0:
                image = unsharp_mask_tensor(
                    image,
                    amount=params.antiblur_amount,
                    kernel=int(params.antiblur_kernel),
                    sigma=params.antiblur_sigma,
                    threshold=params.antiblur_threshold,
                )
        with timer.stage("noise"):
            if self.add_noise and params.noise > 0:
                noise = noise_tensor(
                    image.shape[0],
                    image.shape[1],
                    seed=int(params.seed),
                    kind=self.noise_kind,
                    octaves=self.perlin_octaves,
                    persistence=self.perlin_persistence,
                    device=image.device,
                )
                image = add_noise_tensor(
                    image,
                    params.noise,
                    seed=int(params.seed),
                    kind=self.noise_kind,
                    octaves=self.perlin_octaves,
                    persistence=self.perlin_persistence,
                    noise=noise,
                )
        return image


class TorchMotion2D:
    """:class:`dreamreel.anim.motion.Motion2D` for tensors: the same matrices, warped on the tensor's device."""

    def __init__(self, width: int, height: int, *, border: Border = "replicate", perspective_flip: bool = False):
        self._matrices = Motion2D(width, height, border=border, perspective_flip=perspective_flip)
        self.width = width
        self.height = height
        self.border: Border = border
        self.perspective_flip = perspective_flip

    def matrix(self, p: FrameParams) -> np.ndarray:
        """The source-to-destination matrix of frame ``p`` (host float64, as Motion2D.matrix)."""
        return self._matrices.matrix(p)

    def warp(self, image: torch.Tensor, params: FrameParams, timer: StageTimer) -> torch.Tensor:
        return warp_tensor(image, self.matrix(params), border=self.border)

    def back(
        self, image: torch.Tensor, rows: Sequence[FrameParams], at: torch.Tensor, end: torch.Tensor
    ) -> torch.Tensor:
        combined = np.eye(3)
        for row in rows:
            combined = self.matrix(row) @ combined
        return warp_tensor(image, np.asarray(np.linalg.inv(combined), np.float64), border=self.border)
