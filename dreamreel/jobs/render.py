"""Wiring a render together: settings -> schedule table -> preflight -> run directory -> model -> loop -> video.

Used by ``dreamreel render`` and ``dreamreel still``, and usable from Python. Every check that can
fail on user input runs before any model is loaded.
"""

from __future__ import annotations

import errno
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dreamreel.anim.color import warm_up
from dreamreel.anim.frame_ops import HOST_OPS, FrameOps
from dreamreel.anim.loop import LoopConfig, LoopState, render
from dreamreel.anim.motion import Motion, Motion2D, Motion3D, StillMotion
from dreamreel.anim.protocols import FrameSink, NullProgress, ProgressReporter
from dreamreel.anim.steps import InitPreparer
from dreamreel.anim.timing import StageTimer
from dreamreel.errors import RenderError, SettingsError, check_local_path, did_you_mean, refuse_url
from dreamreel.generation import FrameGenerator, GenerationRequest, Image
from dreamreel.jobs.checks import (
    check_models,
    check_samplers,
    controlnet_models,
    file_sha256,
    find_depth_model,
    fingerprint,
    model_name,
)
from dreamreel.jobs.resume import resume_options, settings_changed
from dreamreel.keyframes.table import ScheduleTable
from dreamreel.media.rundir import SETTINGS, SETTINGS_DEFORUM, RunDirectory, RunSink
from dreamreel.media.video import VideoOptions, preflight
from dreamreel.plan import summary_lines
from dreamreel.settings import Settings, load_settings, resolve_schedules, with_resolved_seed
from dreamreel.settings.io import settings_to_json
from dreamreel.testcard import make_test_card

logger = logging.getLogger(__name__)


CHOICES: dict[str, tuple[str, ...]] = {
    "dtype": ("auto", "fp32", "fp16", "bf16"),
    "offload": ("none", "model", "sequential"),
    "codec": ("h264", "h265", "vp9", "gif"),
    "frame_ops": ("auto", "host", "torch"),
}
"""The allowed values of the options that take one of a few words (the CLI's ``choices`` too)."""

_PATHS = ("out", "models_dir", "audio", "annotators", "control_cache")


@dataclass(frozen=True)
class RenderOptions:
    """Everything ``dreamreel render`` takes besides the settings file.

    The one builder of render options: the CLI makes them with :meth:`from_values` from its parsed
    arguments, Python callers with the constructor or :meth:`from_values`; either way the values are
    checked here (a :class:`~dreamreel.errors.SettingsError` naming the command-line option), and
    paths given as text become :class:`~pathlib.Path`.
    """

    out: Path | None = None
    overwrite: bool = False
    preview: bool = False
    model: str | None = None
    models_dir: Path | None = None
    vae: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    offload: str = "none"
    attention_slicing: bool = False
    vae_tiling: bool = False
    compile: bool = False
    depth_model: str | None = None
    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    audio: Path | None = None
    save_frames: bool = False
    segment_frames: int = 60
    max_frames: int | None = None
    annotators: Path | None = None
    control_cache: Path | None = None
    frame_ops: str = "auto"

    def __post_init__(self) -> None:
        for name in _PATHS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                if not isinstance(value, str) or not value:
                    raise SettingsError(f"must be a path, got {value!r}", key=option_name(name))
                object.__setattr__(self, name, Path(value))
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value is not None and value not in allowed:
                hint = did_you_mean(str(value), allowed)
                raise SettingsError(
                    f"is {value!r}; use one of {', '.join(allowed)}{'.' if hint else ''}{hint}", key=option_name(name)
                )
        _check_whole(self.segment_frames, option_name("segment_frames"), low=1)
        if self.crf is not None:
            _check_whole(self.crf, "--crf", low=0, high=63)
        if self.max_frames is not None:
            _check_whole(self.max_frames, "--frames", low=1)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> RenderOptions:
        """The options among ``values`` (e.g. ``vars(args)`` of the command line; other keys are ignored)."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


_OPTION_NAMES = {"max_frames": "--frames", "out": "--out", "models_dir": "--models-dir"}


def option_name(field_name: str) -> str:
    """The command-line option of a :class:`RenderOptions` field (``max_frames`` -> ``--frames``)."""
    return _OPTION_NAMES.get(field_name, "--" + field_name.replace("_", "-"))


def _check_whole(value: Any, key: str, *, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(f"is {value!r}, not a whole number", key=key)
    if value < low or (high is not None and value > high):
        raise SettingsError(
            f"is {value}; use {low} or more" if high is None else f"is {value}; use {low} to {high}", key=key
        )


class RunFrameSink(FrameSink, Protocol):
    """The sink a render writes into: the loop's :class:`FrameSink` plus the end of the run."""

    def finish(self, *, audio: Path | None, audio_start: float = 0.0, status: str = "done") -> Path | None:
        """Join what was written into the video (None when nothing was) and record the run's status."""
        ...


