"""Depth models for the 3D warp: one small protocol, a transformers backend and a flat stand-in.

A depth model turns an (H, W, 3) uint8 RGB picture into an (H, W) float32 map. Feed the map to
:func:`dreamreel.anim.warp3d.depth_to_z` with ``inverse=model.inverse`` to get the warp's ``z``.

:class:`TransformersDepth` loads any transformers depth-estimation model (DPT/MiDaS such as
``Intel/dpt-large``, which is what Deforum's "Midas-3-Hybrid" runs, ``Intel/dpt-hybrid-midas``,
Depth Anything such as ``depth-anything/Depth-Anything-V2-Small-hf``, ZoeDepth) from a local folder
or from the local Hugging Face cache. It never downloads. transformers is imported lazily, so
importing this module stays cheap.
"""

from __future__ import annotations

import inspect
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch
from numpy.typing import NDArray

from dreamreel.anim.images import check_image
from dreamreel.errors import MissingDependencyError, ModelLoadError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_METRIC_TYPES = frozenset({"zoedepth"})


@runtime_checkable
class DepthModel(Protocol):
    """What the 3D warp needs from a depth model.

    Attributes:
        inverse: True when ``predict`` returns relative inverse depth (MiDaS/DPT, Depth
            Anything: larger = nearer), False for metric depth (ZoeDepth: larger = farther).
    """

    inverse: bool

    def predict(self, image: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Return the (H, W) float32 depth of an (H, W, 3) uint8 RGB picture."""
        ...


class FlatDepth:
    """A depth "model" that returns the same value everywhere (for tests and depth-free 3D).

    A constant map makes :func:`~dreamreel.anim.warp3d.depth_to_z` fall back to flat ``z = 1``.
    """

    inverse = True

    def __init__(self, value: float = 1.0) -> None:
        self.value = float(value)

    def predict(self, image: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Return an (H, W) map filled with ``value``."""
        image = check_image(image)
        return np.full(image.shape[:2], self.value, dtype=np.float32)


def _missing(name: str, reason: str) -> ModelLoadError:
    return ModelLoadError(
        f"Could not load the depth model {name!r}: {reason}. dreamreel never downloads models: pass a local "
        "folder that holds the model's config.json, weights and preprocessor_config.json (for example made with "
        f"`hf download Intel/dpt-large --local-dir models/dpt-large`), or a Hugging Face id that is already in "
        "the local Hugging Face cache."
    )


def _resolve(path_or_id: str | Path) -> str:
    """Return the folder or cached hub id to load, or raise ModelLoadError naming what was missing."""
    text = str(path_or_id)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise _missing(text, f"the folder {path} has no config.json")
        return str(path)
    if path.exists():
        raise _missing(text, f"{path} is a file, not a model folder")
    if not _HUB_ID.match(text) or text.startswith((".", "~")):
        raise _missing(text, f"there is no folder {path}")
    return text


class TransformersDepth:
    """A transformers depth-estimation model with its image processor. Load once, predict many.

    Attributes:
        name: the folder or hub id it was loaded from.
        inverse: True for relative inverse depth (DPT/MiDaS, relative Depth Anything), False for
            metric depth (ZoeDepth, metric Depth Anything).
    """

    def __init__(self, model: PreTrainedModel, processor: Any, *, name: str, device: torch.device, dtype: torch.dtype):
        self.model = model
        self.processor = processor
        self.name = name
        self.device = device
        self.dtype = dtype
        config = model.config
        metric = config.model_type in _METRIC_TYPES or getattr(config, "depth_estimation_type", "") == "metric"
        self.inverse = not metric
        post = getattr(processor, "post_process_depth_estimation", None)
        self._needs_source_sizes = post is not None and "source_sizes" in inspect.signature(post).parameters

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> TransformersDepth:
        """Load a depth model from a local folder or the local Hugging Face cache (never the network).

        Args:
            path_or_id: a model folder, or a Hugging Face id already in the local cache.
            device: torch device to run on.
            dtype: weight dtype (float16 is fine on a GPU).

        Raises:
            ModelLoadError: the folder or cached model is missing or not a depth model; the
                message names it and says how to pass a local folder.
            MissingDependencyError: transformers is not installed.
        """
        source = _resolve(path_or_id)
        try:
            from transformers import AutoImageProcessor, AutoModelForDepthEstimation
        except ImportError as error:  # pragma: no cover - transformers is a dependency
            raise MissingDependencyError("transformers", "Depth estimation for the 3D warp") from error
        try:
            # transformers leaves AutoImageProcessor.from_pretrained unannotated
            processor = AutoImageProcessor.from_pretrained(source, local_files_only=True)  # type: ignore[no-untyped-call, unused-ignore]
            model = AutoModelForDepthEstimation.from_pretrained(source, local_files_only=True, dtype=dtype)
        except (OSError, ValueError, KeyError) as error:
            if Path(source).is_dir():
                reason = f"{type(error).__name__}: {error}".rstrip(".")
            else:
                reason = f"there is no folder {source} and {source!r} is not in the local Hugging Face cache"
            raise _missing(str(path_or_id), reason) from error
        torch_device = torch.device(device)
        model = model.to(torch_device).eval()
        logger.info("Loaded depth model %s (%s) on %s", source, type(model).__name__, torch_device)
        return cls(model, processor, name=str(path_or_id), device=torch_device, dtype=dtype)

    def predict(self, image: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Return the (H, W) float32 depth of an (H, W, 3) uint8 RGB picture, resized bicubically to it."""
        image = check_image(image)
        height, width = image.shape[:2]
        inputs = self.processor(images=image, return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device, self.dtype)
        with torch.inference_mode():
            outputs = self.model(pixel_values=pixel_values)
            outputs["predicted_depth"] = outputs.predicted_depth.float()
            extra = {"source_sizes": [(height, width)]} if self._needs_source_sizes else {}
            result = self.processor.post_process_depth_estimation(outputs, target_sizes=[(height, width)], **extra)
        depth: torch.Tensor = result[0]["predicted_depth"].reshape(height, width)
        return depth.cpu().numpy().astype(np.float32, copy=False)
