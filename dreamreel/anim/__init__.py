"""The frame loop and what happens to a frame: warps, colour coherence, noise, cadence. May import torch
and cv2, never diffusers, never ``dreamreel.media`` (video in and out lives there).

Heavy submodules (3D warp, depth, video) are imported where they are used; the names below are
the small public surface.
"""

from __future__ import annotations

from dreamreel.anim.loop import LoopConfig, LoopState, render
from dreamreel.anim.warp2d import motion_matrix_2d, perspective_flip_matrix, warp_2d

__all__ = ["LoopConfig", "LoopState", "motion_matrix_2d", "perspective_flip_matrix", "render", "warp_2d"]
