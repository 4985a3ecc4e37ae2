"""Running a batch on Ray: one worker actor per GPU, models kept loaded, failed workers' jobs retried.

Imported only by ``dreamreel batch --ray`` (``pip install dreamreel[ray]``). Ray does the scheduling,
transport and process management; this module only decides which worker gets which job:

* one :class:`RenderWorker` actor per ``gpus_per_job`` GPUs of the cluster (``num_gpus``; in tests a
  custom resource stands in for GPUs), each keeping its last model loaded
  (:class:`~dreamreel.jobs.render.ModelPool`);
* a job goes to an idle worker that holds its model when there is one, else to any idle worker;
* a worker that dies (its process killed, its node gone) is replaced, and its job is given to a
  worker again as the next attempt: it resumes from its run directory (``--resume``). The attempt
  number is the run directory's lease, so a zombie of an earlier attempt cannot commit over it;
* a chunked m2m job (:mod:`dreamreel.jobs.m2m_plan`) is planned here, its control maps are extracted
  by a Ray Data pass (:mod:`dreamreel.jobs.control_prefill`), its anchor frame is rendered by one
  worker, its chunks by all of them, and its video is assembled here; a chunk whose worker died is
  rendered again by another one, resuming from its frames on disk.

Run directories must live on storage every worker sees at the same path (a shared file system:
NFS, a cluster file system, a mounted bucket that supports renames and fsync).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dreamreel.errors import DreamreelError, SettingsError
from dreamreel.jobs.batch import Job, JobResult

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3


class RenderWorker:
    """The Ray actor that runs jobs (made remote by :func:`run_ray`)."""

    def __init__(self, torch_threads: int | None = None) -> None:
        from dreamreel.jobs.render import ModelPool

        if torch_threads:  # one worker per core: torch's and OpenCV's thread pools pinned to that many threads
            import cv2
            import torch

            torch.set_num_threads(torch_threads)
            cv2.setNumThreads(torch_threads)
        logging.basicConfig(level=logging.WARNING, format="%(message)s")  # the driver reports each job
        self.pool = ModelPool()

    def pid(self) -> int:
        return os.getpid()

    def models(self) -> set[str]:
        return self.pool.models()

    def run_anchor(self, plan_dir: str) -> dict[str, Any]:
        from dreamreel.jobs.m2m_plan import M2MPlan, plan_generator, render_anchor

        plan = M2MPlan.load(Path(plan_dir))
        render_anchor(plan, generator=plan_generator(plan, self.pool))
        return {"state": "done"}

    def run_chunk(self, plan_dir: str, index: int) -> dict[str, Any]:
        from dreamreel.jobs.m2m_plan import M2MPlan, plan_generator, render_chunk

        plan = M2MPlan.load(Path(plan_dir))
        result = render_chunk(plan, index, generator=plan_generator(plan, self.pool))
        return {"state": "done" if result.finished else "interrupted"}

    def run(self, job_json: str, out: str, attempt: int) -> dict[str, Any]:
        from dreamreel.jobs.batch import run_job

        job = Job.from_json(job_json)
        try:
            result = run_job(job, Path(out), pool=self.pool, lease=(job.id, attempt))
        except DreamreelError as exc:
            return {"state": "failed", "error": str(exc), "video": None, "seconds": 0.0}
        return {
            "state": result.state,
            "error": result.error,
            "video": str(result.video) if result.video else None,
            "seconds": result.seconds,
        }


@dataclass
class _Task:
    """One piece of work for a worker: a whole job, or the anchor or a chunk of a chunked m2m job."""

    job: Job
    step: str = "job"  # job | anchor | chunk
    index: int = -1
    attempt: int = 1
    started: float = 0.0


@dataclass
class _Chunked:
    """A chunked m2m job in progress: its plan and the chunks not finished yet."""

    plan: Any
    left: set[int]
    started: float


@dataclass
class _Slot:
    actor: Any
    models: set[str] = field(default_factory=set)
    busy: bool = False


def run_ray(
    jobs: Sequence[Job],
    out: Path,
    *,
    address: str | None = None,
    gpus_per_job: float = 1.0,
    resource: str = "GPU",
    workers: int | None = None,
    torch_threads: int | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_result: Callable[[JobResult], None] | None = None,
) -> list[JobResult]:
    """Run ``jobs`` on a Ray cluster (``address``; None starts a local instance unless one is running).

    ``resource`` is the cluster resource a worker holds ``gpus_per_job`` of ("GPU", or a custom one);
    without any on the cluster, one CPU worker runs the jobs (with a warning). Returns one result per
    job, in the order they finished.
    """
    try:
        import ray
        from ray.exceptions import RayActorError
    except ImportError as exc:  # pragma: no cover - the extra is installed in development
        raise SettingsError(
            "needs Ray: pip install 'dreamreel[ray]' (or run the batch without --ray)", key="--ray"
        ) from exc
    if gpus_per_job <= 0:
        raise SettingsError(f"is {gpus_per_job:g}; give a number of GPUs above 0", key="--gpus-per-job")
    if not ray.is_initialized():
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
    out = Path(out).absolute()
    capacity = float(ray.cluster_resources().get(resource, 0.0))
    count = workers or int(capacity // gpus_per_job)
    remote_options: dict[str, Any]
    if count < 1:
        logger.warning("the Ray cluster has no %s; one worker runs the jobs on CPU", resource)
        count, remote_options = 1, {"num_cpus": 1}
    elif resource == "GPU":
        remote_options = {"num_gpus": gpus_per_job, "num_cpus": 1}
    else:
        remote_options = {"resources": {resource: gpus_per_job}, "num_cpus": 1}
    actor_class = ray.remote(RenderWorker).options(max_concurrency=1, **remote_options)

    def new_slot() -> _Slot:
        """A new worker actor."""
        return _Slot(actor_class.remote(torch_threads))

    def capacity_now() -> int:
        if "num_cpus" in remote_options and len(remote_options) == 1:
            return 1
        return int(float(ray.cluster_resources().get(resource, 0.0)) // gpus_per_job)

    slots = {number: new_slot() for number in range(count)}
    numbers = iter(range(count, 1_000_000))
    logger.info("running %d jobs on %d Ray workers", len(jobs), count)
    results: list[JobResult] = []

    def finish(result: JobResult) -> None:
        results.append(result)
        logger.info("%s: %s", result.job.name, result.state)
        if on_result is not None:
            on_result(result)

    queue: list[_Task] = []
    chunked: dict[str, _Chunked] = {}
    for job in jobs:
        if job.chunks is None:
            queue.append(_Task(job))
            continue
        tasks = _plan_chunked(job, out, concurrency=count)
        if tasks is None:
            finish(JobResult(job, "skipped", job.run_dir(out), job.run_dir(out) / "video.mp4"))
            continue
        from dreamreel.jobs.m2m_plan import unfinished_chunks

        plan, first = tasks
        chunked[job.id] = _Chunked(plan, set(unfinished_chunks(plan)), time.perf_counter())
        queue += first
    flying: dict[Any, tuple[int, _Task]] = {}

    def submit(slot: _Slot, task: _Task) -> Any:
        task.started = task.started or time.perf_counter()
        if task.step == "anchor":
            return slot.actor.run_anchor.remote(str(chunked[task.job.id].plan.root))
        if task.step == "chunk":
            return slot.actor.run_chunk.remote(str(chunked[task.job.id].plan.root), task.index)
        return slot.actor.run.remote(task.job.to_json(), str(out), task.attempt)

    def done_with(task: _Task, value: dict[str, Any]) -> None:
        job = task.job
        if task.step == "job":
            video = Path(value["video"]) if value["video"] else None
            seconds = time.perf_counter() - task.started
            finish(JobResult(job, value["state"], job.run_dir(out), video, value["error"], seconds, task.attempt))
            return
        progress = chunked[job.id]
        if task.step == "anchor":
            queue[:0] = [_Task(job, "chunk", index) for index in sorted(progress.left)]
            return
        if value["state"] != "done":
            queue.append(_Task(job, "chunk", task.index, task.attempt))
            return
        progress.left.discard(task.index)
        if not progress.left:
            from dreamreel.jobs.m2m_plan import assemble

            video = assemble(progress.plan)
            finish(JobResult(job, "done", job.run_dir(out), video, None, time.perf_counter() - progress.started))

    try:
        while queue or flying:
            if should_stop():
                logger.info("stopping: the running jobs stop with their workers and resume in the next run")
                break
            if queue and not slots:
                for task in queue:
                    error = "no Ray worker is left"
                    finish(JobResult(task.job, "failed", task.job.run_dir(out), error=error, attempts=task.attempt))
                queue.clear()
                continue
            for number, slot in slots.items():
                if slot.busy or not queue:
                    continue
                pick = next((i for i, task in enumerate(queue) if task.job.model in slot.models), 0)
                task = queue.pop(pick)
                flying[submit(slot, task)] = (number, task)
                slot.busy = True
                if task.job.model:
                    slot.models = {task.job.model}
            done, _ = ray.wait(list(flying), num_returns=1, timeout=0.5)
            for ref in done:
                number, task = flying.pop(ref)
                try:
                    value = ray.get(ref)
                except RayActorError as exc:
                    logger.warning("the worker running %s (attempt %d) died: %s", task.job.name, task.attempt, exc)
                    del slots[number]
                    if len(slots) < capacity_now():  # the node is still there: a new worker takes the place
                        slots[next(numbers)] = new_slot()
                    if task.attempt < MAX_ATTEMPTS:
                        task.attempt += 1
                        queue.insert(0, task)
                    else:
                        job = task.job
                        finish(JobResult(job, "failed", job.run_dir(out), error=str(exc), attempts=task.attempt))
                    continue
                slots[number].busy = False
                done_with(task, value)
    finally:
        for slot in slots.values():
            ray.kill(slot.actor)
    return results


def _plan_chunked(job: Job, out: Path, *, concurrency: int) -> tuple[Any, list[_Task]] | None:
    """Plan a chunked m2m job (None when its video is already there), extract its control maps with Ray Data,
    and give its first tasks: the anchor, or the unfinished chunks when the anchor is not needed or done."""
    from dreamreel.jobs.batch import plan_chunked
    from dreamreel.jobs.m2m_plan import unfinished_chunks

    plan = plan_chunked(job, job.run_dir(out))
    if plan.video_path.is_file():
        return None
    if plan.settings.controlnet:
        from dreamreel.jobs.control_prefill import prefill_on_ray

        prefill_on_ray(plan.settings, plan.options, concurrency=concurrency)
    if plan.needs_anchor:
        return plan, [_Task(job, "anchor")]
    return plan, [_Task(job, "chunk", index) for index in unfinished_chunks(plan)]
