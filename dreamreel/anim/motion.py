"""Camera motion per mode: how the previous frame is warped into the next one.

A :class:`Motion` warps an image by one frame's motion (``warp``) and, for cadence in-betweens,
moves a later diffusion back to an earlier frame's camera position (``back``). :class:`Motion2D`
works on frames of any :class:`~dreamreel.anim.frame_ops.FrameOps` (numpy on the host, tensors on
a device); :class:`Motion3D` on numpy images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from dreamreel.anim.cadence import flow, warp_by_flow
from dreamreel.anim.frame_ops import HOST_OPS, FrameOps
from dreamreel.anim.timing import StageTimer
from dreamreel.anim.warp2d import motion_matrix_2d, perspective_flip_matrix, warp_with_matrix
from dreamreel.generation import Image
from dreamreel.keyframes.table import FrameParams

if TYPE_CHECKING:  # the depth model and the 3D warp need torch: imported by the 3D motion only
    from dreamreel.anim.depth import DepthModel

Border = Literal["replicate", "wrap"]


class Motion(Protocol):
    """Warps frames for one animation mode."""

    def warp(self, image: Any, params: FrameParams) -> Any:
        """``image`` (at frame ``params.frame - 1``) moved by frame ``params.frame``'s motion."""
        ...

    def back(self, image: Any, rows: Sequence[FrameParams], at: Any, end: Any) -> Any:
        """``image`` (at the camera position after ``rows[-1]``) moved back to before ``rows[0]``.

        ``at`` and ``end`` are the warped previous diffusion at those two positions, for motions that
        estimate the way back from the pictures (optical flow).
        """
        ...


class StillMotion:
    """No motion (Video Input, Interpolation and still images)."""

    def warp(self, image: Any, params: FrameParams) -> Any:
        return image

    def back(self, image: Any, rows: Sequence[FrameParams], at: Any, end: Any) -> Any:
        return image


class Motion2D:
    """Deforum's 2D motion: one 3x3 matrix per frame (``bM @ R @ T`` with the perspective flip),
    applied by ``ops`` (OpenCV on the host by default, or on the frames' device)."""

    def __init__(
        self,
        width: int,
        height: int,
        *,
        border: Border = "replicate",
        perspective_flip: bool = False,
        ops: FrameOps[Any] = HOST_OPS,
    ):
        self.width = width
        self.height = height
        self.border: Border = border
        self.perspective_flip = perspective_flip
        self.ops = ops

    def matrix(self, p: FrameParams) -> np.ndarray:
        """The source-to-destination matrix of frame ``p``."""
        m = motion_matrix_2d(
            self.width,
            self.height,
            angle=p.angle,
            zoom=p.zoom,
            translation_x=p.translation_x,
            translation_y=p.translation_y,
            transform_center_x=p.transform_center_x,
            transform_center_y=p.transform_center_y,
        )
        if self.perspective_flip:
            flip = perspective_flip_matrix(
                p.perspective_flip_theta,
                p.perspective_flip_phi,
                p.perspective_flip_gamma,
                p.perspective_flip_fv,
                self.width,
                self.height,
            )
            m = flip @ m
        return m

    def warp(self, image: Any, params: FrameParams) -> Any:
        return self.ops.warp(image, self.matrix(params), border=self.border)

    def back(self, image: Any, rows: Sequence[FrameParams], at: Any, end: Any) -> Any:
        combined = np.eye(3)
        for row in rows:
            combined = self.matrix(row) @ combined
        return self.ops.warp(image, np.asarray(np.linalg.inv(combined), np.float64), border=self.border)


class Motion3D:
    """Deforum's 3D motion: depth predicted from each frame, then the depth warp (optionally after
    the 2D perspective flip). In-betweens move back along the optical flow between the warped frames.

    The depth model's time goes to ``timer``'s "depth" stage (the render's timer).
    """

    def __init__(
        self,
        depth_model: DepthModel | None,
        *,
        width: int,
        height: int,
        border: Border = "replicate",
        perspective_flip: bool = False,
        padding_mode: str = "border",
        sampling_mode: str = "bicubic",
        device: str = "cpu",
        timer: StageTimer | None = None,
    ) -> None:
        self.depth_model = depth_model
        self.timer = timer or StageTimer()
        self.flip = Motion2D(width, height, border=border, perspective_flip=True) if perspective_flip else None
        self.padding_mode = padding_mode
        self.sampling_mode = sampling_mode
        self.device = device

    def warp(self, image: Image, params: FrameParams) -> Image:
        from dreamreel.anim.warp3d import depth_to_z, warp_3d

        if self.flip is not None:
            flip = perspective_flip_matrix(
                params.perspective_flip_theta,
                params.perspective_flip_phi,
                params.perspective_flip_gamma,
                params.perspective_flip_fv,
                image.shape[1],
                image.shape[0],
            )
            image = warp_with_matrix(image, flip, border=self.flip.border)
        z = None
        if self.depth_model is not None:
            with self.timer.stage("depth"):
                z = depth_to_z(self.depth_model.predict(image), inverse=getattr(self.depth_model, "inverse", True))
        return warp_3d(
            image,
            z,
            translation=(params.translation_x, params.translation_y, params.translation_z),
            rotation_deg=(params.rotation_3d_x, params.rotation_3d_y, params.rotation_3d_z),
            fov_deg=params.fov,
            aspect_ratio=params.aspect_ratio,
            near=params.near,
            far=params.far,
            padding_mode=self.padding_mode,  # type: ignore[arg-type]
            sampling_mode=self.sampling_mode,  # type: ignore[arg-type]
            device=self.device,
        )

    def back(self, image: Image, rows: Sequence[FrameParams], at: Image, end: Image) -> Image:
        # flow(at, end) = f with at(x) ~ end(x + f(x)); sampling ``image`` (aligned with ``end``) at
        # x + f(x) aligns it with ``at``. warp_by_flow samples at x - factor * f(x), hence factor -1.
        return warp_by_flow(image, flow(at, end, "dis_medium"), factor=-1.0)
