"""Deforum's flat settings format (sd-webui-deforum's ``*_settings.txt``) to and from :class:`Settings`.

This is the only module that knows Deforum's key names. Every Deforum key is either translated,
or reported once as unsupported; keys Deforum does not know are reported with a "did you mean".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from dreamreel import __version__
from dreamreel.errors import SettingsError, did_you_mean
from dreamreel.settings.model import Settings

logger = logging.getLogger(__name__)

# Deforum schedule key -> native schedule name (always used).
SCHEDULE_KEYS: dict[str, str] = {
    **{
        k: k
        for k in (
            "angle", "zoom", "translation_x", "translation_y", "translation_z", "transform_center_x",
            "transform_center_y", "rotation_3d_x", "rotation_3d_y", "rotation_3d_z", "perspective_flip_theta",
            "perspective_flip_phi", "perspective_flip_gamma", "perspective_flip_fv",
        )
    },
    "fov_schedule": "fov",
    "near_schedule": "near",
    "far_schedule": "far",
    "aspect_ratio_schedule": "aspect_ratio",
    "strength_schedule": "strength",
    "cfg_scale_schedule": "cfg_scale",
    "noise_schedule": "noise",
    "contrast_schedule": "contrast",
    "amount_schedule": "antiblur_amount",
    "kernel_schedule": "antiblur_kernel",
    "sigma_schedule": "antiblur_sigma",
    "threshold_schedule": "antiblur_threshold",
    "cadence_flow_factor_schedule": "cadence_flow_factor",
    "seed_schedule": "seed",
}  # fmt: skip

# native schedule name -> (Deforum enable flag, Deforum schedule key): used only when the flag is on.
OPTIONAL_SCHEDULES: dict[str, tuple[str, str]] = {
    "steps": ("enable_steps_scheduling", "steps_schedule"),
    "clip_skip": ("enable_clipskip_scheduling", "clipskip_schedule"),
    "noise_multiplier": ("enable_noise_multiplier_scheduling", "noise_multiplier_schedule"),
    "ddim_eta": ("enable_ddim_eta_scheduling", "ddim_eta_schedule"),
    "ancestral_eta": ("enable_ancestral_eta_scheduling", "ancestral_eta_schedule"),
    "sampler": ("enable_sampler_scheduling", "sampler_schedule"),
    "model": ("enable_checkpoint_scheduling", "checkpoint_schedule"),
}

# Deforum scalar key -> native key.
SCALAR_KEYS: dict[str, str] = {
    "W": "width",
    "H": "height",
    "seed": "seed",
    "sampler": "sampler",
    "steps": "steps",
    "seed_behavior": "seed_behavior",
    "seed_iter_N": "seed_iter_n",
    "strength": "init_strength",
    "max_frames": "max_frames",
    "border": "border",
    "enable_perspective_flip": "perspective_flip",
    "diffusion_cadence": "diffusion_cadence",
    "noise_type": "noise_type",
    "perlin_octaves": "perlin_octaves",
    "perlin_persistence": "perlin_persistence",
    "fps": "fps",
}

MODES = {"2D": "2d", "3D": "3d", "Video Input": "video", "Interpolation": "interpolation", "None": "still"}
FLOW_CADENCE = {"None": "none", "DIS Medium": "dis_medium", "DIS Fine": "dis_fine", "Farneback": "farneback"}
DEPTH_KEYS = {
    "use_depth_warping": "enabled",
    "depth_algorithm": "model",
    "midas_weight": "midas_weight",
    "padding_mode": "padding_mode",
    "sampling_mode": "sampling_mode",
    "save_depth_maps": "save_maps",
}
VIDEO_KEYS = {
    "video_init_path": "path",
    "extract_nth_frame": "every_nth_frame",
    "extract_from_frame": "from_frame",
    "extract_to_frame": "to_frame",
}
# Renamed keys and values from older Deforum versions (applied before translation).
KEY_MIGRATIONS = {
    "animation_prompts": "prompts",
    "flip_2d_perspective": "enable_perspective_flip",
    "skip_video_for_run_all": "skip_video_creation",
}
COLOR_MIGRATIONS = {"Match Frame 0 LAB": "LAB", "Match Frame 0 HSV": "HSV", "Match Frame 0 RGB": "RGB"}
# Keys that describe where a file came from; kept for reference, never acted on.
METADATA_KEYS = frozenset({"sd_model_name", "sd_model_hash", "deforum_git_commit_id", "batch_name"})
# dreamreel additions that may appear in a Deforum-format file.
EXTRA_KEYS = frozenset(
    {"bpm", "prompt_blend", "schedule_interpolation", "dreamreel_version", "dreamreel_temporal", "dreamreel_video"}
)
PROMPT_KEYS = frozenset(
    {"prompts", "positive_prompts", "negative_prompts", "animation_prompts_positive", "animation_prompts_negative"}
)


@cache
def deforum_defaults() -> dict[str, Any]:
    """Every key sd-webui-deforum saves, with its default value."""
    text = resources.files("dreamreel.settings").joinpath("data/deforum_keys.json").read_text(encoding="utf-8")
    return dict(json.loads(text))


@dataclass
class Translation:
    """The native keys built from a Deforum file, and where each came from (for error messages)."""

    native: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)  # native dotted path -> Deforum key
    handled: set[str] = field(default_factory=set)

    def put(self, path: str, value: Any, deforum_key: str) -> None:
        target = self.native
        *parents, leaf = path.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
        self.origin[path] = deforum_key
        self.handled.add(deforum_key)


def looks_like_deforum(raw: Mapping[str, Any]) -> bool:
    """True when a settings mapping uses Deforum's flat keys rather than dreamreel's native ones."""
    return "dreamreel_settings" not in raw


def from_deforum(raw: Mapping[str, Any], *, source: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Translate a Deforum settings mapping into native keys.

    Returns:
        (native mapping ready for ``Settings.model_validate``, native path -> Deforum key).

    Raises:
        SettingsError: for values that cannot be translated (wrong type, unknown mode).
    """
    raw = _migrate(raw)
    out = Translation()
    get = raw.get

    for key, native in SCALAR_KEYS.items():
        if key in raw:
            out.put(native, raw[key], key)
    if isinstance(get("sampler"), int) and not isinstance(get("sampler"), bool):
        raise SettingsError(
            f"is the number {raw['sampler']}, an index from an old Deforum version; write the sampler's name, "
            "for example \"Euler a\" or \"DPM++ 2M Karras\"",
            key="sampler", source=source,
        )  # fmt: skip
    for key, native in SCHEDULE_KEYS.items():
        if key in raw:
            out.put(f"schedules.{native}", raw[key], key)
    for native, (flag, key) in OPTIONAL_SCHEDULES.items():
        out.handled.update({flag, key})
        if get(flag) and key in raw:
            out.put(f"schedules.{native}", raw[key], key)
        elif native == "noise_multiplier" and flag in raw and not get(flag):
            out.put("schedules.noise_multiplier", None, flag)

    _translate_mode(raw, out, source)
    _translate_prompts(raw, out)
    _translate_color(raw, out, source)
    _translate_misc(raw, out, source)
    _translate_controlnet(raw, out, source)
    _translate_finish(raw, out, source)
    _report_leftovers(raw, out.handled, source, exported="dreamreel_version" in raw)
    return out.native, out.origin