class ModelPool:
    """Generators kept loaded between the jobs of a batch (by everything that went into loading them).

    Holds the last ``keep`` generators; a job whose model, device, precision, VAE and ControlNets match
    one of them uses it instead of loading again. Generators with cross-frame attention carry state
    from frame to frame and are never shared.
    """

    def __init__(self, keep: int = 1) -> None:
        from collections import OrderedDict

        self.keep = max(1, keep)
        self._items: OrderedDict[tuple[Any, ...], FrameGenerator] = OrderedDict()

    def get(self, key: tuple[Any, ...], load: Callable[[], FrameGenerator]) -> FrameGenerator:
        if key in self._items:
            self._items.move_to_end(key)
            logger.info("using the model already loaded for an earlier job")
            return self._items[key]
        while len(self._items) >= self.keep:
            self._items.popitem(last=False)  # dropped before the next one loads: one model in memory at a time
        generator = load()
        self._items[key] = generator
        return generator

    def models(self) -> set[str]:
        """The model sources held (the first element of each key)."""
        return {str(key[0]) for key in self._items}


@dataclass
class RenderReport:
    """What a render did, for the end-of-run screen."""

    run_dir: Path
    video: Path | None
    frames_written: int
    total_frames: int
    wall_seconds: float
    timer: StageTimer
    finished: bool
    notices: list[str] = field(default_factory=list)
    flicker: float | None = None
    detector_calls: int | None = None
    finished_video: Path | None = None  # the video after the finishing steps (upscale, interpolate)

    def lines(self) -> list[str]:
        status = "finished" if self.finished else f"stopped after {self.frames_written} of {self.total_frames} frames"
        out = [f"render {status} in {self.wall_seconds:.1f} s; run directory {self.run_dir}"]
        if self.video is not None:
            out.append(f"video: {self.video}")
        if self.finished_video is not None:
            out.append(f"finished video: {self.finished_video}")
        if not self.finished:
            out.append(f"continue with: dreamreel render --resume {self.run_dir}")
        if self.flicker is not None:
            out.append(
                f"flicker (motion-compensated change between output frames, lower is steadier): {self.flicker:.2f}"
            )
        if self.detector_calls is not None:
            out.append(f"ControlNet detector calls: {self.detector_calls} (the rest came from the control-map cache)")
        out.append("where the time went:")
        out += ["  " + line for line in self.timer.report(self.wall_seconds)]
        return out


class PreviewGenerator:
    """Motion preview: returns the prepared init unchanged (or a test card on frame 0), no model."""

    def __init__(self, device: str | None = None) -> None:
        self.device = device  # where generate_tensor puts the test card (``--frame-ops torch``)

    def generate(self, request: GenerationRequest) -> Image:
        if request.init_image is not None:
            return request.init_image
        return make_test_card(request.width, request.height)

    def generate_tensor(self, request: GenerationRequest, init: Any) -> Any:
        if init is not None:
            return init
        from dreamreel.anim.torch_ops import to_tensor

        return to_tensor(make_test_card(request.width, request.height), self.device or "cpu")


@dataclass
class Prepared:
    """Everything checked and built before any model loads."""

    settings: Settings
    table: ScheduleTable
    video: VideoOptions
    notices: list[str]
    init: Image | None = None
    source: Any = None  # the input video (Video Input mode)
    audio: Path | None = None
    audio_start: float = 0.0
    color_image: Image | None = None  # colour coherence against an image
    frames: int = 0  # the frames this run renders (``--frames``), at most the table's
    model_path: Path | None = None  # the resolved base model (None in a preview)
    depth_path: str | None = None  # the resolved depth model (3D; None: flat depth)
    finish: FinishPlan | None = None  # the finishing steps, checked (nothing loaded)


@dataclass(frozen=True)
class FinishPlan:
    """The finishing steps of a render, with their files found (see :func:`_check_finish`)."""

    order: tuple[str, ...]
    upscaler: Path | None  # None: Lanczos
    scale: float | None  # None: no upscaling
    engine: str | None  # None: no interpolation
    interpolation_model: Path | None
    x: int = 2
    slow_motion: int = 1


@dataclass
class Loaded:
    """The models of a run, loaded before its run directory is created or touched."""

    generator: FrameGenerator
    motion: Motion
    controls: Any
    timer: StageTimer
    started: float
    ops: FrameOps[Any] = HOST_OPS  # where frames live between two diffusions
    finish_steps: list[Any] = field(default_factory=list)  # dreamreel.finish.stream steps, in order


