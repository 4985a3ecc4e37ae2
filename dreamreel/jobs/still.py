"""``dreamreel still``: still images as the one-frame case of the animation loop.

A batch of ``count x size`` images is a run of that many independent frames (no loopback) whose
seeds follow A1111's batch seeds (seed, seed+1, ...); each batch of ``size`` is one sampler call;
each frame is written as a PNG with A1111's ``parameters`` chunk.

The hires fix (A1111's txt2img "Hires. fix") makes each image in two passes: txt2img at ``--size``,
an upscale, then img2img of the upscaled image at the hires denoising strength. As in A1111:

- the upscale goes to ``int(W * scale) x int(H * scale)``, or with ``hires_resize_x/y`` to that size
  (one side 0 keeps the aspect ratio; both given: upscaled to cover, then the latents are cropped
  around the centre), each side rounded down to a multiple of 8 (the latents' size);
- the latent upscalers (``Latent``, ``Latent (antialiased)``, ``Latent (bicubic)``, ``Latent (bicubic
  antialiased)``, ``Latent (nearest)``, ``Latent (nearest-exact)``) resize the first pass's latents
  with ``torch.nn.functional.interpolate`` (bilinear, bicubic, nearest, nearest-exact; antialiased or
  not); ``None`` and ``Lanczos`` resize the decoded image with Lanczos, ``Nearest`` with nearest
  neighbour, and an upscaler model (a file, or its name in ``--models-dir``) runs at its own scale
  (repeatedly, as in A1111) before a Lanczos resize to the exact size; the image is then VAE-encoded;
- the second pass runs exactly ``hires_steps`` sampler steps (0: the first pass's step count) of a
  schedule of ``int(hires_steps / min(denoise, 0.999))`` steps, with the same seed and sampler. A1111
  always hands this pass its step count, so its "img2img: do exactly the amount of steps" setting does
  not matter here (it does for plain img2img, where dreamreel runs ``int(steps * strength)`` steps);
- the hires prompt and negative prompt default to the first pass's;
- the PNG's parameters keep the first pass's ``Size`` and add ``Denoising strength`` (the hires
  pass's), ``Hires prompt`` / ``Hires negative prompt`` (when they differ), ``Hires upscale`` or
  ``Hires resize``, ``Hires steps`` (when not 0) and ``Hires upscaler``, in A1111's order, so ``--from``
  regenerates the image.

A denoising strength of 0 skips the second pass (the upscaled image is the result). Not supported:
A1111's hires sampler, hires checkpoint and hires CFG scale (a PNG naming them is regenerated with
the first pass's, and a warning says so), and the hires fix together with an init image (img2img has
no hires fix in A1111 either).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from dreamreel.anim.loop import LoopConfig, LoopState, render
from dreamreel.anim.motion import StillMotion
from dreamreel.anim.protocols import ProgressReporter
from dreamreel.anim.steps import InitPreparer
from dreamreel.errors import SettingsError, did_you_mean
from dreamreel.generation import FrameGenerator, GenerationRequest, Image
from dreamreel.jobs.m2m import MIN_SIDE
from dreamreel.keyframes.table import FrameParams
from dreamreel.media.rundir import save_png_with_info
from dreamreel.pnginfo import GenerationInfo, paste_params
from dreamreel.settings import Settings, resolve_schedules, with_resolved_seed
from dreamreel.settings.io import validate_settings

if TYPE_CHECKING:
    import torch

    from dreamreel.finish.upscale import ImageUpscaler

logger = logging.getLogger(__name__)

LATENT_UPSCALE_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
"""A1111's latent hires upscalers: name -> (``torch.nn.functional.interpolate`` mode, antialias)."""

PIXEL_UPSCALERS: tuple[str, ...] = ("None", "Lanczos", "Nearest")
"""A1111's plain resizes of the decoded first pass (``None`` is a Lanczos resize, as in A1111)."""

MAX_HIRES_SCALE = 8.0
"""The largest hires factor (A1111's slider stops at 4)."""
MAX_HIRES_SIDE = 8192
"""The largest side of a hires image, in pixels."""
OPT_F = 8
"""Pixels per latent (A1111's ``opt_f``)."""


