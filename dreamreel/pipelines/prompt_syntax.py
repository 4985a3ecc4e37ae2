"""AUTOMATIC1111 prompt syntax, as pure text processing (no torch).

Three layers, applied in this order to a prompt:

1. :func:`extract_lora_tags` removes ``<lora:name:weight>`` tags (A1111 "extra networks").
2. :func:`prompt_schedule` resolves prompt editing ``[from:to:when]`` and alternation
   ``[a|b|c]`` into the plain prompt texts used over the sampling steps.
3. :func:`parse_prompt_attention` splits one such text into ``(text, weight)`` runs for
   ``(word)``, ``[word]``, ``(word:1.5)`` and ``BREAK``.

Composable diffusion (``a cat AND a dog :0.5``) is split off between 1 and 2 by :func:`split_and`;
each sub-prompt then has its own schedule (see ``dreamreel.pipelines.composable``).

The parsers are written for dreamreel; they reproduce A1111's documented behaviour, including
how unbalanced brackets are treated.

Example:
    >>> parse_prompt_attention("a (red:1.5) [fox]")
    [('a ', 1.0), ('red', 1.5), (' ', 1.0), ('fox', 0.9090909090909091)]
    >>> prompt_schedule("a [cat:dog:0.5]", 10)
    [(5, 'a cat'), (10, 'a dog')]
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from dreamreel.errors import SettingsError

logger = logging.getLogger(__name__)

__all__ = [
    "BREAK",
    "extract_lora_tags",
    "parse_prompt_attention",
    "prompt_at_step",
    "prompt_schedule",
    "split_and",
]

BREAK: tuple[str, float] = ("BREAK", -1.0)
"""The marker :func:`parse_prompt_attention` emits for the ``BREAK`` keyword (as A1111 does)."""

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

_WEIGHT = re.compile(r":\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)")
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*")
_ESCAPABLE = "()[]\\"
_SPECIAL = "\\()[]:|"
_NUMBER = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*")
"""lark's ``SIGNED_NUMBER`` (A1111's ``when``), with the optional blanks around it."""
_AND = re.compile(r"\bAND\b")
_AND_WEIGHT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")
_TAG = re.compile(r"[ \t]*<(\w+):([^>]+)>[ \t]*")


# --------------------------------------------------------------------------------------------
# attention: (word), [word], (word:1.5), BREAK


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Split a prompt into runs of text with their attention weights, A1111 style.

    ``(x)`` multiplies the weight of ``x`` by 1.1, ``[x]`` divides it by 1.1, ``(x:1.5)`` sets a
    factor of 1.5; nesting multiplies. ``\\(``, ``\\)``, ``\\[``, ``\\]`` and ``\\\\`` are literal
    characters. Brackets left open at the end apply to the rest of the prompt; a closing bracket
    with nothing open is literal text. ``BREAK`` (upper case, a separate word) becomes the
    :data:`BREAK` marker. As in A1111 (``parse_prompt_attention``), the marker is a run of weight -1
    that brackets scale like any other run, so inside brackets it is no break but the word
    ``BREAK`` with weight ``-1 * factor``. Adjacent runs with equal weights are merged exactly as
    A1111 merges them (the empty runs around a ``BREAK`` take part, so they keep the runs on either
    side apart), then the empty runs are dropped (they hold no tokens).

    Args:
        text: one prompt (after prompt editing has been resolved).

    Returns:
        ``(text, weight)`` runs, at least one (``[("", 1.0)]`` for an empty prompt).
    """
    runs: list[list] = []  # [text, weight]
    round_open: list[int] = []
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for run in runs[start:]:
            run[1] *= factor

    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            nxt = text[i + 1 : i + 2]
            if nxt and nxt in _ESCAPABLE:
                runs.append([nxt, 1.0])
                i += 2
            else:  # A1111 drops a backslash that escapes nothing (an empty run)
                runs.append(["", 1.0])
                i += 1
        elif ch == "(":
            round_open.append(len(runs))
            i += 1
        elif ch == "[":
            square_open.append(len(runs))
            i += 1
        elif ch == ":" and round_open and (match := _WEIGHT.match(text, i)):
            scale(round_open.pop(), float(match.group(1)))
            i = match.end()
        elif ch == ")" and round_open:
            scale(round_open.pop(), ROUND_MULTIPLIER)
            i += 1
        elif ch == "]" and square_open:
            scale(square_open.pop(), SQUARE_MULTIPLIER)
            i += 1
        else:
            end = i + 1
            while end < len(text) and text[end] not in _SPECIAL:
                end += 1
            _append_plain(runs, text[i:end])
            i = end
    for start in round_open:
        scale(start, ROUND_MULTIPLIER)
    for start in square_open:
        scale(start, SQUARE_MULTIPLIER)
    return _merge(runs)


