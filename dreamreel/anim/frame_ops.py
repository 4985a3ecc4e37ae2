"""Where a frame lives between the VAE decode and the next VAE encode, and the operations on it there.

The loop, :class:`dreamreel.anim.steps.InitPreparer` and :class:`dreamreel.anim.motion.Motion2D`
call these operations through one :class:`FrameOps` object instead of naming OpenCV or torch:

* :data:`HOST_OPS` (this module): numpy arrays and OpenCV on the host, the default and the
  reference every other implementation is measured against.
* :class:`dreamreel.anim.torch_chain.TorchOps`: ``(H, W, 3)`` uint8 tensors on the generator's
  device (CUDA/MPS), so a frame is not copied to the host and back between two diffusions; chosen
  when the generator runs on a GPU (``dreamreel render --frame-ops``).

An image in the ops' own form is a "frame" (type variable ``F``); :meth:`FrameOps.upload` and
:meth:`FrameOps.download` cross to and from numpy ``(H, W, 3)`` uint8 RGB, the form of sinks,
checkpoints and everything outside the per-frame chain.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol, TypeVar

from dreamreel.anim.cadence import tween
from dreamreel.anim.color import ColorMatcher
from dreamreel.anim.filters import adjust_contrast, unsharp_mask
from dreamreel.anim.noise import add_noise
from dreamreel.anim.warp2d import Matrix, warp_with_matrix
from dreamreel.generation import FrameGenerator, GenerationRequest, Image

__all__ = ["HOST_OPS", "ColorMatch", "FrameOps", "HostOps"]

F = TypeVar("F")


class ColorMatch(Protocol[F]):
    """Histogram matching against one fixed reference (statistics of the reference built once)."""

    def match(self, image: F) -> F: ...


class FrameOps(Protocol[F]):
    """The per-frame operations of the loop, on frames of one form (see the module docstring).

    Every operation takes and returns frames; none modifies its input. Values agree with the host
    (OpenCV) operations within the tolerance documented by each implementation.
    """

    name: str

    def upload(self, image: Image) -> F:
        """A numpy ``(H, W, 3)`` uint8 image as a frame."""
        ...

    def download(self, frame: F) -> Image:
        """A frame as a numpy ``(H, W, 3)`` uint8 image (a new array the caller may keep)."""
        ...

    def color_matcher(self, reference: F, space: str) -> ColorMatch[F]: ...

    def adjust_contrast(self, frame: F, factor: float) -> F: ...

    def unsharp_mask(self, frame: F, *, amount: float, kernel: int, sigma: float, threshold: float) -> F: ...

    def add_noise(
        self,
        frame: F,
        amount: float,
        *,
        seed: int,
        kind: str,
        octaves: int,
        persistence: float,
        ready: Image | None = None,
    ) -> F:
        """Blend the seeded noise image in (``ready``: that noise image, computed ahead on the host)."""
        ...

    def warp(self, frame: F, matrix: Matrix, *, border: str) -> F: ...

    def tween(self, previous: F, following: F, weight: float) -> F: ...

    def generate(self, generator: FrameGenerator, request: GenerationRequest, init: F | None) -> F:
        """One diffusion of ``request`` from ``init`` (img2img) or from nothing (txt2img)."""
        ...


class HostOps:
    """numpy arrays and OpenCV on the host (:data:`HOST_OPS`)."""

    name = "host"

    def upload(self, image: Image) -> Image:
        return image

    def download(self, frame: Image) -> Image:
        return frame

    def color_matcher(self, reference: Image, space: str) -> ColorMatcher:
        return ColorMatcher(reference, space)

    def adjust_contrast(self, frame: Image, factor: float) -> Image:
        return adjust_contrast(frame, factor)

    def unsharp_mask(self, frame: Image, *, amount: float, kernel: int, sigma: float, threshold: float) -> Image:
        return unsharp_mask(frame, amount=amount, kernel=kernel, sigma=sigma, threshold=threshold)

    def add_noise(
        self,
        frame: Image,
        amount: float,
        *,
        seed: int,
        kind: str,
        octaves: int,
        persistence: float,
        ready: Image | None = None,
    ) -> Image:
        usable = ready if ready is not None and ready.shape == frame.shape else None
        return add_noise(frame, amount, seed=seed, kind=kind, octaves=octaves, persistence=persistence, ready=usable)

    def warp(self, frame: Image, matrix: Matrix, *, border: str) -> Image:
        return warp_with_matrix(frame, matrix, border=border)  # type: ignore[arg-type]

    def tween(self, previous: Image, following: Image, weight: float) -> Image:
        return tween(previous, following, weight)

    def generate(self, generator: FrameGenerator, request: GenerationRequest, init: Image | None) -> Image:
        return generator.generate(request if init is None else replace(request, init_image=init))


HOST_OPS = HostOps()
"""The host (OpenCV) operations; stateless, shared."""