def _migrate(raw: Mapping[str, Any]) -> dict[str, Any]:
    migrated = dict(raw)
    for old, new in KEY_MIGRATIONS.items():
        if old in migrated:
            value = migrated.pop(old)
            if new not in migrated:
                migrated[new] = value
                logger.info("settings key %r is the old name of %r; using it as %r", old, new, new)
    if migrated.get("color_coherence") in COLOR_MIGRATIONS:
        migrated["color_coherence"] = COLOR_MIGRATIONS[migrated["color_coherence"]]
    return migrated


def _translate_mode(raw: Mapping[str, Any], out: Translation, source: str | None) -> None:
    if "animation_mode" not in raw:
        return
    mode = raw["animation_mode"]
    if mode not in MODES:
        raise SettingsError(
            f"is {mode!r}; allowed values are {', '.join(repr(m) for m in MODES)}.{did_you_mean(str(mode), MODES)}",
            key="animation_mode", source=source,
        )  # fmt: skip
    out.put("mode", MODES[mode], "animation_mode")
    if raw.get("use_init") and raw.get("init_image"):
        out.put("init_image", raw["init_image"], "init_image")
    out.handled.update({"use_init", "init_image", "strength_0_no_init"})
    if mode == "Video Input":
        for key, native in VIDEO_KEYS.items():
            if key in raw:
                out.put(f"video_input.{native}", raw[key], key)
        if raw.get("use_mask_video") and raw.get("video_mask_path"):
            out.put("video_input.mask_path", raw["video_mask_path"], "video_mask_path")
        for key, value in dict(raw.get("dreamreel_video") or {}).items():
            out.put(f"video_input.{key}", value, "dreamreel_video")
    out.handled.update(VIDEO_KEYS)
    out.handled.update({"use_mask_video", "video_mask_path", "overwrite_extracted_frames"})


