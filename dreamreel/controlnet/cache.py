"""A disk cache of control maps, keyed by frame content and preprocessor settings.

Detectors are the slow part of a video restyle (seconds per frame for OpenPose on a CPU). The
maps only depend on the source frame and the preprocessor's settings, so rendering the same video
again (another prompt, seed or strength) reuses them:

``folder/<hash of preprocessor.key>/<hash of frame shape and bytes>.png``

Maps are lossless PNGs written atomically (temporary file + rename), so an interrupted run never
leaves a half-written map behind, and two runs may share a folder. Each key folder also holds
``key.txt`` with the full key for people looking at the folder.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from dreamreel.fileio import atomic_write_bytes, atomic_write_text
from dreamreel.generation import Image

if TYPE_CHECKING:
    from dreamreel.controlnet.preprocessors import Preprocessor

logger = logging.getLogger(__name__)


def frame_hash(image: Image) -> str:
    """A 32-hex-digit BLAKE2b hash of an image's dtype, shape and pixel bytes."""
    array = np.ascontiguousarray(image)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.data.cast("B"))
    return digest.hexdigest()


def key_hash(key: str) -> str:
    """A 16-hex-digit BLAKE2b hash of a preprocessor key (the key's folder name)."""
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def _check_map(control: Image, preprocessor: Preprocessor) -> Image:
    array = np.asarray(control)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
        raise ValueError(
            f"the {preprocessor.name!r} preprocessor returned a {array.dtype} {array.shape} array, "
            "not an (H, W, 3) uint8 map"
        )
    return np.ascontiguousarray(array)


class ControlMapCache:
    """Control maps on disk, computed once per (frame content, preprocessor key).

    Attributes:
        folder: the cache folder (created on the first write).
        hits: maps read from disk.
        misses: maps computed (and written).
    """

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder).expanduser()
        self.hits = 0
        self.misses = 0
        self._known_keys: set[str] = set()

    def path_for(self, image: Image, preprocessor: Preprocessor) -> Path:
        """Where the map of ``image`` made by ``preprocessor`` is (or would be) stored."""
        return self.folder / key_hash(preprocessor.key) / f"{frame_hash(image)}.png"

    def get_or_compute(
        self,
        image: Image,
        preprocessor: Preprocessor,
        compute: Callable[[Image], Image] | None = None,
    ) -> Image:
        """Return the map of ``image``: from disk if cached, else computed and stored.

        Args:
            image: the (H, W, 3) uint8 RGB source frame.
            preprocessor: its ``key`` selects the cache folder; it makes the map unless
                ``compute`` is given.
            compute: makes the map instead of calling ``preprocessor`` (e.g. to count calls);
                it must give what ``preprocessor`` would.

        Returns:
            The (h, w, 3) uint8 map; a cached map equals the computed one bit for bit.
        """
        path = self.path_for(image, preprocessor)
        cached = self._read(path)
        if cached is not None:
            self.hits += 1
            return cached
        control = _check_map((compute or preprocessor)(image), preprocessor)
        self.misses += 1
        self._store(path, control, preprocessor.key)
        return control

    def _read(self, path: Path) -> Image | None:
        if not path.is_file():
            return None
        data = np.fromfile(path, dtype=np.uint8)
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if decoded is None:
            logger.warning("Ignoring the unreadable cached control map %s; computing it again", path)
            return None
        return np.ascontiguousarray(decoded[:, :, ::-1])

    def _store(self, path: Path, control: Image, key: str) -> None:
        ok, encoded = cv2.imencode(".png", np.ascontiguousarray(control[:, :, ::-1]))
        if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
            raise OSError(f"OpenCV could not encode a {control.shape} map as PNG")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, encoded.tobytes())
        if key not in self._known_keys:
            key_file = path.parent / "key.txt"
            if not key_file.is_file():
                atomic_write_text(key_file, key + "\n")
            self._known_keys.add(key)
