"""The run directory: the single source of truth of a render.

Layout::

    RUN/
      settings.json          validated settings, native form (seed resolved)
      settings_deforum.txt   the same in Deforum's flat form
      schedule.csv           every per-frame value (the schedule table), bit-exact
      manifest.json          status, options, finished segments, the saved loop state
      segments/              independent video segments, each complete and playable
      state/<frame>/         the loop state at the end of the last committed segment (lossless PNG)
      reference.png          the colour-coherence reference, once known
      pending/               the frames of the segment being written as raw arrays (.npy: about 0.3 ms
                             a frame where a PNG took 5-25 ms), and pending.json: how many of them
                             belong to finished cadence groups (fsynced before it names them)
      frames/                PNGs with A1111 generation info (only with --save-frames)
      video.mp4              the joined video (+ audio)

The manifest is the commit point for segments; ``pending/pending.json`` is the commit point for
the frames of the open segment. Segments are cut at frame positions that depend only on the
table and ``segment_frames``, never on when a run was stopped, so a resumed run writes the same
segments as an uninterrupted one: it re-encodes the pending frames of the open segment from their
lossless copies and renders on from the last finished cadence group. Nothing that was finished is rendered
again, and, the loop being deterministic, the resumed video equals the uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image as PILImage

from dreamreel import __version__
from dreamreel.anim.loop import LoopState
from dreamreel.anim.timing import StageTimer, lower_priority
from dreamreel.errors import DreamreelError, RenderError, SettingsError
from dreamreel.fileio import atomic_open, atomic_write_text
from dreamreel.generation import Image
from dreamreel.keyframes.table import FrameParams, ScheduleTable
from dreamreel.media.join import join_segments
from dreamreel.media.video import SegmentInfo, SegmentWriter, VideoOptions
from dreamreel.pnginfo import GenerationInfo, png_text

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SETTINGS = "settings.json"
SETTINGS_DEFORUM = "settings_deforum.txt"
SCHEDULE = "schedule.csv"

_Work = (
    tuple[Literal["frame"], Image, FrameParams]
    | tuple[Literal["replay"], Image, int]
    | tuple[Literal["checkpoint"], LoopState]
)
"""The writer thread's work: a rendered frame, a pending frame re-encoded on resume, a checkpoint."""


@dataclass
class Manifest:
    """What ``manifest.json`` holds."""

    status: str = "created"  # created | rendering | interrupted | done
    max_frames: int = 0  # the frames this run renders (``render --frames N``: N; the table may hold more)
    next_frame: int = 0
    segments: list[dict[str, Any]] = field(default_factory=list)
    state: str | None = None  # folder under state/ with the loop state after next_frame - 1
    video: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    dreamreel_version: str = __version__
    updated: float = 0.0
    pid: int | None = None  # the process rendering into the directory (status "rendering")
    host: str | None = None
    lease: dict[str, Any] | None = None  # {"job": id, "attempt": n}: the batch attempt that owns the directory

    def segment_infos(self, root: Path) -> list[SegmentInfo]:
        return [SegmentInfo(root / s["path"], s["first_frame"], s["frame_count"]) for s in self.segments]


