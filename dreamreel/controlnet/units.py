"""ControlNet units at render time: where each unit's control image comes from, per frame.

A :class:`ControlProvider` is built once per run (detectors load once) and called once per
diffused frame with the frame's schedule row and its source image (the current video frame in
Video Input mode, the init otherwise). Maps are cached on disk by content, so rendering the same
video again with another prompt runs no detector.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dreamreel.errors import SettingsError, refuse_url
from dreamreel.generation import ControlInput, Image
from dreamreel.keyframes.table import FrameParams
from dreamreel.settings.model import ControlNetUnit

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif", ".mpg", ".mpeg")


def default_model(preprocessor: str) -> str:
    """The usual ControlNet 1.1 model for a preprocessor (looked up in the local hub cache)."""
    from dreamreel.controlnet.models import DEFAULT_CONTROLNET_MODELS
    from dreamreel.controlnet.preprocessors import canonical_name

    name = canonical_name(preprocessor)
    if name not in DEFAULT_CONTROLNET_MODELS:
        raise SettingsError(
            f"preprocessor {preprocessor!r} has no default ControlNet model; give one as PREPROCESSOR:WEIGHT:MODEL",
            key="controlnet",
        )
    return DEFAULT_CONTROLNET_MODELS[name]


def parse_unit_option(text: str) -> ControlNetUnit:
    """``PREPROCESSOR[:WEIGHT[:MODEL]]`` from the command line (``--controlnet openpose:0.8``).

    WEIGHT may be a number or a schedule in parentheses-free form is not possible because of the colons,
    so schedules go in settings files; MODEL may contain colons (Windows drive letters)."""
    preprocessor, _, rest = text.partition(":")
    weight_text, _, model = rest.partition(":")
    if not preprocessor:
        raise SettingsError(f"{text!r}: write PREPROCESSOR[:WEIGHT[:MODEL]], e.g. openpose:1.0", key="--controlnet")
    unit: dict[str, Any] = {"preprocessor": preprocessor}
    if weight_text:
        try:
            unit["weight"] = float(weight_text)
        except ValueError:
            raise SettingsError(
                f"{text!r}: the weight {weight_text!r} is not a number; write PREPROCESSOR[:WEIGHT[:MODEL]]",
                key="--controlnet",
            ) from None
    if model:
        unit["model"] = model
    return ControlNetUnit.model_validate(unit)


@dataclass
class _UnitRuntime:
    config: ControlNetUnit
    preprocessor: Any
    images: Callable[[int], Image] | None  # explicit input, by frame index; None = the frame's source image


class ControlProvider:
    """Computes every unit's control map for a frame (detectors built once, maps cached on disk)."""

    def __init__(
        self,
        units: Sequence[ControlNetUnit],
        *,
        width: int,
        height: int,
        frames: int,
        annotators: Path | None = None,
        cache_dir: Path | None = None,
        device: str = "cpu",
    ) -> None:
        from dreamreel.controlnet.cache import ControlMapCache
        from dreamreel.controlnet.preprocessors import make_preprocessor

        self.width = width
        self.height = height
        self.cache = ControlMapCache(cache_dir) if cache_dir is not None else None
        self.detector_calls = 0
        self._units = [
            _UnitRuntime(
                config=unit,
                preprocessor=make_preprocessor(
                    unit.preprocessor,
                    annotators=annotators,
                    device=device,
                    detect_resolution=unit.detect_resolution,
                    low_threshold=unit.threshold_a,
                    high_threshold=unit.threshold_b,
                ),
                images=open_unit_input(unit, frames=frames, width=width, height=height, index=i),
            )
            for i, unit in enumerate(units)
        ]

        for index, unit in enumerate(units):
            if unit.control_mode == "prompt":
                logger.warning(
                    "ControlNet unit %d: control mode 'My prompt is more important' has no diffusers equivalent; "
                    "it is rendered as 'Balanced'",
                    index + 1,
                )

    @property
    def guess_mode(self) -> bool:
        """diffusers' guess mode (A1111 "ControlNet is more important") for the whole call."""
        return any(u.config.control_mode == "controlnet" for u in self._units)

    def __call__(self, params: FrameParams, source: Image | None) -> tuple[ControlInput, ...]:
        from dreamreel.controlnet.resize import resize_map

        controls = []
        for index, unit in enumerate(self._units):
            weight, start, end = params.controlnet[index]
            image = unit.images(params.frame) if unit.images is not None else source
            if image is None:
                raise SettingsError(
                    f"ControlNet unit {index + 1} ({unit.config.preprocessor}) has no input on frame {params.frame}: "
                    "give it an input (video, image folder or image), or use Video Input mode or an init image",
                    key=f"controlnet.{index}.input",
                )
            control = self._detect(unit, image)
            control = resize_map(control, self.width, self.height, unit.config.resize_mode)
            controls.append(ControlInput(unit=index, image=control, weight=weight, guidance_start=start,
                                         guidance_end=max(start, end)))  # fmt: skip
        return tuple(controls)

    def prefill(self, frame: int, source: Image | None) -> int:
        """Put frame ``frame``'s maps into the cache (``source``: the frame's source image) without reading the
        ones already there; returns how many maps were computed. Used to extract a whole video's maps ahead,
        in parallel (:mod:`dreamreel.jobs.control_prefill`)."""
        if self.cache is None:
            return 0
        computed = 0
        for unit in self._units:
            image = unit.images(frame) if unit.images is not None else source
            if image is None or self.cache.path_for(image, unit.preprocessor).is_file():
                continue
            self._detect(unit, image)
            computed += 1
        return computed

    def _detect(self, unit: _UnitRuntime, image: Image) -> Image:
        def compute(picture: Image) -> Image:
            self.detector_calls += 1
            return unit.preprocessor(picture)

        if self.cache is None:
            return compute(image)
        return self.cache.get_or_compute(image, unit.preprocessor, compute)


def open_unit_input(
    unit: ControlNetUnit, *, frames: int, width: int, height: int, index: int
) -> Callable[[int], Image] | None:
    """A frame-indexed reader of a unit's explicit input, checked now (before any model loads)."""
    if unit.input is None:
        return None
    path = Path(unit.input).expanduser()
    key = f"controlnet.{index}.input"
    refuse_url(unit.input, key=key)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < frames:
            raise SettingsError(
                f"the folder {path} holds {len(files)} images but the render has {frames} frames; "
                "a control folder needs one image per frame (sorted by name)",
                key=key,
            )
        return lambda frame: _read_image(files[frame])
    if not path.is_file():
        raise SettingsError(f"{path} does not exist (a video, a folder of images, or one image)", key=key)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        from dreamreel.media.video_input import VideoSelection, open_video

        video = open_video(path, VideoSelection(width=width, height=height))
        if video.frame_count < frames:
            raise SettingsError(
                f"the control video {path} has {video.frame_count} frames but the render has {frames}; "
                "use a control video at least as long as the input",
                key=key,
            )
        return video.frame
    image = _read_image(path)
    return lambda frame: image


def _read_image(path: Path) -> Image:
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with PILImage.open(path) as picture:
            return np.asarray(picture.convert("RGB")).copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise SettingsError(f"cannot read control image {path}: {exc}", key="controlnet") from exc
