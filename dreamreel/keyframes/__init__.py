"""Keyframe schedules, prompt schedules, Parseq import and the resolved schedule table.

Imports only numpy and numexpr (never torch).
"""

from __future__ import annotations

from dreamreel.errors import ScheduleError
from dreamreel.keyframes.parseq import ParseqSchedules, load_parseq
from dreamreel.keyframes.prompts import FramePrompt, resolve_prompts
from dreamreel.keyframes.schedule import Interpolation, parse_schedule, parse_string_schedule
from dreamreel.keyframes.table import FrameParams, ScheduleTable

__all__ = [
    "FrameParams",
    "FramePrompt",
    "Interpolation",
    "ParseqSchedules",
    "ScheduleError",
    "ScheduleTable",
    "load_parseq",
    "parse_schedule",
    "parse_string_schedule",
    "resolve_prompts",
]