def _translate_prompts(raw: Mapping[str, Any], out: Translation) -> None:
    if "prompts" in raw:
        out.put("prompts", raw["prompts"], "prompts")
    # A file Deforum saved after a run has its prompts already merged with positive/negative_prompts
    # (dh/args.py merges before saving); merging them again would double them. The UI's "save settings"
    # writes raw prompts plus animation_prompts_positive/negative, which still have to be merged.
    if "positive_prompts" in raw or "negative_prompts" in raw:
        out.handled.update({"positive_prompts", "negative_prompts"})
    for key, native in (
        ("animation_prompts_positive", "positive_prompt"),
        ("animation_prompts_negative", "negative_prompt"),
    ):
        if key in raw and not ("positive_prompts" in raw or "negative_prompts" in raw):
            out.put(native, raw[key], key)
        out.handled.add(key)
    if "prompt_blend" in raw:
        out.put("prompt_blend", raw["prompt_blend"], "prompt_blend")
    if "schedule_interpolation" in raw:
        out.put("interpolation", raw["schedule_interpolation"], "schedule_interpolation")
    if "bpm" in raw:
        out.put("bpm", raw["bpm"], "bpm")
    if "dreamreel_temporal" in raw:
        out.put("temporal", raw["dreamreel_temporal"], "dreamreel_temporal")


def _translate_color(raw: Mapping[str, Any], out: Translation, source: str | None) -> None:
    keys = ("color_coherence", "color_coherence_image_path", "color_coherence_video_every_N_frames",
            "color_force_grayscale")  # fmt: skip
    out.handled.update(keys)
    if "color_coherence" not in raw:
        return
    value = raw["color_coherence"]
    if value in (None, "None"):
        out.put("color_coherence", None, "color_coherence")
        return
    choices = {"LAB": ("lab", "first_frame"), "HSV": ("hsv", "first_frame"), "RGB": ("rgb", "first_frame"),
               "Image": ("lab", "image"), "Video Input": ("lab", "video")}  # fmt: skip
    if value not in choices:
        raise SettingsError(
            f"is {value!r}; allowed values are 'None', {', '.join(repr(c) for c in choices)}."
            f"{did_you_mean(str(value), choices)}",
            key="color_coherence", source=source,
        )  # fmt: skip
    space, reference = choices[value]
    color: dict[str, Any] = {"space": space, "reference": reference}
    if reference == "image":
        color["image"] = raw.get("color_coherence_image_path") or None
    if "color_coherence_video_every_N_frames" in raw:
        color["video_every_n_frames"] = raw["color_coherence_video_every_N_frames"]
    if "color_force_grayscale" in raw:
        color["grayscale"] = raw["color_force_grayscale"]
    out.put("color_coherence", color, "color_coherence")
    for native, key in (("image", "color_coherence_image_path"), ("video_every_n_frames", keys[2]),
                        ("grayscale", "color_force_grayscale")):  # fmt: skip
        if native in color:
            out.origin[f"color_coherence.{native}"] = key


