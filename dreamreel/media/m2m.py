"""Video Input mode (mov2mov): each input frame is the init, optionally guided by the previous output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from dreamreel.anim.loop import LoopState
from dreamreel.anim.temporal import FlickerMeter, flow_guided_init, input_flows
from dreamreel.generation import Image
from dreamreel.keyframes.table import FrameParams
from dreamreel.media.rundir import RunSink
from dreamreel.media.video_input import VideoSource


class VideoFrames:
    """The loop's :class:`FrameSource` for Video Input mode.

    Frame ``i``'s init is input frame ``i``; with flow guidance (a per-frame blend weight), the
    previous output warped along the input's own motion is blended in, so details persist from
    frame to frame instead of being re-invented.
    """

    def __init__(self, source: VideoSource, *, flow_guidance: NDArray[np.float64] | None = None) -> None:
        self.source = source
        self.flow_guidance = flow_guidance
        self._inputs: dict[int, Image] = {}
        self._flows: dict[int, tuple[NDArray[np.float32], NDArray[np.float32]]] = {}

    def input_frame(self, frame: int) -> Image:
        """Input frame ``frame`` (the last two are kept, so neighbours cost no second decode)."""
        if frame not in self._inputs:
            self._inputs[frame] = self.source.frame(frame)
            for old in [k for k in self._inputs if k < frame - 1]:
                del self._inputs[old]
        return self._inputs[frame]

    def flows(self, frame: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """(forward, backward) optical flow between input frames ``frame - 1`` and ``frame`` (computed once)."""
        if frame not in self._flows:
            self._flows = {frame: input_flows(self.input_frame(frame - 1), self.input_frame(frame))}
        return self._flows[frame]

    def init_for(self, frame: int, previous_output: Image | None) -> tuple[Image, Image]:
        current = self.input_frame(frame)
        blend = 0.0 if self.flow_guidance is None else float(self.flow_guidance[frame])
        if frame == 0 or previous_output is None or blend <= 0.0:
            return current, current
        previous_input = self.input_frame(frame - 1)
        init = flow_guided_init(previous_output, previous_input, current, blend=blend, flows=self.flows(frame))
        return init, current


class FlickerSink:
    """Wraps a run's sink and measures flicker (motion-compensated change between outputs) as frames pass."""

    def __init__(self, sink: RunSink, frames: VideoFrames) -> None:
        self.sink = sink
        self.frames = frames
        self.meter = FlickerMeter()
        self._last_frame = -2

    def write(self, image: Image, params: FrameParams) -> None:
        follows = params.frame == self._last_frame + 1
        backward = self.frames.flows(params.frame)[1] if follows else None
        self.meter.add(image, self.frames.input_frame(params.frame), backward_flow=backward)
        self._last_frame = params.frame
        self.sink.write(image, params)

    def checkpoint(self, state: LoopState) -> None:
        self.sink.checkpoint(state)

    def close(self) -> None:
        self.sink.close()

    def finish(self, *, audio: Path | None, audio_start: float = 0.0, status: str = "done") -> Path | None:
        return self.sink.finish(audio=audio, audio_start=audio_start, status=status)