def _append_plain(runs: list[list], text: str) -> None:
    for index, part in enumerate(_BREAK_SPLIT.split(text)):
        if index > 0:
            runs.append(list(BREAK))
        runs.append([part, 1.0])


def _merge(runs: list[list]) -> list[tuple[str, float]]:
    """A1111's merge of neighbouring runs with equal weights, then the empty runs dropped."""
    merged: list[list] = []
    for text, weight in runs:
        if merged and merged[-1][1] == weight:
            merged[-1][0] += text
        else:
            merged.append([text, weight])
    kept = [(text, float(weight)) for text, weight in merged if text]
    return kept or [("", 1.0)]


# --------------------------------------------------------------------------------------------
# prompt editing [from:to:when] and alternation [a|b]


@dataclass(frozen=True, slots=True)
class _Group:
    """Brackets that are not editing/alternation, kept verbatim: ``(...)`` or ``[...]``."""

    open: str
    body: tuple[_Node, ...]
    close: str


@dataclass(frozen=True, slots=True)
class _Edit:
    """``[before:after:when]``; ``[after:when]`` has an empty ``before``."""

    before: tuple[_Node, ...]
    after: tuple[_Node, ...]
    when: str
    """The number as written (whether it has a decimal point matters)."""


@dataclass(frozen=True, slots=True)
class _Alternate:
    options: tuple[tuple[_Node, ...], ...]


_Node = str | _Group | _Edit | _Alternate


class _EditParser:
    """Recursive-descent parser; a bracket that does not parse is a literal character."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def parse(self) -> tuple[_Node, ...]:
        nodes = self._sequence(frozenset())
        return tuple(nodes)

    def _sequence(self, stops: frozenset[str]) -> list[_Node]:
        nodes: list[_Node] = []
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch in stops:
                break
            node: _Node | None = None
            if ch in "([":
                start = self.pos
                node = self._paren() if ch == "(" else self._bracket()
                if node is None:
                    self.pos = start + 1
                    node = ch
            elif ch == "\\":
                node = text[self.pos : self.pos + 2]
                self.pos += 2
            elif ch in _SPECIAL:
                node = ch
                self.pos += 1
            else:
                end = self.pos
                while end < len(text) and text[end] not in _SPECIAL:
                    end += 1
                node = text[self.pos : end]
                self.pos = end
            if isinstance(node, str) and nodes and isinstance(nodes[-1], str):
                nodes[-1] += node
            else:
                nodes.append(node)
        return nodes

    def _paren(self) -> _Group | None:
        self.pos += 1
        body = self._sequence(frozenset(")"))
        if self.pos >= len(self.text):
            return None
        self.pos += 1
        return _Group("(", tuple(body), ")")

    def _bracket(self) -> _Node | None:
        self.pos += 1
        stops = frozenset(":|]")
        parts = [self._sequence(stops)]
        separators: list[str] = []
        while True:
            if self.pos >= len(self.text):
                return None
            ch = self.text[self.pos]
            self.pos += 1
            if ch == "]":
                break
            separators.append(ch)
            parts.append(self._sequence(stops))
        if not separators:
            return _Group("[", tuple(parts[0]), "]")
        if all(sep == "|" for sep in separators):
            return _Alternate(tuple(tuple(part) for part in parts))
        if separators not in ([":"], [":", ":"]):
            return None
        when = _as_number(parts[-1])
        if when is None:
            return None
        before = tuple(parts[0]) if len(parts) == 3 else ()
        return _Edit(before, tuple(parts[-2]), when)


def _as_number(nodes: list[_Node]) -> str | None:
    if len(nodes) != 1 or not isinstance(nodes[0], str):
        return None
    match = _NUMBER.fullmatch(nodes[0])
    return match.group(1) if match else None


@dataclass(frozen=True, slots=True)
class _Timeline:
    """The steps a schedule is resolved for and A1111's offsets (``get_learned_conditioning_prompt_schedules``)."""

    steps: int
    int_offset: int = 0
    float_offset: float = 0.0

    def step_of(self, when: str) -> int:
        """A1111 >= 1.6: a number written with a decimal point is a fraction of the steps (also at 1 and
        above), one without is a step number; both are shifted by the first pass in a hires pass."""
        value = float(when)
        value = (value - self.float_offset) * self.steps if "." in when else value - self.int_offset
        return min(self.steps, int(value))


