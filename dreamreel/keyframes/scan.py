"""Walking schedule text outside quotes while counting bracket depth (stdlib only).

A schedule such as ``0:("a, b"), 10:(max(1, t))`` is split at the commas and colons that are
outside quotes and brackets; a value's ``(`` is matched with its ``)``; a quote left open is
reported at the opening quote. All of these walk the text the same way, with :func:`scan`:

- a quote (``'`` or ``"``) runs to the next occurrence of the same character; nothing inside it
  counts (no escapes, as in Deforum's schedules);
- an opening bracket raises the depth, a closing one lowers it, never below 0 (a stray ``)`` at
  the top level is ignored).
"""

from __future__ import annotations

from collections.abc import Generator

QUOTES = "'\""
OPENING = "([{"
CLOSING = ")]}"

__all__ = [
    "CLOSING",
    "OPENING",
    "QUOTES",
    "find_top_level",
    "matching_bracket",
    "scan",
    "split_top_level",
    "unclosed_quote",
]


def scan(
    text: str, start: int = 0, *, opening: str = OPENING, closing: str = CLOSING
) -> Generator[tuple[int, str, int], None, int]:
    """Walk ``text[start:]`` outside quotes, counting the depth of ``opening``/``closing`` brackets.

    Yields:
        ``(index, character, depth)`` for every character that is neither inside quotes nor a quote
        character itself; ``depth`` is the bracket depth after the character (an opening bracket
        counts itself; a closing bracket does not).

    Returns:
        (as the generator's return value) the index of a quote that is still open at the end, or -1.
    """
    depth = 0
    quote = ""
    quote_at = -1
    for index in range(start, len(text)):
        char = text[index]
        if quote:
            if char == quote:
                quote = ""
            continue
        if char in QUOTES:
            quote, quote_at = char, index
            continue
        if char in opening:
            depth += 1
        elif char in closing:
            depth = max(0, depth - 1)
        yield index, char, depth
    return quote_at if quote else -1


def split_top_level(text: str, separator: str = ",") -> list[tuple[str, int]]:
    """Split ``text`` at ``separator`` where it is outside parentheses, brackets and quotes.

    ``separator`` is one character that is neither a quote nor a bracket.

    Returns:
        (piece, column of the piece's first character) for every piece, in order.
    """
    _check_target(separator)
    pieces: list[tuple[str, int]] = []
    begin = 0
    for index, char, depth in scan(text):
        if char == separator and depth == 0:
            pieces.append((text[begin:index], begin))
            begin = index + 1
    pieces.append((text[begin:], begin))
    return pieces


def find_top_level(text: str, target: str) -> int:
    """Index of the first ``target`` outside quotes and brackets, or -1.

    ``target`` is one character that is neither a quote nor a bracket.
    """
    _check_target(target)
    return next((index for index, char, depth in scan(text) if char == target and depth == 0), -1)


def matching_bracket(text: str, start: int, *, opening: str = "(", closing: str = ")") -> int:
    """Index of the bracket closing the one at ``text[start]`` (quote-aware), or -1.

    Only ``opening``/``closing`` brackets count (by default parentheses: a ``[`` or ``{`` inside
    does not need to be closed). Returns -1 when ``text[start]`` is not an opening bracket or is
    never closed.
    """
    if not text[start : start + 1] or text[start] not in opening:
        return -1
    return next((i for i, char, depth in scan(text, start, opening=opening, closing=closing) if depth == 0), -1)


def unclosed_quote(text: str) -> int:
    """Index of the opening quote of a quote that is never closed, or -1."""
    walk = scan(text, opening="", closing="")
    try:
        while True:
            next(walk)
    except StopIteration as end:
        return int(end.value)


def _check_target(char: str) -> None:
    if len(char) != 1 or char in QUOTES + OPENING + CLOSING:
        raise ValueError(f"the separator must be one character that is not a quote or bracket, not {char!r}")
