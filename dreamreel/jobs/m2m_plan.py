"""One long m2m (Video Input) render split into chunks that any number of workers render, then joined.

An m2m frame depends on its own input frame, and only a little on the frames before it (flow
guidance blends in the previous output; colour matching and cross-frame attention look at the
first frame). So a long video is cut into overlapping chunks, each rendered on its own by
whichever worker takes it, and the overlaps are cross-faded when the chunks are joined. This
module is executor-agnostic: plain functions of a plan folder that a local loop or Ray tasks call.

Steps (each idempotent; every file is written atomically)::

    plan = plan_m2m(settings, options, out)        # every check a render makes, before any model loads
    render_anchor(plan)                            # the anchor frame, first (one diffusion)
    for index in range(len(plan.chunks)):          # in any order, on any worker, also twice
        render_chunk(plan, index)
    assemble(plan)                                 # out/video.mp4, with the input's sound

The plan folder::

    OUT/
      plan.json              the plan (the commit point of planning): settings (native JSON text), options,
                             video options, the input video (path, size, SHA-256, frame count), the sound, the
                             model and its fingerprint, the anchor frame, the chunks, and ``hash``: the SHA-256
                             of all of it
      schedule.csv           every per-frame value (seeds too), bit-exact; every worker reads it, never
                             re-resolves the schedules
      anchor.png             the anchor frame's output (lossless), and anchor.json: its frame, the plan's hash,
                             the SHA-256 of its pixels
      chunks/0000/           one folder per chunk:
        frames/              the chunk's frames as raw arrays (.npy, lossless), written and fsynced frame by
                             frame (the resume point); once the chunk is done only the overlap frames stay
        segments/            the chunk's core frames (those no other chunk renders) as one video segment
        chunk.json           the done marker: the plan's hash, the anchor's SHA-256, the segment (and its
                             SHA-256) and the overlap frames
        started.json         the plan's hash and the anchor's SHA-256 the frames in frames/ were rendered with
        worker.json          the process rendering the chunk (while it does)
      blends/                the cross-faded overlap frames, one segment per overlap (made by assemble)
      video.mp4              the joined video (packets copied, not re-encoded) with the input's sound

Chunk ``k`` renders output frames ``[start_k, end_k)``; consecutive chunks overlap by ``overlap``
frames (``start_{k+1} = end_k - overlap``). Chunk ``k``'s *core* is its range less the overlap
with its neighbours; the overlap ``[start_{k+1}, end_k)`` is blended linearly, frame ``i`` of it
(0-based) as ``(1 - w) * chunk k + w * chunk k+1`` with ``w = (i + 1) / (overlap + 1)``. Every
output frame comes from exactly one segment: a chunk's core segment or an overlap's blend segment,
all encoded with the plan's video options (H.264: stitchable; the encoder's thread count is pinned
in the plan, because x264's output depends on it), so ``join_segments`` copies their packets.

Determinism: a chunk's frames are a pure function of the plan and the chunk's index.

- Per-frame values (seeds from ``seed_behavior``, prompts, strengths, flow guidance) come from the
  plan's ``schedule.csv``, by output frame index, exactly as in one render of the whole video.
- The anchor (frame 0 by default) is rendered first. Every chunk matches its colours against the
  anchor's output (colour coherence's ``first_frame`` reference, and ``temporal.color_match``), not
  against its own first output; an ``image`` or ``video`` reference is used as in a render.
- With cross-frame attention, a chunk first generates the anchor frame again without writing it, so
  the attention's "first frame" is the anchor for every chunk (one extra diffusion per chunk).
- A chunk's first frame has no previous output, so it gets no flow guidance (its input frame is its
  init); the cross-fade hides the seam.
- Interrupted (``should_stop``, a crash, ``kill -9``), a chunk resumes at the first frame missing from
  ``frames/``; its previous output (for flow guidance) is read back losslessly. The state of
  cross-frame attention (hidden states of every decoder layer at every step) is not saved, so a chunk
  with cross-frame attention that was interrupted renders again from its first frame.
- Segments are encoded from the lossless frames only when the chunk is complete, and the blends only
  from the lossless overlap frames, so ``video.mp4`` is bit-identical whatever the number of workers,
  the order the chunks finish in, and after interruptions.

Not guaranteed: the same bits on different hardware or software (GPU models, CPU vs GPU, torch's
CPU thread count, torch, diffusers or ffmpeg versions, the model file); workers are assumed to run
the same stack. A generator renders one chunk at a time (its attention state is the chunk's). The plan
keeps absolute paths (input video, model, sound), so workers on other machines need the files at the
same paths (a shared file system; a ``generator`` handed in spares only the model's). Two processes must not
render the same chunk at the same time (on one machine the second is refused; across machines the
executor must not do it). Finishing steps (``finish``) and ``--save-frames`` are not supported here.

Reuses the render job's steps (:mod:`dreamreel.jobs.render`: the checks and the preparation, the
model, the ControlNet provider, frame ops) and configures the frame loop as its ``_run_loop`` does
(:func:`_job` repeats those lines: keep the two in step), so a chunk renders its frames exactly as a
render of the whole video would, except for the three differences above (colour reference, attention
priming, no flow guidance at a chunk's first frame).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dreamreel.anim.color import warm_up
from dreamreel.anim.frame_ops import HOST_OPS
from dreamreel.anim.loop import LoopConfig, LoopState, render
from dreamreel.anim.motion import StillMotion
from dreamreel.anim.protocols import FrameSink, NullProgress, ProgressReporter
from dreamreel.anim.steps import InitPreparer
from dreamreel.anim.timing import StageTimer
from dreamreel.errors import RenderError, SettingsError
from dreamreel.fileio import atomic_open, atomic_write_text
from dreamreel.generation import FrameGenerator, Image
from dreamreel.jobs.checks import check_samplers, fingerprint, fingerprint_text
from dreamreel.jobs.render import (
    ModelPool,
    RenderOptions,
    control_provider,
    frame_ops,
    load_generator,
    load_image,
    open_input_video,
    prepare_run,
    video_reference,
)
from dreamreel.keyframes.table import FrameParams, ScheduleTable
from dreamreel.media.join import join_segments
from dreamreel.media.options import SegmentInfo, VideoOptions
from dreamreel.media.video import SegmentWriter
from dreamreel.settings import Settings, resolve_schedules, settings_from_mapping, settings_to_json, with_resolved_seed

logger = logging.getLogger(__name__)

PLAN = "plan.json"
SCHEDULE = "schedule.csv"
ANCHOR = "anchor.png"
ANCHOR_INFO = "anchor.json"
CHUNK_INFO = "chunk.json"
STARTED = "started.json"
WORKER = "worker.json"
PLAN_VERSION = 1
ENCODER_THREADS = 4
"""Encoder threads pinned in a plan (when the options leave them to ffmpeg): x264's output depends on them."""

