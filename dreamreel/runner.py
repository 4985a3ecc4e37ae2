"""Wiring a render together: settings -> schedule table -> preflight -> run directory -> model -> loop -> video.

Used by ``dreamreel render`` and ``dreamreel still``, and usable from Python. Every check that can
fail on user input runs before any model is loaded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from dreamreel.anim.loop import LoopConfig, LoopState, render
from dreamreel.anim.motion import Motion, Motion2D, Motion3D, StillMotion
from dreamreel.anim.protocols import NullProgress, ProgressReporter
from dreamreel.anim.rundir import RunDirectory, RunSink
from dreamreel.anim.steps import InitPreparer
from dreamreel.anim.timing import StageTimer
from dreamreel.anim.video import VideoOptions, preflight
from dreamreel.errors import ModelLoadError, SettingsError
from dreamreel.generation import FrameGenerator, GenerationRequest, Image
from dreamreel.keyframes.table import ScheduleTable
from dreamreel.settings import Settings, load_settings, resolve_schedules, with_resolved_seed
from dreamreel.testcard import make_test_card

logger = logging.getLogger(__name__)

# Deforum's depth algorithm names -> Hugging Face ids (looked up in the local cache only).
DEPTH_MODELS = {
    "midas-3-hybrid": "Intel/dpt-hybrid-midas",
    "midas-3.1-beitlarge": "Intel/dpt-beit-large-512",
    "dpt-large": "Intel/dpt-large",
    "depth-anything": "depth-anything/Depth-Anything-V2-Small-hf",
}


@dataclass(frozen=True)
class RenderOptions:
    """Everything ``dreamreel render`` takes besides the settings file."""

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

    def lines(self) -> list[str]:
        status = "finished" if self.finished else f"stopped after {self.frames_written} of {self.total_frames} frames"
        out = [f"render {status} in {self.wall_seconds:.1f} s; run directory {self.run_dir}"]
        if self.video is not None:
            out.append(f"video: {self.video}")
        if not self.finished:
            out.append(f"continue with: dreamreel render --resume {self.run_dir}")
        out.append("where the time went:")
        out += ["  " + line for line in self.timer.report(self.wall_seconds)]
        return out


class PreviewGenerator:
    """Motion preview: returns the prepared init unchanged (or a test card on frame 0), no model."""

    def generate(self, request: GenerationRequest) -> Image:
        if request.init_image is not None:
            return request.init_image
        return make_test_card(request.width, request.height)


def render_settings(
    settings_path: Path,
    options: RenderOptions,
    *,
    progress: ProgressReporter | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> RenderReport:
    """Render a settings file into a new run directory."""
    settings = with_resolved_seed(load_settings(settings_path))
    if options.max_frames is not None:
        settings = settings.model_copy(update={"max_frames": options.max_frames})
    table = resolve_schedules(settings, source=str(settings_path))
    if not options.preview:
        check_samplers(table)
    out = options.out or Path("runs") / f"{settings_path.stem}-{datetime.now():%Y%m%d-%H%M%S}"
    video_options, notices = _preflight(settings, options, out)
    init = load_init_image(settings, video_options.width, video_options.height)
    run = RunDirectory.create(
        out, settings, table, _manifest_options(options, video_options), overwrite=options.overwrite
    )
    return _run(run, settings, table, video_options, options, LoopState(), init, progress, should_stop, notices)


def resume(
    run_dir: Path,
    options: RenderOptions,
    *,
    progress: ProgressReporter | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> RenderReport:
    """Continue an interrupted render exactly where its last checkpoint left it."""
    run = RunDirectory.open(run_dir)
    if run.manifest.status == "done":
        raise SettingsError(f"the render in {run_dir} is already finished", key="--resume")
    settings, table = run.settings(), run.table()
    saved = dict(run.manifest.options)
    merged = RenderOptions(**{**asdict(options), **_resume_options(saved, options), "out": Path(run_dir)})
    video_options, notices = _preflight(settings, merged, Path(run_dir))
    init = load_init_image(settings, video_options.width, video_options.height)
    run.discard_uncommitted()
    state, pending = run.saved_state()
    logger.info("resuming %s at frame %d of %d", run_dir, state.next_frame, table.max_frames)
    return _run(run, settings, table, video_options, merged, state, init, progress, should_stop, notices, pending)


def _resume_options(saved: dict[str, Any], given: RenderOptions) -> dict[str, Any]:
    """Options that decide the frames (model, preview, sizes, codec) come from the run, not the command line."""
    keys = ("preview", "model", "vae", "codec", "crf", "preset", "depth_model", "audio", "save_frames", "models_dir",
            "segment_frames")  # fmt: skip
    picked = {k: saved[k] for k in keys if k in saved}
    for key in ("models_dir", "audio"):
        if picked.get(key) is not None:
            picked[key] = Path(picked[key])
    return picked


def _run(
    run: RunDirectory,
    settings: Settings,
    table: ScheduleTable,
    video_options: VideoOptions,
    options: RenderOptions,
    state: LoopState,
    init: Image | None,
    progress: ProgressReporter | None,
    should_stop: Callable[[], bool],
    notices: list[str],
    pending: list[Image] | None = None,
) -> RenderReport:
    started = time.perf_counter()
    timer = StageTimer()
    with timer.stage("load"):
        generator = _generator(settings, options)
        motion = _motion(settings, options, video_options)
    config = LoopConfig(
        width=video_options.width,
        height=video_options.height,
        loopback=settings.mode in ("2d", "3d"),
        init_image=init,
        match_output_colors=not options.preview,
    )
    prepare = InitPreparer(
        color_space=settings.color_coherence.space if settings.color_coherence else None,
        noise_kind=settings.noise_type,
        perlin_octaves=settings.perlin_octaves,
        perlin_persistence=settings.perlin_persistence,
        add_noise=not options.preview,
        sharpen=not options.preview,
    )
    sink = RunSink(
        run,
        video_options,
        segment_frames=options.segment_frames,
        save_frames=options.save_frames,
        frame_info=model_info(generator),
    )
    if pending:
        sink.replay(pending, state.next_frame - len(pending))
    first = state.next_frame
    final = state
    try:
        final = render(
            config, table, generator, sink, motion=motion, prepare=prepare, state=state,
            progress=progress or NullProgress(), should_stop=should_stop, checkpoint=sink.checkpoint, timer=timer,
        )  # fmt: skip
    finally:
        sink.close()
        finished = run.manifest.next_frame >= table.max_frames
        audio = options.audio or (Path(settings.output.audio) if settings.output.audio else None)
        with timer.stage("join"):
            video = sink.finish(audio=audio, status="done" if finished else "interrupted")
    wall = time.perf_counter() - started
    return RenderReport(run.root, video, final.next_frame - first, table.max_frames, wall, timer, finished, notices)


def _preflight(settings: Settings, options: RenderOptions, out: Path) -> tuple[VideoOptions, list[str]]:
    video = VideoOptions(
        width=settings.width,
        height=settings.height,
        fps=settings.fps,
        codec=options.codec or settings.output.codec,
        crf=options.crf if options.crf is not None else settings.output.crf,
        preset=options.preset or ("veryfast" if options.preview else settings.output.preset),
    )
    audio = options.audio or (Path(settings.output.audio) if settings.output.audio else None)
    report = preflight(video, out, estimated_frames=settings.max_frames, audio=audio)
    notices = [report.notice] if report.notice else []
    for notice in notices:
        logger.warning("%s", notice)
    return report.options, notices


def check_samplers(table: ScheduleTable) -> None:
    """Every sampler name of the run is known (fails before any model loads, with suggestions)."""
    from dreamreel.pipelines.samplers import check_sampler

    for name in sorted(set(table.text["sampler"])):
        check_sampler(name)


def load_init_image(settings: Settings, width: int, height: int) -> Image | None:
    """The init image, RGB, resized to the render size; None when the settings have none."""
    if not settings.init_image:
        return None
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    source = settings.init_image
    if source.startswith(("http://", "https://")):
        raise SettingsError(
            f"is a URL ({source}); dreamreel does not download. Save the image and give its path",
            key=settings.key_names.get("init_image", "init_image"),
        )
    try:
        with PILImage.open(Path(source).expanduser()) as image:
            rgb = image.convert("RGB")
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise SettingsError(f"cannot read image {source!r}: {exc}", key="init_image") from exc
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), PILImage.Resampling.LANCZOS)
    return np.asarray(rgb).copy()


def _generator(settings: Settings, options: RenderOptions) -> FrameGenerator:
    if options.preview:
        return PreviewGenerator()
    model = options.model or settings.model
    if not model:
        raise SettingsError(
            "no model given: pass --model (a .safetensors checkpoint, a diffusers folder, a hub id in the local cache, "
            'or a name in --models-dir), set "model" in the settings, or use --preview to render the motion only',
            key="--model",
        )
    from dreamreel.pipelines.generator import DiffusersGenerator, GeneratorOptions

    return DiffusersGenerator.from_source(
        model,
        GeneratorOptions(
            device=options.device,
            dtype=options.dtype,  # type: ignore[arg-type]
            vae=options.vae,
            offload=options.offload,  # type: ignore[arg-type]
            attention_slicing=options.attention_slicing,
            vae_tiling=options.vae_tiling,
            compile=options.compile,
            models_dir=options.models_dir,
        ),
    )


def _motion(settings: Settings, options: RenderOptions, video: VideoOptions) -> Motion:
    if settings.mode == "2d":
        return Motion2D(video.width, video.height, border=settings.border, perspective_flip=settings.perspective_flip)
    if settings.mode == "3d":
        return Motion3D(
            _depth_model(settings, options),
            width=video.width,
            height=video.height,
            border=settings.border,
            perspective_flip=settings.perspective_flip,
            padding_mode=settings.depth.padding_mode,
            sampling_mode=settings.depth.sampling_mode,
        )
    return StillMotion()


def _depth_model(settings: Settings, options: RenderOptions) -> Any:
    if not settings.depth.enabled:
        return None
    from dreamreel.anim.depth import TransformersDepth

    name = options.depth_model or DEPTH_MODELS.get(settings.depth.model.lower(), settings.depth.model)
    try:
        return TransformersDepth.from_pretrained(name)
    except ModelLoadError:
        if options.preview:
            logger.warning("depth model %s is not available; the preview uses flat depth", name)
            return None
        raise


def model_info(generator: FrameGenerator) -> dict[str, str]:
    path = getattr(generator, "model_path", None)
    if path is None:
        return {}
    info = {"Model": Path(path).stem}
    if Path(path).is_file():
        from dreamreel.pipelines.hashes import sha256_short

        info["Model hash"] = sha256_short(Path(path))
    return info


def _manifest_options(options: RenderOptions, video: VideoOptions) -> dict[str, Any]:
    data = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()}
    data["video"] = asdict(video)
    return data
