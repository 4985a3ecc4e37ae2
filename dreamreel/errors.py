"""The dreamreel error hierarchy.

Every error a user can cause by what they wrote (settings, schedules, prompts, paths) is a
:class:`DreamreelError`. Its message is one paragraph that says what was wrong, where it was
(file, key, column, frame) and what would be right. The CLI prints that message and exits with
status 2, without a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DreamreelError(Exception):
    """Base class of every error dreamreel raises on purpose."""


class SettingsError(DreamreelError, ValueError):
    """A settings value is wrong.

    Args:
        message: what was wrong and what is allowed.
        key: the settings key (dotted path for nested native keys), if known.
        source: the file the value came from, if known.
    """

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None) -> None:
        self.key = key
        self.source = source
        self.detail = message
        where = ": ".join(part for part in (source, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


class ScheduleError(SettingsError):
    """A keyframe schedule or prompt schedule could not be parsed or evaluated.

    The message shows the schedule's name, the text with a caret under the bad column, and the
    frame when the problem is tied to one.
    """

    def __init__(
        self,
        message: str,
        *,
        name: str = "schedule",
        text: str = "",
        column: int | None = None,
        frame: int | None = None,
        source: str | None = None,
    ) -> None:
        self.name = name
        self.text = text
        self.column = column
        self.frame = frame
        where = name if frame is None else f"{name} at frame {frame}"
        body = f"{message}"
        if column is not None:
            body += f" (column {column + 1})"
        snippet = text.replace("\n", " ").replace("\r", " ").replace("\t", " ")
        if snippet:
            body += f"\n    {snippet}"
            if column is not None:
                body += "\n    " + " " * max(0, min(column, len(snippet))) + "^"
        # SettingsError formats "source: key: message"; the caret block stays on its own lines.
        super().__init__(body, key=where, source=source)


class MissingDependencyError(DreamreelError, ImportError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, purpose: str) -> None:
        self.package = package
        super().__init__(
            f"{purpose} needs the Python package {package!r}, which is not installed. "
            f"Install it with: pip install {package}"
        )


class ModelLoadError(DreamreelError):
    """A model could not be found or loaded."""


class RenderError(DreamreelError):
    """Rendering failed at a frame or at the output stage."""

    def __init__(self, message: str, *, frame: int | None = None) -> None:
        self.frame = frame
        super().__init__(message if frame is None else f"frame {frame}: {message}")


def refuse_url(text: str, *, key: str, what: str = "file") -> None:
    """dreamreel never downloads: a URL where a local file is expected is a :class:`SettingsError`."""
    if text.strip().startswith(("http://", "https://")):
        raise SettingsError(
            f"is a URL ({text.strip()}); dreamreel does not download. Save the {what} and give its path", key=key
        )


def did_you_mean(word: str, choices: Iterable[str], *, n: int = 3) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choices, or an empty string."""
    originals = {choice.lower(): choice for choice in choices}
    matches = [originals[m] for m in difflib.get_close_matches(word.lower(), list(originals), n=n, cutoff=0.5)]
    if not matches:
        return ""
    if len(matches) == 1:
        return f" Did you mean {matches[0]!r}?"
    return " Did you mean one of " + ", ".join(repr(m) for m in matches) + "?"
