"""Temporal consistency for Video Input: the flow-warped previous output as init, and a flicker meter.

Both follow the motion of the *input* video. With ``backward = flow(current_input, previous_input)``
(for every pixel of the current frame, where its content was in the previous frame), the previous
output is moved onto the current frame with ``warp_by_flow(previous_output, backward, -1)``, which
samples ``previous_output(p + backward(p))``: an exact backward warp, so the result lines up with
the current input.

Pixels whose motion cannot be trusted (occlusions, disocclusions, content entering at the border,
flow errors) are found with a forward-backward check: following ``backward`` and then the forward
flow ``flow(previous_input, current_input)`` must come back to the start. Those pixels take the
current input instead of the warped previous output.

Costs on one CPU thread at 512x512 (DIS medium flow about 15-30 ms each): ``flow_guided_init``
computes two flows (pass ``flows=`` to reuse them), ``FlickerMeter.add`` one.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable

import cv2
import numpy as np
from numpy.typing import NDArray

from dreamreel.anim.cadence import Flow, flow, warp_by_flow
from dreamreel.anim.filters import check_image
from dreamreel.errors import SettingsError
from dreamreel.generation import Image

logger = logging.getLogger(__name__)

__all__ = ["FlickerMeter", "consistency_mask", "flicker", "flow_guided_init", "input_flows"]

Mask = NDArray[np.float32]
"""An (H, W) float32 array in 0..1; 1 = the motion is trusted."""

_RELATIVE = 0.01  # share of the squared motion added to the squared threshold (Sundaram et al. 2010)


def _same_size(images: dict[str, object]) -> list[Image]:
    checked = [check_image(image, name) for name, image in images.items()]
    shapes = {image.shape for image in checked}
    if len(shapes) > 1:
        sizes = ", ".join(
            f"{name} {image.shape[1]}x{image.shape[0]}" for name, image in zip(images, checked, strict=True)
        )
        raise ValueError(f"The frames must all have the same size; got {sizes}. Resize them to the output size.")
    return checked


def input_flows(previous_input: Image, current_input: Image, method: str = "dis_medium") -> tuple[Flow, Flow]:
    """``(forward, backward)`` optical flow between two input frames.

    ``forward = flow(previous_input, current_input)`` and ``backward = flow(current_input,
    previous_input)``, in :mod:`dreamreel.anim.cadence`'s convention.
    """
    previous_input, current_input = _same_size({"previous_input": previous_input, "current_input": current_input})
    return flow(previous_input, current_input, method), flow(current_input, previous_input, method)


@functools.lru_cache(maxsize=4)
def _grid(height: int, width: int) -> NDArray[np.float32]:
    grid = np.empty((height, width, 2), dtype=np.float32)
    grid[..., 0] = np.arange(width, dtype=np.float32)
    grid[..., 1] = np.arange(height, dtype=np.float32)[:, None]
    grid.flags.writeable = False
    return grid


def _source_points(backward: Flow) -> NDArray[np.float32]:
    height, width = backward.shape[:2]
    return np.asarray(cv2.add(_grid(height, width), np.asarray(backward, dtype=np.float32)), np.float32)


def _inside(points: NDArray[np.float32]) -> NDArray[np.uint8]:
    """255 where a point lies inside the frame, else 0."""
    height, width = points.shape[:2]
    return np.asarray(cv2.inRange(points, (0.0, 0.0), (float(width - 1), float(height - 1))), np.uint8)


def _squared_length(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    x, y = cv2.split(vectors)
    return np.asarray(cv2.add(cv2.multiply(x, x), cv2.multiply(y, y)), np.float32)


def consistency_mask(forward: Flow, backward: Flow, threshold: float = 1.0) -> Mask:
    """Where the motion from the previous to the current frame can be trusted, on the current frame.

    A current pixel ``p`` came from ``q = p + backward(p)``; going forward from ``q`` must return
    to ``p``, i.e. ``|backward(p) + forward(q)|`` must be small. The pixel is trusted when that
    error squared is at most ``threshold**2 + 0.01 * (|backward(p)|**2 + |forward(q)|**2)`` (so fast
    motion tolerates proportionally larger errors) and ``q`` lies inside the frame. The untrusted
    area is grown by 2 pixels and its edge softened, so the result is a float mask in 0..1.

    Args:
        forward: ``flow(previous_input, current_input)``, (H, W, 2) float32.
        backward: ``flow(current_input, previous_input)``, same shape.
        threshold: allowed round-trip error in pixels, > 0.

    Returns:
        (H, W) float32, 1 = trusted.
    """
    if forward.shape != backward.shape or forward.ndim != 3 or forward.shape[2] != 2:
        raise ValueError(
            f"forward and backward flows must both be (H, W, 2); got {forward.shape} and {backward.shape}."
        )
    if not (math.isfinite(threshold) and threshold > 0):
        raise SettingsError(f"the consistency threshold must be a positive number of pixels; got {threshold!r}.")
    backward = np.asarray(backward, dtype=np.float32)
    points = _source_points(backward)
    forward_at_source = np.asarray(
        cv2.remap(
            np.asarray(forward, dtype=np.float32), points, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        ),
        np.float32,
    )
    error = _squared_length(np.asarray(cv2.add(backward, forward_at_source), np.float32))
    motion = cv2.add(_squared_length(backward), _squared_length(forward_at_source))
    allowed = cv2.addWeighted(motion, _RELATIVE, motion, 0.0, float(threshold) ** 2)
    trusted = cv2.bitwise_and(cv2.compare(error, allowed, cv2.CMP_LE), _inside(points))
    trusted = cv2.erode(trusted, np.ones((5, 5), np.uint8), borderType=cv2.BORDER_REPLICATE)
    mask = cv2.blur(trusted.astype(np.float32) * np.float32(1 / 255), (5, 5), borderType=cv2.BORDER_REPLICATE)
    return np.asarray(mask, np.float32)


def _check_blend(blend: float) -> float:
    try:
        value = float(blend)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise SettingsError(
            f"the flow-guidance blend must be between 0 and 1; got {blend!r}.", key="temporal.flow_guidance"
        )
    return value


def flow_guided_init(
    previous_output: Image,
    previous_input: Image,
    current_input: Image,
    *,
    blend: float,
    method: str = "dis_medium",
    consistency_threshold: float = 1.0,
    flows: tuple[Flow, Flow] | None = None,
) -> Image:
    """The init image for the current frame: the previous output moved along the input's motion.

    The previous output is warped with the flow between the previous and the current input frame
    so that it lines up with the current input; where that motion is not trusted (see
    :func:`consistency_mask`) the current input is used. In the trusted area the result is
    ``blend * warped + (1 - blend) * current_input``.

    Args:
        previous_output: the previous generated frame, (H, W, 3) uint8 RGB.
        previous_input: the previous input (video) frame, same size.
        current_input: the current input frame, same size.
        blend: 0..1; 0 returns a copy of ``current_input``.
        method: flow method ("dis_medium", "dis_fine", "farneback").
        consistency_threshold: round-trip error in pixels above which the motion is not trusted.
        flows: ``input_flows(previous_input, current_input)`` if already computed.

    Returns:
        A new (H, W, 3) uint8 array.

    Raises:
        SettingsError: ``blend`` or ``consistency_threshold`` out of range, unknown ``method``.
        ValueError: the images are not (H, W, 3) uint8 of one size.
    """
    previous_output, previous_input, current_input = _same_size(
        {"previous_output": previous_output, "previous_input": previous_input, "current_input": current_input}
    )
    weight = _check_blend(blend)
    if weight == 0.0:
        return current_input.copy()
    forward, backward = flows if flows is not None else input_flows(previous_input, current_input, method)
    warped = warp_by_flow(previous_output, backward, -1.0)
    trust = consistency_mask(forward, backward, consistency_threshold)
    if weight != 1.0:
        trust *= np.float32(weight)
    return np.asarray(cv2.blendLinear(warped, current_input, trust, 1.0 - trust), np.uint8)


class FlickerMeter:
    """Streaming flicker: mean absolute change between consecutive outputs beyond the input's motion.

    For each new pair, the previous output is warped along the input's motion onto the current
    frame (as in :func:`flow_guided_init`) and the mean absolute difference to the current output
    is taken over the pixels whose source lies inside the frame, in 0..255 units, all channels.
    :attr:`value` is the mean over all pairs so far. Only the previous pair of frames is kept.

    Args:
        method: flow method for the input's motion.
    """

    def __init__(self, *, method: str = "dis_medium") -> None:
        self.method = method
        self._previous: tuple[Image, Image] | None = None
        self._total = 0.0
        self._pairs = 0

    @property
    def value(self) -> float:
        """Mean flicker over the pairs so far; 0.0 before the second frame."""
        return self._total / self._pairs if self._pairs else 0.0

    @property
    def pairs(self) -> int:
        """Number of consecutive frame pairs measured."""
        return self._pairs

    def add(self, output: Image, input: Image, *, backward_flow: Flow | None = None) -> float | None:
        """Add the next (output, input) frame pair; return this step's flicker (None for the first frame).

        Args:
            output: the generated frame, (H, W, 3) uint8 RGB.
            input: the input frame it was made from, same size.
            backward_flow: ``flow(input, previous_input)`` if already computed.
        """
        output, input = _same_size({"output": output, "input": input})
        previous, self._previous = self._previous, (output.copy(), input.copy())
        if previous is None:
            return None
        previous_output, previous_input = previous
        if previous_output.shape != output.shape:
            raise ValueError(
                f"FlickerMeter frames changed size from {previous_output.shape[1]}x{previous_output.shape[0]} to "
                f"{output.shape[1]}x{output.shape[0]}; every frame must have the same size."
            )
        backward = backward_flow if backward_flow is not None else flow(input, previous_input, self.method)
        warped = warp_by_flow(previous_output, backward, -1.0)
        inside = _inside(_source_points(np.asarray(backward, dtype=np.float32)))
        step = float(np.mean(cv2.mean(cv2.absdiff(output, warped), mask=inside)[:3])) if inside.any() else 0.0
        self._total += step
        self._pairs += 1
        return step


def flicker(frames_out: Iterable[Image], frames_in: Iterable[Image], *, method: str = "dis_medium") -> float:
    """Mean motion-compensated flicker of a video (see :class:`FlickerMeter`); 0.0 for under two frames.

    Args:
        frames_out: the generated frames, in order.
        frames_in: the input frames they were made from, same count and size.

    Raises:
        ValueError: the two sequences differ in length or the frames in size.
    """
    meter = FlickerMeter(method=method)
    outputs, inputs = iter(frames_out), iter(frames_in)
    count = 0
    for output in outputs:
        current_input = next(inputs, None)
        if current_input is None:
            raise ValueError(f"flicker() got more output frames than input frames (input ended after {count}).")
        meter.add(output, current_input)
        count += 1
    if next(inputs, None) is not None:
        raise ValueError(f"flicker() got more input frames than output frames ({count} outputs).")
    return meter.value
