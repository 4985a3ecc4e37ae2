"""Deforum keyframe schedules, e.g. ``"0:(1.0), 30:(1.0 + 0.1*sin(t/8))"``, resolved to per-frame values.

A schedule is a comma-separated list of ``frame:(value)`` entries. Semantics (Deforum's, with the
differences listed in docs/compat.md):

* a value that is a plain number is an *anchor*; frames between anchors are interpolated
  (linearly, like Deforum; ``interpolation="cubic"`` or ``"step"`` are dreamreel extras);
* any other value is an expression evaluated at every frame from its keyframe up to the frame
  before the next keyframe, with ``t`` the absolute frame index;
* frames before the first keyframe take its value; after the last keyframe the value holds (or
  the expression keeps running);
* NaN produced by an expression is bridged like a gap between anchors; +/-inf is kept.

Every segment is evaluated with one vectorised :func:`dreamreel.keyframes.expr.evaluate` call over
its frames. String schedules (sampler, checkpoint) hold each keyframe's text until the next one.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from dreamreel.errors import ScheduleError, did_you_mean
from dreamreel.keyframes.expr import FUNCTIONS, Variables, evaluate
from dreamreel.keyframes.keys import resolve_frame_key, strip_quotes
from dreamreel.keyframes.scan import QUOTES, find_top_level, matching_bracket, split_top_level, unclosed_quote

logger = logging.getLogger(__name__)

Interpolation = Literal["linear", "cubic", "step"]
INTERPOLATIONS: tuple[str, ...] = ("linear", "cubic", "step")

# Written without ambiguous repetitions, so a failed match on long input stays linear.
_NUMBER = re.compile(
    r"[\s(]*(?:(?P<sign>[+-])[\s(]*)?"
    r"(?P<digits>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
    r"[\s)]*"
)
_TEXT_LIKE = re.compile(r"[A-Za-z][\w .+\-]*")
_COLUMN_NOTE = re.compile(r" \(column \d+\)$")
_OPERATOR_START = "+-*/%<>=!&|^"
_VARIABLES = frozenset({"t", "i", "max_f", "s", "pi", "e"})
_EXAMPLE = "0:(1.0), 30:(1.0+0.1*sin(t/8))"


@dataclass(frozen=True, slots=True)
class Keyframe:
    """One ``frame:(value)`` entry of a schedule.

    Attributes:
        frame: the resolved frame index.
        text: the value as written, inside its outer parentheses, whitespace stripped.
        column: the column of ``text[0]`` in the schedule text (for error carets).
        number: the value when it is a plain number (an interpolation anchor), else None.
        key: the key as written, whitespace stripped (``"max_f-2"``, ``2.5s``).
        key_column: the column of the key in the schedule text.
    """

    frame: int
    text: str
    column: int
    number: float | None
    key: str = "0"
    key_column: int = 0


def parse_keyframes(
    text: str,
    max_frames: int,
    *,
    seed: int = -1,
    name: str = "schedule",
    fps: float | None = None,
    bpm: float | None = None,
) -> tuple[Keyframe, ...]:
    """Split a schedule into keyframes, sorted by frame, one per frame, all inside ``[0, max_frames)``.

    Duplicate frames keep the last entry; keys outside the run are dropped. Each case logs one
    warning per schedule.

    Args:
        text: the schedule as written.
        max_frames: number of frames of the run.
        seed: the run's seed (``s`` in key expressions).
        name: the schedule's name, for messages.
        fps: frames per second, for keys in seconds (``2.5s``) or beats (``8b``).
        bpm: beats per minute, for keys in beats.

    Raises:
        ScheduleError: when the text is not a valid schedule or no keyframe lies inside the run.
    """
    _check_arguments(text, max_frames, name)
    _check_quotes(text, name)
    pieces = [(piece, column) for piece, column in split_top_level(text) if piece.strip()]
    if not pieces:
        raise ScheduleError(
            f"the schedule is empty; write at least one keyframe such as {_EXAMPLE}",
            name=name, text=text, column=0 if text else None,
        )  # fmt: skip
    bare = _bare_constant(pieces)
    if bare is not None:
        return (bare,)
    entries = [
        _parse_entry(piece, column, text=text, name=name, max_frames=max_frames, seed=seed, fps=fps, bpm=bpm)
        for piece, column in pieces
    ]
    return _select(entries, text=text, name=name, max_frames=max_frames)


def parse_schedule(
    text: str,
    max_frames: int,
    *,
    seed: int = -1,
    name: str = "schedule",
    fps: float | None = None,
    bpm: float | None = None,
    interpolation: Interpolation = "linear",
) -> NDArray[np.float64]:
    """Resolve a numeric schedule to one float per frame.

    Args:
        text: the schedule, e.g. ``"0:(1.0), 30:(1.0+0.1*sin(t/8))"`` or a bare number ``"7"``.
        max_frames: number of frames of the run (``max_f = max_frames - 1``).
        seed: the run's resolved seed (``s``); -1 when unknown.
        name: the schedule's name, for messages.
        fps: frames per second, for keys in seconds or beats.
        bpm: beats per minute, for keys in beats.
        interpolation: how anchors are joined: ``"linear"`` (Deforum), ``"cubic"`` (monotone
            cubic, no overshoot) or ``"step"`` (hold until the next keyframe).

    Returns:
        float64 array of shape ``(max_frames,)``.

    Raises:
        ScheduleError: for any invalid text, expression or argument.
    """
    if interpolation not in INTERPOLATIONS:
        raise ScheduleError(
            f"unknown interpolation {interpolation!r}; use one of {', '.join(INTERPOLATIONS)}."
            + did_you_mean(str(interpolation), INTERPOLATIONS),
            name=name, text=text if isinstance(text, str) else "",
        )  # fmt: skip
    keyframes = parse_keyframes(text, max_frames, seed=seed, name=name, fps=fps, bpm=bpm)
    if all(kf.number is not None for kf in keyframes):  # fast path: anchors only
        x = np.array([kf.frame for kf in keyframes], dtype=np.float64)
        y = np.array([kf.number for kf in keyframes], dtype=np.float64)
        if x.size == 1:
            return np.full(max_frames, y[0])
        x, y = _hold_ends(x, y, max_frames - 1)
        values = _interpolate(x, y, np.arange(max_frames, dtype=np.float64), interpolation)
        values[x.astype(np.intp)] = y
        return values
    values = np.full(max_frames, np.nan)
    frames = np.arange(max_frames, dtype=np.float64)
    ends = [kf.frame for kf in keyframes[1:]] + [max_frames]
    for kf, end in zip(keyframes, ends, strict=True):
        if kf.number is not None:
            values[kf.frame] = kf.number
        else:
            variables = Variables(t=frames[kf.frame : end], max_f=float(max_frames - 1), s=float(seed))
            values[kf.frame : end] = _evaluate(kf, variables, name=name, text=text)
    if np.isnan(values).all():
        raise ScheduleError(
            "the schedule is NaN (not a number) at every frame, e.g. sqrt of a negative number; "
            "make sure at least one frame has a real value",
            name=name, text=text, column=keyframes[0].column,
        )  # fmt: skip
    return _fill(values, interpolation)


def parse_string_schedule(
    text: str,
    max_frames: int,
    *,
    seed: int = -1,
    name: str = "schedule",
    fps: float | None = None,
    bpm: float | None = None,
) -> tuple[str, ...]:
    """Resolve a string schedule (sampler, checkpoint, ...) to one string per frame.

    Each keyframe's text (outer parentheses and quotes stripped once) holds until the next
    keyframe; frames before the first keyframe take its text.

    Raises:
        ScheduleError: for invalid text, an empty value or an unquoted number as a value.
    """
    keyframes = parse_keyframes(text, max_frames, seed=seed, name=name, fps=fps, bpm=bpm)
    values: list[str] = []
    for kf in keyframes:
        body, offset = strip_quotes(kf.text)
        quoted = len(body) != len(kf.text)
        if not body:
            raise ScheduleError(
                'empty value; write a name such as 0:("Euler a")', name=name, text=text, column=kf.column
            )
        if kf.number is not None and not quoted:
            raise ScheduleError(
                f"the value {kf.text!r} is a number, but {name} expects text such as a sampler or checkpoint "
                f'name, e.g. 0:("Euler a"); put the value in quotes if it really is a name',
                name=name, text=text, column=kf.column + offset, frame=kf.frame,
            )  # fmt: skip
        values.append(body)
    out: list[str] = [values[0]] * keyframes[0].frame
    ends = [kf.frame for kf in keyframes[1:]] + [max_frames]
    for kf, end, value in zip(keyframes, ends, values, strict=True):
        out.extend([value] * (end - kf.frame))
    return tuple(out)


def _check_arguments(text: object, max_frames: object, name: str) -> None:
    """Reject a non-string schedule or a frame count below 1."""
    if not isinstance(text, str):
        raise ScheduleError(
            f"expected the schedule as text such as {_EXAMPLE!r}, got {type(text).__name__} {text!r}", name=name
        )
    if isinstance(max_frames, bool) or not isinstance(max_frames, int | np.integer) or max_frames < 1:
        raise ScheduleError(f"max_frames must be a whole number of at least 1, got {max_frames!r}", name=name)


def _check_quotes(text: str, name: str) -> None:
    """Raise at the opening quote of a quote that is never closed."""
    start = unclosed_quote(text)
    if start >= 0:
        raise ScheduleError(f"the quote {text[start]} is never closed", name=name, text=text, column=start)


def as_number(value: str) -> float | None:
    """The value of a plain number such as ``1.5``, ``((8))``, ``-(3)``, ``( 2 )``, ``2e0``, ``"5"``, else None.

    Quotes are ignored and parentheses must balance; ``(4)(0)`` is not a number.
    """
    bare = value.replace('"', "").replace("'", "")
    match = _NUMBER.fullmatch(bare)
    if match is None or bare.count("(") != bare.count(")"):
        return None
    return float((match.group("sign") or "") + match.group("digits"))


def _bare_constant(pieces: list[tuple[str, int]]) -> Keyframe | None:
    """A whole schedule that is a single number (``"7"``) is a constant keyframe at frame 0."""
    if len(pieces) != 1 or find_top_level(pieces[0][0], ":") >= 0:
        return None
    piece, column = pieces[0]
    number = as_number(piece)
    if number is None:
        return None
    lead = len(piece) - len(piece.lstrip())
    return Keyframe(frame=0, text=piece.strip(), column=column + lead, number=number, key_column=column + lead)


def _parse_entry(
    piece: str,
    column: int,
    *,
    text: str,
    name: str,
    max_frames: int,
    seed: int,
    fps: float | None,
    bpm: float | None,
) -> Keyframe:
    """Parse one ``key:(value)`` entry; the frame may still lie outside the run."""
    lead = len(piece) - len(piece.lstrip())
    colon = find_top_level(piece, ":")
    if colon < 0:
        raise ScheduleError(
            f"expected 'frame:(value)' entries such as {_EXAMPLE}, but this entry has no ':'",
            name=name, text=text, column=column + lead,
        )  # fmt: skip
    frame = resolve_frame_key(
        piece[:colon], max_frames=max_frames, seed=seed, fps=fps, bpm=bpm, name=name, text=text, column=column
    )
    value, value_column = _value_text(piece[colon + 1 :], column + colon + 1, text=text, name=name)
    return Keyframe(
        frame=frame,
        text=value,
        column=value_column,
        number=as_number(value),
        key=piece[:colon].strip(),
        key_column=column + lead,
    )


def _value_text(value: str, column: int, *, text: str, name: str) -> tuple[str, int]:
    """Return the value without its outer parentheses, and the column where it starts."""
    body = value.strip()
    start = column + len(value) - len(value.lstrip())
    colon = find_top_level(body, ":")
    if colon >= 0:
        raise ScheduleError(
            "a ',' between keyframes is probably missing before this key "
            "(text containing ':' must be in quotes)",
            name=name, text=text, column=start + _key_start(body, colon),
        )  # fmt: skip
    if not body.startswith("("):
        return body, start
    close = matching_bracket(body, 0)
    if close < 0:
        raise ScheduleError("'(' is never closed", name=name, text=text, column=start)
    rest = body[close + 1 :]
    if not rest.strip():
        inner = body[1:close]
        return inner.strip(), start + 1 + len(inner) - len(inner.lstrip())
    trailing = rest.lstrip()
    if trailing[0] in _OPERATOR_START:
        return body, start  # an expression such as (t)*2
    message = (
        "unbalanced ')'"
        if trailing[0] == ")"
        else f"unexpected {trailing[:20]!r} after the value's ')'; a ',' between keyframes is probably missing"
    )
    raise ScheduleError(
        message,
        name=name, text=text, column=start + close + 1 + len(rest) - len(trailing),
    )  # fmt: skip


def _key_start(body: str, colon: int) -> int:
    """Index in ``body`` where the key ending at ``colon`` starts (for a missing-comma caret)."""
    index = colon
    while index > 0 and body[index - 1].isspace():
        index -= 1
    if index > 0 and body[index - 1] in QUOTES:
        opening = body.rfind(body[index - 1], 0, index - 1)
        return max(opening, 0)
    while index > 0 and not body[index - 1].isspace() and body[index - 1] != ",":
        index -= 1
    return index


def _select(entries: list[Keyframe], *, text: str, name: str, max_frames: int) -> tuple[Keyframe, ...]:
    """Keep the last entry per frame and the frames inside the run, warning once for each kind of drop."""
    by_frame: dict[int, Keyframe] = {}
    duplicates: list[int] = []
    for entry in entries:
        if entry.frame in by_frame and entry.frame not in duplicates:
            duplicates.append(entry.frame)
        by_frame[entry.frame] = entry
    if duplicates:
        logger.warning(
            "%s: frame(s) %s have more than one keyframe; the last one wins", name, ", ".join(map(str, duplicates))
        )
    outside = [kf for kf in by_frame.values() if not 0 <= kf.frame < max_frames]
    if outside:
        listed = ", ".join(_describe_key(kf) for kf in outside)
        logger.warning("%s: ignoring keyframe(s) outside frames 0..%d: %s", name, max_frames - 1, listed)
    inside = sorted((kf for kf in by_frame.values() if 0 <= kf.frame < max_frames), key=lambda kf: kf.frame)
    if not inside:
        raise ScheduleError(
            f"no keyframe lies within frames 0..{max_frames - 1} (max_f = {max_frames - 1}); "
            f"keys outside the run are ignored, so add a keyframe such as 0:(1.0)",
            name=name, text=text, column=outside[0].key_column,
        )  # fmt: skip
    return tuple(inside)


def _describe_key(kf: Keyframe) -> str:
    """A short description of a keyframe's key for a warning: ``30``, ``2.5s (frame 25)``."""
    key = kf.key if len(kf.key) <= 40 else kf.key[:37] + "..."
    if key == str(kf.frame):
        return key
    return f"{key} (frame {kf.frame if abs(kf.frame) < 10**12 else 'far beyond the run'})"


