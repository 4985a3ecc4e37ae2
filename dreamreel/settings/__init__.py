"""Settings: dreamreel's native format and Deforum's, validated into one frozen :class:`Settings`."""

from __future__ import annotations

from dreamreel.settings.deforum import to_deforum
from dreamreel.settings.io import load_settings, save_settings, settings_from_mapping, settings_to_json
from dreamreel.settings.model import Settings
from dreamreel.settings.resolve import resolve_schedules, with_resolved_seed

__all__ = [
    "Settings",
    "load_settings",
    "resolve_schedules",
    "save_settings",
    "settings_from_mapping",
    "settings_to_json",
    "to_deforum",
    "with_resolved_seed",
]
