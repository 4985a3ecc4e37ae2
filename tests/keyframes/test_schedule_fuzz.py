"""Hostile and random schedule strings: only ScheduleError may escape, and it always points somewhere."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dreamreel.errors import ScheduleError
from dreamreel.keyframes.schedule import parse_schedule, parse_string_schedule

NAME = "fuzzed_schedule"

FRAGMENTS = [
    "0", "1", "5", "-1", "30", "2.5", "007", ":", ",", ", ", "(", ")", "((((((((", "))))))))", '"', "'",
    " ", "\n", "\t", "t", "i", "s", "b", "max_f", "pi", "e", "nan", "inf", "x", "_", "__import__", "__class__",
    ".", "lambda", ";",
    "import os", "os.system('ls')", "exec", "eval", "open", "globals()", "[", "]", "{", "}", "\\", "#", "@", "`",
    "**", "*", "/", "//", "%", "+", "-", "<", ">=", "==", "&", "|", "~", "^", "<<", "not", "and", "if",
    "sin(", "where(", "arctan2(", "sqrt(", "log(", "round(", "abs(", "complex(", "contains(", "sum(",
    "1e308", "1e400", "9" * 400, "1" * 5000, "2**1000", "10**400", "-1e309", "1e-400",
    "5s", "8b", "1.5s", "1e3s", "é", "€", "日本", "\x00", "\u202e", "🙂", "\ufeff",
]  # fmt: skip

KEYS = ["0", "1", "3", "-1", "30", "max_f", '"max_f-2"', "'max_f/2'", "2.5s", "1b", "0.5", "(3)", "2*2", "9" * 60, ""]
VALUES = ["1", "t", "(t)", "1.0025+0.002*sin(t)", "where(t>2, 1, 0)", '"Euler a"', "Euler", "", " 2 "]


def check(call: object, text: str) -> None:
    """Run one parse; success must be well-formed, failure must be a ScheduleError that points."""
    try:
        result = call(text)  # type: ignore[operator]
    except ScheduleError as error:
        message = str(error)
        assert NAME in message
        if error.column is not None:
            assert any(line.strip() == "^" for line in message.splitlines()), message
        return
    if isinstance(result, np.ndarray):
        assert result.dtype == np.float64
        assert result.shape == (7,)
    else:
        assert len(result) == 7
        assert all(isinstance(value, str) for value in result)


def parse_both(text: str, interpolation: str) -> None:
    check(lambda x: parse_schedule(x, 7, name=NAME, seed=3, fps=10, bpm=120, interpolation=interpolation), text)
    check(lambda x: parse_string_schedule(x, 7, name=NAME, fps=10, bpm=120), text)


INTERPOLATION = st.sampled_from(["linear", "cubic", "step"])
fragment_text = st.lists(st.sampled_from(FRAGMENTS), max_size=14).map("".join)
entry = st.tuples(
    st.sampled_from(KEYS),
    st.one_of(st.sampled_from(VALUES), fragment_text),
    st.booleans(),
).map(lambda parts: f"{parts[0]}:({parts[1]})" if parts[2] else f"{parts[0]}:{parts[1]}")
structured = st.tuples(st.lists(entry, min_size=1, max_size=4), st.sampled_from([",", ", ", ",\n", " ", ""])).map(
    lambda parts: parts[1].join(parts[0])
)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(text=st.text(max_size=60), interpolation=INTERPOLATION)
def test_random_text(text: str, interpolation: str) -> None:
    parse_both(text, interpolation)


@FUZZ
@given(text=fragment_text, interpolation=INTERPOLATION)
def test_hostile_fragments(text: str, interpolation: str) -> None:
    parse_both(text, interpolation)


@FUZZ
@given(text=structured, interpolation=INTERPOLATION)
def test_schedule_shaped_text(text: str, interpolation: str) -> None:
    parse_both(text, interpolation)


@settings(max_examples=200, deadline=None)
@given(
    anchors=st.dictionaries(
        st.integers(0, 40), st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False), min_size=1, max_size=6
    )
)
def test_cubic_stays_between_neighbouring_anchors(anchors: dict[int, float]) -> None:
    text = ", ".join(f"{frame}:({value!r})" for frame, value in anchors.items())
    values = parse_schedule(text, 41, interpolation="cubic")
    frames = sorted(anchors)
    for frame in frames:
        assert values[frame] == anchors[frame]
    for left, right in itertools.pairwise(frames):
        low, high = sorted((anchors[left], anchors[right]))
        tolerance = 1e-9 * max(1.0, abs(low), abs(high))
        assert values[left : right + 1].min() >= low - tolerance
        assert values[left : right + 1].max() <= high + tolerance
    np.testing.assert_array_equal(values[: frames[0]], anchors[frames[0]])
    np.testing.assert_array_equal(values[frames[-1] :], anchors[frames[-1]])