_PLAN_FILES = (PLAN, SCHEDULE, ANCHOR, ANCHOR_INFO, "chunks", "blends")


@dataclass(frozen=True)
class Chunk:
    """Chunk ``index``: output frames ``[start, end)``; ``[core_start, core_end)`` are its alone."""

    index: int
    start: int
    end: int
    core_start: int
    core_end: int

    @property
    def head(self) -> range:
        """The frames it shares with the chunk before (blended with that chunk's tail)."""
        return range(self.start, self.core_start)

    @property
    def tail(self) -> range:
        """The frames it shares with the chunk after (blended with that chunk's head)."""
        return range(self.core_end, self.end)


def split_chunks(frames: int, chunk_frames: int, overlap: int) -> tuple[Chunk, ...]:
    """Chunks of ``chunk_frames`` frames (the last may be shorter) covering ``frames`` frames, consecutive
    chunks sharing ``overlap`` frames. Needs ``chunk_frames > 2 * overlap``, so every core holds a frame."""
    bounds: list[tuple[int, int]] = []
    start = 0
    while True:
        end = min(start + chunk_frames, frames)
        bounds.append((start, end))
        if end >= frames:
            break
        start = end - overlap
    last = len(bounds) - 1
    return tuple(
        Chunk(k, s, e, s + overlap if k > 0 else s, e - overlap if k < last else e) for k, (s, e) in enumerate(bounds)
    )


@dataclass(frozen=True)
class M2MPlan:
    """A chunked m2m render, as planned in ``root/plan.json`` (read it with :meth:`load`).

    Attributes:
        root: the plan folder.
        hash: SHA-256 of the plan's content (everything in ``plan.json`` but the hash).
        settings: the validated settings (seed resolved, frame count and fps of the input).
        options: the render options (paths absolute; ``out`` and ``overwrite`` unset).
        video: the video options of every segment (size after the preflight, encoder threads pinned).
        input_frames: the frames of the input video's selection.
        frames: the output frames (``input_frames``, or fewer with ``options.max_frames``).
        anchor: the anchor frame's index.
        chunk_frames: frames per chunk (the last may have fewer).
        overlap: frames shared by consecutive chunks.
        chunks: the chunks, in order.
        audio: the sound of the video (the input's own unless the options or settings name one), or None.
        audio_start: seconds to skip at the start of ``audio``.
        model_path: the resolved base model (None in a preview).
        data: ``plan.json`` as read.
    """

    root: Path
    hash: str
    settings: Settings
    options: RenderOptions
    video: VideoOptions
    input_frames: int
    frames: int
    anchor: int
    chunk_frames: int
    overlap: int
    chunks: tuple[Chunk, ...]
    audio: Path | None
    audio_start: float
    model_path: Path | None
    data: Mapping[str, Any]

    @classmethod
    def load(cls, out: Path) -> M2MPlan:
        """Read the plan in ``out`` (checking its hash).

        Raises:
            SettingsError: there is no plan, or it is damaged or of another version.
        """
        root = Path(out)
        data = _read_plan(root)
        if data is None:
            raise SettingsError(f"{root} holds no m2m plan ({PLAN}); make one with plan_m2m", key="out")
        settings = settings_from_mapping(json.loads(data["settings"]), source=str(root / PLAN))
        chunks = split_chunks(data["frames"], data["chunk_frames"], data["overlap"])
        if [[c.start, c.end] for c in chunks] != data["chunks"]:
            raise SettingsError(f"{root / PLAN} is damaged: its chunks do not follow from its sizes", key="out")
        audio = data["audio"]
        return cls(
            root=root,
            hash=data["hash"],
            settings=settings,
            options=RenderOptions(**data["options"]),
            video=VideoOptions(**data["video"]),
            input_frames=data["input"]["frames"],
            frames=data["frames"],
            anchor=data["anchor"],
            chunk_frames=data["chunk_frames"],
            overlap=data["overlap"],
            chunks=chunks,
            audio=Path(audio["path"]) if audio["path"] else None,
            audio_start=float(audio["start"]),
            model_path=Path(data["model"]["path"]) if data["model"]["path"] else None,
            data=data,
        )

    def chunk_folder(self, index: int) -> Path:
        """Where chunk ``index`` is rendered."""
        return self.root / "chunks" / f"{self._chunk(index).index:04d}"

    @property
    def cross_frame_attention(self) -> bool:
        """Whether the frames attend to the anchor (and the previous frame)."""
        return not self.options.preview and self.settings.temporal.cross_frame_attention

    @property
    def anchor_colors(self) -> bool:
        """Whether the chunks match their colours against the anchor's output (first-frame reference)."""
        color = self.settings.color_coherence
        reference = color.reference if color is not None else "first_frame"
        return not self.options.preview and self.settings.temporal.color_match and reference == "first_frame"

    @property
    def needs_anchor(self) -> bool:
        """Whether the chunks refer to the anchor (otherwise :func:`render_anchor` is optional)."""
        return self.cross_frame_attention or self.anchor_colors

    @property
    def video_path(self) -> Path:
        """The joined video :func:`assemble` writes."""
        return self.root / f"video{self.video.output_suffixes[0]}"

    def _chunk(self, index: int) -> Chunk:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self.chunks):
            raise SettingsError(f"is {index!r}; the plan has chunks 0-{len(self.chunks) - 1}", key="chunk")
        return self.chunks[index]


