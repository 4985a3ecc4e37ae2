"""Extracting a video's ControlNet maps ahead of its render, in parallel: a Ray Data pass over the frames.

The maps of an m2m render depend only on the input frames, so before the frames are diffused (on
one worker or split across many) they can be computed everywhere at once: :func:`prefill_on_ray`
runs a Ray Data ``map_batches`` pass whose actors each build the detectors once and fill the maps
missing from the on-disk cache (:class:`~dreamreel.controlnet.cache.ControlMapCache`, shared by the
workers through the file system); the render then finds every map in the cache. :func:`prefill`
does the same in this process.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dreamreel.jobs.render import RenderOptions, control_provider, open_input_video
from dreamreel.settings import Settings
from dreamreel.settings.io import settings_to_json, validate_settings

logger = logging.getLogger(__name__)


class _Extractor:
    """Detectors and the input video of one job, built once per process (a Ray Data actor)."""

    def __init__(self, settings_json: str, options_json: str) -> None:
        from dreamreel.media.m2m import VideoFrames
        from dreamreel.media.video import VideoOptions

        settings = validate_settings(json.loads(settings_json))
        options = RenderOptions.from_values(json.loads(options_json))
        source, settings = open_input_video(settings)
        video = VideoOptions(width=settings.width, height=settings.height, fps=settings.fps)
        self.provider = control_provider(settings, options, video)
        self.frames = VideoFrames(source)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        frames = [int(frame) for frame in batch["frame"]]
        computed = [self.provider.prefill(frame, self.frames.input_frame(frame)) for frame in frames]
        return {"frame": np.asarray(frames), "computed": np.asarray(computed)}


def _check(settings: Settings) -> None:
    from dreamreel.errors import SettingsError

    if settings.mode != "video" or not settings.controlnet:
        raise SettingsError("extracting control maps ahead needs Video Input mode with ControlNet units", key="mode")


def _payload(settings: Settings, options: RenderOptions) -> tuple[str, str]:
    from dataclasses import asdict

    values = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()}
    return settings_to_json(settings), json.dumps(values)


def prefill(settings: Settings, options: RenderOptions, frames: Sequence[int] | None = None) -> int:
    """Fill the control-map cache for ``frames`` (all of the video's) in this process; returns maps computed."""
    _check(settings)
    extractor = _Extractor(*_payload(settings, options))
    indices = list(frames) if frames is not None else list(range(extractor.frames.source.frame_count))
    return int(extractor({"frame": np.asarray(indices)})["computed"].sum())


def prefill_on_ray(settings: Settings, options: RenderOptions, *, concurrency: int = 2, batch_size: int = 8) -> int:
    """The same as :func:`prefill`, as a Ray Data ``map_batches`` pass of ``concurrency`` actors (Ray must be
    initialised); returns the maps computed (0 when the cache held them all)."""
    import ray

    _check(settings)
    source, _ = open_input_video(settings)
    count = source.frame_count
    dataset: Any = ray.data.from_items([{"frame": i} for i in range(count)])
    result = dataset.map_batches(
        _Extractor,
        fn_constructor_args=_payload(settings, options),
        batch_size=batch_size,
        concurrency=concurrency,
        batch_format="numpy",
        num_cpus=1,
    )
    computed = int(sum(int(row["computed"]) for row in result.iter_rows()))
    logger.info("control maps: %d computed for %d frames (the rest were in the cache)", computed, count)
    return computed