@dataclass(frozen=True)
class StillRequest:
    """What ``dreamreel still`` was asked for (A1111's txt2img/img2img fields).

    ``denoising_strength`` is img2img's (with ``init_image``); the hires fix (``hires``) has its own,
    ``hires_denoising_strength``: both are A1111's one "Denoising strength" field, which a txt2img
    image records only when the hires fix was on. ``hires_steps`` 0 means the first pass's steps;
    ``hires_resize_x``/``hires_resize_y`` (not both 0) replace ``hires_upscale``; empty hires prompts
    mean the first pass's.
    """

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
    hires: bool = False
    hires_upscale: float = 2.0
    hires_resize_x: int = 0
    hires_resize_y: int = 0
    hires_upscaler: str = "Latent"
    hires_steps: int = 0
    hires_denoising_strength: float = 0.7
    hires_prompt: str = ""
    hires_negative_prompt: str = ""

    @classmethod
    def from_info(cls, info: GenerationInfo, **overrides: object) -> StillRequest:
        """The request that regenerates an image from its A1111 parameters (``--from``).

        The parameters are read as A1111's paste reads them (:func:`dreamreel.pnginfo.paste_params`): an
        empty value counts as missing, and a missing key takes A1111's default. Of those defaults dreamreel
        acts on ``Clip skip: 1``, ``Hires resize-1``/``-2: 0`` (scale by ``Hires upscale``), ``Hires prompt``
        and ``Hires negative prompt`` empty (the first pass's), ``Hires sampler: Use same sampler`` and
        ``Hires checkpoint: Use same checkpoint`` (what dreamreel does; any other value is warned about) and
        ``Schedule type: Automatic`` (the sampler's own schedule; ``Karras`` or ``Exponential`` is added to
        the sampler's name, as A1111 1.9+ writes them apart; another schedule is warned about). ``RNG``
        (default ``GPU``) has no field here yet (docs/compat.md).

        As in A1111's paste, the hires fix is on when the parameters have ``Denoising strength`` and one
        of ``Hires upscale``, ``Hires upscaler`` or ``Hires resize``; its ``Denoising strength`` is then
        the hires pass's.
        """
        pasted = GenerationInfo(info.prompt, info.negative_prompt, paste_params(info))
        params = pasted.params
        size = pasted.size() or (512, 512)
        denoise = float(pasted.number("Denoising strength", 0.75) or 0.0)
        hires = "Denoising strength" in params and any(key in params for key in HIRES_KEYS)
        values: dict[str, object] = {
            "prompt": info.prompt,
            "negative_prompt": info.negative_prompt,
            "sampler": _sampler_with_schedule(params.get("Sampler", "Euler a"), params["Schedule type"]),
            "steps": int(pasted.number("Steps", 25) or 25),
            "cfg_scale": float(pasted.number("CFG scale", 7.0) or 7.0),
            "seed": int(pasted.number("Seed", -1) or 0),
            "width": size[0],
            "height": size[1],
            "clip_skip": int(pasted.number("Clip skip", 1) or 1),
        }
        if hires:
            if "Hires resize" in params:
                resize = parse_hires_resize(params["Hires resize"], key="parameters")
            else:
                resize = (int(pasted.number("Hires resize-1", 0) or 0), int(pasted.number("Hires resize-2", 0) or 0))
            values.update(
                hires=True,
                hires_upscale=float(pasted.number("Hires upscale", 2.0) or 0.0),
                hires_resize_x=resize[0],
                hires_resize_y=resize[1],
                hires_upscaler=params.get("Hires upscaler") or "Latent",
                hires_steps=int(pasted.number("Hires steps", 0) or 0),
                hires_denoising_strength=denoise,
                hires_prompt=params["Hires prompt"],
                hires_negative_prompt=params["Hires negative prompt"],
            )
            ignored = [
                key
                for key in UNSUPPORTED_HIRES_KEYS
                if params.get(key) not in (None, "") and params[key] != SAME_AS_FIRST_PASS.get(key)
            ]
            if ignored:
                logger.warning(
                    "the image's %s %s not supported: the hires pass uses the first pass's",
                    ", ".join(f"'{key}: {params[key]}'" for key in ignored),
                    "is" if len(ignored) == 1 else "are",
                )
        else:
            values["denoising_strength"] = denoise
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

    def hires_plan(
        self, width: int, height: int, *, models_dir: Path | None = None, seed: int = -1
    ) -> HiresPlan | None:
        """The checked hires fix of these stills from a first pass of ``width`` x ``height``; None when it is off.

        Needs no model: upscaler model files are found (in ``models_dir``, an A1111 install, for names)
        but not loaded.

        Raises:
            SettingsError: a hires value is out of range, the upscaler is unknown, the hires prompt does not
                parse, or an init image is given too; the message names the ``dreamreel still`` option.
        """
        if not self.hires:
            return None
        if self.init_image is not None:
            raise SettingsError(
                "the hires fix is a txt2img feature (A1111's img2img has none); drop --init, or upscale the "
                "image with --init at a larger --size",
                key="--hires",
            )
        upscale_to, truncate, info = _hires_size(self, width, height)
        if self.hires_steps < 0:
            raise SettingsError(f"is {self.hires_steps}; use 0 (the first pass's steps) or more", key="--hires-steps")
        denoise = self.hires_denoising_strength
        if not (math.isfinite(denoise) and 0.0 <= denoise <= 1.0):
            raise SettingsError(f"is {denoise:g}; use a denoising strength from 0 to 1", key="--denoise")
        upscaler, latent, model_path = _hires_upscaler(self.hires_upscaler, models_dir)
        prompt: tuple[str, str] | None = None
        if self.hires_prompt or self.hires_negative_prompt:
            from dreamreel.keyframes.prompts import resolve_prompts

            resolved = resolve_prompts(
                {"0": self.hires_prompt or self.prompt},
                1,
                negative=self.hires_negative_prompt or self.negative_prompt,
                seed=seed,
                name="--hires-prompt",
            )[0]
            prompt = (resolved.prompt, resolved.negative_prompt)
        fields: dict[str, str] = {}
        if self.hires_prompt and self.hires_prompt != self.prompt:
            fields["Hires prompt"] = self.hires_prompt
        if self.hires_negative_prompt and self.hires_negative_prompt != self.negative_prompt:
            fields["Hires negative prompt"] = self.hires_negative_prompt
        fields.update(info)
        if self.hires_steps:
            fields["Hires steps"] = str(self.hires_steps)
        fields["Hires upscaler"] = upscaler
        columns, rows = upscale_to[0] // OPT_F - truncate[0], upscale_to[1] // OPT_F - truncate[1]
        plan = HiresPlan(
            base=(width, height),
            upscale_to=upscale_to,
            truncate=truncate,
            size=(columns * OPT_F, rows * OPT_F),
            upscaler=upscaler,
            latent=latent,
            model_path=model_path,
            steps=self.hires_steps or self.steps,
            denoise=denoise,
            prompt=prompt,
            info=fields,
        )
        logger.info(
            "hires fix: %dx%d -> %dx%d with %s, %d steps at denoising strength %g",
            width, height, *plan.size, upscaler, plan.steps, denoise,
        )  # fmt: skip
        return plan