class RunDirectory:
    """Creates, checkpoints, finishes and resumes one run directory."""

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.manifest = manifest

    def take_lease(self, job: str, attempt: int) -> None:
        """Own the directory as attempt ``attempt`` of batch job ``job`` (committed at the next commit).

        A batch executor that retries a job (its worker died or hung) gives the retry a higher attempt;
        from then on every :meth:`commit` of an older attempt, a zombie still running somewhere, fails
        instead of writing over the retry's work.
        """
        self.manifest.lease = {"job": job, "attempt": int(attempt)}

    # --- creating and opening -------------------------------------------------------------

    @classmethod
    def check_free(cls, root: Path, *, overwrite: bool = False) -> bool:
        """Check that a new render may use ``root``; True when it holds an earlier run that will be replaced.

        Free are: a missing or empty folder; a run directory whose render stopped before its first
        frame (a failed start: nothing rendered, no process working in it), which is replaced
        without ``--overwrite``; and with ``overwrite``, any run directory. A folder that is not a
        run directory and not empty is never taken without ``--overwrite``; a run directory
        holding rendered frames is never taken without it.
        """
        root = Path(root)
        existing = root / MANIFEST
        if existing.exists():
            try:
                data = json.loads(existing.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                data = {}
            status = data.get("status")
            _refuse_if_busy(root, data)
            if overwrite or _never_rendered(root, data):
                if not overwrite:
                    logger.info("%s holds a render that stopped before its first frame; starting it again", root)
                return True
            hint = (
                "it is finished"
                if status == "done"
                else f"it is unfinished ({status}); continue it with --resume {root}"
            )
            raise SettingsError(
                f"the run directory already holds a render and {hint}. Pass --overwrite to replace it, or choose "
                "another --out",
                key="--out",
            )
        if root.exists() and not root.is_dir():
            raise SettingsError(f"{root} is a file, not a folder; choose another --out", key="--out")
        if root.exists() and any(root.iterdir()) and not overwrite:
            raise SettingsError(
                f"{root} exists and is not empty; choose another --out or pass --overwrite", key="--out"
            )
        return False

    @classmethod
    def create(
        cls,
        root: Path,
        settings: Mapping[str, str],
        table: ScheduleTable,
        options: dict[str, Any],
        *,
        overwrite: bool = False,
        max_frames: int | None = None,
    ) -> RunDirectory:
        """Record the run before frame 0: settings (both forms), schedule table, manifest.

        ``settings`` maps the settings files' names to their text (:data:`SETTINGS`: native,
        :data:`SETTINGS_DEFORUM`: Deforum's form); the caller renders them, so the run directory
        needs no settings code.

        ``max_frames`` (at most the table's) is how many frames this run renders: the first frames
        of the full animation, whose table is saved whole.
        """
        root = Path(root)
        if cls.check_free(root, overwrite=overwrite):
            for name in ("segments", "state", "frames", "pending"):
                shutil.rmtree(root / name, ignore_errors=True)
            for file in root.iterdir():
                if file.is_file() and (file.name.startswith(("video.", ".video.")) or file.name == "reference.png"):
                    file.unlink(missing_ok=True)
        (root / "segments").mkdir(parents=True, exist_ok=True)
        for name, text in settings.items():
            atomic_write_text(root / name, text)
        table.to_csv(root / SCHEDULE)
        frames = table.max_frames if max_frames is None else max(1, min(max_frames, table.max_frames))
        run = cls(root, Manifest(max_frames=frames, options=options))
        run.begin()
        return run

    def begin(self) -> None:
        """Mark the directory as being rendered into by this process (status "rendering")."""
        self.manifest.status = "rendering"
        self.manifest.pid = os.getpid()
        self.manifest.host = socket.gethostname()
        self.commit()

    @classmethod
    def open(cls, root: Path, *, lease: tuple[str, int] | None = None) -> RunDirectory:
        """Open an existing run directory for resuming (with ``lease``: as that attempt of a batch job, which may
        take over from an earlier attempt of the same job still marked as rendering)."""
        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            raise SettingsError(f"{root} is not a dreamreel run directory (no {MANIFEST})", key="--resume")
        try:
            manifest = Manifest(**json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError) as exc:
            raise SettingsError(f"{path} is damaged: {exc}", key="--resume") from exc
        run = cls(root, manifest)
        held = manifest.lease
        taking_over = lease is not None and held is not None and held.get("job") == lease[0]
        if taking_over and lease is not None and held is not None and held.get("attempt", 0) > lease[1]:
            raise RenderError(f"{root} belongs to a later attempt of batch job {lease[0]}; this attempt stops")
        if not taking_over:
            _refuse_if_busy(root, asdict(manifest), key="--resume")
        if lease is not None:
            run.take_lease(*lease)
        for segment in manifest.segments:
            if not (root / segment["path"]).is_file():
                raise RenderError(f"{root / segment['path']} listed in {path} is missing; the run cannot be resumed")
        return run

    def table(self) -> ScheduleTable:
        return ScheduleTable.from_csv(self.root / SCHEDULE)

    # --- state ----------------------------------------------------------------------------

    def saved_state(self) -> tuple[LoopState, list[Image]]:
        """The loop state to resume from, and the pending frames of the open segment (in order)."""
        reference = _read_png(self.root / "reference.png")
        if self.manifest.state is None:
            base = LoopState(color_reference=reference)
        else:
            anchor = _read_png(self.root / "state" / self.manifest.state / "anchor.png")
            base = LoopState(next_frame=self.manifest.next_frame, anchor=anchor, color_reference=reference)
        pending_file = self.root / "pending" / "pending.json"
        if not pending_file.is_file():
            return base, []
        pending = json.loads(pending_file.read_text(encoding="utf-8"))
        if pending.get("segment_start") != base.next_frame or pending["next_frame"] <= base.next_frame:
            return base, []
        frames = []
        for frame in range(base.next_frame, pending["next_frame"]):
            image = _read_pending(self.root / "pending", frame)
            if image is None:
                logger.warning("pending frame %d is missing; rendering from frame %d again", frame, base.next_frame)
                return base, []
            frames.append(image)
        anchor = frames[-1]
        return LoopState(next_frame=pending["next_frame"], anchor=anchor, color_reference=reference), frames

    def save_state(self, state: LoopState) -> str:
        name = f"{state.next_frame:09d}"
        folder = self.root / "state" / name
        folder.mkdir(parents=True, exist_ok=True)
        if state.anchor is not None:
            _write_png(folder / "anchor.png", state.anchor)
        return name

    def save_reference(self, reference: Image) -> None:
        if not (self.root / "reference.png").exists():
            _write_png(self.root / "reference.png", reference)

    def commit(self) -> None:
        """Write the manifest atomically; then drop state snapshots it no longer names.

        Raises:
            RenderError: another attempt of the same batch job took the directory over (see :meth:`take_lease`).
        """
        self._check_lease()
        self.manifest.updated = time.time()
        atomic_write_text(self.root / MANIFEST, json.dumps(asdict(self.manifest), indent=2) + "\n")
        state_root = self.root / "state"
        if state_root.is_dir():
            for folder in state_root.iterdir():
                if folder.name != self.manifest.state:
                    shutil.rmtree(folder, ignore_errors=True)

    def _check_lease(self) -> None:
        mine = self.manifest.lease
        if mine is None:
            return
        try:
            on_disk = json.loads((self.root / MANIFEST).read_text(encoding="utf-8")).get("lease")
        except (OSError, json.JSONDecodeError):
            return
        if on_disk and on_disk.get("job") == mine["job"] and on_disk.get("attempt", 0) > mine["attempt"]:
            raise RenderError(
                f"{self.root} was taken over by attempt {on_disk['attempt']} of batch job {mine['job']}; this "
                f"attempt ({mine['attempt']}) stops without writing"
            )

    def safe_frames(self) -> int:
        """How many frames a resume would not render again: committed segments and finished pending groups."""
        safe = self.manifest.next_frame
        try:
            pending = json.loads((self.root / "pending" / "pending.json").read_text(encoding="utf-8"))
            if pending.get("segment_start") == safe:
                safe = max(safe, int(pending["next_frame"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return safe

    def discard_uncommitted(self) -> None:
        """Remove segment files the manifest does not name (a partial segment of an interrupted run)."""
        named = {s["path"] for s in self.manifest.segments}
        for file in (self.root / "segments").iterdir():
            if f"segments/{file.name}" not in named:
                file.unlink(missing_ok=True)


class RunSink:
    """The frame sink of a run: streams frames into segments and checkpoints after each cadence group.

    Every frame also goes to ``pending/`` as a lossless raw array; after each cadence group
    ``pending/pending.json`` records how far the finished groups go. A segment is closed, the loop
    state saved and the manifest committed once it holds ``segment_frames`` frames (at the end of
    the cadence group that reaches that count), and at the end of the run.

    All of that runs on a writer thread, so the loop only hands over a frame and goes on to the next
    diffusion: :meth:`write` and :meth:`checkpoint` queue work (blocking only when the thread is
    ``queue_items`` items behind), and the thread does it in order, preferably while the loop waits for
    its generator (``loop_waiting``: the loop timer's :attr:`~dreamreel.anim.timing.StageTimer.waiting`),
    so encoding and writing do not compete with the loop's own host work for the CPU; it never holds
    back once the queue is half full, or for longer than ``hold_seconds``. A checkpoint is committed only
    after every frame it names is written and fsynced, so after a kill or a power cut ``--resume``
    gives the same frames and loses at most the frames after the last committed checkpoint, which
    trails the loop by at most the queue. An error on the thread (ffmpeg failing, a full disk) stops
    all later work, commits nothing more, and is raised by the next :meth:`write`, :meth:`checkpoint`
    or :meth:`finish`. :meth:`close` waits for the thread.

    Attributes:
        background: time the writer thread spent per stage ("encode", "pending", "sync", "commit", "png").
    """

    def __init__(
        self,
        run: RunDirectory,
        options: VideoOptions,
        *,
        segment_frames: int = 60,
        save_frames: bool = False,
        frame_info: dict[str, str] | None = None,
        queue_items: int = 8,
        loop_waiting: threading.Event | None = None,
        hold_seconds: float = 0.1,
        on_segment: Callable[[SegmentInfo], None] | None = None,
    ) -> None:
        self.run = run
        self.options = options
        self.writer = SegmentWriter(options)
        self.segment_frames = max(1, segment_frames)
        self.save_frames = save_frames
        self.frame_info = frame_info or {}
        self.partial: SegmentInfo | None = None
        self.background = StageTimer()
        self._segment_start = 0
        self._pending = run.root / "pending"
        self._pending.mkdir(exist_ok=True)
        self._last_state: LoopState | None = None
        self._written_end = 0  # one past the last frame written
        self._unsynced: list[Path] = []  # pending arrays written since the last pending.json
        self._queue: queue.Queue[_Work | None] = queue.Queue(maxsize=max(1, queue_items))
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None  # the writer thread's failure
        self._reported = False  # the failure was raised to the caller once
        self._lock = threading.Lock()
        self._queued_checkpoints = 0  # checkpoints queued and not done yet
        self._loop_waiting = loop_waiting
        self._hold_seconds = hold_seconds
        self._closing = False  # the loop is done: nothing to make way for
        self._on_segment = on_segment  # told (on the writer thread) of each committed segment

    # --- the caller's side ----------------------------------------------------------------

    def replay(self, frames: list[Image], first_frame: int) -> None:
        """Re-encode the pending frames of an interrupted segment (resume), so segments match."""
        for offset, image in enumerate(frames):
            self._submit(("replay", image, first_frame + offset))

    def write(self, image: Image, params: FrameParams) -> None:
        """Queue frame ``params.frame`` (a copy of ``image``); raise the writer thread's error, if any."""
        self._submit(("frame", np.array(image, copy=True), params))

    def checkpoint(self, state: LoopState) -> None:
        """Called by the loop after each cadence group, with the state after it; committed in order."""
        self._submit(("checkpoint", state))

    def close(self) -> None:
        """After the loop (finished, stopped or failed): finish queued work; keep the open segment as a
        partial one when it ends at a finished cadence group."""
        self._join()
        if not self.writer.is_open:
            return
        if self._error is None and self._last_state is not None and self._last_state.next_frame == self._written_end:
            self.partial = self.writer.close()
        else:  # a cadence group was cut short (or a write failed): its frames are rendered again on resume
            self.writer.abort()

    def finish(self, *, audio: Path | None, audio_start: float = 0.0, status: str = "done") -> Path | None:
        """Join the committed segments (and a partial one) into the video and record the status.

        A writer-thread error not raised yet is raised here, after the video of the safe frames is written.
        """
        self._join()
        failure = None if self._reported else self._error
        if failure is not None:
            self._reported = True
            status = "interrupted" if status == "done" else status
            try:
                self._finish(audio, audio_start, status)
            except Exception:
                logger.warning("could not write the video of the frames so far", exc_info=True)
            raise failure
        return self._finish(audio, audio_start, status)

    def _finish(self, audio: Path | None, audio_start: float, status: str) -> Path | None:
        manifest = self.run.manifest
        segments = manifest.segment_infos(self.run.root)
        if self.partial is not None:
            segments.append(self.partial)
        manifest.status = status
        if not segments:
            self.run.commit()
            return None
        video = self.run.root / f"video{self.options.output_suffixes[0]}"
        join_segments(segments, video, options=self.options, audio=audio, audio_start=audio_start)
        manifest.video = video.name
        self.run.commit()
        return video

    def _submit(self, work: _Work) -> None:
        self._raise_failure()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="dreamreel-run-writer", daemon=True)
            self._thread.start()
        self._queue.put(work)
        if work[0] == "checkpoint":  # counted once queued (an interrupted put must not make the thread skip one)
            with self._lock:
                self._queued_checkpoints += 1

    def _raise_failure(self) -> None:
        if self._error is not None:
            self._reported = True
            raise self._error

    def _join(self) -> None:
        self._closing = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    # --- the writer thread ----------------------------------------------------------------

    def _work(self) -> None:
        lower_priority()
        while (work := self._queue.get()) is not None:
            if self._error is not None:
                continue  # after a failure nothing more is written or committed; keep draining
            self._make_way()
            try:
                self._do(work)
            except BaseException as exc:  # raised to the caller by its next call
                self._error = exc if isinstance(exc, DreamreelError | OSError) else _writer_error(work, exc)

    def _make_way(self) -> None:
        """Wait (at most ``hold_seconds``) until the loop waits for its generator, unless the queue fills up
        or the loop is done meanwhile."""
        gate = self._loop_waiting
        if gate is None:
            return
        deadline = time.monotonic() + self._hold_seconds
        while not (self._closing or self._queue.qsize() * 2 >= self._queue.maxsize):
            left = deadline - time.monotonic()
            if left <= 0 or gate.wait(min(left, 0.005)):
                return

    def _do(self, work: _Work) -> None:
        if work[0] == "checkpoint":
            self._checkpoint(work[1])
            return
        _, image, params = work
        frame = params if isinstance(params, int) else params.frame
        self._open(frame)
        with self.background.stage("encode"):
            self.writer.write(image)
        self._written_end = frame + 1
        if isinstance(params, int):  # a replayed frame: its lossless copy is in pending/ already
            return
        pending = self._pending / f"{frame:09d}.npy"
        with self.background.stage("pending"):
            _write_pending(pending, image)
        self._unsynced.append(pending)
        if self.save_frames:
            with self.background.stage("png"):
                self._save_png(image, params)

    def _open(self, frame: int) -> None:
        if not self.writer.is_open:
            name = f"segments/seg_{frame:09d}{self.options.segment_suffix}"
            self.writer.open(self.run.root / name, frame)
            self._segment_start = frame

    def _checkpoint(self, state: LoopState) -> None:
        self._last_state = state
        with self._lock:
            self._queued_checkpoints -= 1
            later = self._queued_checkpoints > 0
        if state.color_reference is not None:
            self.run.save_reference(state.color_reference)
        if self.writer.frame_count >= self.segment_frames or state.next_frame >= self.run.manifest.max_frames:
            with self.background.stage("commit"):
                self._commit_segment(state)
        elif later:  # the thread is behind: the next checkpoint, already queued, syncs these frames too
            return
        else:
            with self.background.stage("sync"):
                _sync_files(self._unsynced)
                self._unsynced.clear()
                pending = {"segment_start": self._segment_start, "next_frame": state.next_frame}
                atomic_write_text(self._pending / "pending.json", json.dumps(pending) + "\n")

    def _commit_segment(self, state: LoopState) -> None:
        info = self.writer.close()
        _sync_files([info.path])  # on disk before the manifest names it (power loss)
        manifest = self.run.manifest
        manifest.segments.append(
            {"path": f"segments/{info.path.name}", "first_frame": info.first_frame, "frame_count": info.frame_count}
        )
        manifest.state = self.run.save_state(state)
        manifest.next_frame = state.next_frame
        self.run.commit()
        for file in self._pending.iterdir():
            file.unlink(missing_ok=True)
        self._unsynced.clear()
        if self._on_segment is not None:
            self._on_segment(SegmentInfo(info.path, info.first_frame, info.frame_count))

    def _save_png(self, image: Image, params: FrameParams) -> None:
        folder = self.run.root / "frames"
        folder.mkdir(exist_ok=True)
        extra = {
            **self.frame_info,
            "Denoising strength": f"{params.denoise:g}" if params.frame > 0 else "",
            "Frame": str(params.frame),
        }
        save_png_with_info(folder / f"{params.frame:09d}.png", image, params, extra)


def generation_info(image: Image, params: FrameParams, extra: dict[str, str]) -> GenerationInfo:
    """A1111's parameters for one frame."""
    return GenerationInfo(
        params.prompt,
        params.negative_prompt,
        {
            "Steps": str(int(params.steps)),
            "Sampler": params.sampler,
            "CFG scale": f"{params.cfg_scale:g}",
            "Seed": str(int(params.seed)),
            "Size": f"{image.shape[1]}x{image.shape[0]}",
            **extra,
            "Version": f"dreamreel {__version__}",
        },
    )


def save_png_with_info(path: Path, image: Image, params: FrameParams, extra: dict[str, str]) -> Path:
    """Save a PNG carrying A1111's ``parameters`` text chunk (read by PNG Info and civitai)."""
    info = generation_info(image, params, extra)
    PILImage.fromarray(image).save(path, pnginfo=png_text({"parameters": info.to_text()}), compress_level=1)
    return path


def _write_png(path: Path, image: Image) -> None:
    """Write a PNG under a temporary name, fsync it and rename it, so a reader never sees half a file."""
    with atomic_open(path) as handle:
        PILImage.fromarray(image).save(handle, format="PNG", compress_level=1)


def has_rendered_frames(root: Path) -> bool:
    """True when ``root`` is a run directory holding rendered frames (committed or pending): one to resume."""
    try:
        manifest = json.loads((Path(root) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return not _never_rendered(Path(root), manifest)


def _never_rendered(root: Path, manifest: dict[str, Any]) -> bool:
    """True when a run directory holds no rendered frame at all (its start failed or was stopped at once)."""
    if manifest.get("status") == "done" or manifest.get("next_frame", 0) or manifest.get("segments"):
        return False
    for folder in ("pending", "frames", "segments"):
        path = root / folder
        if path.is_dir() and any(f.suffix in (".npy", ".png", ".ts", ".webm", ".part") for f in path.iterdir()):
            return False
    return not any(root.glob("video.*"))


def _refuse_if_busy(root: Path, manifest: dict[str, Any], *, key: str = "--out") -> None:
    """A run directory another live process is rendering into on this machine is not touched."""
    pid = manifest.get("pid")
    if manifest.get("status") != "rendering" or not pid or pid == os.getpid():
        return
    if manifest.get("host") != socket.gethostname():
        return
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return  # that process is gone: the directory is free
    except PermissionError:
        pass  # alive, owned by someone else
    raise SettingsError(
        f"{root} is being rendered into by another process (pid {pid}); wait for it, stop it (Ctrl-C or kill "
        f"{pid}), or choose another --out",
        key=key,
    )


def _writer_error(work: _Work, exc: BaseException) -> RenderError:
    """An unexpected error on the writer thread, as the RenderError the caller sees."""
    if work[0] == "checkpoint":
        what = f"the checkpoint before frame {work[1].next_frame}"
    else:
        what = f"frame {work[2] if isinstance(work[2], int) else work[2].frame}"
    error = RenderError(f"writing {what} into the run directory failed: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def _sync_files(files: list[Path]) -> None:
    """Flush files to disk (before a commit point names them)."""
    for file in files:
        if file.exists():  # an empty segment writes no file
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())


def _write_pending(path: Path, image: Image) -> None:
    """A pending frame as a raw array (about 0.3 ms at 512x512; a PNG took 5-25 ms). Not fsynced here:
    the sink fsyncs a cadence group's frames together, before ``pending.json`` names them."""
    with atomic_open(path, fsync=False) as handle:
        np.save(handle, image, allow_pickle=False)


def _read_pending(folder: Path, frame: int) -> Image | None:
    """A pending frame: the raw array, or the PNG that run directories of earlier versions hold."""
    path = folder / f"{frame:09d}.npy"
    if not path.is_file():
        return _read_png(folder / f"{frame:09d}.png")
    try:
        image = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        logger.warning("pending frame %s cannot be read (%s)", path, exc)
        return None
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        logger.warning("pending frame %s is not an (H, W, 3) uint8 image", path)
        return None
    return np.ascontiguousarray(image)


def _read_png(path: Path) -> Image | None:
    if not path.is_file():
        return None
    with PILImage.open(path) as image:
        return np.asarray(image.convert("RGB")).copy()
