"""Batches of jobs: the job format, sweeps, content ids, and the local executor (``dreamreel batch``).

A batch is a file of jobs (JSON list or ``{"jobs": [...]}``, JSON Lines, or TOML ``[[jobs]]``) or a
folder of settings files. A job is a render (``{"settings": "tunnel.json"}``), an m2m (the same, with
``"kind": "m2m", "input": "clip.mp4"``: the settings' Video Input path) or a still batch
(``{"kind": "still", "prompt": "...", "seed": 5, ...}``: :class:`~dreamreel.jobs.still.StillRequest`'s
fields), with ``"options"`` (the render options: ``{"model": "...", "preview": true}``), an optional
``"name"`` and ``"sweep"``. Paths are relative to the batch file. Command-line options apply to every
job that does not set them.

Sweeps (``--sweep seed=1..8 --sweep cfg=5,7,9``) expand each job into the product of the values: an
animation "X/Y plot". ``seed``, ``steps``, ``sampler``, ``cfg``, ``strength``, ``width``, ``height``
or any dotted native key (``schedules.zoom``) can be swept; ``cfg`` and ``strength`` set constant
schedules.

A job's id is a hash of what decides its output: the kind, the validated settings, the options
(model files by size and time, not by path). Submitting the same job twice is one job; its run
directory is ``OUT/<name>-<id[:8]>``, so running a batch again skips finished runs and resumes
unfinished ones (``--resume``). The local executor runs jobs one after another in this process and
keeps the last model loaded for the next job that uses it; ``dreamreel.jobs.ray_batch`` runs the same
jobs on a Ray cluster.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from dreamreel.errors import DreamreelError, SettingsError, did_you_mean
from dreamreel.settings import Settings, load_settings
from dreamreel.settings.io import settings_to_json, validate_settings

logger = logging.getLogger(__name__)

Kind = Literal["render", "m2m", "still"]
KINDS: tuple[str, ...] = ("render", "m2m", "still")
SETTINGS_SUFFIXES = (".json", ".txt")
SWEEP_ALIASES = {
    "seed": "seed", "steps": "steps", "sampler": "sampler", "width": "width", "height": "height",
    "cfg": "schedules.cfg_scale", "cfg_scale": "schedules.cfg_scale", "strength": "schedules.strength",
    "max_frames": "max_frames", "fps": "fps", "cadence": "diffusion_cadence",
}  # fmt: skip
SCHEDULE_SWEEPS = {"schedules.cfg_scale", "schedules.strength"}


@dataclass(frozen=True)
class Job:
    """One job of a batch, validated (nothing loaded)."""

    kind: Kind
    name: str
    settings: Settings | None  # render and m2m
    options: dict[str, Any]  # RenderOptions values (render, m2m) or still options
    still: dict[str, Any] = field(default_factory=dict)  # StillRequest fields (still)
    source: str | None = None  # the settings file or batch file the job came from
    chunks: tuple[int, int] | None = None  # m2m split across workers: (frames per chunk, overlap)

    @property
    def id(self) -> str:
        """A hash of what decides the job's output (see the module docstring)."""
        content = {
            "kind": self.kind,
            "settings": json.loads(settings_to_json(self.settings)) if self.settings is not None else None,
            "still": self.still,
            "options": {k: _identity(k, v) for k, v in sorted(self.options.items()) if k not in _NOT_CONTENT},
            "chunks": self.chunks,
        }
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def model(self) -> str | None:
        """The model the job loads (for executors that keep models loaded), None for a preview."""
        if self.options.get("preview"):
            return None
        return self.options.get("model") or (self.settings.model if self.settings is not None else None)

    def run_dir(self, out: Path) -> Path:
        return out / f"{self.name}-{self.id[:8]}"

    def to_json(self) -> str:
        """The job as JSON text (what a remote worker needs to run it)."""
        return json.dumps({
            "kind": self.kind, "name": self.name, "options": _jsonable(self.options), "still": self.still,
            "source": self.source, "chunks": self.chunks,
            "settings": json.loads(settings_to_json(self.settings)) if self.settings is not None else None,
        })  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> Job:
        data = json.loads(text)
        settings = validate_settings(data["settings"]) if data["settings"] is not None else None
        chunks = tuple(data["chunks"]) if data.get("chunks") else None
        return cls(data["kind"], data["name"], settings, data["options"], data["still"], data["source"], chunks)


_NOT_CONTENT = {"out", "overwrite", "segment_frames", "save_frames"}


