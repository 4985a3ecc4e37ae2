"""ControlNet units and preprocessors (controlnet-aux is imported lazily, inside the detectors)."""

from __future__ import annotations

from dreamreel.controlnet.cache import ControlMapCache
from dreamreel.controlnet.models import DEFAULT_CONTROLNET_MODELS
from dreamreel.controlnet.preprocessors import Preprocessor, make_preprocessor
from dreamreel.controlnet.resize import resize_map

__all__ = ["DEFAULT_CONTROLNET_MODELS", "ControlMapCache", "Preprocessor", "make_preprocessor", "resize_map"]
