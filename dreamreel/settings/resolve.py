"""Settings -> :class:`ScheduleTable`: every per-frame value, resolved once, before any model loads."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from dreamreel.errors import SettingsError
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

logger = logging.getLogger(__name__)

# Values used for every frame when an optional schedule is switched off (None).
_UNSCHEDULED: dict[str, float] = {"clip_skip": 1.0, "noise_multiplier": 1.0, "ddim_eta": 0.0, "ancestral_eta": 1.0}


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
        if source and not exc.source:
            exc.source = source
            exc.args = (f"{source}: {exc.args[0]}",)
        raise


def _resolve(settings: Settings) -> ScheduleTable:
    parseq = _load_parseq(settings)
    numeric: dict[str, NDArray[np.float64]] = {}
    for name in NUMERIC_SCHEDULES:
        if parseq is not None and name in parseq.columns:
            numeric[name] = np.asarray(parseq.columns[name], dtype=np.float64)
        else:
            numeric[name] = _numeric(settings, name)
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
        numeric["flow_guidance"] = np.clip(guidance, 0.0, 1.0)

    prompts = parseq.prompts if parseq is not None and parseq.prompts is not None else _prompts(settings)
    text = {
        "prompt": tuple(p.prompt for p in prompts),
        "negative_prompt": tuple(p.negative_prompt for p in prompts),
        "sampler": _text(settings, "sampler", settings.sampler),
        "model": _text(settings, "model", settings.model or ""),
    }
    parts = {}
    if any(p.parts for p in prompts):
        parts = {
            "prompt_parts": tuple(p.parts for p in prompts),
            "negative_parts": tuple(p.negative_parts for p in prompts),
        }
    return ScheduleTable(numeric=numeric, text=text, parts=parts)


def _key(settings: Settings, name: str) -> str:
    return settings.key_names.get(f"schedules.{name}", f"schedules.{name}")


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
        for name in CONTROLNET_FIELDS:
            path = f"controlnet.{unit}.{name}"
            columns[controlnet_column(unit, name)] = parse_schedule(
                getattr(config, name),
                settings.max_frames,
                seed=settings.seed,
                name=settings.key_names.get(path, path),
                fps=settings.fps,
                bpm=settings.bpm,
            )
        start, end = (
            columns[controlnet_column(unit, "guidance_start")],
            columns[controlnet_column(unit, "guidance_end")],
        )
        np.clip(start, 0.0, 1.0, out=start)
        np.clip(end, 0.0, 1.0, out=end)
    return columns


def _diffused_frames(settings: Settings) -> NDArray[np.float64]:
    """1.0 where a frame is diffused. With cadence c: frames 0, c, 2c, ... and always the last frame."""
    cadence = settings.diffusion_cadence if settings.mode in ("2d", "3d") else 1
    frames = np.arange(settings.max_frames)
    diffuse = (frames % cadence == 0).astype(np.float64)
    diffuse[-1] = 1.0
    return diffuse


def _strength(settings: Settings, schedule: NDArray[np.float64]) -> NDArray[np.float64]:
    """Deforum strength per frame, clamped to 0..1.

    2D/3D: frame 0 keeps ``init_strength`` of the init image, or 0 (txt2img) without one; later
    frames follow the schedule. Still/Interpolation (every frame independent): ``init_strength`` on
    every frame with an init image, else 0. Video Input: the schedule on every frame.
    """
    strength = np.clip(schedule, 0.0, 1.0)
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