@dataclass(frozen=True)
class ChunkResult:
    """What :func:`render_chunk` did.

    Attributes:
        index: the chunk.
        folder: its folder.
        finished: all its frames are rendered and its segment is written (``chunk.json``).
        skipped: it was finished before the call (nothing was rendered).
        frames_rendered: frames rendered by this call (the anchor priming not counted).
        seconds: wall time of the call.
    """

    index: int
    folder: Path
    finished: bool
    skipped: bool
    frames_rendered: int
    seconds: float


# --- planning ----------------------------------------------------------------------------------


def plan_m2m(
    settings: Settings,
    options: RenderOptions,
    out: Path,
    *,
    chunk_frames: int = 24,
    overlap: int = 4,
    anchor: int = 0,
) -> M2MPlan:
    """Check a Video Input render as ``render_run`` would (before any model loads) and plan it in chunks.

    Writes ``out/plan.json`` and ``out/schedule.csv``. Planning the same inputs again returns the same
    plan and writes nothing (a seed of -1 keeps the seed the plan resolved it to); a different plan
    in a folder that holds one is refused, unless ``options.overwrite`` (which deletes the old plan's
    anchor, chunks and video; the same plan is kept, with what was rendered for it).

    Args:
        settings: validated settings in Video Input mode.
        options: the render options (``out`` is ignored: the plan folder is ``out``; ``max_frames`` keeps
            the first frames).
        out: the plan folder (missing, empty, or holding a plan).
        chunk_frames: frames per chunk, more than ``2 * overlap``.
        overlap: frames shared (and cross-faded) by consecutive chunks, 0 for hard cuts.
        anchor: the anchor frame, the colour and attention reference of every chunk.

    Raises:
        SettingsError: a bad setting, option, input or size; another plan in ``out``.
        RenderError: the video cannot be written there (the preflight).
    """
    root = Path(out)
    _check_whole(chunk_frames, "chunk_frames", low=1)
    _check_whole(overlap, "overlap", low=0)
    _check_whole(anchor, "anchor", low=0)
    if chunk_frames <= 2 * overlap:
        raise SettingsError(
            f"is {overlap} with chunk_frames {chunk_frames}; a chunk must be longer than its two overlaps "
            f"(chunk_frames > 2 * overlap), e.g. overlap {max(0, (chunk_frames - 1) // 2)}",
            key="overlap",
        )
    if settings.mode != "video" or settings.video_input is None:
        raise SettingsError(
            f"is {settings.mode!r}; a chunked m2m renders Video Input settings (mode 'video' with video_input)",
            key=settings.key_names.get("mode", "mode"),
        )
    finish = settings.finish
    if finish is not None and (finish.upscale is not None or finish.interpolate is not None):
        raise SettingsError(
            "finishing steps are not run by a chunked m2m; remove them and run dreamreel upscale / interpolate "
            "on the assembled video",
            key=settings.key_names.get("finish", "finish"),
        )
    if options.save_frames:
        raise SettingsError("is not supported by a chunked m2m (the chunks keep lossless frames)", key="--save-frames")
    overwrite = options.overwrite
    existing = _existing_plan(root, overwrite=overwrite)
    settings = _absolute_paths(settings)
    if settings.seed == -1 and existing is not None:
        settings = settings.model_copy(update={"seed": json.loads(existing["settings"])["seed"]})
    settings = with_resolved_seed(settings)
    source, settings = open_input_video(settings)
    table = resolve_schedules(settings)
    frames = table.max_frames if options.max_frames is None else min(options.max_frames, table.max_frames)
    if anchor >= frames:
        raise SettingsError(f"is {anchor}; the video has frames 0-{frames - 1}", key="anchor")
    if not options.preview:
        check_samplers(table)
    options = dataclasses.replace(options, out=None, overwrite=False)
    existed = root.exists()
    try:
        prepared = prepare_run(settings, table, options, root, source, frames)
    except BaseException:
        if not existed and root.is_dir():
            shutil.rmtree(root, ignore_errors=True)  # only the preflight's folder
        raise
    finally:
        source.close()
    video_input = settings.video_input
    assert video_input is not None
    video = prepared.video
    if not video.threads:
        video = dataclasses.replace(video, threads=ENCODER_THREADS)
    chunks = split_chunks(frames, chunk_frames, overlap)
    schedule = table.to_csv()
    model_path = prepared.model_path
    content: dict[str, Any] = {
        "dreamreel_m2m_plan": PLAN_VERSION,
        "settings": settings_to_json(settings),
        "options": _options_data(options),
        "video": dataclasses.asdict(video),
        "input": {**_file_identity(Path(video_input.path)), "frames": source.frame_count},
        "frames": frames,
        "fps": settings.fps,
        "audio": {"path": str(prepared.audio.absolute()) if prepared.audio else None, "start": prepared.audio_start},
        "model": {
            "path": str(model_path) if model_path else None,
            "fingerprint": fingerprint(model_path) if model_path else None,
        },
        "schedule_sha256": hashlib.sha256(schedule.encode("utf-8")).hexdigest(),
        "anchor": anchor,
        "chunk_frames": chunk_frames,
        "overlap": overlap,
        "chunks": [[c.start, c.end] for c in chunks],
    }
    digest = _content_hash(content)
    if existing is not None and existing["hash"] == digest:
        logger.info("%s already holds this plan (%s)", root, digest[:12])
        return M2MPlan.load(root)
    if existing is not None and not overwrite:
        differs = sorted(k for k in {*content, *existing} - {"hash"} if content.get(k) != existing.get(k))
        raise SettingsError(
            f"{root} holds another m2m plan (it differs in: {', '.join(differs)}); its chunks would not fit this "
            "one. Choose another folder, or pass overwrite to replace the plan and everything rendered for it",
            key="out",
        )
    _remove_plan(root)
    atomic_write_text(root / SCHEDULE, schedule)
    atomic_write_text(root / PLAN, json.dumps({**content, "hash": digest}, indent=2) + "\n")  # the commit point
    plan = M2MPlan.load(root)
    logger.info(
        "planned %d frames in %d chunks of %d frames (overlap %d, anchor frame %d) in %s",
        frames, len(chunks), chunk_frames, overlap, anchor, root,
    )  # fmt: skip
    return plan


