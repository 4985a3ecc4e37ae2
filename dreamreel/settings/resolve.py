"""Settings -> :class:`ScheduleTable`: every per-frame value, resolved once, before any model loads."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from dreamreel.errors import MissingDependencyError, ScheduleError, SettingsError
from dreamreel.keyframes import (
    FramePrompt,
    ScheduleTable,
    load_parseq,
    parse_schedule,
    parse_string_schedule,
    resolve_prompts,
)
from dreamreel.keyframes.parseq import ParseqSchedules
from dreamreel.keyframes.seeds import SEED_RANGE, diffusion_seeds, random_seed
from dreamreel.keyframes.table import CONTROLNET_FIELDS, controlnet_column
from dreamreel.settings.model import NUMERIC_SCHEDULES, Settings
from dreamreel.settings.preprocessor_names import canonical_preprocessor

logger = logging.getLogger(__name__)

# Values used for every frame when an optional schedule is switched off (None).
_UNSCHEDULED: dict[str, float] = {"clip_skip": 1.0, "noise_multiplier": 1.0, "ddim_eta": 0.0, "ancestral_eta": 1.0}


@dataclass(frozen=True, slots=True)
class Bounds:
    """The allowed values of one per-frame column: always finite, and within ``low``..``high``.

    ``low_open`` / ``high_open`` exclude the bound itself (``> 0`` rather than ``>= 0``).
    """

    meaning: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def allows(self, values: NDArray[np.float64]) -> NDArray[np.bool_]:
        ok = np.isfinite(values)
        if self.low is not None:
            ok &= values > self.low if self.low_open else values >= self.low
        if self.high is not None:
            ok &= values < self.high if self.high_open else values <= self.high
        return ok

    def describe(self) -> str:
        """``"between 0 and 1"``, ``"greater than 0"``, ... (every value must also be finite)."""
        low, high = self.low, self.high
        if low is not None and high is not None:
            ends = ("exclusive" if self.low_open else "inclusive", "exclusive" if self.high_open else "inclusive")
            note = f" ({ends[0]})" if ends[0] == ends[1] else f" ({ends[0]} of {low:g}, {ends[1]} of {high:g})"
            return f"between {low:g} and {high:g}{note}"
        if low is not None:
            return f"greater than {low:g}" if self.low_open else f"at least {low:g}"
        if high is not None:
            return f"less than {high:g}" if self.high_open else f"at most {high:g}"
        return "a finite number"


# The allowed values of every numeric schedule, checked on every frame the run reads (see
# :func:`unused_columns`): Deforum's meaning, and what the frame code can use (the warps, the init
# filters: contrast, anti-blur, noise; the generator). Where Deforum clamps or passes a value on
# instead, docs/compat.md says so.
BOUNDS: dict[str, Bounds] = {
    "angle": Bounds("the 2D rotation in degrees per frame"),
    "zoom": Bounds("the 2D zoom factor per frame (1 = none, 1.02 zooms in)", low=0, low_open=True),
    "translation_x": Bounds("the translation per frame"),
    "translation_y": Bounds("the translation per frame"),
    "translation_z": Bounds("the translation per frame"),
    "transform_center_x": Bounds("the rotation/zoom centre (a fraction of the width)"),
    "transform_center_y": Bounds("the rotation/zoom centre (a fraction of the height)"),
    "rotation_3d_x": Bounds("the 3D rotation in degrees per frame"),
    "rotation_3d_y": Bounds("the 3D rotation in degrees per frame"),
    "rotation_3d_z": Bounds("the 3D rotation in degrees per frame"),
    "perspective_flip_theta": Bounds("the perspective flip angle in degrees"),
    "perspective_flip_phi": Bounds("the perspective flip angle in degrees"),
    "perspective_flip_gamma": Bounds("the perspective flip angle in degrees"),
    "perspective_flip_fv": Bounds(
        "the perspective flip's field of view in degrees", low=0, high=180, low_open=True, high_open=True
    ),
    "fov": Bounds("the 3D field of view in degrees", low=0, high=180, low_open=True, high_open=True),
    "near": Bounds("the 3D near plane", low=0, low_open=True),
    "far": Bounds("the 3D far plane", low=0, low_open=True),  # and > near, checked separately
    "aspect_ratio": Bounds("the 3D aspect ratio", low=0, low_open=True),
    "strength": Bounds("the strength (how much of the previous frame is kept; denoise = 1 - strength)", low=0, high=1),
    "cfg_scale": Bounds("the CFG scale", low=0, low_open=True),
    "steps": Bounds("the number of sampler steps", low=1, high=1000),
    "seed": Bounds("the seed (-1 = random)"),
    "noise": Bounds("the noise amount", low=0, high=1),
    "contrast": Bounds("the contrast gain (1 = unchanged)", low=0),
    "noise_multiplier": Bounds("the img2img noise multiplier", low=0),
    "antiblur_amount": Bounds("the anti-blur amount", low=0),
    "antiblur_kernel": Bounds("the anti-blur kernel size", low=0),
    "antiblur_sigma": Bounds("the anti-blur sigma", low=0),
    "antiblur_threshold": Bounds("the anti-blur threshold", low=0),
    "cadence_flow_factor": Bounds("the cadence flow factor"),
    "clip_skip": Bounds("clip skip (1 = the last layer)", low=1),
    "ddim_eta": Bounds("the DDIM eta", low=0),
    "ancestral_eta": Bounds("the ancestral eta", low=0),
}
CONTROLNET_BOUNDS: dict[str, Bounds] = {
    "weight": Bounds("the ControlNet weight", low=0),
    "guidance_start": Bounds("the ControlNet guidance start (a fraction of the steps)", low=0, high=1),
    "guidance_end": Bounds("the ControlNet guidance end (a fraction of the steps)", low=0, high=1),
}
FLOW_GUIDANCE_BOUNDS = Bounds("the flow-guidance blend", low=0, high=1)

MOTION_2D: frozenset[str] = frozenset(
    {"angle", "zoom", "translation_x", "translation_y", "transform_center_x", "transform_center_y"}
)
MOTION_3D: frozenset[str] = frozenset(
    {"translation_x", "translation_y", "translation_z", "rotation_3d_x", "rotation_3d_y", "rotation_3d_z"}
    | {"fov", "near", "far", "aspect_ratio"}
)
PERSPECTIVE_FLIP: frozenset[str] = frozenset(
    {"perspective_flip_theta", "perspective_flip_phi", "perspective_flip_gamma", "perspective_flip_fv"}
)
MOTION: frozenset[str] = MOTION_2D | MOTION_3D | PERSPECTIVE_FLIP


def unused_columns(settings: Settings) -> frozenset[str]:
    """The motion columns this run never reads: 3D camera values in 2D mode, 2D ones in 3D mode,
    the perspective flip when it is off, and every motion column in the modes without motion.
    They are neither range-checked nor worth showing."""
    used: frozenset[str] = frozenset()
    if settings.mode == "2d":
        used = MOTION_2D
    elif settings.mode == "3d":
        used = MOTION_3D
    if used and settings.perspective_flip:
        used |= PERSPECTIVE_FLIP
    return MOTION - used


def with_resolved_seed(settings: Settings) -> Settings:
    """Replace ``seed = -1`` by a random seed, logged, so the run can be reproduced from its saved settings."""
    if settings.seed != -1:
        return settings
    seed = random_seed()
    logger.info("seed -1 resolved to %d", seed)
    return settings.model_copy(update={"seed": seed})


def resolve_schedules(settings: Settings, *, source: str | None = None) -> ScheduleTable:
    """Resolve every schedule, prompt and seed of ``settings`` into a table.

    Args:
        settings: validated settings. A seed of -1 is resolved to a random seed first; call
            :func:`with_resolved_seed` yourself to know (and save) which.
        source: the settings file, for error messages.

    Raises:
        ScheduleError: a schedule or prompt key does not parse or evaluate (named, with a caret).
        SettingsError: the Parseq manifest cannot be read.
    """
    try:
        return _resolve(with_resolved_seed(settings))
    except SettingsError as exc:
        raise exc.locate(source) from exc.__cause__


def _resolve(settings: Settings) -> ScheduleTable:
    parseq = _load_parseq(settings)
    numeric: dict[str, NDArray[np.float64]] = {}
    unused = unused_columns(settings)
    for name in NUMERIC_SCHEDULES:
        if parseq is not None and name in parseq.columns:
            numeric[name] = np.asarray(parseq.columns[name], dtype=np.float64)
            key = f"{settings.key_names.get('parseq.manifest', 'parseq.manifest')} ({name})"
        else:
            numeric[name] = _numeric(settings, name)
            key = _key(settings, name)
        if name not in unused:
            check_range(numeric[name], BOUNDS[name], key=key)
    if "far" not in unused:
        _check_far(settings, numeric["near"], numeric["far"], parseq)
    for name in ("steps", "clip_skip", "antiblur_kernel"):
        numeric[name] = np.floor(numeric[name])
    numeric["diffuse"] = _diffused_frames(settings)
    numeric["strength"] = _strength(settings, numeric["strength"])
    numeric["denoise"] = 1.0 - numeric["strength"]
    numeric["seed"] = _seeds(settings, numeric["seed"], numeric["diffuse"])
    numeric.update(_controlnet_columns(settings))
    if settings.temporal.flow_guidance is not None:
        key = settings.key_names.get("temporal.flow_guidance", "temporal.flow_guidance")
        guidance = parse_schedule(
            settings.temporal.flow_guidance, settings.max_frames, seed=settings.seed, name=key, fps=settings.fps,
            bpm=settings.bpm,
        )  # fmt: skip
        check_range(guidance, FLOW_GUIDANCE_BOUNDS, key=key)
        numeric["flow_guidance"] = guidance

    prompts = parseq.prompts if parseq is not None and parseq.prompts is not None else _prompts(settings)
    text = {
        "prompt": tuple(p.prompt for p in prompts),
        "negative_prompt": tuple(p.negative_prompt for p in prompts),
        "sampler": _text(settings, "sampler", settings.sampler),
        "model": _text(settings, "model", settings.model or ""),
    }
    check_samplers(settings, text["sampler"])
    check_preprocessors(settings)
    parts = {}
    if any(p.parts for p in prompts):
        parts = {
            "prompt_parts": tuple(p.parts for p in prompts),
            "negative_parts": tuple(p.negative_parts for p in prompts),
        }
    return ScheduleTable(numeric=numeric, text=text, parts=parts)


def _key(settings: Settings, name: str) -> str:
    return settings.key_names.get(f"schedules.{name}", f"schedules.{name}")


def check_range(values: NDArray[np.float64], bounds: Bounds, *, key: str) -> None:
    """Raise a :class:`ScheduleError` naming ``key`` and the first frame whose value is outside ``bounds``."""
    bad = np.flatnonzero(~bounds.allows(values))
    if bad.size == 0:
        return
    frame = int(bad[0])
    value = float(values[frame])
    allowed = bounds.describe()
    if not np.isfinite(value):
        because = " (from a division by zero or log(0) in an expression)" if not np.isnan(value) else ""
        message = f"is {value:g}{because}; every value must be a finite number"
        if allowed != "a finite number":
            message += f", and {bounds.meaning} must be {allowed}"
    else:
        message = f"is {value:g}; {bounds.meaning} must be {allowed}"
    more = "" if bad.size == 1 else f"; {bad.size} frames are outside, the last is frame {int(bad[-1])}"
    raise ScheduleError(message + more + ".", name=key, frame=frame)


def _check_far(
    settings: Settings, near: NDArray[np.float64], far: NDArray[np.float64], parseq: ParseqSchedules | None
) -> None:
    """The 3D far plane lies beyond the near plane on every frame."""
    bad = np.flatnonzero(far <= near)
    if bad.size:
        frame = int(bad[0])
        from_parseq = parseq is not None and "far" in parseq.columns
        key = f"{settings.key_names.get('parseq.manifest', 'parseq.manifest')} (far)" if from_parseq else None
        raise ScheduleError(
            f"is {far[frame]:g}, but the far plane must be greater than the near plane "
            f"({_key(settings, 'near')} is {near[frame]:g} there).",
            name=key or _key(settings, "far"),
            frame=frame,
        )


def check_samplers(settings: Settings, samplers: tuple[str, ...]) -> None:
    """Every sampler name of the run is one dreamreel knows (no model, no torch is needed to tell).

    The error names the key as written (``sampler``, or ``sampler_schedule`` / ``schedules.sampler``
    and the first frame of the bad name) and suggests the closest names. A sampler whose extra
    package is missing is left to the render, which needs the package; plan and preview do not.
    """
    from dreamreel.pipelines.samplers import check_sampler  # pure Python: no torch, no diffusers

    scheduled = settings.schedules.sampler is not None
    key = _key(settings, "sampler") if scheduled else settings.key_names.get("sampler", "sampler")
    first_frames: dict[str, int] = {}
    for frame, name in enumerate(samplers):
        first_frames.setdefault(name, frame)
    for name, frame in first_frames.items():
        try:
            check_sampler(name, key=key)
        except MissingDependencyError:
            continue
        except SettingsError as exc:
            if not scheduled:
                raise
            raise ScheduleError(exc.detail, name=key, frame=frame) from None


def check_preprocessors(settings: Settings) -> None:
    """Every ControlNet unit's preprocessor is one dreamreel has (``cn_1_module`` in Deforum files)."""
    for unit, config in enumerate(settings.controlnet):
        path = f"controlnet.{unit}.preprocessor"
        canonical_preprocessor(config.preprocessor, key=settings.key_names.get(path, path))