def _translate_misc(raw: Mapping[str, Any], out: Translation, source: str | None) -> None:
    flow = raw.get("optical_flow_cadence", "None")
    if flow == "RAFT":
        logger.warning(
            "%soptical_flow_cadence 'RAFT' needs a RAFT model, which dreamreel does not ship; using 'DIS Fine' "
            "(OpenCV, no weights) instead",
            f"{source}: " if source else "",
        )
        flow = "DIS Fine"
    if "optical_flow_cadence" in raw:
        if flow not in FLOW_CADENCE:
            raise SettingsError(
                f"is {flow!r}; allowed values are 'None', 'DIS Medium', 'DIS Fine', 'Farneback', 'RAFT'",
                key="optical_flow_cadence", source=source,
            )  # fmt: skip
        out.put("optical_flow_cadence", FLOW_CADENCE[flow], "optical_flow_cadence")
    for key, native in DEPTH_KEYS.items():
        if key in raw:
            out.put(f"depth.{native}", raw[key], key)
    manifest = raw.get("parseq_manifest")
    out.handled.update({"parseq_manifest", "parseq_use_deltas"})
    if isinstance(manifest, str) and manifest.strip():
        out.put("parseq.manifest", manifest, "parseq_manifest")
        if "parseq_use_deltas" in raw:
            out.put("parseq.use_deltas", raw["parseq_use_deltas"], "parseq_use_deltas")
    soundtrack = raw.get("add_soundtrack", "None")
    out.handled.update({"add_soundtrack", "soundtrack_path"})
    if soundtrack == "File" and raw.get("soundtrack_path"):
        out.put("output.audio", raw["soundtrack_path"], "soundtrack_path")
    elif soundtrack == "Init Video" and raw.get("video_init_path"):
        # the soundtrack is the input video: a problem with it is in what video_init_path names
        out.put("output.audio", raw["video_init_path"], "video_init_path (add_soundtrack 'Init Video')")
    out.handled.update(METADATA_KEYS)
    if raw.get("sd_model_name") and "model" not in out.native:
        logger.debug("settings were saved with model %s", raw["sd_model_name"])


CN_RESIZE = {
    "Inner Fit (Scale to Fit)": "crop_and_resize",
    "Crop and Resize": "crop_and_resize",
    "Just Resize": "just_resize",
    "Outer Fit (Shrink to Fit)": "resize_and_fill",
    "Resize and Fill": "resize_and_fill",
}
CN_CONTROL = {
    "Balanced": "balanced",
    "My prompt is more important": "prompt",
    "ControlNet is more important": "controlnet",
}
CN_FIELDS = ("weight", "guidance_start", "guidance_end")
# unit field -> the cn_N_ key it is read from (for error messages)
CN_WRITTEN = {
    **{name: name for name in CN_FIELDS}, "preprocessor": "module", "model": "model", "input": "vid_path",
    "detect_resolution": "processor_res", "threshold_a": "threshold_a", "threshold_b": "threshold_b",
    "resize_mode": "resize_mode", "control_mode": "control_mode",
}  # fmt: skip
# cn_N_* keys that change nothing here (frames are always re-read; memory is managed per run)
CN_IGNORED = ("overwrite_frames", "low_vram")
CN_UNSUPPORTED = ("mask_vid_path", "pixel_perfect", "loopback_mode")


FINISH_KEYS = (
    "r_upscale_video", "r_upscale_factor", "r_upscale_model", "r_upscale_keep_imgs", "frame_interpolation_engine",
    "frame_interpolation_x_amount", "frame_interpolation_slow_mo_enabled", "frame_interpolation_slow_mo_amount",
    "frame_interpolation_keep_imgs", "frame_interpolation_use_upscaled",
)  # fmt: skip
INTERPOLATION_ENGINES = {"None": None, "RIFE v4.6": "rife", "FILM": "film"}


