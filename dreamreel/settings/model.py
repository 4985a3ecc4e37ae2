"""dreamreel's native settings: one validated, frozen object per run.

The native file is JSON with ``"dreamreel_settings": 1`` at the top; ``docs/settings.md`` lists
every key. Deforum's flat format is translated into this model by
:mod:`dreamreel.settings.deforum`; Deforum key names appear nowhere else.

Schedules stay strings here (``"0:(1.0), 30:(1.02)"``); they are parsed by
:mod:`dreamreel.keyframes` when the schedule table is resolved.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

SETTINGS_VERSION: Literal[1] = 1

Mode = Literal["2d", "3d", "video", "interpolation", "still"]
SeedBehavior = Literal["iter", "fixed", "random", "ladder", "alternate", "schedule"]
InterpolationMode = Literal["linear", "cubic", "step"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


def _schedule_text(value: object) -> object:
    """Accept a bare number where a schedule is expected (``7`` means ``"0:(7)"``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return f"0:({value})"
    return value


class Schedules(_Model):
    """Keyframe schedules, one string each. ``None`` means "not scheduled": the constant
    setting of the same meaning (e.g. ``steps``, ``sampler``) is used for every frame."""

    # 2D / 3D camera motion (per-frame increments, Deforum semantics)
    angle: str = "0:(0)"
    zoom: str = "0:(1.0)"
    translation_x: str = "0:(0)"
    translation_y: str = "0:(0)"
    translation_z: str = "0:(0)"
    transform_center_x: str = "0:(0.5)"
    transform_center_y: str = "0:(0.5)"
    rotation_3d_x: str = "0:(0)"
    rotation_3d_y: str = "0:(0)"
    rotation_3d_z: str = "0:(0)"
    perspective_flip_theta: str = "0:(0)"
    perspective_flip_phi: str = "0:(0)"
    perspective_flip_gamma: str = "0:(0)"
    perspective_flip_fv: str = "0:(53)"
    fov: str = "0:(70)"
    near: str = "0:(200)"
    far: str = "0:(10000)"
    aspect_ratio: str = "0:(1)"
    # diffusion
    strength: str = "0:(0.65)"
    cfg_scale: str = "0:(7)"
    noise: str = "0:(0.065)"
    contrast: str = "0:(1.0)"
    noise_multiplier: str | None = "0:(1.05)"
    antiblur_amount: str = "0:(0.1)"
    antiblur_kernel: str = "0:(5)"
    antiblur_sigma: str = "0:(1)"
    antiblur_threshold: str = "0:(0)"
    cadence_flow_factor: str = "0:(1)"
    seed: str = '0:(s), 1:(-1), "max_f-2":(-1), "max_f-1":(s)'
    steps: str | None = None
    clip_skip: str | None = None
    ddim_eta: str | None = None
    ancestral_eta: str | None = None
    # text schedules
    sampler: str | None = None
    model: str | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_constants(cls, value: object) -> object:
        return _schedule_text(value)


NUMERIC_SCHEDULES: tuple[str, ...] = tuple(
    name for name, field in Schedules.model_fields.items() if name not in ("sampler", "model")
)
TEXT_SCHEDULES: tuple[str, ...] = ("sampler", "model")


class ColorCoherence(_Model):
    """Histogram matching of every frame against a reference, to stop colours drifting."""

    space: Literal["lab", "hsv", "rgb"] = "lab"
    reference: Literal["first_frame", "image", "video"] = "first_frame"
    image: str | None = None
    video_every_n_frames: int = Field(1, ge=1)
    grayscale: bool = False


class Depth(_Model):
    """3D mode: depth estimation and the depth warp."""

    enabled: bool = True
    model: str = "Midas-3-Hybrid"
    midas_weight: float = 0.2
    padding_mode: Literal["border", "reflection", "zeros"] = "border"
    sampling_mode: Literal["bicubic", "bilinear", "nearest"] = "bicubic"
    save_maps: bool = False


ResizeMode = Literal["just_resize", "crop_and_resize", "resize_and_fill"]


class VideoInput(_Model):
    """Video Input mode (mov2mov): every (n-th) frame of a video is the img2img init.

    The output has one frame per selected input frame and, unless ``fps`` is set, the source's
    frame rate divided by ``every_nth_frame``, so it lasts as long as the source and its audio.
    """

    path: str
    every_nth_frame: int = Field(1, ge=1)
    from_frame: int = Field(0, ge=0)
    to_frame: int = -1  # last source frame, inclusive; -1 = to the end
    resize_mode: ResizeMode = "crop_and_resize"
    fps: float | None = Field(None, gt=0)
    keep_audio: bool = True
    mask_path: str | None = None


class ControlNetUnit(_Model):
    """One ControlNet: a model, a preprocessor, where its control images come from, and schedules.

    ``input`` is None for the current video frame (Video Input mode) or the init image; otherwise a
    video, a folder of images (sorted by name, one per frame) or one image for every frame.
    """

    preprocessor: str = "none"
    model: str | None = None  # None: the usual ControlNet 1.1 model for the preprocessor
    weight: str = "0:(1)"
    guidance_start: str = "0:(0.0)"
    guidance_end: str = "0:(1.0)"
    input: str | None = None
    control_mode: Literal["balanced", "prompt", "controlnet"] = "balanced"
    resize_mode: ResizeMode = "crop_and_resize"
    detect_resolution: int = Field(512, ge=64, le=4096)
    threshold_a: float = 100.0  # canny low threshold
    threshold_b: float = 200.0  # canny high threshold

    @field_validator("weight", "guidance_start", "guidance_end", mode="before")
    @classmethod
    def _numbers_are_constants(cls, value: object) -> object:
        return _schedule_text(value)


class Temporal(_Model):
    """Video-to-video consistency aids."""

    color_match: bool = True  # LAB-match every output to the first output
    flow_guidance: str | None = None  # schedule of the blend weight of the flow-warped previous output, e.g. "0:(0.5)"
    cross_frame_attention: bool = False


class Parseq(_Model):
    """Per-frame values from a Parseq manifest (its ``rendered_frames``)."""

    manifest: str
    use_deltas: bool = True


class Output(_Model):
    """The video file."""

    codec: Literal["h264", "h265", "vp9", "gif"] = "h264"
    crf: int = Field(17, ge=0, le=63)
    preset: str = "slow"
    audio: str | None = None


class FinishUpscale(_Model):
    """Upscaling the finished frames: an upscaler file or name (A1111 ``models/ESRGAN``...), or ``lanczos``."""

    model: str = "lanczos"
    scale: float = Field(2.0, gt=0, le=16)


class FinishInterpolate(_Model):
    """Frame interpolation: ``x - 1`` new frames between every two; ``slow_motion`` divides the frame rate."""

    engine: Literal["rife", "film", "minterpolate"] = "rife"
    model: str | None = None  # RIFE flownet.pkl or FILM .pt (minterpolate needs none)
    x: int = Field(2, ge=2, le=64)
    slow_motion: int = Field(1, ge=1, le=10)
    allow_torchscript: bool = False  # FILM's .pt is a TorchScript program: it runs code when loaded


class Finish(_Model):
    """What happens to the rendered video: the steps run in ``order`` on each committed segment."""

    upscale: FinishUpscale | None = None
    interpolate: FinishInterpolate | None = None
    order: tuple[Literal["upscale", "interpolate"], ...] = ("upscale", "interpolate")

    @field_validator("order")
    @classmethod
    def _each_step_once(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if sorted(value) != ["interpolate", "upscale"]:
            raise ValueError('lists each step once, e.g. ["upscale", "interpolate"]')
        return value


class Settings(_Model):
    """Everything a run needs, validated. Frozen: nothing changes it during a run."""

    dreamreel_settings: Literal[1] = SETTINGS_VERSION
    mode: Mode = "2d"
    width: int = Field(512, ge=8, le=8192)
    height: int = Field(512, ge=8, le=8192)
    max_frames: int = Field(120, ge=1, le=1_000_000)
    fps: float = Field(15.0, gt=0, le=1000)
    bpm: float | None = Field(None, gt=0)

    seed: int = Field(-1, ge=-1, le=2**32 - 1)
    seed_behavior: SeedBehavior = "iter"
    seed_iter_n: int = Field(1, ge=1)
    sampler: str = "Euler a"
    steps: int = Field(25, ge=1, le=1000)
    model: str | None = None

    init_image: str | None = None
    init_strength: float = Field(0.8, ge=0.0, le=1.0)

    prompts: dict[str, str] = Field(default_factory=lambda: {"0": "a lighthouse on a cliff at dusk, oil painting"})
    positive_prompt: str = ""
    negative_prompt: str = ""
    prompt_blend: bool = False

    schedules: Schedules = Field(default_factory=Schedules)
    interpolation: dict[str, InterpolationMode] = Field(default_factory=dict)

    border: Literal["replicate", "wrap"] = "replicate"
    perspective_flip: bool = False
    diffusion_cadence: int = Field(1, ge=1, le=50)
    optical_flow_cadence: Literal["none", "dis_medium", "dis_fine", "farneback"] = "none"
    noise_type: Literal["perlin", "uniform"] = "perlin"
    perlin_octaves: int = Field(4, ge=1, le=7)
    perlin_persistence: float = Field(0.5, gt=0, le=1)
    color_coherence: ColorCoherence | None = Field(default_factory=ColorCoherence)
    depth: Depth = Field(default_factory=Depth)
    video_input: VideoInput | None = None
    controlnet: tuple[ControlNetUnit, ...] = ()
    temporal: Temporal = Field(default_factory=Temporal)
    parseq: Parseq | None = None
    output: Output = Field(default_factory=Output)
    finish: Finish | None = None

    # Where each value came from in the user's file (dotted native path -> key as written), so
    # errors found later (e.g. in a schedule) name the key the user typed. Not part of the settings.
    _key_names: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def key_names(self) -> dict[str, str]:
        return self._key_names

    def __copy__(self) -> Settings:
        # ``model_copy()`` and ``copy.copy`` copy private attributes shallowly; give the copy its own
        # key names (with the same entries), so that updating one copy's names leaves the other's alone.
        copy = super().__copy__()
        copy._key_names = dict(self._key_names)
        return copy

    def __eq__(self, other: object) -> bool:
        # Settings are equal when their values are; where they were read from does not matter.
        if not isinstance(other, Settings):
            return NotImplemented
        return self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]

    @field_validator("interpolation")
    @classmethod
    def _known_schedules(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(NUMERIC_SCHEDULES))
        if unknown:
            raise ValueError(f"no numeric schedule named {', '.join(unknown)}; known: {', '.join(NUMERIC_SCHEDULES)}")
        return value

    @model_validator(mode="after")
    def _video_mode_needs_a_video(self) -> Settings:
        if self.mode == "video" and self.video_input is None:
            raise ValueError('mode "video" needs "video_input": {"path": "input.mp4"}')
        return self

    @field_validator("prompts")
    @classmethod
    def _some_prompt(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError('needs at least one prompt, e.g. {"0": "a lighthouse at dusk"}')
        return value
