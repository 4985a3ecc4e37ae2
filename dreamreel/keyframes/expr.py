"""Safe, vectorised evaluation of user math expressions (schedule values, keys, prompt weights).

User text never reaches ``eval``/``exec``. An expression is first tokenised here against a
whitelist (numbers, known variable names, whitelisted function names followed by ``(``,
operators, parentheses, commas); anything else is rejected with the column of the offending
character. Only then is it handed to :func:`numexpr.evaluate` with explicit variable dicts and an
empty global dict, so numexpr never looks at the caller's frame.

Variables (defined here and only here):
    t: the 0-based frame index (an array when evaluating a segment, a scalar otherwise).
    i: alias of ``t`` (undocumented in Deforum, kept for its settings files).
    max_f: ``max_frames - 1``.
    s: the run's resolved seed (-1 when the seed is not known yet).
    pi, e: the mathematical constants (Deforum's numexpr had neither).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numexpr
import numpy as np
from numpy.typing import NDArray

from dreamreel.errors import ScheduleError

FUNCTIONS: frozenset[str] = frozenset(
    {
        "sin", "cos", "tan", "arcsin", "arccos", "arctan", "arctan2",
        "sinh", "cosh", "tanh", "arcsinh", "arccosh", "arctanh",
        "exp", "expm1", "log", "log10", "log1p", "sqrt", "abs",
        "floor", "ceil", "fmod", "where", "round", "maximum", "minimum",
    }
)  # fmt: skip
"""Function names an expression may call (all numexpr builtins operating on reals)."""

CONSTANTS: Mapping[str, float] = {"pi": math.pi, "e": math.e}

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z_0-9]*)
  | (?P<op>\*\*|<=|>=|==|!=|<<|>>|[-+*/%<>&|~^(),])
    """,
    re.VERBOSE,
)

_MAX_LENGTH = 2000


@dataclass(frozen=True, slots=True)
class Variables:
    """The variables every expression sees. ``t`` may be a scalar or an array of frames."""

    t: float | NDArray[np.float64]
    max_f: float
    s: float

    def as_dict(self) -> dict[str, object]:
        t = self.t if isinstance(self.t, np.ndarray) else np.float64(self.t)
        return {
            "t": t,
            "i": t,
            "max_f": np.float64(self.max_f),
            "s": np.float64(self.s),
            **{k: np.float64(v) for k, v in CONSTANTS.items()},
        }


def check_expression(
    expr: str, *, name: str, text: str, offset: int, names: frozenset[str] = frozenset({"t", "i", "max_f", "s"})
) -> None:
    """Reject anything that is not plain arithmetic on known names, before numexpr sees it.

    Args:
        expr: the expression.
        name: the schedule's name, for the error message.
        text: the whole user text the expression was taken from, for the caret.
        offset: the column of ``expr[0]`` inside ``text``.
        names: variable names allowed in this context.

    Raises:
        ScheduleError: with the column of the first offending character.
    """
    if len(expr) > _MAX_LENGTH:
        raise ScheduleError(
            f"expression is {len(expr)} characters long; at most {_MAX_LENGTH} are allowed",
            name=name, text=text, column=offset,
        )  # fmt: skip
    if not expr.strip():
        raise ScheduleError(
            "empty value; write a number or an expression such as 1.0+0.1*sin(t/8)", name=name, text=text, column=offset
        )
    allowed = names | CONSTANTS.keys()
    pos = 0
    depth = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        column = offset + pos
        if match is None:
            char = expr[pos]
            hint = " (text must not be quoted inside an expression)" if char in "'\"" else ""
            if char == ".":
                hint = " (attribute access is not allowed)"
            raise ScheduleError(f"unexpected character {char!r}{hint}", name=name, text=text, column=column)
        kind = match.lastgroup
        token = match.group()
        if kind == "name":
            if token.startswith("_"):
                raise ScheduleError(f"name {token!r} is not allowed", name=name, text=text, column=column)
            following = expr[match.end() :].lstrip()
            if following.startswith("("):
                if token not in FUNCTIONS:
                    raise ScheduleError(
                        f"unknown function {token!r}; allowed: {', '.join(sorted(FUNCTIONS))}",
                        name=name, text=text, column=column,
                    )  # fmt: skip
            elif token not in allowed:
                known = ", ".join(sorted(allowed))
                raise ScheduleError(
                    f"unknown name {token!r}; expressions may use {known}", name=name, text=text, column=column
                )
        elif token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
            if depth < 0:
                raise ScheduleError("unbalanced ')'", name=name, text=text, column=column)
        pos = match.end()
    if depth > 0:
        raise ScheduleError("'(' is never closed", name=name, text=text, column=offset + len(expr))


def _float_literals(expr: str) -> str:
    """Write integer literals as floats (``9`` -> ``9.0``) in a checked expression.

    numexpr folds constant sub-expressions with Python numbers. With integers, ``9**9**9`` would
    build an integer with hundreds of millions of digits (minutes and gigabytes); with floats it
    overflows at once, which :func:`evaluate` reports as a ScheduleError.
    """
    parts: list[str] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:  # cannot happen after check_expression
            return expr
        token = match.group()
        parts.append(token + ".0" if match.lastgroup == "number" and token.isdigit() else token)
        pos = match.end()
    return "".join(parts)


def evaluate(
    expr: str,
    variables: Variables,
    *,
    name: str,
    text: str,
    offset: int = 0,
    frame: int | None = None,
) -> NDArray[np.float64]:
    """Evaluate a checked expression with numexpr; the result is float64 shaped like ``t``.

    Raises:
        ScheduleError: when the expression is not allowed or numexpr cannot evaluate it.
    """
    check_expression(expr, name=name, text=text, offset=offset)
    local = variables.as_dict()
    try:
        result = numexpr.evaluate(_float_literals(expr), local_dict=local, global_dict={})
    except Exception as exc:  # numexpr raises KeyError, SyntaxError, TypeError, ValueError, ...
        raise ScheduleError(
            f"cannot evaluate {expr.strip()!r}: {type(exc).__name__}: {exc}",
            name=name, text=text, column=offset, frame=frame,
        ) from exc  # fmt: skip
    result = np.asarray(result)
    if np.iscomplexobj(result):
        raise ScheduleError(f"{expr.strip()!r} gives a complex number", name=name, text=text, column=offset)
    shape = np.shape(variables.t)
    return np.broadcast_to(result.astype(np.float64, copy=False), shape).copy() if shape else result.astype(np.float64)
