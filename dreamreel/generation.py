"""What the frame loop asks a generator for, and the protocol every generator implements.

This module is the seam between the frame loop (``dreamreel.anim``) and the model backends
(``dreamreel.pipelines``): it imports neither torch nor diffusers.

Convention:
    Images crossing this seam are ``numpy.ndarray`` of shape (H, W, 3), dtype uint8, RGB.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

Image = NDArray[np.uint8]
"""An (H, W, 3) uint8 RGB image."""


@dataclass(frozen=True, slots=True)
class ControlInput:
    """One ControlNet unit's conditioning for one frame.

    Attributes:
        unit: index of the unit (0-based) in the run's ControlNet list.
        image: the preprocessed control map, (H, W, 3) uint8 RGB at the generation size.
        weight: conditioning scale.
        guidance_start: fraction of the sampling steps where the unit starts acting.
        guidance_end: fraction of the sampling steps where the unit stops acting.
    """

    unit: int
    image: Image
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """Everything one generator call needs. Values use diffusers' meaning.

    Attributes:
        prompt: positive prompt in A1111 syntax.
        negative_prompt: negative prompt in A1111 syntax.
        width: output width in pixels (multiple of 8).
        height: output height in pixels (multiple of 8).
        steps: sampler steps for a full (txt2img) run; img2img runs about ``steps * strength``.
        cfg_scale: classifier-free guidance scale.
        strength: denoising strength for img2img, 0..1 (1 ignores the init image). This is
            ``1 - deforum_strength``; the conversion happens once, when the schedule table is built.
        seed: the seed of this call (>= 0; -1 is resolved before a request is built).
        sampler: A1111 sampler name, e.g. "Euler a", "DPM++ 2M Karras".
        init_image: the img2img init, or None for txt2img.
        controls: ControlNet conditioning for this frame.
        guess_mode: diffusers' guess mode (A1111 control mode "ControlNet is more important").
        noise_multiplier: A1111's img2img initial noise multiplier.
        clip_skip: A1111 "Clip skip" (1 = last layer).
        prompt_parts: for prompt blending, (prompt, weight) parts whose text embeddings are mixed
            with these weights; empty means use ``prompt`` alone.
        negative_parts: the same for the negative prompt.
        subseed: A1111's variation seed ("Variation seed"), or None for none.
        subseed_strength: how far the initial noise moves from the seed's towards the subseed's, 0..1.
        seed_resize_from: A1111's "Seed resize from" as (width, height); (0, 0) is off.
        rng: the noise source, "cpu", "gpu" or "nv" (A1111's "RNG": CPU, GPU, NV).
        eta: the eta of ancestral and SDE samplers; None is A1111's default (1.0).
        s_noise: A1111's "sigma noise" multiplier of the per-step noise (1.0).
        eta_noise_seed_delta: A1111's ENSD: the per-step noise of ancestral samplers comes from
            ``seed + ENSD`` (0 is off).
    """

    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 25
    cfg_scale: float = 7.0
    strength: float = 0.35
    seed: int = 0
    sampler: str = "Euler a"
    init_image: Image | None = None
    controls: tuple[ControlInput, ...] = ()
    guess_mode: bool = False
    noise_multiplier: float = 1.0
    clip_skip: int = 1
    prompt_parts: tuple[tuple[str, float], ...] = field(default=())
    negative_parts: tuple[tuple[str, float], ...] = field(default=())
    subseed: int | None = None
    subseed_strength: float = 0.0
    seed_resize_from: tuple[int, int] = (0, 0)
    rng: str = "cpu"
    eta: float | None = None
    s_noise: float = 1.0
    eta_noise_seed_delta: int = 0


class FrameGenerator(Protocol):
    """Anything that turns a :class:`GenerationRequest` into an image."""

    def generate(self, request: GenerationRequest) -> Image:
        """Return one (height, width, 3) uint8 RGB image for the request."""
        ...