def _identity(key: str, value: Any) -> Any:
    """An option's value in a job id: files by name, size and modification time (a moved copy is the same)."""
    if key in ("model", "vae", "depth_model", "audio") and isinstance(value, str | Path) and Path(value).is_file():
        stat = Path(value).stat()
        return f"{Path(value).name}:{stat.st_size}:{int(stat.st_mtime)}"
    return value


def _jsonable(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in options.items()}


# --- reading batches -------------------------------------------------------------------------


def read_batch(path: Path, *, defaults: Mapping[str, Any] | None = None, sweeps: Sequence[str] = ()) -> list[Job]:
    """The jobs of a batch file or folder, with ``defaults`` (command-line options) and ``sweeps`` applied,
    each job once. Every job is validated here (settings, sweep keys, options), before anything runs."""
    path = Path(path).expanduser()
    if not path.exists():
        raise SettingsError(f"{path} does not exist; give a batch file (.json, .jsonl, .toml) or a folder", key="BATCH")
    entries = _folder_entries(path) if path.is_dir() else _file_entries(path)
    if not entries:
        raise SettingsError(f"{path} holds no jobs", key="BATCH")
    axes = [parse_sweep(text) for text in sweeps]
    jobs: dict[str, Job] = {}
    for number, (entry, base) in enumerate(entries, start=1):
        where = f"{path}" if path.is_dir() else f"{path}: job {number}"
        try:
            job = _job(entry, base, dict(defaults or {}))
            entry_axes = [parse_sweep(f"{k}={v}") for k, v in dict(entry.get("sweep", {})).items()]
            for expanded in expand(job, [*entry_axes, *axes]):
                jobs.setdefault(expanded.id, expanded)
        except SettingsError as exc:  # named where it is in the batch, with the file or option it is about
            raise SettingsError(str(exc), source=where) from exc
    return list(jobs.values())


def _folder_entries(folder: Path) -> list[tuple[dict[str, Any], Path]]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SETTINGS_SUFFIXES)
    return [({"settings": p.name}, folder) for p in files]


def _file_entries(path: Path) -> list[tuple[dict[str, Any], Path]]:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(text).get("jobs", [])
        elif path.suffix.lower() == ".jsonl":
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
            if isinstance(data, dict) and "jobs" not in data:  # one settings file: one job (to sweep, say)
                return [({"settings": path.name}, path.parent)]
            data = data.get("jobs", data) if isinstance(data, dict) else data
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"{path} is not a valid batch file: {exc}", key="BATCH") from exc
    if not isinstance(data, list) or not all(isinstance(entry, dict) for entry in data):
        raise SettingsError(
            f'{path}: a batch is a list of jobs, each an object such as {{"settings": "tunnel.json"}}', key="BATCH"
        )
    return [(entry, path.parent) for entry in data]


_ENTRY_KEYS = {"kind", "settings", "input", "name", "options", "sweep", "chunks"}


def _job(entry: Mapping[str, Any], base: Path, defaults: dict[str, Any]) -> Job:
    from dreamreel.jobs.render import RenderOptions

    kind = entry.get("kind", "render")
    if kind not in KINDS:
        raise SettingsError(f"is {kind!r}; use one of {', '.join(KINDS)}{did_you_mean(str(kind), KINDS)}", key="kind")
    options = {**defaults, **dict(entry.get("options", {}))}
    if kind == "still":
        from dreamreel.jobs.still import StillRequest

        fields = {k: v for k, v in entry.items() if k not in _ENTRY_KEYS}
        try:
            StillRequest(**fields)
        except TypeError as exc:
            raise SettingsError(f"a still job has an unknown field: {exc}", key="still") from exc
        name = str(entry.get("name") or "still")
        return Job("still", name, None, {k: v for k, v in options.items() if v is not None}, fields, str(base))
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        hint = did_you_mean(unknown[0], _ENTRY_KEYS)
        raise SettingsError(
            f"unknown key {unknown[0]!r} in a {kind} job; use {', '.join(sorted(_ENTRY_KEYS))}{'.' if hint else ''}"
            f"{hint}",
            key=unknown[0],
        )
    if "settings" not in entry:
        raise SettingsError(f'a {kind} job needs "settings": the settings file to render', key="settings")
    settings_path = (base / str(entry["settings"])).expanduser()
    settings = load_settings(settings_path)
    if kind == "m2m":
        if "input" not in entry:
            raise SettingsError('an m2m job needs "input": the video to restyle', key="input")
        video = str((base / str(entry["input"])).expanduser())
        data = json.loads(settings_to_json(settings))
        data["mode"] = "video"
        data["video_input"] = {**(data.get("video_input") or {}), "path": video}
        settings = validate_settings(data)
    options = {k: v for k, v in options.items() if v is not None}
    for key in ("out", "models_dir", "audio", "annotators", "control_cache"):
        if isinstance(options.get(key), str):
            options[key] = str((base / options[key]).expanduser())
    RenderOptions.from_values(options)  # checked now, with the option names in the message
    name = str(entry.get("name") or settings_path.stem)
    return Job(kind, name, settings, options, {}, str(settings_path), _chunks(entry.get("chunks"), kind))


