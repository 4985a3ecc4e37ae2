"""Import of Parseq manifests (https://sd-parseq.web.app) as per-frame schedules.

A Parseq manifest is JSON with a ``rendered_frames`` list: one object per frame, with a ``frame``
number and one value per field (``zoom``, ``strength``, ``deforum_prompt``, ...). Parseq also writes
``<field>_delta`` (the change since the previous frame) and ``<field>_pc`` (percent of the maximum).

Semantics (those of Deforum's Parseq adapter unless noted):

* Fields are renamed to dreamreel's schedule names (:data:`FIELD_NAMES`); unknown fields are
  ignored and listed once in the log.
* Deforum applies motion values as per-frame increments, while Parseq's values are absolute. With
  ``use_deltas`` (the default) the motion fields (:data:`MOTION_FIELDS`) take ``<field>_delta``.
  When a manifest has only the absolute values, the deltas are computed as Parseq does:
  ``delta[0] = v[0]``, ``delta[f] = v[f] - v[f-1]``, and for zoom the ratio ``v[f] / v[f-1]``
  (Deforum would fall back to its own schedule instead).
* Frames past the manifest's end repeat its last value (for a delta: the motion continues at its
  last speed, as in Deforum); frames missing inside the manifest take the previous frame's value.
* ``deforum_prompt`` (``"positive --neg negative"``) becomes the prompts. Deforum does not merge
  the global positive/negative fields into Parseq prompts, and neither does this module; backtick
  expressions in them are evaluated as in ordinary prompts.
* URLs are refused: dreamreel never downloads anything while rendering.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from dreamreel.errors import SettingsError
from dreamreel.keyframes.prompts import FramePrompt, parse_backticks, split_negative

logger = logging.getLogger(__name__)

FIELD_NAMES: Mapping[str, str] = {
    **{name: name for name in (
        "angle", "zoom", "translation_x", "translation_y", "translation_z",
        "rotation_3d_x", "rotation_3d_y", "rotation_3d_z",
        "perspective_flip_theta", "perspective_flip_phi", "perspective_flip_gamma", "perspective_flip_fv",
        "transform_center_x", "transform_center_y",
        "noise", "strength", "contrast", "seed", "fov", "near", "far", "subseed", "subseed_strength",
        "antiblur_kernel", "antiblur_sigma", "antiblur_amount", "antiblur_threshold", "steps",
    )},
    "scale": "cfg_scale",
}  # fmt: skip
"""Parseq field → dreamreel schedule name, for the numeric fields."""

MOTION_FIELDS: frozenset[str] = frozenset(
    {
        "angle", "zoom", "translation_x", "translation_y", "translation_z",
        "rotation_3d_x", "rotation_3d_y", "rotation_3d_z",
        "perspective_flip_theta", "perspective_flip_phi", "perspective_flip_gamma",
    }
)  # fmt: skip
"""Fields Deforum's adapter reads as ``<field>_delta`` when ``parseq_use_deltas`` is on."""

PROMPT_FIELD = "deforum_prompt"

_MAX_FRAMES = 1_000_000
_QUIET = re.compile(r"frame|.*_delta|.*_pc|prompt_weight_\d+")  # Parseq bookkeeping, not worth a log line


@dataclass(frozen=True, slots=True)
class ParseqSchedules:
    """Per-frame schedules read from a Parseq manifest.

    Attributes:
        columns: dreamreel schedule name → float64 array of length ``max_frames``.
        prompts: one prompt per frame from ``deforum_prompt``, or None when the manifest has none.
        max_frames: the number of frames of the columns and prompts.
    """

    columns: dict[str, NDArray[np.float64]]
    prompts: list[FramePrompt] | None
    max_frames: int


def _decode(manifest: str | os.PathLike[str] | Mapping[str, object], source: str) -> Mapping[str, object]:
    """Turn JSON text, a file path or a parsed object into the manifest mapping."""
    if isinstance(manifest, Mapping):
        return manifest
    if isinstance(manifest, os.PathLike):
        manifest = _read(Path(manifest), source)
    if not isinstance(manifest, str):
        raise SettingsError(
            f"must be the manifest's JSON text, a path to it, or a JSON object, not {type(manifest).__name__}",
            source=source,
        )
    text = manifest.strip()
    if text.startswith("http"):
        raise SettingsError(
            f"is a URL ({text[:80]}); dreamreel does not download manifests. Open the URL in a browser "
            "(or use Parseq's 'Copy manifest'), save the JSON to a file and set the setting to the file's "
            "path or paste its contents",
            source=source,
        )
    if text and text[0] not in "{[":
        text = _read(Path(text).expanduser(), source)
    try:
        decoded = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(
            f"is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}; "
            "paste the whole manifest as exported by Parseq",
            source=source,
        ) from exc
    if not isinstance(decoded, Mapping):
        raise SettingsError(
            f"must be a JSON object with 'rendered_frames', not a {type(decoded).__name__}", source=source
        )
    return decoded


