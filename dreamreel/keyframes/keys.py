"""Resolving keyframe keys to frame indices (splitting schedules is :mod:`dreamreel.keyframes.scan`).

Shared by numeric schedules, string schedules and prompt schedules, so a key means the same
frame everywhere.

Keys may be:
    * whole numbers: ``"30"``, ``"007"``;
    * expressions: ``"max_f/2"``, ``"'max_f-2'"`` (quotes stripped), ``"3*4"``; the result is
      truncated toward zero, as Deforum does;
    * seconds: ``"2.5s"`` (needs ``fps``), rounded to the nearest frame;
    * beats: ``"8b"`` (needs ``bpm`` and ``fps``), rounded to the nearest frame.
"""

from __future__ import annotations

import math
import re

from dreamreel.errors import ScheduleError
from dreamreel.keyframes.expr import Variables, evaluate

_INTEGER = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+)")
_MAX_KEY_DIGITS = 100
_TIMED = re.compile(r"(?P<amount>[+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*(?P<unit>s|b)", re.IGNORECASE)


def strip_quotes(text: str) -> tuple[str, int]:
    """Strip whitespace and one pair of matching outer quotes; return the text and the offset removed."""
    stripped = text.strip()
    offset = len(text) - len(text.lstrip())
    if len(stripped) >= 2 and stripped[0] == stripped[-1] and stripped[0] in "'\"":
        return stripped[1:-1].strip(), offset + 1 + (len(stripped[1:-1]) - len(stripped[1:-1].lstrip()))
    return stripped, offset


def resolve_frame_key(
    key: str,
    *,
    max_frames: int,
    seed: int = -1,
    fps: float | None = None,
    bpm: float | None = None,
    name: str = "schedule",
    text: str = "",
    column: int = 0,
) -> int:
    """Turn one keyframe key into a frame index (which may lie outside [0, max_frames)).

    Args:
        key: the key as written (without the ``:``).
        max_frames: number of frames of the run (``max_f = max_frames - 1``).
        seed: the run's seed, visible as ``s`` in key expressions.
        fps: frames per second, needed for keys in seconds or beats.
        bpm: beats per minute, needed for keys in beats.
        name, text, column: where the key came from, for error messages.

    Raises:
        ScheduleError: when the key is empty, fractional, timed without fps/bpm, or not a valid
            expression.
    """
    body, offset = strip_quotes(key)
    at = column + offset
    if not body:
        raise ScheduleError("missing frame number before ':'", name=name, text=text, column=at)
    if _INTEGER.fullmatch(body):
        if len(body.lstrip("+-").lstrip("0")) > _MAX_KEY_DIGITS:  # beyond any run; int() would refuse the text
            beyond: int = 10**_MAX_KEY_DIGITS
            return -beyond if body.startswith("-") else beyond
        return int(body)
    if _DECIMAL.fullmatch(body):
        raise ScheduleError(
            f"frame key {body!r} is not a whole frame number; write a frame number, or seconds such as '{body}s'",
            name=name, text=text, column=at,
        )  # fmt: skip
    timed = _TIMED.fullmatch(body)
    if timed:
        amount = float(timed.group("amount"))
        unit = timed.group("unit").lower()
        if fps is None or fps <= 0:
            raise ScheduleError(
                f"key {body!r} is in {'seconds' if unit == 's' else 'beats'}, which needs a positive 'fps' setting",
                name=name, text=text, column=at,
            )  # fmt: skip
        if unit == "s":
            frames = amount * fps
        elif bpm is None or bpm <= 0:
            raise ScheduleError(
                f"key {body!r} is in beats, which needs a positive 'bpm' setting", name=name, text=text, column=at
            )
        else:
            frames = amount * 60.0 / bpm * fps
        if not math.isfinite(frames):
            raise ScheduleError(f"frame key {body!r} gives frame {frames}", name=name, text=text, column=at)
        return math.floor(frames + 0.5)
    value = evaluate(body, Variables(t=0.0, max_f=max_frames - 1, s=seed), name=name, text=text, offset=at)
    number = float(value)
    if not math.isfinite(number):
        raise ScheduleError(f"frame key {body!r} evaluates to {number}", name=name, text=text, column=at)
    return int(number)  # truncates toward zero, as Deforum's int(numexpr.evaluate(key))