def render_settings(
    settings_path: Path,
    options: RenderOptions,
    *,
    progress: ProgressReporter | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> RenderReport:
    """Render a settings file into a new run directory."""
    settings = load_settings(settings_path)
    try:
        return render_run(
            settings,
            options,
            name=settings_path.stem,
            source=str(settings_path),
            progress=progress,
            should_stop=should_stop,
        )
    except SettingsError as exc:  # a missing soundtrack, init image, ...: say in which file it was set
        raise exc.locate(str(settings_path)) from exc.__cause__


def render_run(
    settings: Settings,
    options: RenderOptions,
    *,
    name: str = "run",
    source: str | None = None,
    progress: ProgressReporter | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    pool: ModelPool | None = None,
    lease: tuple[str, int] | None = None,
) -> RenderReport:
    """Render validated settings into a new run directory (``options.out`` or ``runs/<name>-<time>``).

    ``pool`` keeps models loaded between the jobs of a batch; ``lease`` (batch job id, attempt) marks the
    run directory as that attempt's (see :meth:`~dreamreel.media.rundir.RunDirectory.take_lease`).
    """
    settings = with_resolved_seed(settings)
    video_source = None
    if settings.mode == "video":
        video_source, settings = open_input_video(settings)
    table = resolve_schedules(settings, source=source)  # the full animation, also with --frames
    frames = _frame_count(options.max_frames, table.max_frames)
    if not options.preview:
        check_samplers(table)
    out = options.out or Path("runs") / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
    RunDirectory.check_free(out, overwrite=options.overwrite)  # before anything slow
    existed = out.exists()
    try:
        # every check and every model load happens before the run directory is written, so a
        # failed start leaves nothing that blocks the next attempt
        prepared = prepare_run(settings, table, options, out, video_source, frames)
        loaded = _load(settings, options, prepared, pool)
        manifest_options = _manifest_options(options, prepared, source)
        run = RunDirectory.create(
            out, settings_files(settings), table, manifest_options, overwrite=options.overwrite, max_frames=frames
        )
        if lease is not None:
            run.take_lease(*lease)
            run.commit()
    except BaseException:
        if not existed and out.is_dir():
            shutil.rmtree(out, ignore_errors=True)  # only what this attempt made (preflight's folder)
        raise
    for line in summary_lines(settings, table, model=None if options.preview else options.model or settings.model):
        logger.info("%s", line)
    if frames < table.max_frames:
        logger.info("rendering the first %d of the animation's %d frames (--frames)", frames, table.max_frames)
    state = LoopState(color_reference=prepared.color_image)
    with _disk_full_says_what_is_safe(run):
        return _run_loop(run, prepared, loaded, options, state, progress, should_stop)


def resume(
    run_dir: Path,
    options: RenderOptions,
    *,
    progress: ProgressReporter | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    pool: ModelPool | None = None,
    lease: tuple[str, int] | None = None,
) -> RenderReport:
    """Continue an interrupted render exactly where its last checkpoint left it (``pool``, ``lease``: as for
    :func:`render_run`)."""
    if options.out is not None and Path(options.out).absolute() != Path(run_dir).absolute():
        raise SettingsError(
            f"--resume continues the run in {run_dir} and writes there; it cannot move to {options.out}. Leave out "
            "--out (or copy the run directory first and resume the copy)",
            key="--out",
        )
    run = RunDirectory.open(run_dir, lease=lease)
    if run.manifest.status == "done":
        return _finish_a_done_run(run, options)
    settings, table = load_settings(run.root / SETTINGS), run.table()
    saved = dict(run.manifest.options)
    frames = run.manifest.max_frames or table.max_frames
    if options.max_frames is not None and options.max_frames != frames:
        raise SettingsError(
            f"this run renders frames 0-{frames - 1} of {table.max_frames} (fixed when it started); --frames "
            f"{options.max_frames} cannot change that on --resume. Resume without --frames, or start a new render "
            f"with --frames {options.max_frames}",
            key="--frames",
        )
    notices = [notice for notice in [settings_changed(saved, Path(run_dir))] if notice]
    picked = resume_options(saved, options)
    merged = RenderOptions(**{**asdict(options), **picked, "out": Path(run_dir), "max_frames": None})
    video_source = open_input_video(settings)[0] if settings.mode == "video" else None
    prepared = prepare_run(settings, table, merged, Path(run_dir), video_source, frames)
    prepared.notices[:0] = notices
    loaded = _load(settings, merged, prepared, pool)
    run.manifest.options.update(_resolved_models(prepared))  # the model may have moved (same hash)
    run.discard_uncommitted()
    run.begin()
    state, pending = run.saved_state()
    logger.info("resuming %s at frame %d of %d", run_dir, state.next_frame, frames)
    with _disk_full_says_what_is_safe(run):
        return _run_loop(run, prepared, loaded, merged, state, progress, should_stop, pending)


def _finish_a_done_run(run: RunDirectory, options: RenderOptions) -> RenderReport:
    """``--resume`` of a render whose frames are all done: the finishing steps that were cut short, if any."""
    settings, table = load_settings(run.root / SETTINGS), run.table()
    done = next(run.root.glob(f"{FINISHED_VIDEO}.*"), None)
    if settings.finish is None or done is not None:
        raise SettingsError(f"the render in {run.root} is already finished", key="--resume")
    picked = resume_options(dict(run.manifest.options), options)
    merged = RenderOptions(**{**asdict(options), **picked, "out": run.root, "max_frames": None})
    started = time.perf_counter()
    timer = StageTimer()
    video = VideoOptions(**run.manifest.options["video"])
    frames = run.manifest.max_frames or table.max_frames
    audio, audio_start = _audio(settings, merged, None)
    prepared = Prepared(settings, table, video, [], frames=frames, audio=audio, audio_start=audio_start)
    prepared.finish = _check_finish(settings, merged)
    with timer.stage("load"):
        steps = _finish_steps(prepared.finish, merged)
    loaded = Loaded(PreviewGenerator(), StillMotion(), None, timer, started, HOST_OPS, steps)
    logger.info("all frames of %s are rendered; finishing them", run.root)
    following = _following_finisher(run, prepared, loaded)
    with timer.stage("finish"):
        finished_video = _finish_following(following, prepared, finished=True)
    report = RenderReport(run.root, run.root / (run.manifest.video or ""), 0, frames, time.perf_counter() - started,
                          timer, True, [])  # fmt: skip
    report.finished_video = finished_video
    return report


def _frame_count(requested: int | None, total: int) -> int:
    """``--frames N``: the first N frames of the animation (all of them when N is not given or larger)."""
    return total if requested is None else min(requested, total)  # >= 1: checked by RenderOptions


def settings_files(settings: Settings) -> dict[str, str]:
    """The settings files of a run directory, by name: native and Deforum form."""
    return {SETTINGS: settings_to_json(settings), SETTINGS_DEFORUM: settings_to_json(settings, deforum=True)}


def open_input_video(settings: Settings) -> tuple[Any, Settings]:
    """Open (and check) the input video of Video Input mode; the settings get its frame count and fps."""
    from dreamreel.media.video_input import VideoSelection, open_video

    assert settings.video_input is not None
    config = settings.video_input
    refuse_url(config.path, key=settings.key_names.get("video_input.path", "video_input.path"), what="video")
    selection = VideoSelection(
        start_frame=config.from_frame,
        end_frame=config.to_frame,
        every_nth=config.every_nth_frame,
        width=settings.width,
        height=settings.height,
        resize_mode=config.resize_mode,
    )
    source = open_video(Path(config.path).expanduser(), selection)
    fps = config.fps or source.output_fps
    updated = settings.model_copy(update={"max_frames": source.frame_count, "fps": fps})
    return source, updated


def prepare_run(
    settings: Settings,
    table: ScheduleTable,
    options: RenderOptions,
    out: Path,
    source: Any,
    frames: int | None = None,
) -> Prepared:
    """Every check that needs no model, and finding every model file (nothing is loaded yet)."""
    frames = table.max_frames if frames is None else frames
    audio, audio_start = _audio(settings, options, source)
    model_path = None if options.preview else check_models(settings, options, table)
    depth_path = find_depth_model(settings, options)
    video, notices = _preflight(settings, options, out, audio, frames)
    init = load_init_image(settings, video.width, video.height)
    color = settings.color_coherence
    color_image = None
    color_key = settings.key_names.get("color_coherence.image", "color_coherence.image")
    if color is not None and color.reference == "image":
        if not color.image:
            raise SettingsError("reference 'image' needs the image's path", key=color_key)
        color_image = load_image(color.image, video.width, video.height, key=color_key)
    if color is not None and color.reference == "video" and source is None:
        raise SettingsError(
            "reference 'video' (Deforum 'Video Input') needs Video Input mode; use 'first_frame' or 'image'",
            key=settings.key_names.get("color_coherence", "color_coherence"),
        )
    if options.frame_ops == "torch" and settings.mode == "3d":
        raise SettingsError(
            "runs the 2D, Video Input and Interpolation modes on torch; the 3D warp and its depth model take "
            "frames on the host. Leave --frame-ops at auto (or host) for a 3D render",
            key="--frame-ops",
        )
    _warn_unused(settings)
    finish = _check_finish(settings, options)
    return Prepared(
        settings, table, video, notices, init, source, audio, audio_start, color_image, frames, model_path, depth_path,
        finish,
    )  # fmt: skip


def _check_finish(settings: Settings, options: RenderOptions) -> FinishPlan | None:
    """The finishing steps with their files found, before anything loads; a preview uses the weights-free
    engines (Lanczos, ffmpeg's minterpolate)."""
    finish = settings.finish
    if finish is None or (finish.upscale is None and finish.interpolate is None):
        return None
    names = settings.key_names
    upscaler: Path | None = None
    if finish.upscale is not None and not options.preview:
        from dreamreel.finish.upscale import find_upscaler, is_plain

        if not is_plain(finish.upscale.model):
            key = names.get("finish.upscale.model", "finish.upscale.model")
            upscaler = find_upscaler(finish.upscale.model, options.models_dir, key=key)
    engine, model = None, None
    interpolate = finish.interpolate
    if interpolate is not None:
        engine = "minterpolate" if options.preview else interpolate.engine
        if engine in ("rife", "film"):
            key = names.get("finish.interpolate.model", "finish.interpolate.model")
            if not interpolate.model:
                raise SettingsError(
                    f"{names.get('finish.interpolate.engine', 'finish.interpolate.engine')} {engine!r} needs its "
                    f"weights: set {key} to the {'flownet.pkl' if engine == 'rife' else 'film_net_fp16.pt'} file, "
                    "or use the engine 'minterpolate' (ffmpeg, no weights)",
                    key=key,
                )
            model = check_local_path(interpolate.model, key=key, what="interpolation model")
            if engine == "film" and not interpolate.allow_torchscript:
                raise SettingsError(
                    f"{model} is a TorchScript program (FILM): loading it runs its code. Allow that with "
                    "finish.interpolate.allow_torchscript: true if you trust the file, or use RIFE or minterpolate",
                    key=names.get("finish.interpolate.allow_torchscript", "finish.interpolate.allow_torchscript"),
                )
    return FinishPlan(
        order=tuple(step for step in finish.order if getattr(finish, step) is not None),
        upscaler=upscaler,
        scale=finish.upscale.scale if finish.upscale is not None else None,
        engine=engine,
        interpolation_model=model,
        x=interpolate.x if interpolate is not None else 2,
        slow_motion=interpolate.slow_motion if interpolate is not None else 1,
    )


def _load(settings: Settings, options: RenderOptions, prepared: Prepared, pool: ModelPool | None = None) -> Loaded:
    """Load the models (after every check passed, before the run directory is written)."""
    started = time.perf_counter()
    timer = StageTimer()
    with timer.stage("load"):
        controls = control_provider(settings, options, prepared.video)
        generator = load_generator(settings, options, prepared.model_path, pool)
        ops = frame_ops(settings, options, generator)
        motion = _motion(settings, prepared.depth_path, prepared.video, ops, timer)
        steps = _finish_steps(prepared.finish, options)
    if ops is not HOST_OPS:
        logger.info("frames stay on %s between diffusions (--frame-ops %s)", ops, options.frame_ops)
    return Loaded(generator, motion, controls, timer, started, ops, steps)


def _finish_steps(plan: FinishPlan | None, options: RenderOptions) -> list[Any]:
    """Load the finishing models (after every check passed)."""
    if plan is None:
        return []
    from dreamreel.finish.engines import make_interpolator
    from dreamreel.finish.stream import InterpolateStep, UpscaleStep
    from dreamreel.finish.upscale import LanczosUpscaler, Upscaler
    from dreamreel.pipelines.generator import pick_device

    device = str(pick_device(options.device)) if plan.upscaler or plan.interpolation_model else "cpu"
    steps: dict[str, Any] = {}
    if plan.scale is not None:
        upscaler: Any = LanczosUpscaler() if plan.upscaler is None else Upscaler.from_file(plan.upscaler, device=device)
        steps["upscale"] = UpscaleStep(upscaler, plan.scale, model_id=_file_id(plan.upscaler))
    if plan.engine is not None:
        interpolator = make_interpolator(
            plan.engine, plan.interpolation_model, allow_torchscript=True, device=device
        )  # FILM's allow_torchscript was checked by _check_finish
        steps["interpolate"] = InterpolateStep(
            interpolator, plan.x, plan.slow_motion, model_id=_file_id(plan.interpolation_model)
        )
    return [steps[name] for name in plan.order]


def _file_id(path: Path | None) -> str:
    if path is None:
        return ""
    stat = path.stat()
    return f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}"