def _translate_finish(raw: Mapping[str, Any], out: Translation, source: str | None) -> None:
    """Deforum's upscaling and frame interpolation after the render -> the ``finish`` section.

    Deforum made two videos (an upscaled one, and an interpolated one of the raw or, with
    ``frame_interpolation_use_upscaled``, the upscaled frames); dreamreel makes one finished video with
    both steps: upscaling first with ``use_upscaled``, interpolation first (cheaper) without.
    ``*_keep_imgs`` have nothing to act on (no PNG folders are made) and are accepted.
    """
    out.handled.update(FINISH_KEYS)
    finish: dict[str, Any] = {}
    if raw.get("r_upscale_video"):
        factor = str(raw.get("r_upscale_factor", "x2")).strip().lower().removeprefix("x")
        if factor not in ("2", "3", "4"):
            raise SettingsError(
                f"is {raw.get('r_upscale_factor')!r}; allowed values are 'x2', 'x3', 'x4'", key="r_upscale_factor",
                source=source,
            )  # fmt: skip
        finish["upscale"] = {"model": raw.get("r_upscale_model") or "realesr-animevideov3", "scale": int(factor)}
        out.origin["finish.upscale.model"] = "r_upscale_model"
        out.origin["finish.upscale.scale"] = "r_upscale_factor"
    engine_name = raw.get("frame_interpolation_engine", "None")
    if engine_name not in INTERPOLATION_ENGINES:
        raise SettingsError(
            f"is {engine_name!r}; allowed values are {', '.join(repr(k) for k in INTERPOLATION_ENGINES)}"
            f"{did_you_mean(str(engine_name), INTERPOLATION_ENGINES)}",
            key="frame_interpolation_engine", source=source,
        )  # fmt: skip
    engine = INTERPOLATION_ENGINES[engine_name]
    if engine is not None:
        interpolate: dict[str, Any] = {"engine": engine, "x": raw.get("frame_interpolation_x_amount", 2)}
        if raw.get("frame_interpolation_slow_mo_enabled"):
            interpolate["slow_motion"] = raw.get("frame_interpolation_slow_mo_amount", 2)
        if raw.get("dreamreel_interpolation_model"):
            interpolate["model"] = raw["dreamreel_interpolation_model"]
        finish["interpolate"] = interpolate
        out.origin["finish.interpolate.engine"] = "frame_interpolation_engine"
        out.origin["finish.interpolate.x"] = "frame_interpolation_x_amount"
        out.origin["finish.interpolate.slow_motion"] = "frame_interpolation_slow_mo_amount"
        out.origin["finish.interpolate.model"] = "dreamreel_interpolation_model"
    out.handled.add("dreamreel_interpolation_model")
    if finish:
        if not raw.get("frame_interpolation_use_upscaled"):
            finish["order"] = ["interpolate", "upscale"]
        out.put("finish", finish, "r_upscale_video" if "upscale" in finish else "frame_interpolation_engine")


def _translate_controlnet(raw: Mapping[str, Any], out: Translation, source: str | None) -> None:
    """Deforum's ``cn_1_*`` .. ``cn_5_*`` keys -> ``controlnet`` units (enabled units only)."""
    numbers = sorted({int(k.split("_")[1]) for k in raw if k.startswith("cn_") and k.split("_")[1].isdigit()})
    units: list[dict[str, Any]] = []
    for n in numbers:
        prefix = f"cn_{n}_"
        keys = [k for k in raw if k.startswith(prefix)]
        if not raw.get(f"{prefix}enabled"):
            out.handled.update(keys)  # a disabled unit's settings do not matter
            continue
        unit: dict[str, Any] = {"preprocessor": str(raw.get(f"{prefix}module", "none"))}
        model = raw.get(f"{prefix}model")
        if model and model != "None":
            unit["model"] = model
        for field_name in CN_FIELDS:
            if f"{prefix}{field_name}" in raw:
                unit[field_name] = raw[f"{prefix}{field_name}"]
        if raw.get(f"{prefix}vid_path"):
            unit["input"] = raw[f"{prefix}vid_path"]
        if f"{prefix}processor_res" in raw:
            resolution = raw[f"{prefix}processor_res"]
            if isinstance(resolution, bool) or not isinstance(resolution, int | float):
                raise SettingsError(
                    f"is {resolution!r}; write the detector resolution in pixels, e.g. 512",
                    key=f"{prefix}processor_res", source=source,
                )  # fmt: skip
            unit["detect_resolution"] = max(64, int(resolution))
        for letter in ("a", "b"):
            if f"{prefix}threshold_{letter}" in raw:
                unit[f"threshold_{letter}"] = raw[f"{prefix}threshold_{letter}"]
        for key, table, field_name in ((f"{prefix}resize_mode", CN_RESIZE, "resize_mode"),
                                       (f"{prefix}control_mode", CN_CONTROL, "control_mode")):  # fmt: skip
            if key in raw:
                if raw[key] not in table:
                    allowed = ", ".join(repr(v) for v in table)
                    raise SettingsError(
                        f"is {raw[key]!r}; allowed: {allowed}.{did_you_mean(str(raw[key]), table)}",
                        key=key, source=source,
                    )  # fmt: skip
                unit[field_name] = table[raw[key]]
        for key in keys:
            if not any(key == f"{prefix}{name}" for name in CN_UNSUPPORTED):
                out.handled.add(key)
            elif raw[key] in (False, "", None):
                out.handled.add(key)  # unsupported, but off
        units.append(unit)
        for field_name, suffix in CN_WRITTEN.items():
            out.origin[f"controlnet.{len(units) - 1}.{field_name}"] = f"{prefix}{suffix}"
        out.origin[f"controlnet.{len(units) - 1}.preprocessor"] = f"{prefix}module"
    if units:
        out.native["controlnet"] = units
        out.origin["controlnet"] = "cn_1_enabled"


