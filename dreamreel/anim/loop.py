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

Where frames live: the preparer's :class:`~dreamreel.anim.frame_ops.FrameOps` (``prepare.ops``).
With the host ops they are numpy arrays; with :class:`~dreamreel.anim.torch_chain.TorchOps` they are
tensors on the generator's device from the VAE decode to the next VAE encode, and only cross to the
host for the sink (each written frame once) and for ControlNet detectors or optical flow, which
run on numpy. The loop state (saved at checkpoints) always holds numpy images.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from dreamreel.anim.cadence import flow_tween
from dreamreel.anim.frame_ops import FrameOps
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
    timer: StageTimer | None = None,
    end_frame: int | None = None,
) -> LoopState:
    """Render every frame from ``state.next_frame`` to the end of ``table`` into ``sink``.

    Stops early (after a complete cadence group) when ``should_stop()`` turns true. Returns the
    state after the last written frame; ``state.next_frame == table.max_frames`` when finished.
    After each cadence group ``sink.checkpoint`` gets the state after it.
    Nothing here mutates ``config``, ``table`` or ``state``.

    With ``end_frame`` only frames ``< end_frame`` are written (``render --frames N``): exactly the
    first frames of the full animation. A cadence group that crosses ``end_frame`` is rendered
    whole (its in-between frames blend towards its diffused last frame), and only its frames
    before ``end_frame`` reach the sink; the state after it has ``next_frame == end_frame``.
    """
    state = state or LoopState()
    progress = progress or NullProgress()
    timer = timer or StageTimer()
    frames_on = _Resident(prepare.ops)
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
            group = _Group(config, generator, motion, prepare, frames_on, timer)
            frames = group.render([table.row(j) for j in range(state.next_frame, end + 1)], state, upcoming)
            anchor: Image | None = None
            for frame, params in frames:
                if params.frame >= limit:
                    break
                with timer.stage("encode"):
                    anchor = frames_on.download(frame)
                    sink.write(anchor, params)
                progress.advance(params.frame)
            reference = state.color_reference
            if reference is None:
                reference = frames_on.download(frames[-1][0])
            state = replace(state, next_frame=min(end + 1, limit), anchor=anchor, color_reference=reference)
            with timer.stage("checkpoint"):
                sink.checkpoint(state)
    finally:
        progress.close()
    return state


class _Resident:
    """The frames of ``ops`` that belong to numpy images the loop has seen: a frame downloaded for the
    sink is not uploaded again as the next group's anchor, and a fixed image (the init, the colour
    reference) is uploaded once. For the host ops both directions are the identity."""

    def __init__(self, ops: FrameOps[Any], keep: int = 8) -> None:
        self.ops = ops
        self.keep = keep
        self._by_image: dict[int, tuple[Image, Any]] = {}
        self._by_frame: dict[int, tuple[Any, Image]] = {}
        self._fixed: dict[int, tuple[Image, Any]] = {}  # the init image and the colour reference

    def upload(self, image: Image, *, fixed: bool = False) -> Any:
        """``image`` as a frame; ``fixed``: an image used again and again (kept, so it keeps its identity)."""
        known = self._fixed.get(id(image)) or self._by_image.get(id(image))
        if known is not None and known[0] is image:
            frame = known[1]
        else:
            frame = self.ops.upload(image)
            self._remember(image, frame)
        if fixed and image is not frame and id(image) not in self._fixed:
            self._fixed[id(image)] = (image, frame)
            while len(self._fixed) > 2:
                self._fixed.pop(next(iter(self._fixed)))
        return frame

    def download(self, frame: Any) -> Image:
        known = self._by_frame.get(id(frame))
        if known is not None and known[0] is frame:
            return known[1]
        image = self.ops.download(frame)
        self._remember(image, frame)
        return image

    def _remember(self, image: Image, frame: Any) -> None:
        if image is frame:
            return
        self._by_image[id(image)] = (image, frame)
        self._by_frame[id(frame)] = (frame, image)
        for table in (self._by_image, self._by_frame):
            while len(table) > self.keep:
                table.pop(next(iter(table)))