def frame_ops(settings: Settings, options: RenderOptions, generator: FrameGenerator) -> FrameOps[Any]:
    """Where the per-frame operations run (``--frame-ops``): ``auto`` keeps 2D frames on the generator's GPU
    (CUDA/MPS) from the VAE decode to the next encode and runs them with OpenCV on the host otherwise;
    ``torch`` uses the torch operations on the generator's device (also on the CPU); ``host`` never does."""
    device = getattr(generator, "device", None)
    if options.frame_ops == "host" or settings.mode == "3d":
        return HOST_OPS
    if options.frame_ops == "auto":
        on_gpu = device is not None and str(device).split(":")[0] in ("cuda", "mps")
        if not (on_gpu and settings.mode == "2d" and settings.optical_flow_cadence == "none"):
            return HOST_OPS
    from dreamreel.anim.torch_chain import TorchOps
    from dreamreel.pipelines.generator import pick_device

    if device is None:  # the preview: the device the options ask for
        device = pick_device(options.device)
        if isinstance(generator, PreviewGenerator):
            generator.device = str(device)
    return TorchOps(device)


def _warn_unused(settings: Settings) -> None:
    """One warning per setting that is set but that this version does not act on (nothing is ignored silently)."""
    unused = {
        "video_input.mask_path": settings.video_input is not None and settings.video_input.mask_path,
        "color_coherence.grayscale": settings.color_coherence is not None and settings.color_coherence.grayscale,
        "depth.save_maps": settings.mode == "3d" and settings.depth.save_maps,
        "schedules.model": settings.schedules.model is not None,
        "schedules.ddim_eta": settings.schedules.ddim_eta is not None,
        "schedules.ancestral_eta": settings.schedules.ancestral_eta is not None,
    }
    for key, is_set in unused.items():
        if is_set:
            written = settings.key_names.get(key, key)
            logger.warning("%s is set but not supported yet; the render goes on without it", written)


