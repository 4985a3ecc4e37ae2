"""The dreamreel error hierarchy.

Every error a user can cause by what they wrote (settings, schedules, prompts, paths) is a
:class:`DreamreelError`. Its message is one paragraph that says what was wrong, where it was
(file, key, column, frame) and what would be right. The CLI prints that message and exits with
status 2, without a traceback.
"""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable
from pathlib import Path


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

    def locate(self, source: str | None) -> SettingsError:
        """Name the settings file the value came from, unless the error names one already or is about a
        command-line option (``--model``, ``INPUT``). Returns the error itself, for ``raise exc.locate(path)``."""
        key = self.key or ""
        if source and not self.source and not key.startswith("-") and not key.isupper():
            self.source = source
            self.args = (f"{source}: {self.args[0]}",)
        return self


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


def check_local_path(text: str, *, key: str, what: str = "file", folder: bool = False) -> Path:
    """A path the user gave (a command-line option or a settings value), checked before it is used.

    URLs are refused (:func:`refuse_url`), ``~`` is expanded, and the path must exist and be a file
    (or, with ``folder``, a folder). Every error is a :class:`SettingsError` naming ``key``.
    """
    refuse_url(text, key=key, what=what)
    path = Path(text).expanduser()
    if folder:
        if path.exists() and not path.is_dir():
            raise SettingsError(f"{text} is a file; give a folder", key=key)
        if not path.is_dir():
            raise SettingsError(f"the folder {text} does not exist", key=key)
    elif path.is_dir():
        raise SettingsError(f"{text} is a directory; give the {what} file itself", key=key)
    elif not path.exists():
        raise SettingsError(f"{text} does not exist", key=key)
    return path


def describe_os_error(exc: OSError, *, action: str | None = "write") -> str:
    """One line for a failed file operation: ``"cannot write /x/y.csv: Permission denied"``.

    ``action`` None leaves the verb out (``"/x/y: Permission denied"``) when it is not known. A full
    disk or quota (``ENOSPC``, ``EDQUOT``) reads ``"disk full while writing ..."`` so that it is not
    mistaken for a wrong path.
    """
    name = exc.filename if exc.filename is not None else "a file"
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full while writing {name}: {reason}"
    return f"cannot {action} {name}: {reason}" if action else f"{name}: {reason}"


def did_you_mean(word: str, choices: Iterable[str], *, n: int = 3) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choices, or an empty string."""
    originals = {choice.lower(): choice for choice in choices}
    matches = [originals[m] for m in difflib.get_close_matches(word.lower(), list(originals), n=n, cutoff=0.5)]
    if not matches:
        return ""
    if len(matches) == 1:
        return f" Did you mean {matches[0]!r}?"
    return " Did you mean one of " + ", ".join(repr(m) for m in matches) + "?"