def _numeric(settings: Settings, name: str) -> NDArray[np.float64]:
    text = getattr(settings.schedules, name)
    if name == "seed" and settings.seed_behavior != "schedule":
        text = None  # the seed schedule is read only with seed_behavior "schedule"
    if text is None:
        constants = {**_UNSCHEDULED, "steps": float(settings.steps), "seed": float(settings.seed)}
        constant = constants[name]
        return np.full(settings.max_frames, constant, dtype=np.float64)
    return parse_schedule(
        text,
        settings.max_frames,
        seed=settings.seed,
        name=_key(settings, name),
        fps=settings.fps,
        bpm=settings.bpm,
        interpolation=settings.interpolation.get(name, "linear"),
    )


def _text(settings: Settings, name: str, constant: str) -> tuple[str, ...]:
    text = getattr(settings.schedules, name)
    if text is None:
        return (constant,) * settings.max_frames
    return parse_string_schedule(
        text, settings.max_frames, seed=settings.seed, name=_key(settings, name), fps=settings.fps, bpm=settings.bpm
    )


def _prompts(settings: Settings) -> list[FramePrompt]:
    return resolve_prompts(
        settings.prompts,
        settings.max_frames,
        positive=settings.positive_prompt,
        negative=settings.negative_prompt,
        seed=settings.seed,
        blend=settings.prompt_blend or settings.mode == "interpolation",
        fps=settings.fps,
        bpm=settings.bpm,
        name=settings.key_names.get("prompts", "prompts"),
    )


