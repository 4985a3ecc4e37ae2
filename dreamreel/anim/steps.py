"""Turning the warped previous frame into the next img2img init: colour, contrast, anti-blur, noise."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dreamreel.anim.frame_ops import HOST_OPS, ColorMatch, FrameOps
from dreamreel.anim.noise import NoiseAhead
from dreamreel.anim.timing import StageTimer
from dreamreel.keyframes.table import FrameParams


@dataclass
class InitPreparer:
    """Prepares inits with Deforum's order: colour match, contrast, anti-blur, noise.

    Attributes:
        color_space: "lab", "hsv" or "rgb"; None disables colour coherence.
        noise_kind: "perlin" or "uniform".
        add_noise: False in motion previews, where noise would only pile up without a model to remove it.
        sharpen: False in motion previews for the same reason.
        contrast: False in motion previews for the same reason (a contrast below or above 1 compounds
            frame after frame when no diffusion restores the image).
        ops: where the frames are and what runs on them (:data:`~dreamreel.anim.frame_ops.HOST_OPS`:
            numpy and OpenCV; :class:`~dreamreel.anim.torch_chain.TorchOps`: tensors on a device).
            The noise image is always made on the host, ahead of time (:meth:`prefetch`).

    A motion preview also sets ``color_space`` to None: matching the warped frame's colours to the
    reference again and again, with no diffusion in between, grows halos and blotches.
    """

    color_space: str | None = "lab"
    noise_kind: str = "perlin"
    perlin_octaves: int = 4
    perlin_persistence: float = 0.5
    add_noise: bool = True
    sharpen: bool = True
    contrast: bool = True
    ops: FrameOps[Any] = HOST_OPS
    _matchers: dict[int, tuple[Any, ColorMatch[Any]]] = field(default_factory=dict, repr=False)
    _ahead: NoiseAhead | None = field(default=None, repr=False)

    def prefetch(self, params: FrameParams, height: int, width: int) -> None:
        """Start computing the noise of the init of diffused frame ``params.frame`` on a background thread
        (it depends only on the seed, size and settings), so ``__call__`` only blends it in."""
        if not (self.add_noise and params.noise > 0):
            return
        if self._ahead is None or self._ahead.settings != self._noise_settings():
            self._ahead = NoiseAhead(self.noise_kind, octaves=self.perlin_octaves, persistence=self.perlin_persistence)
        self._ahead.request(height, width, int(params.seed))

    def match_colors(self, image: Any, reference: Any) -> Any:
        """``image`` with the colour histograms of ``reference`` (the matcher is built once per reference)."""
        if self.color_space is None:
            return image
        cached = self._matchers.get(id(reference))
        if cached is None or cached[0] is not reference:
            cached = (reference, self.ops.color_matcher(reference, self.color_space))
            self._matchers = {id(reference): cached}
        return cached[1].match(image)

    def _noise_settings(self) -> tuple[str, int, float, int]:
        return (str(self.noise_kind), int(self.perlin_octaves), float(self.perlin_persistence), 8)

    def __call__(self, image: Any, params: FrameParams, reference: Any, timer: StageTimer) -> Any:
        """The init of diffused frame ``params.frame`` from the warped previous output (frames of ``ops``)."""
        if reference is not None and self.color_space is not None:
            with timer.stage("color"):
                image = self.match_colors(image, reference)
        with timer.stage("filters"):
            if self.contrast and params.contrast != 1.0:
                image = self.ops.adjust_contrast(image, params.contrast)
            if self.sharpen and params.antiblur_amount > 0:
                image = self.ops.unsharp_mask(
                    image,
                    amount=params.antiblur_amount,
                    kernel=int(params.antiblur_kernel),
                    sigma=params.antiblur_sigma,
                    threshold=params.antiblur_threshold,
                )
        with timer.stage("noise"):
            if self.add_noise and params.noise > 0:
                ready = None
                if self._ahead is not None and self._ahead.settings == self._noise_settings():
                    ready = self._ahead.take(image.shape[0], image.shape[1], int(params.seed))
                image = self.ops.add_noise(
                    image,
                    params.noise,
                    seed=int(params.seed),
                    kind=self.noise_kind,
                    octaves=self.perlin_octaves,
                    persistence=self.perlin_persistence,
                    ready=ready,
                )
        return image