HIRES_KEYS: tuple[str, ...] = ("Hires upscale", "Hires upscaler", "Hires resize")
"""Parameters whose presence (with ``Denoising strength``) means the hires fix was on (A1111's paste rule)."""
UNSUPPORTED_HIRES_KEYS: tuple[str, ...] = (
    "Hires sampler", "Hires checkpoint", "Hires CFG Scale", "Hires schedule type", "Hires module 1",
)  # fmt: skip
"""A1111 hires parameters dreamreel does not reproduce (a warning names them)."""
SAME_AS_FIRST_PASS: dict[str, str] = {
    "Hires sampler": "Use same sampler",
    "Hires checkpoint": "Use same checkpoint",
    "Hires schedule type": "Use same scheduler",
}
"""A1111's values of unsupported hires parameters that mean "the first pass's" (what dreamreel does)."""
SCHEDULE_SUFFIXES: tuple[str, ...] = ("Karras", "Exponential")
"""A1111 ``Schedule type`` values that dreamreel spells as a sampler-name suffix."""


def _sampler_with_schedule(sampler: str, schedule: str) -> str:
    """A1111 1.9+'s ``Sampler`` and ``Schedule type`` as one dreamreel sampler name (``DPM++ 2M Karras``)."""
    if schedule == "Automatic" or sampler.endswith(tuple(f" {suffix}" for suffix in SCHEDULE_SUFFIXES)):
        return sampler
    if schedule in SCHEDULE_SUFFIXES:
        return f"{sampler} {schedule}"
    logger.warning("the image's 'Schedule type: %s' is not supported: %s uses its own schedule", schedule, sampler)
    return sampler