def _audio(settings: Settings, options: RenderOptions, source: Any) -> tuple[Path | None, float]:
    """The soundtrack and where in it the video starts; a given soundtrack is checked here, naming the option or
    the key the user wrote (``--audio``, Deforum's ``soundtrack_path``, ...)."""
    from dreamreel.media.ffmpeg import check_audio_source

    given, key = options.audio, "--audio"
    if given is None and settings.output.audio:
        given, key = Path(settings.output.audio), settings.key_names.get("output.audio", "output.audio")
    if given is not None:
        refuse_url(str(given), key=key, what="soundtrack")
        path = Path(given).expanduser()
        check_audio_source(path, key=key)
        return path, 0.0
    if source is not None and settings.video_input is not None and settings.video_input.keep_audio:
        from dreamreel.media.video_input import audio_range

        if source.info.has_audio:
            return Path(settings.video_input.path).expanduser(), audio_range(source)[0]
    return None, 0.0


@contextmanager
def _disk_full_says_what_is_safe(run: RunDirectory) -> Iterator[None]:
    """A full disk (from Python or from ffmpeg) becomes a RenderError naming the safe frames and the resume command."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise _disk_full(run, exc.filename, exc) from exc
    except RenderError as exc:
        if "No space left on device" not in str(exc) and "Disk quota exceeded" not in str(exc):
            raise
        raise _disk_full(run, None, exc) from exc


def _disk_full(run: RunDirectory, filename: Any, exc: BaseException) -> RenderError:
    where = filename or "the run directory"
    safe = run.safe_frames()
    return RenderError(
        f"disk full while writing {where}: {safe} frames are safe in {run.root}; free some space and run "
        f"dreamreel render --resume {run.root} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    )


def _run_loop(
    run: RunDirectory,
    prepared: Prepared,
    loaded: Loaded,
    options: RenderOptions,
    state: LoopState,
    progress: ProgressReporter | None,
    should_stop: Callable[[], bool],
    pending: list[Image] | None = None,
) -> RenderReport:
    settings, table, video_options = prepared.settings, prepared.table, prepared.video
    started, timer = loaded.started, loaded.timer
    controls, generator, motion = loaded.controls, loaded.generator, loaded.motion
    frames = None
    if prepared.source is not None:
        from dreamreel.media.m2m import VideoFrames

        frames = VideoFrames(prepared.source, flow_guidance=table.numeric.get("flow_guidance"))
    config = LoopConfig(
        width=video_options.width,
        height=video_options.height,
        loopback=settings.mode in ("2d", "3d"),
        init_image=prepared.init,
        match_output_colors=not options.preview and (settings.mode != "video" or settings.temporal.color_match),
        frames=frames,
        controls=controls,
        guess_mode=bool(controls is not None and controls.guess_mode),
        reference_for=video_reference(settings, frames),
        flow_cadence=None if settings.optical_flow_cadence == "none" else settings.optical_flow_cadence,
    )
    # a motion preview shows the camera only: colour matching, contrast, noise and sharpening pile up
    # frame after frame when no diffusion restores the image (halos, blotches), so only warps run
    prepare = InitPreparer(
        color_space=settings.color_coherence.space if settings.color_coherence and not options.preview else None,
        noise_kind=settings.noise_type,
        perlin_octaves=settings.perlin_octaves,
        perlin_persistence=settings.perlin_persistence,
        add_noise=not options.preview,
        sharpen=not options.preview,
        contrast=not options.preview,
        ops=loaded.ops,
    )
    if (
        settings.mode == "video"
        and settings.temporal.color_match
        and prepare.color_space is None
        and not options.preview
    ):
        prepare.color_space = "lab"
    if prepare.color_space is not None and loaded.ops is HOST_OPS:
        with timer.stage("load"):  # OpenCV's colour tables and threads: not in the first matched frame's time
            warm_up(prepare.color_space)
    following = _following_finisher(run, prepared, loaded)
    run_sink = RunSink(
        run,
        video_options,
        segment_frames=options.segment_frames,
        save_frames=options.save_frames,
        frame_info=model_info(generator),
        loop_waiting=timer.waiting,
        on_segment=following.segment if following is not None else None,
    )
    if pending:
        run_sink.replay(pending, state.next_frame - len(pending))
    sink: RunFrameSink = run_sink
    flicker = None
    if frames is not None:
        from dreamreel.media.m2m import FlickerSink

        sink = flicker = FlickerSink(run_sink, frames)
    first = state.next_frame
    final = state
    total = run.manifest.max_frames or table.max_frames
    failed = finished = False
    video = None
    try:
        final = render(
            config, table, generator, sink, motion=motion, prepare=prepare, state=state,
            progress=progress or NullProgress(), should_stop=should_stop, timer=timer, end_frame=total,
        )  # fmt: skip
    except BaseException:
        failed = True
        raise
    finally:
        try:
            sink.close()
            finished = run.manifest.next_frame >= total
            with timer.stage("join"):
                video = sink.finish(
                    audio=prepared.audio, audio_start=prepared.audio_start, status="done" if finished else "interrupted"
                )
        except Exception as exc:
            if not failed:
                raise
            # keep the error that stopped the render (e.g. a full disk), not this follow-up one
            logger.warning("could not write the video of the frames so far: %s", exc)
        finally:
            with timer.stage("finish"):  # what is left after the last frame
                finished_video = _finish_following(following, prepared, finished=finished and not failed)
    wall = time.perf_counter() - started
    report = RenderReport(run.root, video, final.next_frame - first, total, wall, timer, finished, prepared.notices)
    report.finished_video = finished_video
    if flicker is not None:
        report.flicker = flicker.meter.value
    if controls is not None:
        report.detector_calls = controls.detector_calls
    return report


FINISHED_VIDEO = "video_finished"


def _following_finisher(run: RunDirectory, prepared: Prepared, loaded: Loaded) -> Any:
    """The finishing steps following the render's committed segments (None without steps); the segments an
    earlier run committed are queued first (resume)."""
    if not loaded.finish_steps:
        return None
    from fractions import Fraction

    from dreamreel.finish.stream import Finisher
    from dreamreel.jobs.finish import FollowingFinisher

    video = prepared.video
    finisher = Finisher(
        run.root / "finish", loaded.finish_steps, video.width, video.height, Fraction(video.fps_fraction), video
    )
    following = FollowingFinisher(finisher)  # its own timer: it runs beside the loop
    for segment in run.manifest.segment_infos(run.root):
        following.segment(segment)
    return following


def _finish_following(following: Any, prepared: Prepared, *, finished: bool) -> Path | None:
    """Wait for the finishing steps; when the render is complete, finish its last segment and join the video."""
    if following is None:
        return None
    try:
        following.close(complete=finished)
        if not finished:
            return None
        finisher = following.finisher
        out = finisher.folder.parent / f"{FINISHED_VIDEO}{finisher.options.output_suffixes[0]}"
        slow = prepared.finish is not None and prepared.finish.slow_motion > 1
        if slow and prepared.audio is not None:
            logger.warning("the finished video is in slow motion, longer than the sound: it has no sound")
        audio = None if slow else prepared.audio
        return Path(finisher.join(out, audio=audio, audio_start=prepared.audio_start))
    except Exception:
        if finished:
            raise
        logger.warning("could not finish the segments rendered so far", exc_info=True)
        return None


def video_reference(settings: Settings, frames: Any) -> Callable[[int], Image] | None:
    """Colour reference 'video': match to the input frame, refreshed every ``video_every_n_frames``."""
    color = settings.color_coherence
    if color is None or color.reference != "video" or frames is None:
        return None
    every = color.video_every_n_frames
    cached: dict[int, Image] = {}

    def reference(frame: int) -> Image:
        index = frame - frame % every
        if index not in cached:
            cached.clear()
            cached[index] = frames.input_frame(index)
        return cached[index]

    return reference


def control_provider(settings: Settings, options: RenderOptions, video: VideoOptions) -> Any:
    if not settings.controlnet or options.preview:
        return None
    from dreamreel.controlnet.units import ControlProvider
    from dreamreel.pipelines.configs import cache_root

    # shared between runs: rendering the same video again with another prompt runs no detector
    cache = options.control_cache or cache_root() / "controlmaps"
    return ControlProvider(
        settings.controlnet,
        width=video.width,
        height=video.height,
        frames=settings.max_frames,
        annotators=options.annotators,
        cache_dir=cache,
        device=options.device if options.device != "auto" else "cpu",
    )


def _preflight(
    settings: Settings, options: RenderOptions, out: Path, audio: Path | None, frames: int
) -> tuple[VideoOptions, list[str]]:
    video = VideoOptions(
        width=settings.width,
        height=settings.height,
        fps=settings.fps,
        codec=options.codec or settings.output.codec,
        crf=options.crf if options.crf is not None else settings.output.crf,
        preset=options.preset or ("veryfast" if options.preview else settings.output.preset),
    )
    report = preflight(video, out, estimated_frames=frames, audio=audio)
    notices = [report.notice] if report.notice else []
    for notice in notices:
        logger.warning("%s", notice)
    return report.options, notices


def load_init_image(settings: Settings, width: int, height: int) -> Image | None:
    """The init image, RGB, resized to the render size; None when the settings have none."""
    if not settings.init_image:
        return None
    return load_image(settings.init_image, width, height, key=settings.key_names.get("init_image", "init_image"))


def load_image(source: str, width: int, height: int, *, key: str) -> Image:
    """An image file as RGB, resized (Lanczos) to the render size; URLs and unreadable files are errors."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    refuse_url(source, key=key, what="image")
    try:
        with PILImage.open(Path(source).expanduser()) as image:
            rgb = image.convert("RGB")
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise SettingsError(f"cannot read image {source!r}: {exc}", key=key) from exc
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), PILImage.Resampling.LANCZOS)
    return np.asarray(rgb).copy()