def _chunks(value: Any, kind: str) -> tuple[int, int] | None:
    """``"chunks": {"frames": 24, "overlap": 4}`` of an m2m job (split across workers)."""
    if value is None:
        return None
    if kind != "m2m" or not isinstance(value, Mapping):
        raise SettingsError('only an m2m job is split into chunks: {"frames": 24, "overlap": 4}', key="chunks")
    frames, overlap = value.get("frames", 24), value.get("overlap", 4)
    if not (isinstance(frames, int) and isinstance(overlap, int) and overlap >= 0 and frames > 2 * overlap):
        raise SettingsError(
            f"is {dict(value)}; frames per chunk must be a whole number above twice the overlap", key="chunks"
        )
    return frames, overlap


# --- sweeps ----------------------------------------------------------------------------------


def parse_sweep(text: str) -> tuple[str, list[Any]]:
    """``"seed=1..8"`` -> ("seed", [1, ..., 8]); ``"cfg=5,7,9"`` -> ("schedules.cfg_scale", [5, 7, 9])."""
    if "=" not in str(text):
        raise SettingsError(f"is {text!r}; write KEY=VALUES, e.g. seed=1..8 or cfg=5,7,9", key="--sweep")
    key, values = (part.strip() for part in str(text).split("=", 1))
    path = SWEEP_ALIASES.get(key, key)
    if "." not in path and path not in Settings.model_fields:
        names = [*SWEEP_ALIASES, *Settings.model_fields]
        hint = did_you_mean(key, names)
        raise SettingsError(f"cannot sweep {key!r}: not a setting{'.' if hint else ''}{hint}", key="--sweep")
    span = values.split("..")
    if len(span) == 2 and all(_is_int(v) for v in span):
        low, high = int(span[0]), int(span[1])
        if high < low:
            raise SettingsError(f"is {text!r}; a range goes up, e.g. {key}={high}..{low}", key="--sweep")
        return path, list(range(low, high + 1))
    parsed = [_value(v.strip()) for v in values.split(",") if v.strip()]
    if not parsed:
        raise SettingsError(f"is {text!r}; give values after '='", key="--sweep")
    return path, parsed


def _is_int(text: str) -> bool:
    return text.strip().lstrip("-").isdigit()


def _value(text: str) -> Any:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def expand(job: Job, axes: Sequence[tuple[str, list[Any]]]) -> Iterator[Job]:
    """``job`` once per combination of the sweep values (itself when there is no sweep)."""
    if not axes or job.settings is None:
        yield job
        return
    base = json.loads(settings_to_json(job.settings))
    for combination in itertools.product(*(values for _, values in axes)):
        data = json.loads(json.dumps(base))
        suffix = []
        for (path, _), value in zip(axes, combination, strict=True):
            target = data
            *parents, leaf = path.split(".")
            for parent in parents:
                target = target.setdefault(parent, {})
            target[leaf] = f"0:({value})" if path in SCHEDULE_SWEEPS else value
            suffix.append(f"{path.rsplit('.', 1)[-1]}{value}")
        try:
            settings = validate_settings(data)
        except SettingsError as exc:
            raise SettingsError(f"the sweep value {', '.join(suffix)} is not valid: {exc}", key="--sweep") from exc
        yield replace(job, settings=settings, name=f"{job.name}-{'-'.join(suffix)}".replace(" ", "_"))


# --- running ---------------------------------------------------------------------------------


@dataclass
class JobResult:
    """What became of one job."""

    job: Job
    state: str  # done | skipped (finished before) | interrupted | failed
    run_dir: Path
    video: Path | None = None
    error: str | None = None
    seconds: float = 0.0
    attempts: int = 1