def _report_leftovers(raw: Mapping[str, Any], handled: set[str], source: str | None, *, exported: bool) -> None:
    """One warning listing unsupported and unknown keys (only INFO for dreamreel's own exports at defaults)."""
    defaults = deforum_defaults()
    leftovers = [k for k in raw if k not in handled and k not in PROMPT_KEYS and k not in EXTRA_KEYS]
    unsupported = [k for k in leftovers if k in defaults]
    unknown = [k for k in leftovers if k not in defaults]
    if not unsupported and not unknown:
        return
    where = f"{source}: " if source else ""
    parts: list[str] = []
    if unsupported:
        changed = [k for k in unsupported if raw[k] != defaults[k]]
        text = f"{len(unsupported)} Deforum settings are not supported and were ignored: {', '.join(unsupported)}"
        if changed:
            text += f" (set to non-default values, so the result will differ from Deforum's: {', '.join(changed)})"
        else:
            text += " (all at Deforum's defaults, so nothing is lost)"
        parts.append(text)
        if exported and not changed and not unknown:
            logger.info("%s%s", where, text)
            return
    if unknown:
        known = list(defaults) + list(PROMPT_KEYS) + list(EXTRA_KEYS)
        hints = "; ".join(f"{k!r}{did_you_mean(k, known, n=1)}" for k in unknown)
        parts.append(f"{len(unknown)} keys are not Deforum or dreamreel settings and were ignored: {hints}")
    logger.warning("%s%s", where, ". ".join(parts))


