"""Atomic file writes: readers see the old file or the new one, never half of one (stdlib only).

A file is written under a temporary name in its own folder (so the rename stays on one file
system), flushed to disk with ``fsync``, renamed over the target with :func:`os.replace`, and then
the folder is fsynced too (where the platform supports it) so the rename itself survives a power
loss. On any error the temporary file is removed and the target is left as it was.

- :func:`atomic_write_bytes`, :func:`atomic_write_text`: write data in one call.
- :func:`atomic_open`: a binary file handle for writers that stream (``PIL.Image.save``).
- :func:`replace_durably`: put a finished temporary file (say one ffmpeg wrote) in place.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

PathLike = str | os.PathLike[str]

__all__ = [
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_dir",
    "replace_durably",
    "unwritable_folder",
]


def atomic_write_bytes(path: PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring); returns ``path``."""
    with atomic_open(path, fsync=fsync) as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str, *, encoding: str = "utf-8", fsync: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically (see the module docstring); returns ``path``.

    The text is written as is: ``"\\n"`` is not translated to the platform's line ending.
    """
    return atomic_write_bytes(path, text.encode(encoding), fsync=fsync)


@contextmanager
def atomic_open(path: PathLike, *, fsync: bool = True) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into; it replaces ``path`` when the block ends.

    If the block raises, the temporary file is removed and ``path`` is untouched. The file gets the
    permissions a plain ``open(path, "wb")`` would give (``0o666`` less the umask).

    ``fsync=False`` skips the file's and the folder's fsync; use it only when the caller flushes
    the file itself before anything that names it is committed (for example a batch of frames
    synced together at a checkpoint).
    """
    target = Path(path)
    tmp, fd = _create_temporary(target)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or an error leaves no half-written file behind
        raise
    if fsync:
        fsync_dir(target.parent)


def replace_durably(tmp: PathLike, path: PathLike) -> None:
    """Flush the finished file ``tmp`` to disk, rename it over ``path`` and flush the folder.

    ``tmp`` must be in the same folder as ``path`` (a rename does not cross file systems).
    """
    with open(tmp, "rb+") as handle:  # write access: Windows cannot flush a read-only handle
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


def unwritable_folder(folder: PathLike) -> str | None:
    """Why files could not be written into ``folder`` (created if missing), or None when they could.

    The check really creates the missing folders and a file, then removes everything it made: a
    failed start must leave nothing behind, and only the file system knows (``/proc``, read-only
    mounts, permissions as root).
    """
    target = Path(folder).expanduser()
    missing: list[Path] = []
    probe = target
    while not probe.exists() and probe.parent != probe:
        missing.append(probe)
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    try:
        for path in reversed(missing):
            path.mkdir()
        tmp, handle = _create_temporary(target / ".dreamreel-write-test")
        os.close(handle)
        tmp.unlink()
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        for path in missing:
            with contextlib.suppress(OSError):
                path.rmdir()
    return None


def fsync_dir(folder: PathLike) -> None:
    """Flush a folder's entries (a rename into it) to disk; does nothing where folders cannot be opened."""
    if os.name == "nt":  # Windows cannot open a folder as a file; NTFS journals renames
        return
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems (and platforms) do not support fsync on a folder
        pass
    finally:
        os.close(fd)


def _create_temporary(target: Path) -> tuple[Path, int]:
    """A new hidden file next to ``target``, opened for writing: (its path, its descriptor)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:  # pragma: no cover - 32 random bits
            continue
