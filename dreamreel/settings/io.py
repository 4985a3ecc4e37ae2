"""Reading and writing settings files (native JSON and Deforum's flat JSON)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dreamreel.errors import SettingsError, did_you_mean
from dreamreel.fileio import atomic_write_text
from dreamreel.settings.deforum import from_deforum, looks_like_deforum, to_deforum
from dreamreel.settings.model import Settings

logger = logging.getLogger(__name__)


def load_settings(path: str | os.PathLike[str]) -> Settings:
    """Load a settings file: dreamreel's native JSON, or a Deforum ``.txt``/``.json`` settings file.

    Unknown and unsupported keys are reported in one warning. Schedules are checked when the
    schedule table is resolved (:func:`dreamreel.settings.resolve_schedules`), which the CLI does
    right after loading, before any model or video work.

    Raises:
        SettingsError: the file is missing, is not JSON, or holds an invalid value; the message names
            the file, the key, what was received and what is allowed.
    """
    file = Path(path)
    source = str(file)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SettingsError("file not found; pass the path of a settings .json or .txt file", source=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read the file: {exc}", source=source) from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        line = text.splitlines()[exc.lineno - 1] if 0 < exc.lineno <= len(text.splitlines()) else ""
        raise SettingsError(
            f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}\n    {line.strip()[:200]}",
            source=source,
        ) from exc
    return _relative_to(settings_from_mapping(raw, source=source), file.parent)


def _relative_to(settings: Settings, folder: Path) -> Settings:
    """Paths in a settings file are relative to that file, not to the working directory.

    Every file path (init image, soundtrack, input video and mask, colour-coherence image, Parseq
    manifest, ControlNet inputs, the interpolation model) becomes absolute, so the settings mean the
    same from any working directory and in a run directory's ``settings.json``. Values that are a model
    name or a path (``model``, ``depth.model``, ControlNet models, the upscaler) change only when that
    path exists next to the
    file. ``~`` is expanded; URLs stay as written (they are refused where the file is opened).
    """
    base = Path(os.path.abspath(folder.expanduser()))

    def file(value: str | None) -> str | None:
        if value is None or not value.strip() or value.strip().startswith(("http://", "https://")):
            return value
        path = Path(value).expanduser()
        if path.is_absolute():
            return str(path) if value.startswith("~") else value
        return os.path.normpath(base / path)

    def name_or_file(value: str | None) -> str | None:
        if value is None or value.strip().startswith(("http://", "https://")):
            return value
        path = Path(value).expanduser()
        if path.is_absolute():
            return str(path) if value.startswith("~") else value
        return os.path.normpath(base / path) if (base / path).exists() else value

    def manifest(value: str) -> str:
        return value if value.lstrip().startswith("{") else file(value) or value

    update: dict[str, Any] = {"init_image": file(settings.init_image), "model": name_or_file(settings.model)}
    update["output"] = _copy(settings.output, audio=file(settings.output.audio))
    update["depth"] = _copy(settings.depth, model=name_or_file(settings.depth.model))
    if settings.video_input is not None:
        video = settings.video_input
        update["video_input"] = _copy(video, path=file(video.path), mask_path=file(video.mask_path))
    if settings.color_coherence is not None:
        update["color_coherence"] = _copy(settings.color_coherence, image=file(settings.color_coherence.image))
    if settings.parseq is not None:
        update["parseq"] = _copy(settings.parseq, manifest=manifest(settings.parseq.manifest))
    update["controlnet"] = tuple(
        _copy(unit, input=file(unit.input), model=name_or_file(unit.model)) for unit in settings.controlnet
    )
    if settings.finish is not None:
        finish = settings.finish
        update["finish"] = _copy(
            finish,
            upscale=finish.upscale and _copy(finish.upscale, model=name_or_file(finish.upscale.model)),
            interpolate=finish.interpolate and _copy(finish.interpolate, model=file(finish.interpolate.model)),
        )
    resolved: Settings = _copy(settings, **update)
    return resolved


def _copy(original: Any, /, **values: Any) -> Any:
    """``original`` with ``values`` (the same object when nothing changes); Settings keep their key names."""
    changed = {name: value for name, value in values.items() if value != getattr(original, name)}
    if not changed:
        return original
    return original.model_copy(update=changed)


def settings_from_mapping(raw: Any, *, source: str | None = None) -> Settings:
    """Validate a parsed settings mapping (either format) into :class:`Settings`."""
    if not isinstance(raw, Mapping):
        raise SettingsError(f"the top level must be a JSON object of settings, not {type(raw).__name__}", source=source)
    if looks_like_deforum(raw):
        native, origin = from_deforum(raw, source=source)
        logger.info("%s: read as a Deforum settings file", source or "settings")
    else:
        native, origin = dict(raw), {}
    return validate_settings(native, key_names=origin, source=source)


def validate_settings(
    data: Mapping[str, Any], *, key_names: Mapping[str, str] | None = None, source: str | None = None
) -> Settings:
    """``Settings.model_validate`` whose errors name what the user wrote.

    Args:
        data: native settings values.
        key_names: native dotted path (``"video_input.fps"``) -> the name the user wrote: a Deforum
            key, or a command-line option such as ``"--fps"``. Kept as the settings' ``key_names``.
        source: the file the values came from (left out of messages about options).

    Raises:
        SettingsError: one paragraph naming every invalid value.
    """
    names = dict(key_names or {})
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, names, source) from None
    settings.key_names.update(names)
    return settings


def validation_error(
    exc: ValidationError, key_names: Mapping[str, str] | None = None, source: str | None = None
) -> SettingsError:
    """One paragraph for every problem pydantic found, named by the key (or option) the user wrote.

    ``key_names`` maps native dotted paths to those names; a path without an entry takes the name of
    its closest parent that has one, else the native path. Names that start with ``-`` are
    command-line options: a message about options only does not name ``source``.
    """
    origin = key_names or {}
    problems: list[str] = []
    first_key: str | None = None
    all_options = True
    for error in exc.errors():
        path = ".".join(str(p) for p in error["loc"])
        key = _written_name(path, origin)
        all_options = all_options and key.startswith("-")
        first_key = first_key or key
        if error["type"] == "extra_forbidden":
            parent, _, leaf = path.rpartition(".")
            model = _model_at(parent)
            hint = did_you_mean(leaf, model.model_fields) if model else ""
            problems.append(f"{key}: unknown setting.{hint}")
            continue
        received = error.get("input")
        shown = json.dumps(received)[:80] if _jsonable(received) else repr(received)[:80]
        problems.append(f"{key}: {error['msg']} (received {shown})")
    if all_options:
        source = None
    if len(problems) == 1:
        return SettingsError(problems[0].split(": ", 1)[1], key=first_key, source=source)
    return SettingsError(f"{len(problems)} invalid settings: " + "; ".join(problems), source=source)


def _written_name(path: str, key_names: Mapping[str, str]) -> str:
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        name = key_names.get(".".join(parts[:end]))
        if name is not None:
            return name
    return path


def _model_at(dotted: str) -> type[Any] | None:
    model: Any = Settings
    for part in filter(None, dotted.split(".")):
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        candidates = getattr(annotation, "__args__", (annotation,))
        model = next((c for c in candidates if hasattr(c, "model_fields")), None)
        if model is None:
            return None
    found: type[Any] = model
    return found


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def settings_to_json(settings: Settings, *, deforum: bool = False) -> str:
    """The settings as pretty JSON, in native form or in Deforum's flat form."""
    data = to_deforum(settings) if deforum else settings.model_dump(mode="json")
    return json.dumps(data, indent=4, ensure_ascii=False) + "\n"


def save_settings(settings: Settings, path: str | os.PathLike[str], *, deforum: bool = False) -> Path:
    """Write settings atomically (temporary file, then rename), native form unless ``deforum``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, settings_to_json(settings, deforum=deforum))
    return target
