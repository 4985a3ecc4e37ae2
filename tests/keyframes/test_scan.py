"""The quote- and bracket-aware scanner behind schedule splitting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dreamreel.keyframes.scan import find_top_level, matching_bracket, split_top_level, unclosed_quote

TEXT = st.text(alphabet="ab ,:()[]{}'\"", max_size=40)


def test_examples() -> None:
    assert split_top_level('0:("a, b"), 10:(max(1, t)), 20:[1,2]') == [
        ('0:("a, b")', 0),
        (" 10:(max(1, t))", 11),
        (" 20:[1,2]", 27),
    ]
    assert split_top_level("a), b") == [("a)", 0), (" b", 3)]  # a stray ')' at the top level is ignored
    assert find_top_level("'1:2' (3:4) 5:6", ":") == 13
    assert find_top_level("(a:b)", ":") == -1
    assert matching_bracket('(a ")" (b) [c) d', 0) == 13  # only parentheses count
    assert matching_bracket("((a)", 0) == -1
    assert matching_bracket("a(b)", 0) == -1  # not at an opening bracket
    assert matching_bracket("a(b)", 1) == 3
    assert unclosed_quote("'a' \"b") == 4
    assert unclosed_quote("'a\"' \"b'\"") == -1


@pytest.mark.parametrize("target", ["(", ")", "'", '"', "", ",,"])
def test_separators_that_cannot_be_found_are_refused(target: str) -> None:
    with pytest.raises(ValueError, match="separator"):
        split_top_level("a,b", target)


# The four hand-written loops the scanner replaced, kept as oracles.


def _old_split(text: str, separator: str) -> list[tuple[str, int]]:
    pieces, depth, quote, start = [], 0, None, 0
    for index, char in enumerate(text):
        if quote is not None:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(0, depth - 1)
        elif char == separator and depth == 0:
            pieces.append((text[start:index], start))
            start = index + 1
    pieces.append((text[start:], start))
    return pieces


def _old_matching_paren(text: str, start: int) -> int:
    depth, quote = 0, None
    for index in range(start, len(text)):
        char = text[index]
        if quote is not None:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index
    return -1


def _old_unclosed_quote(text: str) -> int:
    quote, start = None, 0
    for index, char in enumerate(text):
        if quote is not None:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote, start = char, index
    return start if quote is not None else -1


@given(TEXT, st.sampled_from([",", ":"]))
def test_same_results_as_the_loops_it_replaced(text: str, separator: str) -> None:
    old = _old_split(text, separator)
    assert split_top_level(text, separator) == old
    assert find_top_level(text, separator) == (old[1][1] - 1 if len(old) > 1 else -1)
    assert unclosed_quote(text) == _old_unclosed_quote(text)
    body = "(" + text
    assert matching_bracket(body, 0) == _old_matching_paren(body, 0)
