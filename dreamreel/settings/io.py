"""Reading and writing settings files (native JSON and Deforum's flat JSON)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dreamreel.errors import SettingsError, did_you_mean
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
    return settings_from_mapping(raw, source=source)


def settings_from_mapping(raw: Any, *, source: str | None = None) -> Settings:
    """Validate a parsed settings mapping (either format) into :class:`Settings`."""
    if not isinstance(raw, Mapping):
        raise SettingsError(f"the top level must be a JSON object of settings, not {type(raw).__name__}", source=source)
    if looks_like_deforum(raw):
        native, origin = from_deforum(raw, source=source)
        logger.info("%s: read as a Deforum settings file", source or "settings")
    else:
        native, origin = dict(raw), {}
    try:
        settings = Settings.model_validate(native)
    except ValidationError as exc:
        raise _settings_error(exc, origin, source) from None
    settings.key_names.update(origin)
    return settings


def _settings_error(exc: ValidationError, origin: Mapping[str, str], source: str | None) -> SettingsError:
    """One paragraph for every problem pydantic found, named by the key the user wrote."""
    problems: list[str] = []
    first_key: str | None = None
    for error in exc.errors():
        path = ".".join(str(p) for p in error["loc"])
        key = origin.get(path, path)
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
    if len(problems) == 1:
        return SettingsError(problems[0].split(": ", 1)[1], key=first_key, source=source)
    return SettingsError(f"{len(problems)} invalid settings: " + "; ".join(problems), source=source)


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
    return model


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
    write_text_atomic(target, settings_to_json(settings, deforum=deforum))
    return target


def write_text_atomic(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` so that readers see the old or the new file, never half of one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