def _render(nodes: Sequence[_Node], step: int, steps: _Timeline) -> str:
    out: list[str] = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Group):
            out.append(node.open + _render(node.body, step, steps) + node.close)
        elif isinstance(node, _Edit):
            branch = node.before if step <= steps.step_of(node.when) else node.after
            out.append(_render(branch, step, steps))
        else:
            out.append(_render(node.options[(step - 1) % len(node.options)], step, steps))
    return "".join(out)


def _boundaries(nodes: Sequence[_Node], steps: _Timeline, found: set[int]) -> None:
    for node in nodes:
        if isinstance(node, _Group):
            _boundaries(node.body, steps, found)
        elif isinstance(node, _Edit):
            step = steps.step_of(node.when)
            if step >= 1:
                found.add(step)
            _boundaries(node.before, steps, found)
            _boundaries(node.after, steps, found)
        elif isinstance(node, _Alternate):
            found.update(range(1, steps.steps + 1))
            for option in node.options:
                _boundaries(option, steps, found)


def prompt_schedule(text: str, steps: int, *, first_pass_steps: int | None = None) -> list[tuple[int, str]]:
    """Resolve A1111 prompt editing and alternation into per-step prompt texts.

    ``[from:to:when]`` uses ``from`` up to step ``when`` and ``to`` after it; ``[to:when]`` adds
    ``to`` after ``when``; ``[from::when]`` removes ``from`` after ``when``. As in A1111 1.6 and
    later, a ``when`` written with a decimal point is a fraction of ``steps`` whatever its size
    (``0.5`` of 20 = step 10; ``1.0`` and ``5.0`` never switch), one without is a step number
    (``5``, ``1e1`` = 10); the number is lark's ``SIGNED_NUMBER``, blanks around it allowed.
    ``[a|b|c]`` cycles through the options, one per step. Constructs nest. Brackets that match
    none of these are kept verbatim for :func:`parse_prompt_attention`.

    Args:
        text: the prompt.
        steps: the number of sampling steps the schedule is computed for (A1111 uses the full
            step count, also for img2img); in a hires pass, that pass's steps.
        first_pass_steps: for a hires pass, the first pass's steps: as A1111 does, step numbers
            then count on from the first pass (``[a:b:25]`` after 20 first-pass steps switches at
            the pass's step 5) and fractions from 1.0 (``1.5`` is half-way through the pass).

    Returns:
        ``(end_step, prompt)`` pairs in step order, as A1111's
        ``get_learned_conditioning_prompt_schedules``: ``prompt`` is used up to ``end_step``
        (1-based). Consecutive equal prompts are merged; the last ``end_step`` is ``steps``.

    Raises:
        SettingsError: ``steps`` is below 1.
    """
    if steps < 1:
        raise SettingsError(f"the number of steps must be at least 1, got {steps}", key="steps")
    nodes = _EditParser(text).parse()
    if first_pass_steps is None:
        timeline = _Timeline(steps)
    else:
        timeline = _Timeline(steps, int_offset=first_pass_steps, float_offset=1.0)
    found = {steps}
    _boundaries(nodes, timeline, found)
    schedule: list[tuple[int, str]] = []
    for step in sorted(found):
        rendered = _render(nodes, step, timeline)
        if schedule and schedule[-1][1] == rendered:
            schedule[-1] = (step, rendered)
        else:
            schedule.append((step, rendered))
    return schedule


def prompt_at_step(schedule: Sequence[tuple[int, str]], step: int) -> str:
    """The prompt text A1111 uses at a sampler step.

    Args:
        schedule: the result of :func:`prompt_schedule`.
        step: the 0-based index of the sampler step. A1111 picks the first entry whose
            ``end_step`` is >= this index, so ``[a:b:10]`` uses ``a`` for steps 0 to 10.

    Returns:
        The prompt text (the last entry's for steps past the end).
    """
    for end_step, text in schedule:
        if step <= end_step:
            return text
    return schedule[-1][1]


