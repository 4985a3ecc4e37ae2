"""The resolved schedule table: every per-frame value of a run, computed once, before any model loads.

Columnar: numeric columns are float64 arrays of length ``max_frames``; text columns are tuples of
strings. ``table.row(i)`` gives a frozen :class:`FrameParams` for the frame loop. The table is
saved to and loaded from CSV (the run directory's ``schedule.csv``) without losing a bit: floats
are written as their shortest exact decimal form.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from dreamreel.errors import SettingsError

Parts = tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class FrameParams:
    """All values of one frame. Motion values are per-frame increments (Deforum semantics)."""

    frame: int
    # 2D / 3D motion
    angle: float
    zoom: float
    translation_x: float
    translation_y: float
    translation_z: float
    transform_center_x: float
    transform_center_y: float
    rotation_3d_x: float
    rotation_3d_y: float
    rotation_3d_z: float
    perspective_flip_theta: float
    perspective_flip_phi: float
    perspective_flip_gamma: float
    perspective_flip_fv: float
    fov: float
    near: float
    far: float
    aspect_ratio: float
    # diffusion
    strength: float  # Deforum's strength: how much of the init image to keep (0..1)
    denoise: float  # diffusers' strength = 1 - strength, what the generator receives
    cfg_scale: float
    steps: float
    seed: float
    noise: float
    contrast: float
    noise_multiplier: float
    antiblur_amount: float
    antiblur_kernel: float
    antiblur_sigma: float
    antiblur_threshold: float
    cadence_flow_factor: float
    clip_skip: float
    ddim_eta: float
    ancestral_eta: float
    diffuse: float  # 1.0 on frames that are diffused, 0.0 on cadence in-between frames
    # text
    prompt: str
    negative_prompt: str
    sampler: str
    model: str
    prompt_parts: Parts = ()
    negative_parts: Parts = ()
    # ControlNet units, in order: (weight, guidance_start, guidance_end)
    controlnet: tuple[tuple[float, float, float], ...] = ()


TEXT_COLUMNS: tuple[str, ...] = ("prompt", "negative_prompt", "sampler", "model")
PART_COLUMNS: tuple[str, ...] = ("prompt_parts", "negative_parts")
NUMERIC_COLUMNS: tuple[str, ...] = tuple(
    f.name for f in fields(FrameParams) if f.name not in ("frame", "controlnet", *TEXT_COLUMNS, *PART_COLUMNS)
)
INTEGER_COLUMNS: frozenset[str] = frozenset({"steps", "seed", "clip_skip", "antiblur_kernel", "diffuse"})
CONTROLNET_FIELDS: tuple[str, ...] = ("weight", "guidance_start", "guidance_end")


def controlnet_column(unit: int, field: str) -> str:
    """The table column of a ControlNet unit's schedule (``cn_1_weight`` for unit 0)."""
    return f"cn_{unit + 1}_{field}"


def _extra_columns(numeric: Mapping[str, object]) -> list[str]:
    """Numeric columns beyond the fixed ones (ControlNet units), in unit order."""
    return sorted((n for n in numeric if n not in NUMERIC_COLUMNS), key=lambda n: (len(n), n))


@dataclass(frozen=True)
class ScheduleTable:
    """Per-frame values of a run. Build it with :func:`dreamreel.settings.resolve_schedules`."""

    numeric: Mapping[str, NDArray[np.float64]]
    text: Mapping[str, tuple[str, ...]]
    parts: Mapping[str, tuple[Parts, ...]]

    def __post_init__(self) -> None:
        lengths = {len(v) for v in self.numeric.values()} | {len(v) for v in self.text.values()}
        lengths |= {len(v) for v in self.parts.values()}
        if len(lengths) != 1:
            raise ValueError(f"schedule table columns differ in length: {sorted(lengths)}")
        missing = (set(NUMERIC_COLUMNS) - set(self.numeric)) | (set(TEXT_COLUMNS) - set(self.text))
        if missing:
            raise ValueError(f"schedule table lacks columns {sorted(missing)}")
        for array in self.numeric.values():
            array.setflags(write=False)

    @property
    def max_frames(self) -> int:
        return len(next(iter(self.numeric.values())))

    def row(self, frame: int) -> FrameParams:
        """The frozen parameters of one frame."""
        values: dict[str, object] = {name: float(self.numeric[name][frame]) for name in NUMERIC_COLUMNS}
        values.update({name: self.text[name][frame] for name in TEXT_COLUMNS})
        values.update({name: self.parts[name][frame] for name in PART_COLUMNS if name in self.parts})
        values["controlnet"] = tuple(
            tuple(float(self.numeric[controlnet_column(unit, f)][frame]) for f in CONTROLNET_FIELDS)
            for unit in range(self.controlnet_units)
        )
        return FrameParams(frame=frame, **values)  # type: ignore[arg-type]

    @property
    def controlnet_units(self) -> int:
        """How many ControlNet units have columns."""
        count = 0
        while controlnet_column(count, "weight") in self.numeric:
            count += 1
        return count

    @property
    def numeric_columns(self) -> list[str]:
        """Every numeric column: the fixed ones, then the ControlNet units' ones."""
        return [*NUMERIC_COLUMNS, *_extra_columns(self.numeric)]

    def changing_columns(self) -> list[str]:
        """Names of the columns whose value is not the same on every frame, in table order."""
        names = [n for n in self.numeric_columns if np.ptp(self.numeric[n]) > 0 or np.isnan(self.numeric[n]).any()]
        names += [n for n in TEXT_COLUMNS if len(set(self.text[n])) > 1]
        return names

    # --- CSV ---------------------------------------------------------------------------------

    def to_csv(self, path: str | os.PathLike[str] | None = None) -> str:
        """Write every column as CSV (one row per frame); returns the text, and writes it to ``path`` if given."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        part_names = [n for n in PART_COLUMNS if n in self.parts]
        numeric_names = self.numeric_columns
        writer.writerow(["frame", *numeric_names, *TEXT_COLUMNS, *part_names])
        for frame in range(self.max_frames):
            numbers = [_format_number(self.numeric[n][frame], n) for n in numeric_names]
            texts = [self.text[n][frame] for n in TEXT_COLUMNS]
            parts = [json.dumps(self.parts[n][frame], ensure_ascii=False) for n in part_names]
            writer.writerow([frame, *numbers, *texts, *parts])
        text = buffer.getvalue()
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str]) -> ScheduleTable:
        """Read a table written by :meth:`to_csv`."""
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        if not rows:
            raise SettingsError("the schedule table has no rows", source=str(path))
        try:
            known = {"frame", *NUMERIC_COLUMNS, *TEXT_COLUMNS, *PART_COLUMNS}
            names = [*NUMERIC_COLUMNS, *(n for n in rows[0] if n not in known)]
            numeric = {n: np.array([float(r[n]) for r in rows], dtype=np.float64) for n in names}
            text = {n: tuple(r[n] for r in rows) for n in TEXT_COLUMNS}
            parts = {
                n: tuple(tuple((str(p), float(w)) for p, w in json.loads(r[n])) for r in rows)
                for n in PART_COLUMNS
                if n in rows[0]
            }
        except (KeyError, ValueError) as exc:
            raise SettingsError(f"not a dreamreel schedule table: {exc}", source=str(path)) from exc
        return cls(numeric=numeric, text=text, parts=parts)


def _format_number(value: float, name: str) -> str:
    if name in INTEGER_COLUMNS and float(value).is_integer():
        return str(int(value))
    return repr(float(value))