def load_generator(
    settings: Settings, options: RenderOptions, model_path: Path | None = None, pool: ModelPool | None = None
) -> FrameGenerator:
    """The run's generator (the preview's stand-in with ``--preview``), from ``pool`` when it holds it."""
    if options.preview:
        return PreviewGenerator()
    model = str(model_path) if model_path is not None else model_name(settings, options)
    from dreamreel.pipelines.generator import DiffusersGenerator, GeneratorOptions

    generator_options = GeneratorOptions(
        device=options.device,
        dtype=options.dtype,  # type: ignore[arg-type]
        vae=options.vae,
        offload=options.offload,  # type: ignore[arg-type]
        attention_slicing=options.attention_slicing,
        vae_tiling=options.vae_tiling,
        compile=options.compile,
        models_dir=options.models_dir,
        controlnets=tuple(controlnet_models(settings)),
        cross_frame_attention=settings.mode == "video" and settings.temporal.cross_frame_attention,
    )

    def load() -> FrameGenerator:
        return DiffusersGenerator.from_source(model, generator_options)

    if pool is None or generator_options.cross_frame_attention:
        return load()
    return pool.get((model, *sorted((k, str(v)) for k, v in asdict(generator_options).items())), load)


def _motion(
    settings: Settings, depth_path: str | None, video: VideoOptions, ops: FrameOps[Any], timer: StageTimer
) -> Motion:
    if settings.mode == "2d":
        return Motion2D(
            video.width, video.height, border=settings.border, perspective_flip=settings.perspective_flip, ops=ops
        )
    if settings.mode == "3d":
        return Motion3D(
            _depth_model(depth_path),
            width=video.width,
            height=video.height,
            border=settings.border,
            perspective_flip=settings.perspective_flip,
            padding_mode=settings.depth.padding_mode,
            sampling_mode=settings.depth.sampling_mode,
            timer=timer,
        )
    return StillMotion()


