"""The frame loop: warp the previous output, prepare the init, generate, write.

The loop depends on small protocols (a :class:`FrameGenerator`, a :class:`FrameSink`, a
:class:`ProgressReporter`, a stop flag) and carries everything one frame needs from the previous
one in an explicit :class:`LoopState`, replaced (never patched) after every cadence group.

Cadence: frames are rendered in groups that end at a diffused frame ``b`` (table column
``diffuse``; frame 0, every ``cadence``-th frame and always the last frame). For a group ``a -> b``
the last diffused image ``D_a`` is warped frame by frame to ``W(j)``, ``j = a+1..b``; ``W(b)``
becomes the init of ``D_b``; the in-between frames are ``(1-w) W(j) + w D_b(j)`` with
``w = (j-a)/(b-a)``, where ``D_b(j)`` is ``D_b`` moved back to frame ``j``'s camera position, so
both images of the blend are aligned. State is only ever saved between groups.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from dreamreel.anim.cadence import flow_tween, tween
from dreamreel.anim.motion import Motion
from dreamreel.anim.protocols import FrameSink, NullProgress, ProgressReporter
from dreamreel.anim.steps import InitPreparer
from dreamreel.anim.timing import StageTimer
from dreamreel.generation import ControlInput, FrameGenerator, GenerationRequest, Image
from dreamreel.keyframes.table import FrameParams, ScheduleTable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopState:
    """What the next cadence group needs. Saved between groups so a run can resume exactly.

    Attributes:
        next_frame: the first frame not yet written.
        anchor: the last diffused output (at frame ``next_frame - 1``), None before frame 0.
        color_reference: the image colours are matched against, once known.
    """

    next_frame: int = 0
    anchor: Image | None = None
    color_reference: Image | None = None


class FrameSource(Protocol):
    """Video Input mode: the init of each frame (the input video frame, possibly flow-guided)."""

    def init_for(self, frame: int, previous_output: Image | None) -> tuple[Image, Image]:
        """(init image, the input frame it came from) for ``frame``."""
        ...


ControlsFor = Callable[[FrameParams, "Image | None"], tuple[ControlInput, ...]]


@dataclass(frozen=True)
class LoopConfig:
    """The per-run constants of the loop (derived once from the settings)."""

    width: int
    height: int
    loopback: bool = True  # img2img from the warped previous output (2D/3D); False: every frame independent
    init_image: Image | None = None  # frame-0 init (or every frame's init without loopback)
    match_output_colors: bool = True
    frames: FrameSource | None = None  # Video Input mode
    controls: ControlsFor | None = None  # ControlNet maps for a frame, from its source image
    guess_mode: bool = False
    reference_for: Callable[[int], Image] | None = None  # colour reference per frame (e.g. the input video)
    flow_cadence: str | None = None  # optical-flow method for cadence in-betweens ("dis_medium", ...)


def render(
    config: LoopConfig,
    table: ScheduleTable,
    generator: FrameGenerator,
    sink: FrameSink,
    *,
    motion: Motion,
    prepare: InitPreparer,
    state: LoopState | None = None,
    progress: ProgressReporter | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    checkpoint: Callable[[LoopState], None] | None = None,
    timer: StageTimer | None = None,
    end_frame: int | None = None,
) -> LoopState:
    """Render every frame from ``state.next_frame`` to the end of ``table`` into ``sink``.

    Stops early (after a complete cadence group) when ``should_stop()`` turns true. Returns the
    state after the last written frame; ``state.next_frame == table.max_frames`` when finished.
    Nothing here mutates ``config``, ``table`` or ``state``.

    With ``end_frame`` only frames ``< end_frame`` are written (``render --frames N``): exactly the
    first frames of the full animation. A cadence group that crosses ``end_frame`` is rendered
    whole (its in-between frames blend towards its diffused last frame), and only its frames
    before ``end_frame`` reach the sink; the state after it has ``next_frame == end_frame``.
    """
    state = state or LoopState()
    progress = progress or NullProgress()
    timer = timer or StageTimer()
    limit = table.max_frames if end_frame is None else max(0, min(end_frame, table.max_frames))
    diffused = np.flatnonzero(table.numeric["diffuse"]).tolist()
    ends = [b for b in diffused if b >= state.next_frame]
    progress.start(limit, completed=min(state.next_frame, limit))
    try:
        for index, end in enumerate(ends):
            if state.next_frame >= limit:
                break
            if should_stop():
                logger.info("stopping at frame %d as requested", state.next_frame)
                break
            upcoming = None
            if config.loopback:  # an init's noise depends on the schedule only: computed ahead, off the critical path
                if state.anchor is not None:
                    prepare.prefetch(table.row(end), config.height, config.width)  # computed before (or now, on resume)
                if index + 1 < len(ends) and end + 1 < limit:
                    upcoming = table.row(ends[index + 1])  # computed while this group's generator runs
            frames = _render_group(config, table, generator, motion, prepare, state, end, timer, upcoming)
            kept = [(image, params) for image, params in frames if params.frame < limit]
            for image, params in kept:
                with timer.stage("encode"):
                    sink.write(image, params)
                progress.advance(params.frame)
            anchor = kept[-1][0]
            reference = state.color_reference if state.color_reference is not None else frames[-1][0]
            state = replace(state, next_frame=min(end + 1, limit), anchor=anchor, color_reference=reference)
            if checkpoint is not None:
                with timer.stage("checkpoint"):
                    checkpoint(state)
    finally:
        progress.close()
    return state


def _render_group(
    config: LoopConfig,
    table: ScheduleTable,
    generator: FrameGenerator,
    motion: Motion,
    prepare: InitPreparer,
    state: LoopState,
    end: int,
    timer: StageTimer,
    upcoming: FrameParams | None = None,
) -> list[tuple[Image, FrameParams]]:
    """Frames ``state.next_frame .. end``: the warped chain, the diffusion at ``end``, the tweens.

    ``upcoming`` is the next diffused frame's row: its init noise is started just before the generator runs.
    """
    rows = [table.row(j) for j in range(state.next_frame, end + 1)]
    if config.reference_for is not None:
        with timer.stage("color"):
            state = replace(state, color_reference=config.reference_for(end))
    if not config.loopback or state.anchor is None:
        row = rows[-1]
        init: Image | None
        source: Image | None
        if config.frames is not None:
            with timer.stage("input"):
                init, source = config.frames.init_for(row.frame, state.anchor)
        else:
            init = source = config.init_image
        if upcoming is not None:
            prepare.prefetch(upcoming, config.height, config.width)
        image = _generate(generator, config, row, init, timer, source)
        if config.match_output_colors and state.color_reference is not None:
            with timer.stage("color"):
                image = prepare.match_colors(image, state.color_reference)
        return [(image, row)]
    chain: list[Image] = []
    current = state.anchor
    for row in rows:
        with timer.stage("warp"):
            current = motion.warp(current, row, timer)
        chain.append(current)
    init = prepare(chain[-1], rows[-1], state.color_reference, timer)
    if upcoming is not None:
        prepare.prefetch(upcoming, config.height, config.width)
    result = _generate(generator, config, rows[-1], init, timer, init)
    if config.match_output_colors and state.color_reference is not None:
        with timer.stage("color"):
            result = prepare.match_colors(result, state.color_reference)
    frames: list[tuple[Image, FrameParams]] = []
    span = len(rows)
    for index, row in enumerate(rows[:-1]):
        weight = (index + 1) / span
        with timer.stage("warp"):
            moved_back = motion.back(result, rows[index + 1 :], chain[index], chain[-1])
            if config.flow_cadence is not None:
                frame = flow_tween(chain[index], moved_back, weight, config.flow_cadence, row.cadence_flow_factor)
            else:
                frame = tween(chain[index], moved_back, weight)
        frames.append((frame, row))
    frames.append((result, rows[-1]))
    return frames


def _generate(
    generator: FrameGenerator,
    config: LoopConfig,
    row: FrameParams,
    init: Image | None,
    timer: StageTimer,
    source: Image | None,
) -> Image:
    controls: tuple[ControlInput, ...] = ()
    if config.controls is not None:
        with timer.stage("control"):
            controls = config.controls(row, source)
    request = request_for(row, config, init, controls)
    with timer.stage("model"):
        image = generator.generate(request)
    if image.shape != (config.height, config.width, 3) or image.dtype != np.uint8:
        raise ValueError(
            f"the generator returned an image of shape {image.shape} and dtype {image.dtype} for frame {row.frame}; "
            f"expected ({config.height}, {config.width}, 3) uint8"
        )
    return image


def request_for(
    row: FrameParams, config: LoopConfig, init: Image | None, controls: tuple[ControlInput, ...] = ()
) -> GenerationRequest:
    """The generator request of one frame: the schedule row, the size, the init image and the controls."""
    return GenerationRequest(
        prompt=row.prompt,
        negative_prompt=row.negative_prompt,
        width=config.width,
        height=config.height,
        steps=int(row.steps),
        cfg_scale=row.cfg_scale,
        strength=row.denoise if init is not None else 1.0,
        seed=int(row.seed),
        sampler=row.sampler,
        init_image=init,
        controls=controls,
        guess_mode=config.guess_mode,
        noise_multiplier=row.noise_multiplier,
        clip_skip=int(row.clip_skip),
        prompt_parts=row.prompt_parts,
        negative_parts=row.negative_parts,
    )
