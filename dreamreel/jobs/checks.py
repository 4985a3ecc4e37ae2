"""Finding and checking every model and input of a run before anything loads or is written.

A wrong name or path fails here, with suggestions, so a failed start leaves nothing behind (see
docs/architecture.md). Also what identifies a model file or folder (its fingerprint), so that a
resumed run can tell a model that moved from another one.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dreamreel.errors import ModelLoadError, SettingsError
from dreamreel.keyframes.table import ScheduleTable
from dreamreel.settings import Settings

if TYPE_CHECKING:
    from dreamreel.jobs.render import RenderOptions

logger = logging.getLogger(__name__)

DEPTH_MODELS = {
    "midas-3-hybrid": "Intel/dpt-hybrid-midas",
    "midas-3.1-beitlarge": "Intel/dpt-beit-large-512",
    "dpt-large": "Intel/dpt-large",
    "depth-anything": "depth-anything/Depth-Anything-V2-Small-hf",
}


def check_samplers(table: ScheduleTable) -> None:
    """Every sampler name of the run is known (fails before any model loads, with suggestions)."""
    from dreamreel.pipelines.samplers import check_sampler

    for name in sorted(set(table.text["sampler"])):
        check_sampler(name)


def model_name(settings: Settings, options: RenderOptions) -> str:
    model = options.model or settings.model
    if not model:
        raise SettingsError(
            "no model given: pass --model (a .safetensors checkpoint, a diffusers folder, a hub id in the local cache, "
            'or a name in --models-dir), set "model" in the settings, or use --preview to render the motion only',
            key="--model",
        )
    return model


def check_models(settings: Settings, options: RenderOptions, table: ScheduleTable | None = None) -> Path:
    """Find every model file before anything loads: a wrong name or path fails here, with suggestions.

    The base model, the device, LoRAs named in prompts, the annotator weights of each ControlNet unit
    and each unit's ControlNet model. Returns the base model's resolved path.
    """
    from dreamreel.pipelines.finding import find_controlnet
    from dreamreel.pipelines.generator import check_device
    from dreamreel.pipelines.loading import resolve_model

    model = model_name(settings, options)
    if options.device != "auto":
        check_device(options.device)
    source = resolve_model(model, models_dir=options.models_dir)
    if table is not None:
        check_loras(table, options.models_dir)
    beside = source.path if source.kind == "diffusers" else None
    for name in controlnet_models(settings):
        find_controlnet(name, options.models_dir, model_dir=beside)
    check_annotators(settings, options.annotators)
    return Path(source.path).resolve()


def check_loras(table: ScheduleTable, models_dir: Path | None) -> None:
    """Every ``<lora:name:w>`` of every prompt is found (each distinct prompt once)."""
    from dreamreel.pipelines.finding import find_lora
    from dreamreel.pipelines.prompt_syntax import extract_lora_tags

    prompts = set(table.text.get("prompt", ())) | set(table.text.get("negative_prompt", ()))
    quiet = logging.getLogger("dreamreel.pipelines.prompt_syntax")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the generator warns about odd tags once, when it uses them
    try:
        names = {name for prompt in prompts if "<" in prompt for name, _ in extract_lora_tags(prompt)[1]}
    finally:
        quiet.setLevel(level)
    for name in sorted(names):
        if not Path(name).is_file():
            find_lora(name, models_dir)


def check_annotators(settings: Settings, annotators: Path | None) -> None:
    """The detector weight files of every ControlNet unit's preprocessor are there (nothing loads yet)."""
    if not settings.controlnet:
        return
    from dreamreel.controlnet.preprocessors import (
        _missing_weights,
        canonical_name,
        find_weight_file,
        required_weight_files,
    )

    for index, unit in enumerate(settings.controlnet):
        name = canonical_name(unit.preprocessor, key=f"controlnet.{index}.preprocessor")
        missing = [f for f in required_weight_files(name) if find_weight_file(f, annotators) is None]
        if missing:
            raise _missing_weights(name, missing, annotators)


def depth_folder(name: str, *, key: str) -> Path:
    """A depth model's folder: a local folder with config.json, or a hub id's snapshot in the local cache."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SettingsError(
                f"the depth model folder {path} has no config.json; pass a folder that holds the model's config.json, "
                "weights and preprocessor_config.json (for example made with `hf download Intel/dpt-large "
                "--local-dir models/dpt-large`)",
                key=key,
            )
        return path.resolve()
    from dreamreel.pipelines.finding import HUB_ID, hub_snapshot

    if path.exists() or not HUB_ID.match(name) or name.startswith((".", "~")):
        raise SettingsError(
            f"the depth model {name!r} is not a folder here ({path.resolve()}); pass --depth-model with a local "
            "folder holding config.json, weights and preprocessor_config.json, or a Hugging Face id in the local "
            "cache (dreamreel never downloads)",
            key=key,
        )
    try:
        return hub_snapshot(name, otherwise="pass --depth-model with a local model folder").resolve()
    except ModelLoadError as exc:
        raise SettingsError(str(exc), key=key) from exc


def find_depth_model(settings: Settings, options: RenderOptions) -> str | None:
    """The 3D depth model's folder, found before anything loads (a preview falls back to flat depth)."""
    if settings.mode != "3d" or not settings.depth.enabled:
        return None
    name = options.depth_model or DEPTH_MODELS.get(settings.depth.model.lower(), settings.depth.model)
    if options.depth_model:
        key = "--depth-model"
    else:
        key = settings.key_names.get("depth.model", "depth.model") + " (or --depth-model)"
    try:
        return str(depth_folder(name, key=key))
    except SettingsError:
        if options.preview:
            logger.warning("depth model %s is not available; the preview uses flat depth", name)
            return None
        raise


def controlnet_models(settings: Settings) -> list[str]:
    """Each unit's ControlNet model (the usual one for its preprocessor when not given), checked for fit."""
    from dreamreel.controlnet.models import check_model_matches
    from dreamreel.controlnet.units import default_model

    models = []
    for unit in settings.controlnet:
        model = unit.model or default_model(unit.preprocessor)
        check_model_matches(unit.preprocessor, model)
        models.append(model)
    return models


def fingerprint(path: Path) -> dict[str, Any]:
    """What identifies a model: a file's size and SHA-256 (A1111's short hash, cached); a folder's files and configs."""
    path = Path(path)
    if path.is_file():
        from dreamreel.pipelines.hashes import sha256_short

        return {"size": path.stat().st_size, "sha256": sha256_short(path)}
    digest = hashlib.sha256()
    files = sorted(f for f in path.rglob("*") if f.is_file())
    for file in files:
        relative = file.relative_to(path)
        if any(part.startswith(".") for part in relative.parts):
            continue
        size = file.stat().st_size
        digest.update(f"{relative.as_posix()}\0{size}\n".encode())
        if size <= 1_000_000:  # configs, tokenizers: read whole; weights by name and size
            digest.update(file.read_bytes())
    return {"folder": digest.hexdigest()[:16]}


def fingerprint_text(fingerprint: dict[str, Any] | None) -> str:
    if not fingerprint:
        return "unknown"
    if "sha256" in fingerprint:
        return f"hash {fingerprint['sha256']}, {fingerprint['size']} bytes"
    return f"folder fingerprint {fingerprint.get('folder')}"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
