"""Prompt schedules: the positive and negative text every frame is diffused with.

Deforum's 2D/3D/Video Input semantics:

* ``prompts`` maps a frame key to a prompt. Keys are resolved by
  :func:`dreamreel.keyframes.keys.resolve_frame_key` (numbers, expressions that may use ``max_f``,
  seconds ``2.5s``, beats ``8b``).
* The prompt switches hard at each keyframe; frames before the first key take the first key's
  prompt.
* The global positive/negative fields are merged into every keyframe prompt exactly as Deforum
  does, ``f"{positive} {prompt} {'' if '--neg' in prompt else '--neg'} {negative}"``, and the
  result is split at ``--neg``: what follows a marker is negative text.
* Backtick expressions such as ``cat:`1-t/30``` are evaluated with the real variables ``t`` (the
  frame), ``max_f`` and ``s`` (never by replacing letters), vectorised over the frames a keyframe
  covers, and the numbers substituted into the text (:func:`format_number`).

With ``blend=True`` the frames between two keyframes also carry weighted ``parts`` of both
prompts, for a generator that can blend conditionings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from dreamreel.errors import ScheduleError
from dreamreel.keyframes.expr import Variables, evaluate
from dreamreel.keyframes.keys import resolve_frame_key

logger = logging.getLogger(__name__)

NEG_MARKER = "--neg"
"""The marker that starts negative text inside a prompt."""

Parts = tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class FramePrompt:
    """The prompt of one frame.

    Attributes:
        prompt: positive text (A1111 syntax, backticks evaluated, stripped).
        negative_prompt: negative text (stripped).
        parts: prompt blending, ``(positive text, weight)`` with weights summing to 1; empty when
            the frame is not blended (then ``prompt`` is the whole story).
        negative_parts: the same for negative texts; empty when the negatives do not differ.
    """

    prompt: str
    negative_prompt: str
    parts: Parts = ()
    negative_parts: Parts = ()


def format_number(value: float) -> str:
    """Format a backtick result for prompt text.

    Integral values print as integers (``5``); others with at most 6 significant digits in plain
    positional notation (``0.3``, ``0.666667``, ``0.0000001``), never in exponent notation, which
    A1111's attention syntax would not read.
    """
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return np.format_float_positional(value, precision=6, unique=True, fractional=False, trim="-")


def split_negative(text: str) -> tuple[str, str]:
    """Split prompt text at ``--neg`` into stripped (positive, negative).

    With several markers, every piece after a marker is negative text; the non-empty pieces are
    joined with ``", "``.
    """
    positive, *negatives = text.split(NEG_MARKER)
    pieces = [piece.strip() for piece in negatives]
    return positive.strip(), ", ".join(piece for piece in pieces if piece)


def merge_global(prompt: str, positive: str = "", negative: str = "") -> str:
    """Merge the global positive/negative fields into one keyframe prompt, as Deforum does.

    Any ``--neg`` typed into ``negative`` is removed first (Deforum does the same). The result is
    meant for :func:`split_negative`, which strips the stray spaces of empty fields.
    """
    negative = negative.replace(NEG_MARKER, "")
    separator = "" if NEG_MARKER in prompt else NEG_MARKER
    return f"{positive} {prompt} {separator} {negative}"


@dataclass(frozen=True, slots=True)
class _Template:
    """Prompt text split at its backtick expressions: ``pieces[0] expr0 pieces[1] expr1 ...``."""

    pieces: tuple[str, ...]
    exprs: tuple[tuple[str, int], ...]  # (expression, column of its first character in text)
    name: str
    text: str

    def render(self, frames: NDArray[np.int64], *, max_frames: int, seed: int) -> list[str]:
        """The text at each of ``frames``, with every expression evaluated once for all of them."""
        if not self.exprs:
            return [self.pieces[0]] * len(frames)
        variables = Variables(t=frames.astype(np.float64), max_f=float(max_frames - 1), s=float(seed))
        columns: list[list[str]] = []
        for expr, column in self.exprs:
            values = evaluate(expr, variables, name=self.name, text=self.text, offset=column)
            finite = np.isfinite(values)
            if not finite.all():
                index = int(np.argmin(finite))
                raise ScheduleError(
                    f"`{expr.strip()}` evaluates to {values[index]}; a prompt weight must be a finite number",
                    name=self.name, text=self.text, column=column, frame=int(frames[index]),
                )  # fmt: skip
            columns.append([format_number(float(v)) for v in values])
        rendered = []
        for row in zip(*columns, strict=True):
            parts = [self.pieces[0]]
            for value, piece in zip(row, self.pieces[1:], strict=True):
                parts += (value, piece)
            rendered.append("".join(parts))
        return rendered


def parse_backticks(text: str, *, name: str) -> _Template:
    """Split ``text`` at backtick pairs; raise ScheduleError for an unbalanced backtick."""
    marks = [index for index, char in enumerate(text) if char == "`"]
    if len(marks) % 2:
        raise ScheduleError(
            "unbalanced backtick: every `expression` needs a closing backtick",
            name=name, text=text, column=marks[-1],
        )  # fmt: skip
    pieces: list[str] = []
    exprs: list[tuple[str, int]] = []
    start = 0
    for open_at, close_at in zip(marks[::2], marks[1::2], strict=True):
        pieces.append(text[start:open_at])
        exprs.append((text[open_at + 1 : close_at], open_at + 1))
        start = close_at + 1
    pieces.append(text[start:])
    return _Template(tuple(pieces), tuple(exprs), name, text)


def render_prompt_texts(
    text: str, frames: Sequence[int] | NDArray[np.int64], *, max_frames: int, seed: int = -1, name: str = "prompt"
) -> list[str]:
    """Evaluate the backtick expressions of ``text`` at each of ``frames``.

    Raises:
        ScheduleError: naming ``name``, with a caret, for an unbalanced backtick or a bad expression.
    """
    template = parse_backticks(text, name=name)
    return template.render(np.asarray(frames, dtype=np.int64), max_frames=max_frames, seed=seed)


def _keyframes(
    prompts: Mapping[str, str], max_frames: int, *, seed: int, fps: float | None, bpm: float | None, name: str
) -> list[tuple[int, str, str]]:
    """Resolve the keys of ``prompts``: sorted (frame, key, text), one entry per frame in range."""
    if not isinstance(prompts, Mapping) or not prompts:
        raise ScheduleError(
            'needs at least one prompt, as an object such as {"0": "a forest", "60": "a city --neg blurry"}',
            name=name,
        )
    by_frame: dict[int, tuple[str, str]] = {}
    outside: list[str] = []
    for raw_key, text in prompts.items():
        key = str(raw_key)
        label = f'{name}["{key}"]'
        if not isinstance(text, str):
            raise ScheduleError(
                f"the prompt must be text, not {type(text).__name__} ({text!r}); quote it in the settings file",
                name=label,
            )
        frame = resolve_frame_key(key, max_frames=max_frames, seed=seed, fps=fps, bpm=bpm, name=label, text=key)
        if not 0 <= frame < max_frames:
            outside.append(f"{key!r} (frame {frame})")
            continue
        if frame in by_frame:
            logger.warning(
                "%s: keys %r and %r both land on frame %d; the later one, %r, is used",
                name, by_frame[frame][0], key, frame, key,
            )  # fmt: skip
        by_frame[frame] = (key, text)
    if outside:
        logger.warning("%s: keys outside frames 0..%d are ignored: %s", name, max_frames - 1, ", ".join(outside))
    if not by_frame:
        raise ScheduleError(
            f"no prompt key lands inside frames 0..{max_frames - 1} (max_frames is {max_frames}); "
            f"got {', '.join(outside)}. Add a prompt at frame 0",
            name=name,
        )
    return [(frame, key, text) for frame, (key, text) in sorted(by_frame.items())]


def _blend_parts(current: str, following: str, weight: float) -> Parts:
    """``((current, 1-weight), (following, weight))``; empty when both texts are the same."""
    if current == following:
        return ()
    parts = ((current, 1.0 - weight), (following, weight))
    return tuple(part for part in parts if part[1] > 0.0)


class _GlobalTexts:
    """The global positive/negative fields rendered at every frame (constant when no backticks)."""

    def __init__(self, positive: str, negative: str, *, max_frames: int, seed: int, name: str) -> None:
        frames = np.arange(max_frames, dtype=np.int64)
        pos = parse_backticks(positive, name=f"{name} positive")
        neg = parse_backticks(negative, name=f"{name} negative")
        self.positive = pos.render(frames, max_frames=max_frames, seed=seed) if pos.exprs else None
        self.negative = neg.render(frames, max_frames=max_frames, seed=seed) if neg.exprs else None
        self._pos_text = positive
        self._neg_text = negative
        self._cache: dict[tuple[str, str, str], tuple[str, str]] = {}

    @property
    def constant(self) -> bool:
        """True when the globals are the same text on every frame (no backticks)."""
        return self.positive is None and self.negative is None

    def split(self, prompt: str, frame: int) -> tuple[str, str]:
        """Merge ``prompt`` (already rendered at ``frame``) with the globals and split it."""
        positive = self._pos_text if self.positive is None else self.positive[frame]
        negative = self._neg_text if self.negative is None else self.negative[frame]
        key = (prompt, positive, negative)
        if key not in self._cache:
            self._cache[key] = split_negative(merge_global(prompt, positive, negative))
        return self._cache[key]


def resolve_prompts(
    prompts: Mapping[str, str],
    max_frames: int,
    *,
    positive: str = "",
    negative: str = "",
    seed: int = -1,
    blend: bool = False,
    fps: float | None = None,
    bpm: float | None = None,
    name: str = "prompts",
) -> list[FramePrompt]:
    """Resolve a prompt map into one :class:`FramePrompt` per frame.

    Args:
        prompts: frame key → prompt text (``--neg`` starts negative text).
        max_frames: number of frames; the result has this length.
        positive: global positive text, merged into every prompt as Deforum does.
        negative: global negative text, merged into every prompt as Deforum does.
        seed: the run's seed, ``s`` in keys and backtick expressions.
        blend: also fill ``parts``/``negative_parts`` between keyframes, weighted linearly.
        fps: frames per second, for keys in seconds or beats.
        bpm: beats per minute, for keys in beats.
        name: the settings key, for messages.

    Raises:
        ScheduleError: for a bad key, a non-text prompt, no key inside the run, an unbalanced
            backtick or a bad backtick expression.
    """
    if max_frames < 1:
        raise ScheduleError(f"max_frames must be at least 1, got {max_frames}", name=name)
    keyframes = _keyframes(prompts, max_frames, seed=seed, fps=fps, bpm=bpm, name=name)
    globals_ = _GlobalTexts(positive, negative, max_frames=max_frames, seed=seed, name=name)
    templates = [parse_backticks(text, name=f'{name}["{key}"]') for _, key, text in keyframes]
    bounds = [0] + [frame for frame, _, _ in keyframes[1:]] + [max_frames]
    result: list[FramePrompt] = []
    for index, template in enumerate(templates):
        frames = np.arange(bounds[index], bounds[index + 1], dtype=np.int64)
        texts = template.render(frames, max_frames=max_frames, seed=seed)
        following: list[str] | None = None
        if blend and index + 1 < len(templates):
            following = templates[index + 1].render(frames, max_frames=max_frames, seed=seed)
        start = keyframes[index][0]
        end = bounds[index + 1]
        if following is None and not template.exprs and globals_.constant:
            # the same text on every frame of this segment: one object, no per-frame work
            result.extend([FramePrompt(*globals_.split(texts[0], bounds[index]))] * len(frames))
            continue
        previous: FramePrompt | None = None
        for offset, frame in enumerate(frames.tolist()):
            pos, neg = globals_.split(texts[offset], frame)
            parts: Parts = ()
            negative_parts: Parts = ()
            if following is not None and frame > start:
                next_pos, next_neg = globals_.split(following[offset], frame)
                weight = (frame - start) / (end - start)
                parts = _blend_parts(pos, next_pos, weight)
                negative_parts = _blend_parts(neg, next_neg, weight)
            current = FramePrompt(pos, neg, parts, negative_parts)
            if current == previous:
                current = previous  # share equal objects between frames
            result.append(current)
            previous = current
    return result