# --------------------------------------------------------------------------------------------
# composable diffusion: a AND b :0.5


def split_and(text: str) -> list[tuple[str, float]]:
    """Split a prompt at ``AND`` into sub-prompts with weights, as A1111's ``get_multicond_prompt_list``.

    ``AND`` must be upper case and a separate word. A sub-prompt may end in ``:weight`` (blanks
    allowed around the colon); that suffix is removed from its text, and the weight defaults to 1.
    The split comes before prompt editing, so each sub-prompt has its own schedule.

    Args:
        text: the prompt (LoRA tags already removed).

    Returns:
        ``(text, weight)`` pairs, at least one; ``[(text, 1.0)]`` for a prompt without ``AND``
        or weight suffix.

    Example:
        >>> split_and("a cat AND a dog :0.5")
        [('a cat', 1.0), (' a dog', 0.5)]
    """
    parts: list[tuple[str, float]] = []
    for sub in _AND.split(text):
        match = _AND_WEIGHT.search(sub)
        if match is None:  # the pattern matches any text; kept for A1111's fallback
            parts.append((sub, 1.0))
            continue
        parts.append((match.group(1), float(match.group(2)) if match.group(2) is not None else 1.0))
    return parts


# --------------------------------------------------------------------------------------------
# extra networks: <lora:name:weight>


def extract_lora_tags(text: str) -> tuple[str, list[tuple[str, float]]]:
    """Remove A1111 extra-network tags from a prompt and return the LoRAs they ask for.

    ``<lora:name>`` has weight 1.0, ``<lora:name:0.6>`` 0.6. A1111's extra fields
    (``<lora:name:0.6:0.3>`` for a separate UNet weight, ``te=``/``unet=``/``dyn=``) are ignored
    with a warning: the first weight (or ``te=``) applies to the whole LoRA. ``<lyco:...>`` is
    read as ``<lora:...>``. Other tag types are removed with a warning, as A1111 does.

    Args:
        text: the prompt.

    Returns:
        The prompt without tags (each tag and the blanks around it become one space; the result
        is stripped) and the ``(name, weight)`` pairs in prompt order.

    Raises:
        SettingsError: a ``<hypernet:...>`` tag (hypernetworks are not supported), a LoRA tag
            without a name, or a weight that is not a number.
    """
    loras: list[tuple[str, float]] = []

    def replace(match: re.Match[str]) -> str:
        kind, args, tag = match.group(1).lower(), match.group(2), match.group(0).strip()
        if kind == "hypernet":
            raise SettingsError(
                f"the prompt uses a hypernetwork ({tag}), which dreamreel does not support; "
                "remove the tag or use a LoRA instead (<lora:name:weight>)",
                key="prompt",
            )
        if kind in ("lora", "lyco"):
            loras.append(_lora_from_tag(tag, args))
        else:
            logger.warning("ignoring the unknown extra-network tag %s in the prompt", tag)
        return " "

    clean = _TAG.sub(replace, text)
    return clean.strip(), loras


def _lora_from_tag(tag: str, args: str) -> tuple[str, float]:
    name, *rest = (field.strip() for field in args.split(":"))
    if not name:
        raise SettingsError(f"the LoRA tag {tag} has no name; write <lora:name:weight>", key="prompt")
    used = next((i for i, f in enumerate(rest) if f.replace(" ", "").startswith("te=")), None)
    if used is None:
        used = next((i for i, f in enumerate(rest) if "=" not in f), None)
    weight_text = "1" if used is None else rest[used].split("=")[-1].strip()
    try:
        weight = float(weight_text)
    except ValueError:
        raise SettingsError(
            f"the LoRA tag {tag} has the weight {weight_text!r}, which is not a number; write e.g. <lora:name:0.8>",
            key="prompt",
        ) from None
    ignored = [f for i, f in enumerate(rest) if i != used]
    if ignored:
        logger.warning("LoRA tag %s: only the weight %g is used; ignoring %s", tag, weight, ", ".join(ignored))
    return name, weight
