"""Tests for dreamreel.anim.temporal: flow-guided init, the consistency mask and the flicker meter."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dreamreel.anim.cadence import flow
from dreamreel.anim.temporal import FlickerMeter, consistency_mask, flicker, flow_guided_init, input_flows
from dreamreel.errors import SettingsError

H, W = 96, 128
MARGIN = 10  # pixels near the border are excluded where content enters the frame


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random colour texture (blobs of about 4 px) that optical flow can follow."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 4, width // 4, 3)).astype(np.uint8)
    return cv2.GaussianBlur(cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC), (0, 0), 1.0)


BIG = texture(H + 60, W + 60)


def view(dx: int, dy: int, image: np.ndarray = BIG) -> np.ndarray:
    """The frame seen by a camera at (dx, dy): content moves by (-dx, -dy) as the camera moves."""
    return np.ascontiguousarray(image[20 + dy : 20 + dy + H, 20 + dx : 20 + dx + W])


def interior_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b)[MARGIN:-MARGIN, MARGIN:-MARGIN].mean())


def stylise(image: np.ndarray) -> np.ndarray:
    """A stand-in for a generated frame: a deterministic colour change of the input."""
    return np.ascontiguousarray((255 - image)[..., ::-1])


# --------------------------------------------------------------------------------------------- flow-guided init


def test_warped_previous_output_lines_up_with_the_current_input() -> None:
    previous_input, current_input = view(0, 0), view(5, 2)
    previous_output, wanted = stylise(previous_input), stylise(current_input)
    result = flow_guided_init(previous_output, previous_input, current_input, blend=1.0)
    assert result.shape == (H, W, 3) and result.dtype == np.uint8
    unwarped = interior_error(previous_output, wanted)
    assert unwarped > 40
    assert interior_error(result, wanted) < 1.5  # lines up: 40x smaller than without warping


def test_content_entering_at_the_border_comes_from_the_current_input() -> None:
    previous_input, current_input = view(0, 0), view(6, 0)  # 6 new columns on the right
    previous_output = np.zeros_like(previous_input)  # black: anything taken from it shows
    result = flow_guided_init(previous_output, previous_input, current_input, blend=1.0)
    assert np.array_equal(result[:, -6:], current_input[:, -6:])
    assert result[MARGIN:-MARGIN, MARGIN : W // 2].max() == 0  # the trusted interior is the warped black frame


def test_blend_zero_is_the_current_input_and_half_is_the_mean() -> None:
    previous_input, current_input = view(0, 0), view(3, 3)
    previous_output = stylise(previous_input)
    assert np.array_equal(flow_guided_init(previous_output, previous_input, current_input, blend=0.0), current_input)
    full = flow_guided_init(previous_output, previous_input, current_input, blend=1.0)
    half = flow_guided_init(previous_output, previous_input, current_input, blend=0.5)
    mean = (full.astype(np.float32) + current_input) / 2
    assert np.abs(half - mean)[MARGIN:-MARGIN, MARGIN:-MARGIN].max() <= 1.0


def test_precomputed_flows_give_the_same_result() -> None:
    previous_input, current_input = view(0, 0), view(4, 1)
    previous_output = stylise(previous_input)
    flows = input_flows(previous_input, current_input)
    a = flow_guided_init(previous_output, previous_input, current_input, blend=0.7, flows=flows)
    b = flow_guided_init(previous_output, previous_input, current_input, blend=0.7)
    assert np.array_equal(a, b)


def test_consistency_mask_marks_an_occlusion() -> None:
    # a square moves 8 px right over a static background: its old place is uncovered in the current frame
    background = texture(H, W, seed=1)
    patch = texture(32, 32, seed=2)
    previous_input, current_input = background.copy(), background.copy()
    previous_input[32:64, 40:72] = patch
    current_input[32:64, 48:80] = patch
    forward, backward = input_flows(previous_input, current_input)
    mask = consistency_mask(forward, backward)
    assert mask.shape == (H, W) and mask.dtype == np.float32 and mask.min() >= 0 and mask.max() <= 1
    assert mask[10:22, 10:30].min() == 1.0  # static background far from the square: trusted
    assert mask[36:60, 40:48].mean() < 0.5  # background uncovered by the square: not trusted


def test_consistency_mask_excludes_sources_outside_the_frame() -> None:
    forward = np.zeros((H, W, 2), np.float32)
    backward = np.zeros((H, W, 2), np.float32)
    forward[..., 0], backward[..., 0] = -6.0, 6.0  # content moves 6 px left: the right strip is new
    mask = consistency_mask(forward, backward)
    assert mask[:, : W - 15].min() == 1.0 and mask[:, W - 6 :].max() == 0.0


def test_invalid_arguments() -> None:
    a = view(0, 0)
    with pytest.raises(SettingsError, match="between 0 and 1") as caught:
        flow_guided_init(a, a, a, blend=1.5)
    assert caught.value.key == "temporal.flow_guidance"
    with pytest.raises(ValueError, match="same size"):
        flow_guided_init(a[:64], a, a, blend=0.5)
    with pytest.raises(SettingsError, match="positive number of pixels"):
        consistency_mask(np.zeros((4, 4, 2), np.float32), np.zeros((4, 4, 2), np.float32), threshold=0)
    with pytest.raises(SettingsError, match="Unknown optical-flow method"):
        flow_guided_init(a, a, a, blend=0.5, method="raft")


# --------------------------------------------------------------------------------------------- flicker


PAN = [view(3 * i, i) for i in range(10)]


def test_static_identical_frames_have_no_flicker() -> None:
    assert flicker([PAN[0]] * 4, [PAN[0]] * 4) == 0.0


def test_a_steady_pan_is_compensated_but_noise_is_not() -> None:
    outputs = [stylise(frame) for frame in PAN]
    compensated = flicker(outputs, PAN)
    raw = np.mean([np.abs(outputs[i].astype(np.int16) - outputs[i - 1]).mean() for i in range(1, len(PAN))])
    rng = np.random.default_rng(0)
    noisy = [np.clip(o + rng.normal(0, 20, o.shape), 0, 255).astype(np.uint8) for o in outputs]
    assert raw > 30 and compensated < 1.0  # the pan itself does not count as flicker
    assert flicker(noisy, PAN) > 15  # independent noise of sigma 20 per frame: E|a - b| ~ 22


def test_flicker_meter_streams_the_same_value() -> None:
    outputs = [stylise(frame) for frame in PAN]
    outputs[5] = np.clip(outputs[5].astype(np.int16) + 30, 0, 255).astype(np.uint8)  # one bright frame
    meter = FlickerMeter()
    steps = [meter.add(output, frame) for output, frame in zip(outputs, PAN, strict=True)]
    assert steps[0] is None and meter.pairs == len(PAN) - 1
    assert steps[5] > 20 and steps[6] > 20 and max(steps[1:5] + steps[7:]) < 1.5  # the jump in and out
    assert meter.value == pytest.approx(np.mean(steps[1:])) == pytest.approx(flicker(outputs, PAN))
    assert meter._previous is not None and len(meter._previous) == 2  # only the last pair is kept


def test_flicker_meter_accepts_a_precomputed_flow() -> None:
    meter_a, meter_b = FlickerMeter(), FlickerMeter()
    for i, frame in enumerate(PAN[:4]):
        meter_a.add(stylise(frame), frame)
        backward = flow(frame, PAN[i - 1]) if i else None
        meter_b.add(stylise(frame), frame, backward_flow=backward)
    assert meter_a.value == meter_b.value and meter_a.value < 1.0


def test_flicker_edge_cases() -> None:
    assert FlickerMeter().value == 0.0
    assert flicker([PAN[0]], [PAN[0]]) == 0.0
    with pytest.raises(ValueError, match="more output frames"):
        flicker(PAN[:3], PAN[:2])
    with pytest.raises(ValueError, match="more input frames"):
        flicker(PAN[:2], PAN[:3])
    meter = FlickerMeter()
    meter.add(PAN[0], PAN[0])
    with pytest.raises(ValueError, match="changed size"):
        meter.add(PAN[1][:64], PAN[1][:64])