@dataclass(frozen=True)
class HiresPlan:
    """A checked hires fix (:meth:`StillRequest.hires_plan`); sizes are (width, height) in pixels.

    Attributes:
        base: the first pass's size.
        upscale_to: the upscale's size, each side rounded down to a multiple of 8.
        truncate: latents (8 pixels each) cropped off the upscale, half (rounded down) on the left/top.
        size: the output's size: ``upscale_to`` less the cropped latents.
        upscaler: A1111's spelling of a built-in upscaler, or the model's name or path as given.
        latent: (interpolate mode, antialias) of a latent upscaler; None for the others.
        model_path: the upscaler model file; None for the built-in ones.
        steps: the sampler steps the second pass runs.
        denoise: the second pass's denoising strength (0 skips it).
        prompt: the second pass's (prompt, negative prompt), resolved; None: the first pass's.
        info: the A1111 parameters of the hires fix, in A1111's order (``Denoising strength`` apart).
    """

    base: tuple[int, int]
    upscale_to: tuple[int, int]
    truncate: tuple[int, int]
    size: tuple[int, int]
    upscaler: str
    latent: tuple[str, bool] | None
    model_path: Path | None
    steps: int
    denoise: float
    prompt: tuple[str, str] | None = None
    info: dict[str, str] = field(default_factory=dict)


def parse_hires_resize(text: str | None, *, key: str = "--hires-resize") -> tuple[int, int]:
    """``"1024x1536"`` -> (1024, 1536); a side may be 0 (kept in proportion). None or empty -> (0, 0)."""
    if not text:
        return 0, 0
    match = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not match:
        raise SettingsError(
            f"the hires size is {text!r}; write WIDTHxHEIGHT, e.g. 1024x1536 (0 for a side keeps the aspect ratio)",
            key=key,
        )
    return int(match.group(1)), int(match.group(2))