def _read(path: Path, source: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(
            f"is neither JSON text nor a readable file ({path}: {exc.strerror or exc}); give the manifest's "
            "JSON text or the path of a file holding it",
            source=source,
        ) from exc


def _frame_records(manifest: Mapping[str, object], source: str) -> dict[int, Mapping[str, object]]:
    """``rendered_frames`` by frame number (a later duplicate wins, with a warning)."""
    rendered = manifest.get("rendered_frames")
    if not isinstance(rendered, Sequence) or isinstance(rendered, str) or not rendered:
        raise SettingsError(
            "has no 'rendered_frames' list; export the manifest from Parseq after rendering "
            "(the JSON must contain \"rendered_frames\": [{\"frame\": 0, ...}, ...])",
            source=source, key="rendered_frames",
        )  # fmt: skip
    records: dict[int, Mapping[str, object]] = {}
    duplicates: list[int] = []
    for index, record in enumerate(rendered):
        where = f"rendered_frames[{index}]"
        if not isinstance(record, Mapping):
            raise SettingsError(f"must be an object, not {type(record).__name__}", source=source, key=where)
        frame = record.get("frame")
        if isinstance(frame, float) and frame.is_integer():
            frame = int(frame)
        if isinstance(frame, bool) or not isinstance(frame, int) or not 0 <= frame < _MAX_FRAMES:
            raise SettingsError(
                f"needs a 'frame' number between 0 and {_MAX_FRAMES - 1}, got {frame!r}", source=source, key=where
            )
        if frame in records:
            duplicates.append(frame)
        records[frame] = record
    if duplicates:
        logger.warning("%s: frames defined more than once (the last definition wins): %s", source, duplicates[:20])
    return records


def _number(value: object, frame: int, field: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise SettingsError(
            f"frame {frame}: {field} must be a finite number, got {value!r}",
            source=source, key=f"rendered_frames[frame={frame}].{field}",
        )  # fmt: skip
    return float(value)


def _field_series(
    records: Mapping[int, Mapping[str, object]], field: str, length: int, source: str
) -> tuple[NDArray[np.float64], bool]:
    """Values of ``field`` for frames 0..length-1, gaps filled; also whether a frame's record lacked it."""
    values = np.full(length, np.nan)
    lacking = False
    for frame, record in records.items():
        if field in record:
            values[frame] = _number(record[field], frame, field, source)
        else:
            lacking = True
    missing = np.isnan(values)
    if missing.any():
        defined = np.flatnonzero(~missing)
        # forward fill, and frames before the first definition take the first value
        index = np.maximum.accumulate(np.where(missing, 0, np.arange(length)))
        index[: defined[0]] = defined[0]
        values = values[index]
    return values, lacking


def _deltas(values: NDArray[np.float64], field: str, source: str) -> NDArray[np.float64]:
    """Per-frame increments of absolute values, as Parseq computes ``<field>_delta``."""
    deltas = values.copy()
    if field != "zoom":
        deltas[1:] = np.diff(values)
        return deltas
    zero = np.flatnonzero(values[:-1] == 0.0)
    if zero.size:
        frame = int(zero[0])
        raise SettingsError(
            f"frame {frame}: zoom is 0, so the zoom change to frame {frame + 1} is undefined; "
            "zoom values must be positive (1 = no zoom)",
            source=source, key=f"rendered_frames[frame={frame}].zoom",
        )  # fmt: skip
    deltas[1:] = values[1:] / values[:-1]
    return deltas


def _fit(values: NDArray[np.float64], max_frames: int) -> NDArray[np.float64]:
    """Truncate, or extend by repeating the last value, to ``max_frames``."""
    if len(values) >= max_frames:
        return values[:max_frames].copy()
    return np.concatenate([values, np.full(max_frames - len(values), values[-1])])


def _columns(
    records: Mapping[int, Mapping[str, object]], fields: set[str], length: int, use_deltas: bool, source: str
) -> dict[str, NDArray[np.float64]]:
    columns: dict[str, NDArray[np.float64]] = {}
    filled: list[str] = []
    computed: list[str] = []
    for field, name in FIELD_NAMES.items():
        delta_field = f"{field}_delta"
        take_delta = use_deltas and field in MOTION_FIELDS and delta_field in fields
        read = delta_field if take_delta else field
        if read not in fields:
            continue
        values, gaps = _field_series(records, read, length, source)
        if gaps:
            filled.append(read)
        if use_deltas and field in MOTION_FIELDS and not take_delta:
            values = _deltas(values, field, source)
            computed.append(field)
        columns[name] = values
    if computed:
        logger.info("%s: no <field>_delta for %s; computed per-frame deltas from the absolute values",
                    source, ", ".join(computed))  # fmt: skip
    if filled:
        logger.warning("%s: some frames lack %s; they take the previous frame's value", source, ", ".join(filled))
    return columns


def _prompts(
    records: Mapping[int, Mapping[str, object]], length: int, max_frames: int, source: str
) -> list[FramePrompt]:
    """Per-frame prompts from ``deforum_prompt``, backticks evaluated per run of equal text."""
    texts: list[str | None] = [None] * length
    for frame, record in records.items():
        if PROMPT_FIELD in record:
            text = record[PROMPT_FIELD]
            if not isinstance(text, str):
                raise SettingsError(
                    f"frame {frame}: {PROMPT_FIELD} must be text, got {text!r}",
                    source=source, key=f"rendered_frames[frame={frame}].{PROMPT_FIELD}",
                )  # fmt: skip
            texts[frame] = text
    first = next(text for text in texts if text is not None)
    filled: list[str] = []
    for text in texts:
        first = text if text is not None else first
        filled.append(first)
    filled = filled[:max_frames] + [filled[-1]] * max(0, max_frames - length)
    result: list[FramePrompt] = []
    start = 0
    while start < max_frames:
        end = start
        while end < max_frames and filled[end] == filled[start]:
            end += 1
        name = f"{source}: rendered_frames[frame={start}].{PROMPT_FIELD}"
        template = parse_backticks(filled[start], name=name)
        rendered = template.render(np.arange(start, end, dtype=np.int64), max_frames=max_frames, seed=-1)
        shared: FramePrompt | None = None
        for text in rendered:
            prompt = FramePrompt(*split_negative(text))
            shared = shared if prompt == shared else prompt
            result.append(shared)
        start = end
    return result


def load_parseq(
    manifest: str | os.PathLike[str] | Mapping[str, object],
    max_frames: int | None = None,
    *,
    use_deltas: bool = True,
    source: str = "parseq_manifest",
) -> ParseqSchedules:
    """Read a Parseq manifest into per-frame schedule columns and prompts.

    Args:
        manifest: the manifest's JSON text, the path of a file holding it, or the parsed object.
            URLs are refused.
        max_frames: frames to produce; None means the manifest's own length (highest frame + 1).
        use_deltas: read the motion fields as per-frame increments (Deforum's ``parseq_use_deltas``).
        source: where the manifest came from, for messages.

    Raises:
        SettingsError: for a URL, text that is not JSON, a missing ``rendered_frames`` list, or a
            value that is not a number (naming the frame and field).
        ScheduleError: for a bad backtick expression inside a prompt.
    """
    records = _frame_records(_decode(manifest, source), source)
    length = max(records) + 1
    if max_frames is None:
        max_frames = length
    if max_frames < 1:
        raise SettingsError(f"max_frames must be at least 1, got {max_frames}", source=source)
    if length != len(records):
        logger.warning("%s: %d frames are missing between 0 and %d", source, length - len(records), length - 1)
    if max_frames > length:
        logger.info("%s: the manifest has %d frames; frames %d..%d repeat its last frame",
                    source, length, length, max_frames - 1)  # fmt: skip
    elif max_frames < length:
        logger.info("%s: the manifest has %d frames; only the first %d are used", source, length, max_frames)
    fields = {field for record in records.values() for field in record}
    known = set(FIELD_NAMES) | {PROMPT_FIELD}
    unknown = sorted(field for field in fields - known if not _QUIET.fullmatch(field))
    if unknown:
        logger.info("%s: ignoring Parseq fields dreamreel does not use: %s", source, ", ".join(unknown))
    columns = {
        name: _fit(values, max_frames) for name, values in _columns(records, fields, length, use_deltas, source).items()
    }
    prompts = _prompts(records, length, max_frames, source) if PROMPT_FIELD in fields else None
    return ParseqSchedules(columns=columns, prompts=prompts, max_frames=max_frames)