def run_job(
    job: Job,
    out: Path,
    *,
    pool: Any = None,
    progress: Any = None,
    should_stop: Callable[[], bool] = lambda: False,
    lease: tuple[str, int] | None = None,
) -> JobResult:
    """Run one job into its run directory under ``out``: skipped when finished, resumed when interrupted."""
    from dreamreel.jobs.render import RenderOptions, render_run, resume

    started = time.perf_counter()
    run_dir = job.run_dir(out)
    if job.kind == "still":
        return _run_still(job, run_dir, started)
    if job.chunks is not None:
        return _run_chunked(job, run_dir, started, pool=pool, should_stop=should_stop)
    manifest = _manifest(run_dir)
    if manifest is not None and manifest.get("status") == "done" and not _unfinished_finish(run_dir, job):
        return JobResult(job, "skipped", run_dir, _video(run_dir, manifest))
    assert job.settings is not None
    options = RenderOptions.from_values({**job.options, "out": run_dir})
    from dreamreel.media.rundir import has_rendered_frames

    if has_rendered_frames(run_dir) or _unfinished_finish(run_dir, job):
        report = resume(run_dir, replace(options, out=None), progress=progress, should_stop=should_stop, pool=pool,
                        lease=lease)  # fmt: skip
    else:
        report = render_run(
            job.settings, replace(options, overwrite=True) if manifest is not None else options, name=job.name,
            source=job.source, progress=progress, should_stop=should_stop, pool=pool, lease=lease,
        )  # fmt: skip
    video = report.finished_video or report.video
    state = "done" if report.finished else "interrupted"
    return JobResult(job, state, run_dir, video, seconds=time.perf_counter() - started)


def plan_chunked(job: Job, run_dir: Path) -> Any:
    """The plan of a chunked m2m job (made once, checked on every later call; see :mod:`dreamreel.jobs.m2m_plan`)."""
    from dreamreel.jobs.m2m_plan import plan_m2m
    from dreamreel.jobs.render import RenderOptions

    assert job.settings is not None and job.chunks is not None
    options = RenderOptions.from_values({k: v for k, v in job.options.items() if k != "out"})
    return plan_m2m(job.settings, options, run_dir, chunk_frames=job.chunks[0], overlap=job.chunks[1])


def _run_chunked(job: Job, run_dir: Path, started: float, *, pool: Any, should_stop: Callable[[], bool]) -> JobResult:
    """A chunked m2m job in this process: the anchor, every chunk in order, then the joined video."""
    from dreamreel.jobs.m2m_plan import assemble, plan_generator, render_anchor, render_chunk

    plan = plan_chunked(job, run_dir)
    if plan.video_path.is_file():
        return JobResult(job, "skipped", run_dir, plan.video_path)
    generator = plan_generator(plan, pool)
    if plan.needs_anchor:
        render_anchor(plan, generator=generator)
    for chunk in plan.chunks:
        if should_stop() or not render_chunk(plan, chunk.index, generator=generator, should_stop=should_stop).finished:
            return JobResult(job, "interrupted", run_dir, seconds=time.perf_counter() - started)
    return JobResult(job, "done", run_dir, assemble(plan), seconds=time.perf_counter() - started)


def _unfinished_finish(run_dir: Path, job: Job) -> bool:
    """A finished render whose finishing steps were cut short."""
    from dreamreel.jobs.render import FINISHED_VIDEO

    finish = job.settings.finish if job.settings is not None else None
    if finish is None or (finish.upscale is None and finish.interpolate is None):
        return False
    manifest = _manifest(run_dir)
    return bool(manifest and manifest.get("status") == "done" and not any(run_dir.glob(f"{FINISHED_VIDEO}.*")))


def _run_still(job: Job, run_dir: Path, started: float) -> JobResult:
    done = run_dir / "done.json"
    if done.is_file():
        return JobResult(job, "skipped", run_dir)
    from dreamreel.fileio import atomic_write_text
    from dreamreel.jobs.render import model_info
    from dreamreel.jobs.still import StillRequest, render_stills
    from dreamreel.pipelines.generator import DiffusersGenerator, GeneratorOptions

    options = job.options
    model = options.get("model")
    if not model:
        raise SettingsError("a still job needs a model: give --model or options.model", key="--model")

    def factory(settings: Settings) -> Any:
        return DiffusersGenerator.from_source(
            str(model), GeneratorOptions(device=options.get("device", "auto"), dtype=options.get("dtype", "auto"))
        )

    paths = render_stills(StillRequest(**job.still), run_dir, factory, model=str(model), model_info=model_info)
    atomic_write_text(done, json.dumps({"images": [p.name for p in paths]}) + "\n")
    return JobResult(job, "done", run_dir, paths[0] if paths else None, seconds=time.perf_counter() - started)