def _hires_size(
    request: StillRequest, width: int, height: int
) -> tuple[tuple[int, int], tuple[int, int], dict[str, str]]:
    """(upscale size rounded down to multiples of 8, latents to crop, the size's A1111 parameter), as A1111's
    ``calculate_target_resolution`` computes them."""
    resize_x, resize_y = request.hires_resize_x, request.hires_resize_y
    truncate = (0, 0)
    if resize_x == 0 and resize_y == 0:
        scale = request.hires_upscale
        if not (math.isfinite(scale) and 1.0 < scale <= MAX_HIRES_SCALE):
            raise SettingsError(
                f"is {scale:g}; use an upscale factor above 1 and at most {MAX_HIRES_SCALE:g}, e.g. 2", key="--hires"
            )
        to_x, to_y = int(width * scale), int(height * scale)
        info = {"Hires upscale": f"{scale:g}"}
        key = "--hires"
    else:
        key = "--hires-resize"
        given = f"{resize_x}x{resize_y}"
        if resize_x < 0 or resize_y < 0 or max(resize_x, resize_y) > MAX_HIRES_SIDE:
            raise SettingsError(f"is {given}; each side must be 0 to {MAX_HIRES_SIDE} pixels", key=key)
        if resize_y == 0:
            to_x, to_y = resize_x, resize_x * height // width
        elif resize_x == 0:
            to_x, to_y = resize_y * width // height, resize_y
        else:
            if width / height < resize_x / resize_y:
                to_x, to_y = resize_x, resize_x * height // width
            else:
                to_x, to_y = resize_y * width // height, resize_y
            truncate = ((to_x - resize_x) // OPT_F, (to_y - resize_y) // OPT_F)
        info = {"Hires resize": given}
        if to_x <= width or to_y <= height:
            raise SettingsError(
                f"is {given}, which from the first pass's {width}x{height} is no upscale ({to_x}x{to_y} before "
                "cropping); give a larger size",
                key=key,
            )
    if max(to_x, to_y) > MAX_HIRES_SIDE:
        raise SettingsError(
            f"makes a {to_x}x{to_y} image from {width}x{height}; each side may be at most {MAX_HIRES_SIDE} pixels",
            key=key,
        )
    return (to_x - to_x % OPT_F, to_y - to_y % OPT_F), truncate, info


def _hires_upscaler(name: str, models_dir: Path | None) -> tuple[str, tuple[str, bool] | None, Path | None]:
    """(A1111's spelling or the name as given, latent mode, model file) of a hires upscaler name."""
    from dreamreel.finish.upscale import find_upscaler

    key = "--hires-upscaler"
    text = name.strip()
    builtin = {n.lower(): n for n in (*LATENT_UPSCALE_MODES, *PIXEL_UPSCALERS)}
    canonical = builtin.get(text.lower())
    if canonical is not None:
        return canonical, LATENT_UPSCALE_MODES.get(canonical), None
    choices = ", ".join(repr(n) for n in builtin.values())
    problem = ""
    if text:
        try:
            return text, None, find_upscaler(text, models_dir, key=key)
        except SettingsError as exc:
            problem = exc.detail
    hint = did_you_mean(text, builtin.values())
    if hint or not problem:
        raise SettingsError(
            f"{text!r} is not a hires upscaler.{hint} Choose one of {choices}, or an upscaler model: a file "
            "(.pth, .safetensors, ...) or its name in --models-dir",
            key=key,
        )
    raise SettingsError(f"{problem}. The built-in hires upscalers are {choices}", key=key)


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


class _TwoPassGenerator(Protocol):
    """What the hires fix needs of a generator (:class:`~dreamreel.pipelines.generator.DiffusersGenerator` has it)."""

    def generate_batch(self, request: GenerationRequest, count: int) -> list[Image]: ...

    def generate_latents(self, request: GenerationRequest, count: int) -> torch.Tensor: ...

    def decode_latents(self, latents: torch.Tensor) -> list[torch.Tensor]: ...

    def generate_hires_pass(
        self, request: GenerationRequest, init: torch.Tensor, *, first_pass_steps: int | None = None
    ) -> list[torch.Tensor]: ...


class _HiresFix:
    """A :class:`FrameGenerator` making each image with A1111's hires fix (see the module's docstring).

    Requests come at the hires size (the loop's); the first pass runs at ``plan.base``.
    """

    def __init__(self, generator: Any, plan: HiresPlan, upscaler: ImageUpscaler | None = None) -> None:
        missing = [
            n for n in ("generate_latents", "decode_latents", "generate_hires_pass") if not hasattr(generator, n)
        ]
        if missing:
            raise SettingsError(
                f"the generator {type(generator).__name__} cannot do the hires fix (it has no {', '.join(missing)})",
                key="--hires",
            )
        self.generator: _TwoPassGenerator = generator
        self.plan = plan
        self.upscaler = upscaler

    def generate(self, request: GenerationRequest) -> Image:
        return self.generate_batch(request, 1)[0]

    def generate_batch(self, request: GenerationRequest, count: int) -> list[Image]:
        """``count`` images (seeds ``request.seed + i``), both passes batched."""
        import torch

        plan = self.plan
        first = replace(request, width=plan.base[0], height=plan.base[1], init_image=None)
        init: torch.Tensor
        if plan.latent is not None:
            init = upscale_latents(self.generator.generate_latents(first, count), plan)
            if plan.denoise <= 0.0:
                return [image.cpu().numpy() for image in self.generator.decode_latents(init)]
        else:
            lowres = self.generator.generate_batch(first, count)
            upscaled = [upscale_image(image, plan, self.upscaler) for image in lowres]
            if plan.denoise <= 0.0:
                return upscaled
            init = torch.from_numpy(np.stack(upscaled))
        second = replace(
            request,
            width=plan.size[0],
            height=plan.size[1],
            steps=plan.steps,
            strength=plan.denoise,
            noise_multiplier=1.0,
            init_image=None,
        )
        if plan.prompt is not None:
            second = replace(
                second, prompt=plan.prompt[0], negative_prompt=plan.prompt[1], prompt_parts=(), negative_parts=()
            )
        # A1111 >= 1.6 schedules the hires pass's prompt editing on from the first pass's steps
        images = self.generator.generate_hires_pass(second, init, first_pass_steps=request.steps)
        return [image.cpu().numpy() for image in images]


def upscale_latents(latents: torch.Tensor, plan: HiresPlan) -> torch.Tensor:
    """A1111's latent upscale: ``interpolate`` to ``plan.upscale_to`` / 8 (in float32), then the crop."""
    import torch
    import torch.nn.functional as functional

    if plan.latent is None:
        raise ValueError(f"{plan.upscaler!r} is not a latent upscaler")
    mode, antialias = plan.latent
    size = (plan.upscale_to[1] // OPT_F, plan.upscale_to[0] // OPT_F)
    resized = functional.interpolate(latents.to(torch.float32), size=size, mode=mode, antialias=antialias)
    (left, right), (top, bottom) = _crop(plan.truncate[0]), _crop(plan.truncate[1])
    return resized[:, :, top : size[0] - bottom, left : size[1] - right].to(latents.dtype)


def upscale_image(image: Image, plan: HiresPlan, upscaler: ImageUpscaler | None) -> Image:
    """A1111's pixel upscale of a decoded first pass (``images.resize_image`` with an upscaler), then the crop.

    ``None`` and ``Lanczos``: a Lanczos resize to ``plan.upscale_to``; ``Nearest``: a nearest-neighbour
    one; a model: the model at the factor that covers the size (running at its own scale as often as
    needed), then a Lanczos resize to it.
    """
    from PIL import Image as PILImage

    from dreamreel.finish.upscale import lanczos_resize

    width, height = plan.upscale_to
    if plan.upscaler == "Nearest":
        resized = PILImage.fromarray(image).resize((width, height), resample=PILImage.Resampling.NEAREST)
        out: Image = np.asarray(resized, dtype=np.uint8)
    elif upscaler is None or plan.model_path is None:
        out = lanczos_resize(image, height, width)
    else:
        scale = max(width / image.shape[1], height / image.shape[0])
        out = lanczos_resize(upscaler.upscale(image, scale), height, width)
    (left, right), (top, bottom) = _crop(plan.truncate[0]), _crop(plan.truncate[1])
    return np.ascontiguousarray(out[top * OPT_F : height - bottom * OPT_F, left * OPT_F : width - right * OPT_F])


def _crop(truncate: int) -> tuple[int, int]:
    """Latents cropped (before, after) of ``truncate``: A1111's ``truncate // 2`` and ``(truncate + 1) // 2``."""
    return truncate // 2, (truncate + 1) // 2


class _PngSink:
    def __init__(
        self,
        folder: Path,
        extra: Mapping[str, str],
        start_index: int,
        *,
        clip_skip: int = 1,
        hires: HiresPlan | None = None,
    ) -> None:
        self.folder = folder
        self.extra = dict(extra)
        self.index = start_index
        self.clip_skip = clip_skip
        self.hires = hires
        self.written: list[Path] = []

    def write(self, image: Image, params: FrameParams) -> None:
        """Write the PNG, its parameters in A1111's order (the first pass's size; the hires fields last)."""
        extra = dict(self.extra)
        if self.hires is not None:
            extra["Size"] = f"{self.hires.base[0]}x{self.hires.base[1]}"
            extra["Denoising strength"] = f"{self.hires.denoise:g}"
        elif params.denoise < 1.0:
            extra["Denoising strength"] = f"{params.denoise:g}"
        if self.clip_skip > 1:
            extra["Clip skip"] = str(self.clip_skip)
        if self.hires is not None:
            extra.update(self.hires.info)
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
    models_dir: Path | None = None,
) -> list[Path]:
    """Generate the stills through the frame loop and write them to ``out``; returns the PNG paths.

    ``models_dir`` (an A1111 install) is where a hires upscaler model named without a path is found.
    """
    from dreamreel.jobs.checks import check_samplers
    from dreamreel.jobs.render import load_init_image

    settings = with_resolved_seed(request.settings(model))
    table = resolve_schedules(settings)  # prompts are checked here, before the model loads
    check_samplers(table)
    hires = request.hires_plan(settings.width, settings.height, models_dir=models_dir, seed=settings.seed)
    init = load_init_image(settings, settings.width, settings.height)
    generator = generator_factory(settings)
    frames: FrameGenerator = generator
    width, height = settings.width, settings.height
    if hires is not None:
        upscaler = None
        if hires.model_path is not None:
            from dreamreel.finish.upscale import load_upscaler

            device = getattr(generator, "device", "cpu")
            upscaler = load_upscaler(hires.model_path, device=device, key="--hires-upscaler")
        frames = _HiresFix(generator, hires, upscaler)
        width, height = hires.size
    out.mkdir(parents=True, exist_ok=True)
    start = len(list(out.glob("*.png")))
    sink = _PngSink(out, model_info(generator), start, clip_skip=request.clip_skip, hires=hires)
    config = LoopConfig(width=width, height=height, loopback=False, init_image=init)
    batches = _Batches(frames, request.batch_size)  # one sampler call per batch of ``batch_size``
    render(
        config, table, batches, sink, motion=StillMotion(), prepare=InitPreparer(color_space=None), progress=progress
    )
    return sink.written