@dataclass(frozen=True)
class _Group:
    """One cadence group's work: the warped chain, the diffusion at its last frame, the tweens."""

    config: LoopConfig
    generator: FrameGenerator
    motion: Motion
    prepare: InitPreparer
    frames_on: _Resident
    timer: StageTimer

    def render(
        self, rows: list[FrameParams], state: LoopState, upcoming: FrameParams | None
    ) -> list[tuple[Any, FrameParams]]:
        """Frames ``rows[0].frame .. rows[-1].frame`` (as frames of the ops).

        ``upcoming`` is the next diffused frame's row: its init noise is started just before the generator runs.
        """
        config, timer, ops = self.config, self.timer, self.frames_on
        if config.reference_for is not None:
            with timer.stage("color"):
                state = replace(state, color_reference=config.reference_for(rows[-1].frame))
        reference = None if state.color_reference is None else ops.upload(state.color_reference, fixed=True)
        if not config.loopback or state.anchor is None:
            row = rows[-1]
            init_image: Image | None
            source: Image | None
            if config.frames is not None:
                with timer.stage("input"):
                    init_image, source = config.frames.init_for(row.frame, state.anchor)
            else:
                init_image = source = config.init_image
            if upcoming is not None:
                self.prepare.prefetch(upcoming, config.height, config.width)
            image = self._generate(row, None if init_image is None else ops.upload(init_image, fixed=True), source)
            if config.match_output_colors and reference is not None:
                with timer.stage("color"):
                    image = self.prepare.match_colors(image, reference)
            return [(image, row)]
        chain: list[Any] = []
        current = ops.upload(state.anchor)
        for row in rows:
            with timer.stage("warp"):
                current = self.motion.warp(current, row)
            chain.append(current)
        init = self.prepare(chain[-1], rows[-1], reference, timer)
        if upcoming is not None:
            self.prepare.prefetch(upcoming, config.height, config.width)
        source = ops.download(init) if config.controls is not None else None
        result = self._generate(rows[-1], init, source)
        if config.match_output_colors and reference is not None:
            with timer.stage("color"):
                result = self.prepare.match_colors(result, reference)
        frames: list[tuple[Any, FrameParams]] = []
        span = len(rows)
        for index, row in enumerate(rows[:-1]):
            with timer.stage("warp"):
                moved_back = self.motion.back(result, rows[index + 1 :], chain[index], chain[-1])
                frames.append((self._tween(chain[index], moved_back, (index + 1) / span, row), row))
        frames.append((result, rows[-1]))
        return frames

    def _tween(self, previous: Any, following: Any, weight: float, row: FrameParams) -> Any:
        if self.config.flow_cadence is None:
            return self.prepare.ops.tween(previous, following, weight)
        ops = self.frames_on  # optical flow runs on numpy (OpenCV)
        blended = flow_tween(
            ops.download(previous), ops.download(following), weight, self.config.flow_cadence, row.cadence_flow_factor
        )
        return ops.upload(blended)

    def _generate(self, row: FrameParams, init: Any, source: Image | None) -> Any:
        config, timer = self.config, self.timer
        controls: tuple[ControlInput, ...] = ()
        if config.controls is not None:
            with timer.stage("control"):
                controls = config.controls(row, source)
        request = request_for(row, config, img2img=init is not None, controls=controls)
        with timer.stage("model"):
            image = self.prepare.ops.generate(self.generator, request, init)
        if tuple(image.shape) != (config.height, config.width, 3) or str(image.dtype) not in ("uint8", "torch.uint8"):
            raise ValueError(
                f"the generator returned an image of shape {tuple(image.shape)} and dtype {image.dtype} for frame "
                f"{row.frame}; expected ({config.height}, {config.width}, 3) uint8"
            )
        return image


def request_for(
    row: FrameParams, config: LoopConfig, *, img2img: bool, controls: tuple[ControlInput, ...] = ()
) -> GenerationRequest:
    """The generator request of one frame: the schedule row, the size and the controls (the init image,
    when ``img2img``, is added by the frame ops: a numpy array on the host, a tensor on a device)."""
    return GenerationRequest(
        prompt=row.prompt,
        negative_prompt=row.negative_prompt,
        width=config.width,
        height=config.height,
        steps=int(row.steps),
        cfg_scale=row.cfg_scale,
        strength=row.denoise if img2img else 1.0,
        seed=int(row.seed),
        sampler=row.sampler,
        init_image=None,
        controls=controls,
        guess_mode=config.guess_mode,
        noise_multiplier=row.noise_multiplier,
        clip_skip=int(row.clip_skip),
        prompt_parts=row.prompt_parts,
        negative_parts=row.negative_parts,
    )