def _evaluate(kf: Keyframe, variables: Variables, *, name: str, text: str) -> NDArray[np.float64]:
    """Evaluate an expression keyframe over its segment; text values get a clear message."""
    body, offset = strip_quotes(kf.text)
    quoted = len(body) != len(kf.text)
    try:
        return evaluate(body, variables, name=name, text=text, offset=kf.column + offset, frame=kf.frame)
    except ScheduleError as exc:
        if not (quoted or _looks_like_text(body)):
            raise
        raise ScheduleError(
            f"the value {kf.text!r} is text, but {name} needs a number or a math expression of t such as "
            f"1.0+0.1*sin(t/8) ({_COLUMN_NOTE.sub('', exc.detail.splitlines()[0])})",
            name=name, text=text, column=kf.column, frame=kf.frame,
        ) from exc  # fmt: skip


def _looks_like_text(body: str) -> bool:
    """True for values such as ``Euler a`` that are words rather than math."""
    if _TEXT_LIKE.fullmatch(body) is None:
        return False
    first = re.match(r"\w+", body)
    return first is not None and first.group() not in FUNCTIONS | _VARIABLES


def _fill(values: NDArray[np.float64], interpolation: str) -> NDArray[np.float64]:
    """Fill the NaN frames from the valid ones, in place; hold the first value backwards, the last forwards."""
    gaps = np.isnan(values)
    if not gaps.any():
        return values
    nodes = np.flatnonzero(~gaps)
    x, y = _hold_ends(nodes.astype(np.float64), values[nodes], values.size - 1)
    values[x.astype(np.intp)] = y
    wanted = np.flatnonzero(np.isnan(values))
    if wanted.size:
        values[wanted] = _interpolate(x, y, wanted.astype(np.float64), interpolation)
    return values


