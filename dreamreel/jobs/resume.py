"""Resuming a run: the options given with ``--resume`` against what the run was started with.

An option either names the same thing the run used (a model file that moved: same fingerprint) and
applies, or it is refused with the reason; a settings file edited since the start is named.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dreamreel.errors import SettingsError
from dreamreel.jobs.checks import depth_folder, file_sha256, fingerprint, fingerprint_text

if TYPE_CHECKING:
    from dreamreel.jobs.render import RenderOptions

logger = logging.getLogger(__name__)


def settings_changed(saved: dict[str, Any], run_dir: Path) -> str | None:
    """A notice when the settings file a run was made from has been edited since (the run keeps its own copy)."""
    source, digest = saved.get("settings_source"), saved.get("settings_sha256")
    if not source or not digest or not Path(source).is_file():
        return None
    if file_sha256(Path(source)) == digest:
        return None
    notice = (
        f"the settings file {source} has changed since this run started; the run continues with the settings "
        f"saved in {run_dir / 'settings.json'} (the edits are not used). To render the edited file, start a new "
        "render without --resume"
    )
    logger.warning("%s", notice)
    return notice


def resume_options(saved: dict[str, Any], given: RenderOptions) -> dict[str, Any]:
    """Options that decide the frames (model, preview, sizes, codec) come from the run, not the command line.

    An option given with ``--resume`` either names the same thing the run used (a model file moved
    elsewhere: same hash) and applies, or is refused with the reason.
    """
    keys = ("preview", "model", "vae", "codec", "crf", "preset", "depth_model", "audio", "save_frames", "models_dir",
            "segment_frames", "annotators")  # fmt: skip
    picked = {k: saved[k] for k in keys if k in saved}
    for key in ("models_dir", "audio", "annotators"):
        if picked.get(key) is not None:
            picked[key] = Path(picked[key])
    if given.preview and not saved.get("preview"):
        raise SettingsError(
            "this run renders with a model; a motion preview would give other frames. Resume without --preview, "
            "or start a new render with --preview",
            key="--preview",
        )
    if given.vae is not None and given.vae != saved.get("vae"):
        raise SettingsError(
            f"the run was rendered with vae {saved.get('vae')!r}; another VAE would change the frames. Resume "
            "without --vae, or start a new render",
            key="--vae",
        )
    models_dir = given.models_dir or picked.get("models_dir")
    picked["model"] = resume_model(saved, given, models_dir)
    picked["depth_model"] = resume_depth_model(saved, given)
    for key in ("codec", "crf", "preset", "audio"):
        value = getattr(given, key)
        if value is not None and str(value) != str(saved.get(key)):
            logger.warning(
                "%s is ignored on --resume: the run keeps the %s it started with (%s)",
                f"--{key}", key, saved.get(key) if saved.get(key) is not None else "the settings' value",
            )  # fmt: skip
    return picked


def resume_model(saved: dict[str, Any], given: RenderOptions, models_dir: Path | None) -> str | None:
    """The base model to resume with: the run's own (checked unchanged), or ``--model`` if it is the same file."""
    if saved.get("preview"):
        if given.model:
            raise SettingsError(
                "this run is a motion preview (no model); rendering on with a model would change the frames. "
                "Start a new render with --model",
                key="--model",
            )
        return saved.get("model")
    recorded = saved.get("model_fingerprint")
    stored = saved.get("model_path")
    if given.model is None:
        if stored is None:  # a run directory of an older version: the model as it was given
            return saved.get("model")
        if not Path(stored).exists():
            raise SettingsError(
                f"the model this run was rendered with, {stored}"
                + (f" (hash {fingerprint_text(recorded)})" if recorded else "")
                + ", is not there any more; pass --model with where it is now (the same model file)",
                key="--model",
            )
        found = fingerprint(Path(stored))
        if recorded and found != recorded:
            raise SettingsError(
                f"the model file {stored} has changed since the run started (it was {fingerprint_text(recorded)}, "
                f"it is now {fingerprint_text(found)}); a different model would change the frames. Put the "
                "original back, or start a new render",
                key="--model",
            )
        return str(stored)
    from dreamreel.pipelines.loading import resolve_model

    path = resolve_model(given.model, models_dir=models_dir).path.resolve()
    if stored is not None and Path(stored).exists() and path == Path(stored).resolve():
        return str(path)
    found = fingerprint(path)
    if recorded is None or found != recorded:
        was = stored or saved.get("model")
        raise SettingsError(
            f"the run was rendered with {was}"
            + (f" ({fingerprint_text(recorded)})" if recorded else "")
            + f"; {given.model} ({fingerprint_text(found)}) is a different model, and a different model would "
            "change the frames. Resume without --model (or with the same model file), or start a new render",
            key="--model",
        )
    logger.info("the model moved to %s (same %s); resuming with it", path, fingerprint_text(found))
    return str(path)


def resume_depth_model(saved: dict[str, Any], given: RenderOptions) -> str | None:
    """The depth model to resume with; ``--depth-model`` applies only when it is the same model."""
    recorded = saved.get("depth_fingerprint")
    stored = saved.get("depth_model_path")
    if given.depth_model is None:
        if stored is not None and not Path(stored).exists():
            raise SettingsError(
                f"the depth model this run was rendered with, {stored}, is not there any more; pass --depth-model "
                "with where it is now (the same model)",
                key="--depth-model",
            )
        return stored if stored is not None else saved.get("depth_model")
    path = depth_folder(given.depth_model, key="--depth-model")
    found = fingerprint(path)
    if recorded is None or found != recorded:
        was = stored or saved.get("depth_model") or "flat depth (no depth model)"
        raise SettingsError(
            f"the run was rendered with {was}; {given.depth_model} is a different depth model, and a different "
            "depth model would change the frames. Resume without --depth-model, or start a new render",
            key="--depth-model",
        )
    return str(path)
