"""``dreamreel m2m``: building Video Input settings from the command line (and an optional settings file)."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from dreamreel.errors import SettingsError, check_local_path
from dreamreel.settings import Settings, load_settings
from dreamreel.settings.io import validate_settings

DEFAULT_LONG_SIDE = 512
MIN_SIDE = 32  # pixels, each side of --size (still and m2m)
MAX_SIDE = 8192


def parse_size(text: str | None, *, key: str = "--size") -> tuple[int, int] | None:
    """``"512x768"`` -> (512, 768); None stays None.

    Each side must be :data:`MIN_SIDE` to :data:`MAX_SIDE` pixels, so that rounding down to a multiple
    of 8 (which the renders do) leaves a usable size.
    """
    if not text:
        return None
    match = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not match:
        raise SettingsError(f"is {text!r}; write WIDTHxHEIGHT, e.g. 512x768", key=key)
    width, height = int(match.group(1)), int(match.group(2))
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise SettingsError(
            f"is {text!r}; each side must be {MIN_SIDE} to {MAX_SIDE} pixels (it is rounded down to a multiple of 8)",
            key=key,
        )
    return width, height


def default_size(path: Path) -> tuple[int, int]:
    """The input's aspect ratio with the longer side 512, both sides multiples of 8."""
    from dreamreel.media.ffmpeg import probe

    info = probe(path)
    scale = DEFAULT_LONG_SIDE / max(info.width, info.height)
    return max(64, int(info.width * scale) // 8 * 8), max(64, int(info.height * scale) // 8 * 8)


def m2m_settings(args: argparse.Namespace) -> Settings:
    """Video Input settings for ``dreamreel m2m``; command-line options override ``--settings``.

    Errors name the option when the value came from one, else the key as written in ``--settings``.
    """
    from dreamreel.controlnet.units import parse_unit_option

    base = load_settings(args.settings) if args.settings else None
    data: dict[str, Any] = base.model_dump() if base is not None else {"seed_behavior": "fixed"}
    names: dict[str, str] = dict(base.key_names) if base is not None else {}
    if base is None and not args.prompt:
        raise SettingsError("give --prompt (or prompts in --settings)", key="--prompt")
    source = check_local_path(str(args.input), key="INPUT", what="video")

    def put(path: str, value: Any, option: str) -> None:
        *parents, leaf = path.split(".")
        target = data
        for parent in parents:
            target[parent] = dict(target.get(parent) or {})
            target = target[parent]
        target[leaf] = value
        names[path] = option

    data["mode"] = "video"
    # absolute, so that the run directory's settings.json resumes from any working directory
    put("video_input.path", os.path.abspath(source), "INPUT")
    for option, key in (("every", "every_nth_frame"), ("start", "from_frame"), ("end", "to_frame"), ("fps", "fps")):
        if getattr(args, option) is not None:
            put(f"video_input.{key}", getattr(args, option), f"--{option}")
    if args.no_audio:
        put("video_input.keep_audio", False, "--no-audio")
    size = parse_size(args.size)
    if size is None and base is None:
        size = default_size(source)
    if size is not None:
        put("width", size[0], "--size")
        put("height", size[1], "--size")
    if args.prompt:
        put("prompts", {"0": args.prompt}, "--prompt")
    if args.negative is not None:
        put("negative_prompt", args.negative, "--negative")
    for option in ("sampler", "steps", "seed", "seed_behavior"):
        if getattr(args, option) is not None:
            put(option, getattr(args, option), "--" + option.replace("_", "-"))
    data["schedules"] = dict(data.get("schedules") or {})
    if args.strength is not None:
        if not 0.0 <= args.strength <= 1.0:
            raise SettingsError(f"is {args.strength}; use 0..1 (denoising strength)", key="--strength")
        put("schedules.strength", f"0:({1.0 - args.strength})", "--strength")
    elif base is None:
        data["schedules"]["strength"] = "0:(0.5)"
    if args.cfg is not None:
        put("schedules.cfg_scale", f"0:({args.cfg})", "--cfg")
    if base is None:
        data["schedules"]["noise_multiplier"] = None
    if args.controlnet:
        put("controlnet", [parse_unit_option(text).model_dump() for text in args.controlnet], "--controlnet")
    if args.flow_guidance is not None:
        put("temporal.flow_guidance", f"0:({args.flow_guidance})", "--flow-guidance")
    if args.cross_frame_attention:
        put("temporal.cross_frame_attention", True, "--cross-frame-attention")
    if args.no_color_match:
        put("temporal.color_match", False, "--no-color-match")
    if args.model:
        put("model", args.model, "--model")
    return validate_settings(data, key_names=names, source=str(args.settings) if base is not None else None)
