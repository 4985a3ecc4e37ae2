"""``dreamreel m2m``: building Video Input settings from the command line (and an optional settings file)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from dreamreel.errors import SettingsError
from dreamreel.settings import Settings, load_settings

DEFAULT_LONG_SIDE = 512


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``"512x768"`` -> (512, 768); None stays None."""
    if not text:
        return None
    match = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not match:
        raise SettingsError(f"is {text!r}; write WIDTHxHEIGHT, e.g. 512x768", key="--size")
    return int(match.group(1)), int(match.group(2))


def default_size(path: Path) -> tuple[int, int]:
    """The input's aspect ratio with the longer side 512, both sides multiples of 8."""
    from dreamreel.anim.ffmpeg import probe

    info = probe(path)
    scale = DEFAULT_LONG_SIDE / max(info.width, info.height)
    return max(64, int(info.width * scale) // 8 * 8), max(64, int(info.height * scale) // 8 * 8)


def m2m_settings(args: argparse.Namespace) -> Settings:
    """Video Input settings for ``dreamreel m2m``; command-line options override ``--settings``."""
    from dreamreel.controlnet.units import parse_unit_option

    base = load_settings(args.settings) if args.settings else None
    data: dict[str, Any] = base.model_dump() if base is not None else {"seed_behavior": "fixed"}
    if base is None and not args.prompt:
        raise SettingsError("give --prompt (or prompts in --settings)", key="--prompt")
    if not args.input.is_file():
        raise SettingsError(f"{args.input} does not exist", key="input")
    data["mode"] = "video"
    video = dict(data.get("video_input") or {})
    video["path"] = str(args.input)
    for option, key in (("every", "every_nth_frame"), ("start", "from_frame"), ("end", "to_frame"), ("fps", "fps")):
        if getattr(args, option) is not None:
            video[key] = getattr(args, option)
    if args.no_audio:
        video["keep_audio"] = False
    data["video_input"] = video
    size = parse_size(args.size)
    if size is None and base is None:
        size = default_size(args.input)
    if size is not None:
        data["width"], data["height"] = size
    if args.prompt:
        data["prompts"] = {"0": args.prompt}
    if args.negative is not None:
        data["negative_prompt"] = args.negative
    for option, key in (
        ("sampler", "sampler"),
        ("steps", "steps"),
        ("seed", "seed"),
        ("seed_behavior", "seed_behavior"),
    ):
        if getattr(args, option) is not None:
            data[key] = getattr(args, option)
    schedules = dict(data.get("schedules") or {})
    if args.strength is not None:
        if not 0.0 <= args.strength <= 1.0:
            raise SettingsError(f"is {args.strength}; use 0..1 (denoising strength)", key="--strength")
        schedules["strength"] = f"0:({1.0 - args.strength})"
    elif base is None:
        schedules["strength"] = "0:(0.5)"
    if args.cfg is not None:
        schedules["cfg_scale"] = f"0:({args.cfg})"
    if base is None:
        schedules["noise_multiplier"] = None
    data["schedules"] = schedules
    if args.controlnet:
        data["controlnet"] = [parse_unit_option(text).model_dump() for text in args.controlnet]
    temporal = dict(data.get("temporal") or {})
    if args.flow_guidance is not None:
        temporal["flow_guidance"] = f"0:({args.flow_guidance})"
    if args.cross_frame_attention:
        temporal["cross_frame_attention"] = True
    if args.no_color_match:
        temporal["color_match"] = False
    data["temporal"] = temporal
    if args.model:
        data["model"] = args.model
    return Settings.model_validate(data)
