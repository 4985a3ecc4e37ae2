"""``dreamreel still``: still images as the one-frame case of the animation loop.

A batch of ``count x size`` images is a run of that many independent frames (no loopback) whose
seeds follow A1111's batch seeds (seed, seed+1, ...); each batch of ``size`` is one sampler call;
each frame is written as a PNG with A1111's ``parameters`` chunk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dreamreel.anim.loop import LoopConfig, LoopState, render
from dreamreel.anim.motion import StillMotion
from dreamreel.anim.protocols import ProgressReporter
from dreamreel.anim.steps import InitPreparer
from dreamreel.errors import SettingsError
from dreamreel.generation import FrameGenerator, GenerationRequest, Image
from dreamreel.jobs.m2m import MIN_SIDE
from dreamreel.keyframes.table import FrameParams
from dreamreel.media.rundir import save_png_with_info
from dreamreel.pnginfo import GenerationInfo
from dreamreel.settings import Settings, resolve_schedules, with_resolved_seed
from dreamreel.settings.io import validate_settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StillRequest:
    """What ``dreamreel still`` was asked for (A1111's txt2img/img2img fields)."""

    prompt: str
    negative_prompt: str = ""
    sampler: str = "Euler a"
    steps: int = 25
    cfg_scale: float = 7.0
    seed: int = -1
    width: int = 512
    height: int = 512
    init_image: Path | None = None
    denoising_strength: float = 0.75
    batch_count: int = 1
    batch_size: int = 1
    clip_skip: int = 1

    @classmethod
    def from_info(cls, info: GenerationInfo, **overrides: object) -> StillRequest:
        """The request that regenerates an image from its A1111 parameters (``--from``)."""
        size = info.size() or (512, 512)
        values: dict[str, object] = {
            "prompt": info.prompt,
            "negative_prompt": info.negative_prompt,
            "sampler": info.params.get("Sampler", "Euler a"),
            "steps": int(info.number("Steps", 25) or 25),
            "cfg_scale": float(info.number("CFG scale", 7.0) or 7.0),
            "seed": int(info.number("Seed", -1) or 0),
            "width": size[0],
            "height": size[1],
            "denoising_strength": float(info.number("Denoising strength", 0.75) or 0.75),
            "clip_skip": int(info.number("Clip skip", 1) or 1),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def settings(self, model: str | None) -> Settings:
        """The one-frame-per-image run these stills are.

        Raises:
            SettingsError: a value is out of range; the message names the ``dreamreel still`` option.
        """
        for value, option in ((self.batch_count, "--batch-count"), (self.batch_size, "--batch-size")):
            if value < 1:
                raise SettingsError(f"is {value}; use 1 or more", key=option)
        if not 0.0 <= self.denoising_strength <= 1.0:
            raise SettingsError(f"is {self.denoising_strength}; use 0..1", key="--strength")
        if min(self.width, self.height) < MIN_SIDE:
            raise SettingsError(
                f"is {self.width}x{self.height}; each side must be at least {MIN_SIDE} pixels", key="--size"
            )
        keep = 1.0 - self.denoising_strength
        width, height = self.width - self.width % 8, self.height - self.height % 8
        if (width, height) != (self.width, self.height):
            logger.warning("size %dx%d rounded down to %dx%d (a multiple of 8)", self.width, self.height, width, height)
        values = dict(
            mode="still",
            width=width,
            height=height,
            max_frames=self.batch_count * self.batch_size,
            seed=self.seed,
            seed_behavior="iter",
            sampler=self.sampler,
            steps=self.steps,
            model=model,
            init_image=str(self.init_image) if self.init_image else None,
            init_strength=keep,
            prompts={"0": self.prompt},
            negative_prompt=self.negative_prompt,
            schedules={
                "cfg_scale": f"0:({self.cfg_scale})",
                "strength": f"0:({keep})",
                "clip_skip": f"0:({self.clip_skip})",
                "noise_multiplier": None,
            },
            color_coherence=None,
        )
        return validate_settings(values, key_names=STILL_OPTIONS)


# Settings paths -> the ``dreamreel still`` option that sets them (for error messages).
STILL_OPTIONS = {
    "width": "--size", "height": "--size", "max_frames": "--batch-count", "seed": "--seed", "sampler": "--sampler",
    "steps": "--steps", "init_image": "--init", "init_strength": "--strength", "prompts": "PROMPT",
    "negative_prompt": "--negative", "schedules.cfg_scale": "--cfg", "schedules.strength": "--strength",
    "schedules.clip_skip": "--clip-skip", "schedules.sampler": "--sampler", "schedules.steps": "--steps",
    "model": "--model",
}  # fmt: skip


class _Batches:
    """Serves a still run's frames from A1111-style batches: one sampler call per ``size`` images.

    The frames of a still run differ only by their seed (seed, seed+1, ...), so the first frame of
    each batch asks the generator for ``size`` images at once (seeds ``seed + i``) and the next
    ``size - 1`` requests are answered from them. A request whose seed is not the next queued one
    starts a new batch, so a queued image is never served for the wrong seed. Generators without
    ``generate_batch`` get one call per image.
    """

    def __init__(self, generator: FrameGenerator, size: int) -> None:
        self.generator = generator
        self.size = size
        self._queue: list[tuple[int, Image]] = []  # (seed, image) not served yet

    def generate(self, request: GenerationRequest) -> Image:
        batch = getattr(self.generator, "generate_batch", None)
        if self.size <= 1 or batch is None:
            return self.generator.generate(request)
        if not self._queue or self._queue[0][0] != request.seed:
            images = list(batch(request, self.size))
            self._queue = [(request.seed + i, image) for i, image in enumerate(images)]
        return self._queue.pop(0)[1]


class _PngSink:
    def __init__(self, folder: Path, extra: dict[str, str], start_index: int) -> None:
        self.folder = folder
        self.extra = extra
        self.index = start_index
        self.written: list[Path] = []

    def write(self, image: Image, params: FrameParams) -> None:
        extra = dict(self.extra)
        if params.denoise < 1.0:
            extra["Denoising strength"] = f"{params.denoise:g}"
        path = self.folder / f"{self.index:05d}-{int(params.seed)}.png"
        self.written.append(save_png_with_info(path, image, params, extra))
        self.index += 1

    def checkpoint(self, state: LoopState) -> None:
        return None  # every still is complete once written

    def close(self) -> None:
        return None


def render_stills(
    request: StillRequest,
    out: Path,
    generator_factory: Callable[[Settings], FrameGenerator],
    *,
    model: str | None = None,
    model_info: Callable[[FrameGenerator], dict[str, str]] = lambda _: {},
    progress: ProgressReporter | None = None,
) -> list[Path]:
    """Generate the stills through the frame loop and write them to ``out``; returns the PNG paths."""
    from dreamreel.jobs.checks import check_samplers
    from dreamreel.jobs.render import load_init_image

    settings = with_resolved_seed(request.settings(model))
    table = resolve_schedules(settings)  # prompts are checked here, before the model loads
    check_samplers(table)
    init = load_init_image(settings, settings.width, settings.height)
    generator = generator_factory(settings)
    out.mkdir(parents=True, exist_ok=True)
    start = len(list(out.glob("*.png")))
    extra = model_info(generator)
    if request.clip_skip > 1:
        extra["Clip skip"] = str(request.clip_skip)
    sink = _PngSink(out, extra, start)
    config = LoopConfig(width=settings.width, height=settings.height, loopback=False, init_image=init)
    batches = _Batches(generator, request.batch_size)  # one sampler call per batch of ``batch_size``
    render(
        config, table, batches, sink, motion=StillMotion(), prepare=InitPreparer(color_space=None), progress=progress
    )
    return sink.written
