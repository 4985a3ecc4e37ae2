"""AUTOMATIC1111's model hashes, with a cache so a big file is hashed once.

- :func:`sha256_short`: the first 10 hex digits of the file's SHA-256 (A1111 "Model hash", AutoV2).
- :func:`legacy_hash`: the first 8 hex digits of the SHA-256 of the 64 KiB at offset 1 MiB
  (A1111's old model hash, still shown in brackets for ControlNet models).

Results are kept in a JSON file (``<cache root>/hashes.json``) keyed on the absolute path and
checked against the file's size and modification time, so an edited or replaced file is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dreamreel.fileio import atomic_write_text
from dreamreel.pipelines.configs import cache_root

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_LEGACY_OFFSET = 0x100000
_LEGACY_LENGTH = 0x10000


def _hash_file(path: Path) -> str:
    """Return the hex SHA-256 of a whole file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_legacy(path: Path) -> str:
    with path.open("rb") as handle:
        handle.seek(_LEGACY_OFFSET)
        return hashlib.sha256(handle.read(_LEGACY_LENGTH)).hexdigest()[:8]


class HashCache:
    """Hashes of files, stored as JSON and invalidated by size and mtime.

    Args:
        path: the JSON file; created on the first store. Unreadable files count as empty.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _stamp(self, path: Path) -> dict[str, int]:
        stat = path.stat()
        return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    def get(self, path: Path, kind: str) -> str | None:
        """Return the cached ``kind`` hash of ``path`` if the file has not changed since."""
        key = str(Path(path).resolve())
        entry = self._load().get(key)
        if not isinstance(entry, dict):
            return None
        stamp = self._stamp(Path(path))
        if any(entry.get(name) != value for name, value in stamp.items()):
            return None
        value = entry.get(kind)
        return value if isinstance(value, str) else None

    def put(self, path: Path, kind: str, value: str) -> None:
        """Store a hash; a failure to write the cache is logged, never raised."""
        key = str(Path(path).resolve())
        data = self._load()
        stamp = self._stamp(Path(path))
        entry = data.get(key)
        if not isinstance(entry, dict) or any(entry.get(n) != v for n, v in stamp.items()):
            entry = dict(stamp)
        entry[kind] = value
        data[key] = entry
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(data, indent=1, sort_keys=True))
        except OSError as exc:
            logger.warning("could not write the hash cache %s: %s", self.path, exc)


def default_cache() -> HashCache:
    """Return the hash cache in dreamreel's cache directory."""
    return HashCache(cache_root() / "hashes.json")


def _cached(path: Path, kind: str, compute: Callable[[Path], str], cache: HashCache | None) -> str:
    path = Path(path)
    store = cache if cache is not None else default_cache()
    found = store.get(path, kind)
    if found is not None:
        return found
    logger.info("hashing %s (%s)", path, kind)
    value = compute(path)
    store.put(path, kind, value)
    return value


def sha256(path: Path, *, cache: HashCache | None = None) -> str:
    """Return the full hex SHA-256 of a file (cached).

    Args:
        path: the file.
        cache: where to keep the result; the default cache when None.
    """
    return _cached(path, "sha256", _hash_file, cache)


def sha256_short(path: Path, *, cache: HashCache | None = None) -> str:
    """Return A1111's "Model hash" (AutoV2): the first 10 hex digits of the file's SHA-256."""
    return sha256(path, cache=cache)[:10]


def legacy_hash(path: Path, *, cache: HashCache | None = None) -> str:
    """Return A1111's old model hash: 8 hex digits of the SHA-256 of 64 KiB at offset 1 MiB."""
    return _cached(path, "legacy", _hash_legacy, cache)