def _controlnet_columns(settings: Settings) -> dict[str, NDArray[np.float64]]:
    """``cn_1_weight``, ``cn_1_guidance_start``, ``cn_1_guidance_end``, ... for every ControlNet unit."""
    columns: dict[str, NDArray[np.float64]] = {}
    for unit, config in enumerate(settings.controlnet):
        keys = {}
        for name in CONTROLNET_FIELDS:
            path = f"controlnet.{unit}.{name}"
            keys[name] = settings.key_names.get(path, path)
            column = parse_schedule(
                getattr(config, name),
                settings.max_frames,
                seed=settings.seed,
                name=keys[name],
                fps=settings.fps,
                bpm=settings.bpm,
            )
            check_range(column, CONTROLNET_BOUNDS[name], key=keys[name])
            columns[controlnet_column(unit, name)] = column
        start, end = (
            columns[controlnet_column(unit, "guidance_start")],
            columns[controlnet_column(unit, "guidance_end")],
        )
        late = np.flatnonzero(start > end)
        if late.size:
            frame = int(late[0])
            raise ScheduleError(
                f"is {start[frame]:g}, after the guidance end ({keys['guidance_end']} is {end[frame]:g} there); "
                "the start must not be greater than the end (both are fractions of the steps, 0..1).",
                name=keys["guidance_start"],
                frame=frame,
            )
    return columns