def _options_data(options: RenderOptions) -> dict[str, Any]:
    """The options as JSON values, paths absolute (a worker may run in another folder)."""
    return {
        k: (str(Path(v).expanduser().absolute()) if isinstance(v, Path) else v)
        for k, v in dataclasses.asdict(options).items()
    }


def _check_whole(value: Any, key: str, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(f"is {value!r}, not a whole number", key=key)
    if value < low:
        raise SettingsError(f"is {value}; use {low} or more", key=key)


def _existing_plan(root: Path, *, overwrite: bool) -> dict[str, Any] | None:
    """The plan already in ``root`` (None: none); a non-empty folder without a plan is refused unless ``overwrite``."""
    if root.exists() and not root.is_dir():
        raise SettingsError(f"{root} is a file, not a folder; choose another plan folder", key="out")
    data = _read_plan(root, strict=not overwrite)
    if data is None and root.is_dir() and any(root.iterdir()) and not overwrite:
        raise SettingsError(
            f"{root} exists, is not empty and holds no m2m plan; choose another folder or pass overwrite", key="out"
        )
    return data


def _read_plan(root: Path, *, strict: bool = True) -> dict[str, Any] | None:
    path = root / PLAN
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        valid = isinstance(data, dict) and data.get("hash") == _content_hash(
            {k: v for k, v in data.items() if k != "hash"}
        )
    except (OSError, json.JSONDecodeError):
        data, valid = None, False
    if valid and data is not None and data.get("dreamreel_m2m_plan") == PLAN_VERSION:
        return data
    if not strict:
        return None
    raise SettingsError(f"{path} is damaged or from another version; plan again in another folder", key="out")


def _remove_plan(root: Path) -> None:
    """Delete an old plan and everything rendered for it (only the plan's own files)."""
    for name in (*_PLAN_FILES, "video.mp4"):
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    for path in root.glob("video.*"):
        path.unlink(missing_ok=True)


def _content_hash(content: Mapping[str, Any]) -> str:
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _absolute_paths(settings: Settings) -> Settings:
    """The input video's path made absolute, so every worker opens the same file whatever its folder."""
    video = settings.video_input
    assert video is not None
    absolute = str(Path(video.path).expanduser().absolute())
    if absolute == video.path:
        return settings
    return settings.model_copy(update={"video_input": video.model_copy(update={"path": absolute})})


def _file_identity(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return {"path": str(path.absolute()), "size": path.stat().st_size, "sha256": digest.hexdigest()}


# --- rendering ---------------------------------------------------------------------------------


@dataclass
class _Job:
    """What rendering frames of a plan needs: the table, the input, the models and the loop's parts."""

    plan: M2MPlan
    table: ScheduleTable
    source: Any
    generator: FrameGenerator
    config: LoopConfig
    prepare: InitPreparer
    color_image: Image | None
    timer: StageTimer

    def run(
        self,
        sink: FrameSink,
        start: int,
        end: int,
        *,
        reference: Image | None,
        anchor: Image | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        progress: ProgressReporter | None = None,
    ) -> LoopState:
        """Render frames ``[start, end)`` into ``sink`` (``anchor``: the previous output, for flow guidance)."""
        state = LoopState(next_frame=start, anchor=anchor, color_reference=reference)
        return render(
            self.config, self.table, self.generator, sink, motion=StillMotion(), prepare=self.prepare, state=state,
            progress=progress or NullProgress(), should_stop=should_stop, timer=self.timer, end_frame=end,
        )  # fmt: skip


@contextlib.contextmanager
def _job(plan: M2MPlan, generator: FrameGenerator | None) -> Iterator[_Job]:
    """Open the plan's input and load (or take) the models; the loop configured as ``render_run`` does."""
    settings, options = plan.settings, plan.options
    table = ScheduleTable.from_csv(plan.root / SCHEDULE)
    if hashlib.sha256((plan.root / SCHEDULE).read_bytes()).hexdigest() != plan.data["schedule_sha256"]:
        raise RenderError(f"{plan.root / SCHEDULE} is not the plan's schedule table; plan again in another folder")
    source = open_input_video(settings)[0]
    try:
        identity = plan.data["input"]
        if source.frame_count != plan.input_frames or Path(identity["path"]).stat().st_size != identity["size"]:
            raise RenderError(
                f"the input video {identity['path']} has changed since it was planned; plan again in another folder"
            )
        color = settings.color_coherence
        color_image = None
        if color is not None and color.reference == "image" and color.image:
            key = settings.key_names.get("color_coherence.image", "color_coherence.image")
            color_image = load_image(color.image, plan.video.width, plan.video.height, key=key)
        timer = StageTimer()
        with timer.stage("load"):
            if generator is None:
                generator = plan_generator(plan)
            controls = control_provider(settings, options, plan.video)
            ops = frame_ops(settings, options, generator)
        from dreamreel.media.m2m import VideoFrames

        frames = VideoFrames(source, flow_guidance=table.numeric.get("flow_guidance"))
        config = LoopConfig(
            width=plan.video.width,
            height=plan.video.height,
            loopback=False,
            match_output_colors=not options.preview and settings.temporal.color_match,
            frames=frames,
            controls=controls,
            guess_mode=bool(controls is not None and controls.guess_mode),
            reference_for=video_reference(settings, frames),
        )
        color_space = settings.color_coherence.space if settings.color_coherence and not options.preview else None
        if settings.temporal.color_match and color_space is None and not options.preview:
            color_space = "lab"
        prepare = InitPreparer(
            color_space=color_space,
            noise_kind=settings.noise_type,
            perlin_octaves=settings.perlin_octaves,
            perlin_persistence=settings.perlin_persistence,
            add_noise=not options.preview,
            sharpen=not options.preview,
            contrast=not options.preview,
            ops=ops,
        )
        if color_space is not None and ops is HOST_OPS:
            warm_up(color_space)
        yield _Job(plan, table, source, generator, config, prepare, color_image, timer)
    finally:
        source.close()


def plan_generator(plan: M2MPlan, pool: ModelPool | None = None) -> FrameGenerator:
    """The plan's model, checked to be the file that was planned (same fingerprint); from ``pool`` when it
    holds it (a batch worker keeps its model between chunks and jobs)."""
    path = plan.model_path
    if path is not None:
        recorded = plan.data["model"]["fingerprint"]
        if not path.exists():
            raise SettingsError(f"the plan's model {path} is not there (any more)", key="--model")
        found = fingerprint(path)
        if found != recorded:
            raise SettingsError(
                f"the model {path} has changed since it was planned (it was {fingerprint_text(recorded)}, it is now "
                f"{fingerprint_text(found)}); put the original back, or plan again in another folder",
                key="--model",
            )
    return load_generator(plan.settings, plan.options, path, pool)


@contextlib.contextmanager
def _attention(generator: FrameGenerator, wanted: bool) -> Iterator[None]:
    """Cross-frame attention as the plan wants it, from a clean state, and the generator handed back as it came.

    A generator passed in by an executor may come from other jobs: its attention state is forgotten
    before and after. A generator without cross-frame attention gets it installed when the plan wants
    it, and keeps it switched off afterwards (plain attention, the same images as without it).
    """
    # DiffusersGenerator keeps its CrossFrameState in ``_cross_frame`` (None: not installed)
    state = getattr(generator, "_cross_frame", None)
    if state is None and not wanted:
        yield
        return
    if state is None:
        enable = getattr(generator, "enable_cross_frame_attention", None)
        if enable is None:
            raise RenderError(f"the plan uses cross-frame attention, which {type(generator).__name__} does not have")
        enable()
        state = getattr(generator, "_cross_frame", None)
        if state is None:
            raise RenderError(f"{type(generator).__name__} did not install cross-frame attention")
        before = "off"
    else:
        before = state.mode
    state.reset()
    state.mode = "attend" if wanted else "off"
    try:
        yield
    finally:
        state.reset()
        state.mode = before


class _Keep:
    """A sink that keeps the frames it is given (the anchor) or drops them (the priming)."""

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.frames: dict[int, Image] = {}

    def write(self, image: Image, params: FrameParams) -> None:
        if self.keep:
            self.frames[params.frame] = np.array(image, copy=True)

    def checkpoint(self, state: LoopState) -> None:
        return None

    def close(self) -> None:
        return None


class _FrameFiles:
    """A chunk's sink: every frame as a raw array in ``frames/``, written and fsynced before the next one."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.written = 0
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, image: Image, params: FrameParams) -> None:
        with atomic_open(_frame_path(self.folder, params.frame)) as handle:
            np.save(handle, np.ascontiguousarray(image), allow_pickle=False)
        self.written += 1

    def checkpoint(self, state: LoopState) -> None:
        return None

    def close(self) -> None:
        return None


def _frame_path(folder: Path, frame: int) -> Path:
    return folder / f"{frame:09d}.npy"


def _read_frame(folder: Path, frame: int) -> Image | None:
    path = _frame_path(folder, frame)
    if not path.is_file():
        return None
    try:
        image = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        logger.warning("frame file %s cannot be read (%s); it is rendered again", path, exc)
        return None
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        logger.warning("frame file %s is not an (H, W, 3) uint8 image; it is rendered again", path)
        return None
    return np.ascontiguousarray(image)


def _pixels_sha256(image: Image) -> str:
    digest = hashlib.sha256(f"{image.shape}{image.dtype}".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def anchor_image(plan: M2MPlan) -> Image | None:
    """The anchor's output, when :func:`render_anchor` has written it for this plan (else None)."""
    info = _read_json(plan.root / ANCHOR_INFO)
    if info is None or info.get("plan") != plan.hash or not (plan.root / ANCHOR).is_file():
        return None
    from PIL import Image as PILImage

    with PILImage.open(plan.root / ANCHOR) as file:
        image = np.asarray(file.convert("RGB")).copy()
    return image if _pixels_sha256(image) == info.get("sha256") else None


def render_anchor(plan: M2MPlan, *, generator: FrameGenerator | None = None) -> Path:
    """Render the anchor frame into ``anchor.png`` (once: a rendered anchor returns at once).

    The anchor is rendered as frame ``plan.anchor`` of a render of the whole video that starts there:
    its input frame is its init (no flow guidance), nothing attends to earlier frames, and its colours
    are matched only to an ``image`` or ``video`` reference. Render it before the chunks, once: a chunk
    records which anchor it used, and :func:`assemble` refuses chunks made with another one.

    Args:
        plan: the plan.
        generator: a loaded model to use (an executor's); None loads the plan's.

    Returns:
        The path of ``anchor.png``.
    """
    path = plan.root / ANCHOR
    if anchor_image(plan) is not None:
        logger.info("the anchor of %s is rendered already", plan.root)
        return path
    started = time.perf_counter()
    with _job(plan, generator) as job, _attention(job.generator, plan.cross_frame_attention):
        sink = _Keep()
        job.run(sink, plan.anchor, plan.anchor + 1, reference=job.color_image)
    image = sink.frames[plan.anchor]
    from PIL import Image as PILImage

    with atomic_open(path) as handle:
        PILImage.fromarray(image).save(handle, format="PNG", compress_level=1)
    info = {"plan": plan.hash, "frame": plan.anchor, "sha256": _pixels_sha256(image)}
    atomic_write_text(plan.root / ANCHOR_INFO, json.dumps(info, indent=2) + "\n")
    logger.info("rendered the anchor (frame %d) of %s in %.1f s", plan.anchor, plan.root, time.perf_counter() - started)
    return path


def _anchor_sha(plan: M2MPlan) -> str | None:
    info = _read_json(plan.root / ANCHOR_INFO)
    return info.get("sha256") if info is not None and info.get("plan") == plan.hash else None


def chunk_info(plan: M2MPlan, index: int) -> dict[str, Any] | None:
    """Chunk ``index``'s ``chunk.json`` when the chunk is finished for this plan and its anchor (else None)."""
    chunk = plan._chunk(index)
    folder = plan.chunk_folder(index)
    info = _read_json(folder / CHUNK_INFO)
    if info is None or info.get("plan") != plan.hash or info.get("index") != chunk.index:
        return None
    if plan.needs_anchor and info.get("anchor_sha256") != _anchor_sha(plan):
        return None
    segment = info.get("segment")
    if segment is not None and not (folder / segment["path"]).is_file():
        return None
    if any(not _frame_path(folder / "frames", f).is_file() for f in [*chunk.head, *chunk.tail]):
        return None
    return info


def unfinished_chunks(plan: M2MPlan) -> list[int]:
    """The chunks still to render (for an executor: what to hand out)."""
    return [chunk.index for chunk in plan.chunks if chunk_info(plan, chunk.index) is None]


def render_chunk(
    plan: M2MPlan,
    index: int,
    *,
    generator: FrameGenerator | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    progress: ProgressReporter | None = None,
) -> ChunkResult:
    """Render chunk ``index`` into ``chunks/<index>/``; resumable and idempotent.

    A finished chunk returns at once. An interrupted one goes on from its first missing frame (with
    cross-frame attention: from its first frame, see the module docstring). When ``should_stop()``
    turns true the chunk stops after the current frame (``finished`` is False; call again to go on).

    Args:
        plan: the plan.
        index: the chunk, ``0 .. len(plan.chunks) - 1``.
        generator: a loaded model to use (an executor keeps models loaded between jobs); None loads the
            plan's. Its cross-frame attention state is reset before and after.
        should_stop: polled before each frame.
        progress: reports the chunk's frames.

    Raises:
        RenderError: the anchor is not rendered yet (when the chunks use it), another process on this
            machine renders the chunk, or the input changed since planning.
    """
    started = time.perf_counter()
    chunk = plan._chunk(index)
    folder = plan.chunk_folder(index)
    if chunk_info(plan, index) is not None:
        _drop_core_frames(plan, chunk)
        return ChunkResult(chunk.index, folder, True, True, 0, time.perf_counter() - started)
    reference = None
    if plan.needs_anchor:
        reference = anchor_image(plan)
        if reference is None:
            raise RenderError(
                f"the anchor of {plan.root} is not rendered yet; chunk {index} refers to it. Call "
                "render_anchor(plan) once before the chunks"
            )
    folder.mkdir(parents=True, exist_ok=True)
    with _claimed(folder):
        (folder / CHUNK_INFO).unlink(missing_ok=True)
        frames = folder / "frames"
        anchor_sha = _anchor_sha(plan) if plan.needs_anchor else None
        started_with = {"plan": plan.hash, "anchor_sha256": anchor_sha}
        if _read_json(folder / STARTED) != started_with:  # frames of another anchor (or none yet)
            if frames.is_dir() and any(frames.iterdir()):
                logger.info("chunk %d was rendered with another anchor; it is rendered again", index)
            shutil.rmtree(frames, ignore_errors=True)
            shutil.rmtree(folder / "segments", ignore_errors=True)
            atomic_write_text(folder / STARTED, json.dumps(started_with) + "\n")
        done = _done_frames(frames, chunk)
        if plan.cross_frame_attention and 0 < done < len(range(chunk.start, chunk.end)):
            logger.info(
                "chunk %d was interrupted after %d frames; with cross-frame attention it renders again from frame "
                "%d (the attention state is not saved)", index, done, chunk.start,
            )  # fmt: skip
            shutil.rmtree(frames, ignore_errors=True)
            done = 0
        first = chunk.start + done
        sink = _FrameFiles(frames)
        if first < chunk.end:
            if done:
                logger.info("resuming chunk %d at frame %d of %d-%d", index, first, chunk.start, chunk.end - 1)
            with _job(plan, generator) as job, _attention(job.generator, plan.cross_frame_attention):
                color = job.color_image if job.color_image is not None else reference
                if plan.cross_frame_attention and chunk.start != plan.anchor:
                    # the anchor again, not written: the attention's first frame for this chunk
                    job.run(_Keep(keep=False), plan.anchor, plan.anchor + 1, reference=job.color_image)
                previous = _read_frame(frames, first - 1) if done else None
                state = job.run(
                    sink, first, chunk.end, reference=color, anchor=previous, should_stop=should_stop,
                    progress=progress,
                )  # fmt: skip
            if state.next_frame < chunk.end:
                seconds = time.perf_counter() - started
                logger.info("chunk %d stopped at frame %d (%d frames this time)", index, state.next_frame, sink.written)
                return ChunkResult(chunk.index, folder, False, False, sink.written, seconds)
        _finish_chunk(plan, chunk, anchor_sha)
    _drop_core_frames(plan, chunk)
    seconds = time.perf_counter() - started
    logger.info("chunk %d (frames %d-%d) done in %.1f s", index, chunk.start, chunk.end - 1, seconds)
    return ChunkResult(chunk.index, folder, True, False, sink.written, seconds)


def _done_frames(folder: Path, chunk: Chunk) -> int:
    """How many frames from the chunk's start are on disk, without a gap."""
    count = 0
    for frame in range(chunk.start, chunk.end):
        if not _frame_path(folder, frame).is_file():
            break
        count += 1
    return count


def _finish_chunk(plan: M2MPlan, chunk: Chunk, anchor_sha: str | None) -> None:
    """Encode the core frames into the chunk's segment, then commit ``chunk.json``."""
    folder = plan.chunk_folder(chunk.index)
    frames = folder / "frames"
    segments = folder / "segments"
    shutil.rmtree(segments, ignore_errors=True)
    segments.mkdir()
    name = f"segments/seg_{chunk.core_start:09d}{plan.video.segment_suffix}"
    writer = SegmentWriter(plan.video)
    writer.open(folder / name, chunk.core_start)
    try:
        for frame in range(chunk.core_start, chunk.core_end):
            image = _read_frame(frames, frame)
            if image is None:
                raise RenderError(f"frame {frame} of chunk {chunk.index} is missing or damaged; render the chunk again")
            writer.write(image)
        info = writer.close()
    finally:
        if writer.is_open:
            writer.abort()
    for frame in [*chunk.head, *chunk.tail]:
        if _read_frame(frames, frame) is None:
            raise RenderError(f"frame {frame} of chunk {chunk.index} is missing or damaged; render the chunk again")
    done = {
        "plan": plan.hash,
        "index": chunk.index,
        "start": chunk.start,
        "end": chunk.end,
        "anchor_sha256": anchor_sha,
        "segment": {
            "path": name,
            "first_frame": info.first_frame,
            "frame_count": info.frame_count,
            "sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest(),
        },
        "head": list(chunk.head),
        "tail": list(chunk.tail),
    }
    atomic_write_text(folder / CHUNK_INFO, json.dumps(done, indent=2) + "\n")


def _drop_core_frames(plan: M2MPlan, chunk: Chunk) -> None:
    """After the commit: only the overlap frames stay lossless (the core ones are in the segment)."""
    frames = plan.chunk_folder(chunk.index) / "frames"
    for frame in range(chunk.core_start, chunk.core_end):
        _frame_path(frames, frame).unlink(missing_ok=True)


@contextlib.contextmanager
def _claimed(folder: Path) -> Iterator[None]:
    """Mark ``folder`` as rendered by this process; refuse it while another live process here does."""
    path = folder / WORKER
    host, pid = socket.gethostname(), os.getpid()
    held = _read_json(path)
    if held is not None and held.get("host") == host and held.get("pid") not in (None, pid):
        try:
            os.kill(int(held["pid"]), 0)
            alive = True
        except ProcessLookupError:
            alive = False
        except (PermissionError, ValueError, TypeError):
            alive = True
        if alive:
            raise RenderError(f"{folder} is being rendered by another process (pid {held['pid']}); wait for it")
    atomic_write_text(path, json.dumps({"host": host, "pid": pid}) + "\n", fsync=False)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


# --- joining -----------------------------------------------------------------------------------


def blended_frames(plan: M2MPlan, index: int) -> list[Image]:
    """The cross-fade of chunk ``index``'s tail into chunk ``index + 1``'s head (both finished), in order.

    Frame ``i`` of the overlap is ``(1 - w) * tail + w * head``, ``w = (i + 1) / (overlap + 1)``, rounded.
    """
    chunk, following = plan._chunk(index), plan._chunk(index + 1)
    out = []
    for i, frame in enumerate(chunk.tail):
        tail = _read_frame(plan.chunk_folder(chunk.index) / "frames", frame)
        head = _read_frame(plan.chunk_folder(following.index) / "frames", frame)
        if tail is None or head is None:
            raise RenderError(f"overlap frame {frame} of chunks {index} and {index + 1} is missing; render them again")
        weight = (i + 1) / (plan.overlap + 1)
        mixed = (1.0 - weight) * tail.astype(np.float64) + weight * head.astype(np.float64)
        out.append(np.clip(np.rint(mixed), 0, 255).astype(np.uint8))
    return out


def assemble(plan: M2MPlan) -> Path:
    """Join the finished chunks into ``video.mp4`` (the plan's codec decides the suffix), with the sound.

    The chunks' core segments are copied, not re-encoded; each overlap is cross-faded from the chunks'
    lossless frames and encoded as its own segment (in ``blends/``). Waits for nothing.

    Raises:
        RenderError: the anchor is missing, or a chunk is not finished or was made with another anchor (all
            such chunks are named).
    """
    if plan.needs_anchor and _anchor_sha(plan) is None:
        raise RenderError(f"the anchor of {plan.root} is missing; render_anchor(plan), then render the chunks again")
    missing = unfinished_chunks(plan)
    if missing:
        ranges = ", ".join(f"{k} (frames {plan.chunks[k].start}-{plan.chunks[k].end - 1})" for k in missing)
        raise RenderError(
            f"{len(missing)} of the {len(plan.chunks)} chunks of {plan.root} are not finished: {ranges}. Render "
            "them with render_chunk(plan, index), then assemble again"
        )
    started = time.perf_counter()
    blends = plan.root / "blends"
    blends.mkdir(exist_ok=True)
    segments: list[SegmentInfo] = []
    for chunk in plan.chunks:
        info = chunk_info(plan, chunk.index)
        assert info is not None
        segment = info["segment"]
        path = plan.chunk_folder(chunk.index) / segment["path"]
        segments.append(SegmentInfo(path, segment["first_frame"], segment["frame_count"]))
        if chunk.index + 1 < len(plan.chunks) and plan.overlap:
            writer = SegmentWriter(plan.video)
            writer.open(blends / f"seg_{chunk.core_end:09d}{plan.video.segment_suffix}", chunk.core_end)
            try:
                for image in blended_frames(plan, chunk.index):
                    writer.write(image)
                segments.append(writer.close())
            finally:
                if writer.is_open:
                    writer.abort()
    video = join_segments(segments, plan.video_path, options=plan.video, audio=plan.audio, audio_start=plan.audio_start)
    logger.info("assembled %d chunks of %s in %.1f s", len(plan.chunks), video, time.perf_counter() - started)
    return video
