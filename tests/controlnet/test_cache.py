"""Control-map cache: a second run over the same frames runs no detector and returns the same maps."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamreel.controlnet.cache import ControlMapCache, frame_hash, key_hash
from dreamreel.controlnet.preprocessors import HedPreprocessor
from dreamreel.testing import tiny_annotator_network


class CountingPreprocessor:
    """A fake detector: a deterministic map of the frame, counting its calls."""

    name = "counting"

    def __init__(self, key: str = "counting|v1") -> None:
        self.key = key
        self.calls = 0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.ascontiguousarray(255 - image[::2, ::2])


def _frames(count: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(count)]


def test_second_run_reads_every_map_from_disk(tmp_path: Path) -> None:
    frames = _frames()
    detector = CountingPreprocessor()
    first_cache = ControlMapCache(tmp_path / "maps")
    first = [first_cache.get_or_compute(frame, detector) for frame in frames]
    assert (first_cache.hits, first_cache.misses, detector.calls) == (0, 3, 3)
    assert first[0].shape == (12, 16, 3)

    again = CountingPreprocessor()  # a new run: new objects, same folder, same key
    second_cache = ControlMapCache(tmp_path / "maps")
    second = [second_cache.get_or_compute(frame, again) for frame in frames]
    assert (second_cache.hits, second_cache.misses, again.calls) == (3, 0, 0)
    for computed, cached in zip(first, second, strict=True):
        assert cached.dtype == np.uint8
        assert np.array_equal(computed, cached)  # PNG is lossless


def test_layout_key_file_png_and_no_temporary_files(tmp_path: Path) -> None:
    frame = _frames(1)[0]
    detector = CountingPreprocessor("counting|v1|res=64")
    cache = ControlMapCache(tmp_path)
    cache.get_or_compute(frame, detector)
    path = cache.path_for(frame, detector)
    assert path == tmp_path / key_hash(detector.key) / f"{frame_hash(frame)}.png"
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert (path.parent / "key.txt").read_text() == "counting|v1|res=64\n"
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, "key.txt"])


def test_other_settings_and_other_frames_miss(tmp_path: Path) -> None:
    frame = _frames(1)[0]
    cache = ControlMapCache(tmp_path)
    low, high = CountingPreprocessor("canny|low=50"), CountingPreprocessor("canny|low=100")
    cache.get_or_compute(frame, low)
    cache.get_or_compute(frame, high)
    assert (cache.misses, low.calls, high.calls) == (2, 1, 1)
    reshaped = np.ascontiguousarray(frame.reshape(32, 24, 3))  # same bytes, another shape
    assert frame_hash(reshaped) != frame_hash(frame)
    cache.get_or_compute(reshaped, low)
    changed = frame.copy()
    changed[0, 0, 0] ^= 1
    cache.get_or_compute(changed, low)
    assert (cache.hits, cache.misses, low.calls) == (0, 4, 3)
    cache.get_or_compute(frame, high)
    assert cache.hits == 1


def test_compute_replaces_the_preprocessor_call(tmp_path: Path) -> None:
    frame = _frames(1)[0]
    detector = CountingPreprocessor()
    cache = ControlMapCache(tmp_path)
    seen = []

    def compute(image: np.ndarray) -> np.ndarray:
        seen.append(image)
        return detector(image)

    out = cache.get_or_compute(frame, detector, compute)
    assert len(seen) == 1
    assert seen[0] is frame
    assert np.array_equal(cache.get_or_compute(frame, detector, compute), out)
    assert len(seen) == 1


def test_bad_maps_are_rejected_and_unreadable_files_recomputed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frame = _frames(1)[0]
    detector = CountingPreprocessor()
    cache = ControlMapCache(tmp_path)
    with pytest.raises(ValueError, match="'counting' preprocessor returned a float32"):
        cache.get_or_compute(frame, detector, lambda image: image.astype(np.float32))
    assert not cache.path_for(frame, detector).exists()
    path = cache.path_for(frame, detector)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x89PNG truncated")
    with caplog.at_level(logging.WARNING, logger="dreamreel.controlnet.cache"):
        out = cache.get_or_compute(frame, detector)
    assert "unreadable cached control map" in caplog.text
    assert (cache.hits, cache.misses, detector.calls) == (0, 1, 1)
    assert np.array_equal(ControlMapCache(tmp_path).get_or_compute(frame, detector), out)


def test_real_hed_runs_once_per_frame_across_runs(tmp_path: Path, hed_network: torch.nn.Module) -> None:
    frames = [frame.repeat(2, axis=0).repeat(2, axis=1) for frame in _frames(2)]  # 48x64
    first = HedPreprocessor(hed_network, detect_resolution=64)
    cache = ControlMapCache(tmp_path)
    maps = [cache.get_or_compute(frame, first) for frame in frames]
    assert cache.misses == 2
    assert not np.array_equal(maps[0], maps[1])

    network = tiny_annotator_network("hed", seed=0)  # the same weights, rebuilt as in a new run
    runs = []
    network.block1.convs[0].register_forward_hook(lambda *args: runs.append(1))
    second = HedPreprocessor(network, detect_resolution=64)
    assert second.key == first.key
    rerun = ControlMapCache(tmp_path)
    for frame, expected in zip(frames, maps, strict=True):
        assert np.array_equal(rerun.get_or_compute(frame, second), expected)
    assert (rerun.hits, rerun.misses, runs) == (2, 0, [])

    other = HedPreprocessor(network, detect_resolution=96)  # another setting: the detector runs
    assert rerun.get_or_compute(frames[0], other).shape == (96, 128, 3)
    assert runs == [1]