def _hold_ends(
    x: NDArray[np.float64], y: NDArray[np.float64], last: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Add nodes at frame 0 and frame ``last`` holding the first and last values (as Deforum does)."""
    if x[0] > 0:
        x, y = np.concatenate(([0.0], x)), np.concatenate((y[:1], y))
    if x[-1] < last:
        x, y = np.concatenate((x, [float(last)])), np.concatenate((y, y[-1:]))
    return x, y


def _interpolate(
    x: NDArray[np.float64], y: NDArray[np.float64], xq: NDArray[np.float64], interpolation: str
) -> NDArray[np.float64]:
    """Values at ``xq`` (inside ``[x[0], x[-1]]``) from the nodes ``(x, y)``."""
    with np.errstate(all="ignore"):
        if interpolation == "step":
            return y[np.searchsorted(x, xq, side="right") - 1]
        finite = np.isfinite(y)
        if interpolation == "cubic" and np.count_nonzero(finite) >= 2:
            return pchip(x[finite], y[finite], xq)
        return np.interp(xq, x, y)


def pchip(x: NDArray[np.float64], y: NDArray[np.float64], xq: NDArray[np.float64]) -> NDArray[np.float64]:
    """Monotone piecewise cubic Hermite interpolation (Fritsch-Carlson), like scipy's PchipInterpolator.

    Between two nodes the curve never leaves the range of their values, so it does not overshoot.

    Args:
        x: strictly increasing node positions (at least 2).
        y: node values.
        xq: positions to evaluate, inside ``[x[0], x[-1]]``.
    """
    h = np.diff(x)
    delta = np.diff(y) / h
    slopes = np.empty_like(y)
    if x.size == 2:
        slopes[:] = delta[0]
    else:
        h0, h1, d0, d1 = h[:-1], h[1:], delta[:-1], delta[1:]
        w1, w2 = 2 * h1 + h0, h1 + 2 * h0
        same_sign = np.sign(d0) * np.sign(d1) > 0
        with np.errstate(all="ignore"):
            harmonic = (w1 + w2) / (w1 / d0 + w2 / d1)
        slopes[1:-1] = np.where(same_sign, harmonic, 0.0)
        slopes[0] = _end_slope(h[0], h[1], delta[0], delta[1])
        slopes[-1] = _end_slope(h[-1], h[-2], delta[-1], delta[-2])
    # Per interval, with m = slope * width: p(u) = y0 + u*(m0 + u*(c2 + u*c3)) for u in [0, 1].
    y0, y1, m0, m1 = y[:-1], y[1:], slopes[:-1] * h, slopes[1:] * h
    c2 = 3 * (y1 - y0) - 2 * m0 - m1
    c3 = 2 * (y0 - y1) + m0 + m1
    xq = np.clip(xq, x[0], x[-1])
    k = np.clip(np.searchsorted(x, xq, side="right") - 1, 0, x.size - 2)
    u = (xq - x[k]) / h[k]
    return y0[k] + u * (m0[k] + u * (c2[k] + u * c3[k]))


def _end_slope(h0: float, h1: float, m0: float, m1: float) -> float:
    """Shape-preserving three-point slope at an end node."""
    slope = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
    if np.sign(slope) != np.sign(m0):
        return 0.0
    if np.sign(m0) != np.sign(m1) and abs(slope) > abs(3 * m0):
        return float(3 * m0)
    return float(slope)