def _manifest(run_dir: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data


def _video(run_dir: Path, manifest: Mapping[str, Any]) -> Path | None:
    from dreamreel.jobs.render import FINISHED_VIDEO

    finished = next(run_dir.glob(f"{FINISHED_VIDEO}.*"), None)
    if finished is not None:
        return finished
    return run_dir / manifest["video"] if manifest.get("video") else None


def run_local(
    jobs: Sequence[Job],
    out: Path,
    *,
    progress: Any = None,  # a dreamreel.progress.BatchProgress (or anything with job(name) and job_done())
    should_stop: Callable[[], bool] = lambda: False,
    on_result: Callable[[JobResult], None] | None = None,
) -> list[JobResult]:
    """Run the jobs one after another in this process, keeping the last model loaded for the next job that
    uses it. A failing job is reported and the batch goes on; a stop request ends the batch after the
    current frame (the job is resumed by the next run)."""
    from dreamreel.jobs.render import ModelPool

    pool = ModelPool()
    results: list[JobResult] = []
    for job in jobs:
        if should_stop():
            break
        reporter = progress.job(job.name) if progress is not None else None
        try:
            result = run_job(job, out, pool=pool, progress=reporter, should_stop=should_stop)
        except DreamreelError as exc:
            logger.error("job %s failed: %s", job.name, exc)
            result = JobResult(job, "failed", job.run_dir(out), error=str(exc))
        results.append(result)
        if progress is not None:
            progress.job_done()
        if on_result is not None:
            on_result(result)
    return results


# --- status ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobStatus:
    job: Job
    state: str  # pending | rendering | interrupted | done | failed-start
    frames_done: int
    frames: int
    eta_seconds: float | None
    video: Path | None

    def line(self) -> str:
        eta = f", ETA {_duration(self.eta_seconds)}" if self.eta_seconds is not None else ""
        where = f", {self.video}" if self.video is not None else ""
        return f"{self.job.name}  {self.state}  {self.frames_done}/{self.frames} frames{eta}{where}"


def status(jobs: Sequence[Job], out: Path) -> list[JobStatus]:
    """Each job's state from its run directory (no model, no rendering)."""
    statuses = []
    for job in jobs:
        run_dir = job.run_dir(out)
        frames = job.settings.max_frames if job.settings is not None else int(job.still.get("batch_count", 1))
        manifest = _manifest(run_dir)
        if job.chunks is not None:
            statuses.append(_chunked_status(job, run_dir, frames))
            continue
        if job.kind == "still":
            finished = (run_dir / "done.json").is_file()
            statuses.append(
                JobStatus(job, "done" if finished else "pending", frames if finished else 0, frames, None, None)
            )
            continue
        if manifest is None:
            statuses.append(JobStatus(job, "pending", 0, frames, None, None))
            continue
        frames = int(manifest.get("max_frames") or frames)
        done = int(manifest.get("next_frame", 0))
        state = str(manifest.get("status", "pending"))
        eta = None
        if state == "rendering" and done > 0:
            created = (run_dir / "schedule.csv").stat().st_mtime
            eta = (float(manifest.get("updated", created)) - created) / done * (frames - done)
        if state == "done" and _unfinished_finish(run_dir, job):
            state = "finishing"
        statuses.append(JobStatus(job, state, done, frames, eta, _video(run_dir, manifest)))
    return statuses


def _chunked_status(job: Job, run_dir: Path, frames: int) -> JobStatus:
    from dreamreel.jobs.m2m_plan import M2MPlan, unfinished_chunks

    if not (run_dir / "plan.json").is_file():
        return JobStatus(job, "pending", 0, frames, None, None)
    plan = M2MPlan.load(run_dir)
    if plan.video_path.is_file():
        return JobStatus(job, "done", plan.frames, plan.frames, None, plan.video_path)
    left = set(unfinished_chunks(plan))
    done = sum(chunk.end - chunk.start for chunk in plan.chunks if chunk.index not in left)
    return JobStatus(job, f"chunks {len(plan.chunks) - len(left)}/{len(plan.chunks)}", done, plan.frames, None, None)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}" if minutes < 60 else f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def summary(results: Sequence[JobResult]) -> list[str]:
    """One line per job and a count, for the end of ``dreamreel batch``."""
    lines = [
        f"{r.job.name}: {r.state}" + (f" ({r.video})" if r.video else "") + (f": {r.error}" if r.error else "")
        for r in results
    ]
    counts = {state: sum(r.state == state for r in results) for state in ("done", "skipped", "interrupted", "failed")}
    lines.append(", ".join(f"{n} {state}" for state, n in counts.items() if n) or "no jobs ran")
    return lines


__all__ = [
    "Job",
    "JobResult",
    "JobStatus",
    "expand",
    "parse_sweep",
    "read_batch",
    "run_job",
    "run_local",
    "status",
    "summary",
]