def _depth_model(depth_path: str | None) -> Any:
    if depth_path is None:
        return None  # depth off, or a preview without the depth model (flat depth)
    from dreamreel.anim.depth import TransformersDepth

    return TransformersDepth.from_pretrained(depth_path)


def model_info(generator: FrameGenerator) -> dict[str, str]:
    path = getattr(generator, "model_path", None)
    if path is None:
        return {}
    info = {"Model": Path(path).stem}
    if Path(path).is_file():
        from dreamreel.pipelines.hashes import sha256_short

        info["Model hash"] = sha256_short(Path(path))
    return info


def _manifest_options(options: RenderOptions, prepared: Prepared, source: str | None = None) -> dict[str, Any]:
    """The options of the run, with absolute paths (a resume may run from another folder) and model fingerprints."""
    data = {k: (str(Path(v).expanduser().absolute()) if isinstance(v, Path) else v) for k, v in asdict(options).items()}
    data["video"] = asdict(prepared.video)
    data.update(_resolved_models(prepared))
    if source and Path(source).is_file():
        data["settings_source"] = str(Path(source).absolute())
        data["settings_sha256"] = file_sha256(Path(source))
    return data


def _resolved_models(prepared: Prepared) -> dict[str, Any]:
    """Where the models of the run are, and what identifies them (so a resume can tell a moved file from another)."""
    data: dict[str, Any] = {"model_path": None, "model_fingerprint": None}
    if prepared.model_path is not None:
        data["model_path"] = str(prepared.model_path)
        data["model_fingerprint"] = fingerprint(prepared.model_path)
    data["depth_model_path"] = prepared.depth_path
    data["depth_fingerprint"] = fingerprint(Path(prepared.depth_path)) if prepared.depth_path else None
    return data
