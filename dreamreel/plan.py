"""`dreamreel plan`: show what a run will do, frame by frame, before any GPU time is spent."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.table import Table

from dreamreel.errors import SettingsError
from dreamreel.keyframes.table import INTEGER_COLUMNS, NUMERIC_COLUMNS, ScheduleTable
from dreamreel.settings.model import Settings
from dreamreel.settings.resolve import unused_columns

logger = logging.getLogger(__name__)

DEFAULT_ROWS = 40
PROMPT_CHARS = 120  # longer prompts are shortened in the summary (the CSV and the run keep them whole)


def summary_lines(settings: Settings, table: ScheduleTable, *, model: str | None = None) -> list[str]:
    """A few lines describing the run: size, length, mode, sampler, seed, prompts switches.

    Args:
        settings: the run's settings.
        table: its resolved schedule table.
        model: the model the run actually uses (``--model``), when it is not the settings' ``model``.
    """
    seconds = settings.max_frames / settings.fps
    diffusions = int(table.numeric["diffuse"].sum())
    lines = [
        f"{settings.mode.upper()} run: {settings.max_frames} frames at {settings.fps:g} fps ({seconds:.1f} s), "
        f"{settings.width}x{settings.height}, {diffusions} diffusions (cadence {settings.diffusion_cadence})",
        f"sampler {settings.sampler}, {settings.steps} steps, seed {int(table.numeric['seed'][0])} "
        f"({settings.seed_behavior}), model {model or settings.model or '(not set)'}",
    ]
    changing = set(table.changing_columns())
    skipped = changing | unused_columns(settings) | {"diffuse"}
    constant = [n for n in NUMERIC_COLUMNS if n not in skipped]
    if constant:
        values = ", ".join(f"{n}={_fmt(table.numeric[n][0], n)}" for n in constant)
        lines.append(f"constant: {values}")
    for frame, prompt, negative in prompt_switches(table):
        neg = f"  [negative: {shorten_prompt(negative)}]" if negative else ""
        lines.append(f"prompt from frame {frame}: {shorten_prompt(prompt)}{neg}")
    return lines


def shorten_prompt(text: str, limit: int = PROMPT_CHARS) -> str:
    """``text`` itself when short; else its first ``limit`` characters (cut at a word) and the word count."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    if " " in head[limit // 2 :] and not text[limit].isspace():
        head = head.rsplit(" ", 1)[0]
    words = len(text.split())
    return f"{head.rstrip(' ,;')}… ({words} word{'s' if words != 1 else ''})"


def prompt_switches(table: ScheduleTable) -> list[tuple[int, str, str]]:
    """(frame, prompt, negative) at frame 0 and wherever the prompt text changes."""
    out: list[tuple[int, str, str]] = []
    previous: tuple[str, str] | None = None
    for frame, pair in enumerate(zip(table.text["prompt"], table.text["negative_prompt"], strict=True)):
        if pair != previous:
            out.append((frame, *pair))
            previous = pair
    return out


def select_frames(spec: str | None, max_frames: int, table: ScheduleTable, rows: int = DEFAULT_ROWS) -> list[int]:
    """Frames to show: a spec like ``"0-10,30,60-90:5"``, or evenly spaced frames plus every prompt switch."""
    if spec:
        return _parse_frame_spec(spec, max_frames)
    if max_frames <= rows:
        return list(range(max_frames))
    step = int(np.ceil(max_frames / rows))
    frames = set(range(0, max_frames, step)) | {max_frames - 1} | {f for f, _, _ in prompt_switches(table)}
    return sorted(frames)


def _parse_frame_spec(spec: str, max_frames: int) -> list[int]:
    frames: set[int] = set()
    for part in filter(None, (p.strip() for p in spec.split(","))):
        body, _, step_text = part.partition(":")
        first, dash, last = body.partition("-")
        try:
            start = int(first)
            stop = int(last) if dash else start
            step = int(step_text) if step_text else 1
        except ValueError:
            raise SettingsError(
                f"cannot read {part!r}; write frames like '0-10,30,60-90:5' (ranges inclusive, ':N' = every N-th)",
                key="--frames",
            ) from None
        if step < 1 or start > stop:
            raise SettingsError(f"{part!r} is an empty range", key="--frames")
        frames.update(f for f in range(start, stop + 1, step) if 0 <= f < max_frames)
    if not frames:
        raise SettingsError(f"selects no frame between 0 and {max_frames - 1}", key="--frames")
    return sorted(frames)


def frame_table(table: ScheduleTable, frames: Sequence[int]) -> Table:
    """A rich table with one row per selected frame and one column per schedule that changes.

    Prompts are not repeated here: :func:`summary_lines` lists every prompt switch.
    """
    columns = [c for c in table.changing_columns() if c not in ("prompt", "negative_prompt")]
    grid = Table(header_style="bold", row_styles=["", "dim"], box=None, pad_edge=False)
    grid.add_column("frame", justify="right", no_wrap=True)
    for name in columns:
        numeric = name in table.numeric
        grid.add_column(name, justify="right" if numeric else "left", no_wrap=True, min_width=len(name))
    for frame in frames:
        cells = [str(frame)]
        for name in columns:
            cells.append(_fmt(table.numeric[name][frame], name) if name in table.numeric else table.text[name][frame])
        grid.add_row(*cells)
    return grid


def _fmt(value: float, name: str) -> str:
    if name in INTEGER_COLUMNS or float(value).is_integer():
        return str(int(value)) if np.isfinite(value) else str(value)
    return f"{value:.4g}"


def plot_schedules(table: ScheduleTable, path: str | os.PathLike[str]) -> Path:
    """Draw every changing numeric schedule (one panel each) with prompt switches as vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in table.changing_columns() if n in table.numeric and n != "diffuse"]
    panels = max(1, len(names))
    # constrained layout makes room for the widest label (tight_layout clipped "rotation_3d_y")
    fig, axes = plt.subplots(
        panels, 1, figsize=(10, 1.8 * panels + 0.6), sharex=True, squeeze=False, layout="constrained"
    )
    frames = np.arange(table.max_frames)
    switches = [f for f, _, _ in prompt_switches(table)][1:]
    for axis, name in zip(axes[:, 0], names or ["(no schedule changes)"], strict=False):
        if name in table.numeric:
            axis.plot(frames, table.numeric[name], linewidth=1.4)
        axis.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        # plain numbers: seeds as 1234567, not "+1.234e6" above the axis and 580 on it
        axis.ticklabel_format(axis="y", style="plain", useOffset=False)
        axis.grid(alpha=0.3)
        for frame in switches:
            axis.axvline(frame, color="tab:red", alpha=0.35, linewidth=1)
    axes[-1, 0].set_xlabel("frame (red lines: prompt changes)")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return target