def to_deforum(settings: Settings) -> dict[str, Any]:
    """A complete Deforum settings mapping for ``settings`` (loadable by sd-webui-deforum and by dreamreel)."""
    out: dict[str, Any] = dict(deforum_defaults())
    native = settings.model_dump(mode="json")
    for key, name in SCALAR_KEYS.items():
        out[key] = native[name]
    for key, name in SCHEDULE_KEYS.items():
        out[key] = native["schedules"][name]
    for name, (flag, key) in OPTIONAL_SCHEDULES.items():
        value = native["schedules"][name]
        out[flag] = value is not None
        if value is not None:
            out[key] = value
    out["animation_mode"] = {v: k for k, v in MODES.items()}[settings.mode]
    out["use_init"] = settings.init_image is not None
    out["init_image"] = settings.init_image
    out["prompts"] = dict(settings.prompts)
    out["animation_prompts_positive"] = settings.positive_prompt
    out["animation_prompts_negative"] = settings.negative_prompt
    _color_to_deforum(settings, out)
    out["optical_flow_cadence"] = {v: k for k, v in FLOW_CADENCE.items()}[settings.optical_flow_cadence]
    for key, name in DEPTH_KEYS.items():
        out[key] = native["depth"][name]
    if settings.video_input is not None:
        for key, name in VIDEO_KEYS.items():
            out[key] = native["video_input"][name]
        out["use_mask_video"] = settings.video_input.mask_path is not None
        out["video_mask_path"] = settings.video_input.mask_path or ""
    out["parseq_manifest"] = settings.parseq.manifest if settings.parseq else ""
    out["parseq_use_deltas"] = settings.parseq.use_deltas if settings.parseq else True
    out["add_soundtrack"] = "File" if settings.output.audio else "None"
    out["soundtrack_path"] = settings.output.audio or ""
    if settings.bpm is not None:
        out["bpm"] = settings.bpm
    if settings.prompt_blend:
        out["prompt_blend"] = True
    if settings.interpolation:
        out["schedule_interpolation"] = dict(settings.interpolation)
    _controlnet_to_deforum(settings, out)
    _finish_to_deforum(settings, out)
    if settings.temporal != type(settings.temporal)():
        out["dreamreel_temporal"] = native["temporal"]
    if settings.video_input is not None:
        extra = {k: native["video_input"][k] for k in ("resize_mode", "fps", "keep_audio")}
        out["dreamreel_video"] = extra
    out["dreamreel_version"] = __version__
    return out


def _finish_to_deforum(settings: Settings, out: dict[str, Any]) -> None:
    finish = settings.finish
    upscale = finish.upscale if finish is not None else None
    interpolate = finish.interpolate if finish is not None else None
    out["r_upscale_video"] = upscale is not None
    if upscale is not None:
        out["r_upscale_factor"] = f"x{upscale.scale:g}"
        out["r_upscale_model"] = upscale.model
    engines = {v: k for k, v in INTERPOLATION_ENGINES.items()}
    out["frame_interpolation_engine"] = engines.get(interpolate.engine, "None") if interpolate else "None"
    if interpolate is not None:
        out["frame_interpolation_x_amount"] = interpolate.x
        out["frame_interpolation_slow_mo_enabled"] = interpolate.slow_motion > 1
        out["frame_interpolation_slow_mo_amount"] = max(2, interpolate.slow_motion)
        if interpolate.model:
            out["dreamreel_interpolation_model"] = interpolate.model
    if finish is not None and upscale is not None and interpolate is not None:
        out["frame_interpolation_use_upscaled"] = finish.order[0] == "upscale"


def _controlnet_to_deforum(settings: Settings, out: dict[str, Any]) -> None:
    if len(settings.controlnet) > 5:
        raise SettingsError(
            f"has {len(settings.controlnet)} units; Deforum's settings format holds at most 5", key="controlnet"
        )
    resize = {v: k for k, v in CN_RESIZE.items() if k != "Crop and Resize" and k != "Resize and Fill"}
    control = {v: k for k, v in CN_CONTROL.items()}
    for n, unit in enumerate(settings.controlnet, start=1):
        p = f"cn_{n}_"
        out.update({
            f"{p}enabled": True, f"{p}module": unit.preprocessor, f"{p}model": unit.model or "None",
            f"{p}weight": unit.weight, f"{p}guidance_start": unit.guidance_start, f"{p}guidance_end": unit.guidance_end,
            f"{p}vid_path": unit.input or "", f"{p}processor_res": unit.detect_resolution,
            f"{p}threshold_a": unit.threshold_a, f"{p}threshold_b": unit.threshold_b,
            f"{p}resize_mode": resize[unit.resize_mode], f"{p}control_mode": control[unit.control_mode],
        })  # fmt: skip


def _color_to_deforum(settings: Settings, out: dict[str, Any]) -> None:
    color = settings.color_coherence
    if color is None:
        out["color_coherence"] = "None"
        return
    if color.reference == "image":
        out["color_coherence"] = "Image"
        out["color_coherence_image_path"] = color.image or ""
    elif color.reference == "video":
        out["color_coherence"] = "Video Input"
    else:
        out["color_coherence"] = color.space.upper()
    out["color_coherence_video_every_N_frames"] = color.video_every_n_frames
    out["color_force_grayscale"] = color.grayscale