def _diffused_frames(settings: Settings) -> NDArray[np.float64]:
    """1.0 where a frame is diffused. With cadence c: frames 0, c, 2c, ... and always the last frame."""
    cadence = settings.diffusion_cadence if settings.mode in ("2d", "3d") else 1
    frames = np.arange(settings.max_frames)
    diffuse: NDArray[np.float64] = (frames % cadence == 0).astype(np.float64)
    diffuse[-1] = 1.0
    return diffuse


def _strength(settings: Settings, schedule: NDArray[np.float64]) -> NDArray[np.float64]:
    """Deforum strength per frame (the schedule was checked to be within 0..1).

    2D/3D: frame 0 keeps ``init_strength`` of the init image, or 0 (txt2img) without one; later
    frames follow the schedule. Still/Interpolation (every frame independent): ``init_strength`` on
    every frame with an init image, else 0. Video Input: the schedule on every frame.
    """
    strength = schedule.copy()
    first = settings.init_strength if settings.init_image else 0.0
    if settings.mode in ("2d", "3d"):
        strength[0] = first
    elif settings.mode in ("still", "interpolation"):
        strength[:] = first
    return strength


def _seeds(settings: Settings, schedule: NDArray[np.float64], diffuse: NDArray[np.float64]) -> NDArray[np.float64]:
    """One seed per frame; in-between (cadence) frames carry the seed of the last diffusion."""
    diffused = np.flatnonzero(diffuse)
    if settings.seed_behavior == "schedule":
        seeds = np.floor(schedule[diffused]).astype(np.int64)
        wanted_random = seeds == -1
        rng = np.random.default_rng(settings.seed)
        seeds[wanted_random] = rng.integers(0, SEED_RANGE, size=int(wanted_random.sum()))
        seeds %= SEED_RANGE
    else:
        seeds = diffusion_seeds(settings.seed, settings.seed_behavior, len(diffused), iter_n=settings.seed_iter_n)
    index = np.cumsum(diffuse) - 1
    return seeds[index.astype(np.int64)].astype(np.float64)


def _load_parseq(settings: Settings) -> ParseqSchedules | None:
    if settings.parseq is None:
        return None
    manifest = settings.parseq.manifest.strip()
    if not manifest.startswith("{") and Path(manifest).expanduser().is_file():
        manifest = Path(manifest).expanduser().read_text(encoding="utf-8")
    key = settings.key_names.get("parseq.manifest", "parseq.manifest")
    return load_parseq(manifest, settings.max_frames, use_deltas=settings.parseq.use_deltas, source=key)
