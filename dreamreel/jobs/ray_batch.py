"""Running a batch on Ray: one worker actor per GPU, models kept loaded, failed workers' jobs retried.

Imported only by ``dreamreel batch --ray`` (``pip install dreamreel[ray]``). Ray does the scheduling,
transport and process management; this module only decides which worker gets which job:

* one :class:`RenderWorker` actor per ``gpus_per_job`` GPUs of the cluster (``num_gpus``; in tests a
  custom resource stands in for GPUs), each keeping its last model loaded
  (:class:`~dreamreel.jobs.render.ModelPool`);
* a job goes to an idle worker that holds its model when there is one, else to any idle worker;
* a worker that dies (its process killed, its node gone) is replaced, and its job is given to a
  worker again as the next attempt: it resumes from its run directory (``--resume``). The attempt
  number is the run directory's lease, so a zombie of an earlier attempt cannot commit over it.

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

        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        logging.basicConfig(level=logging.WARNING, format="%(message)s")  # the driver reports each job
        self.pool = ModelPool()

    def pid(self) -> int:
        return os.getpid()

    def models(self) -> set[str]:
        return self.pool.models()

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
        return _Slot(actor_class.remote(torch_threads))

    def capacity_now() -> int:
        if "num_cpus" in remote_options and len(remote_options) == 1:
            return 1
        return int(float(ray.cluster_resources().get(resource, 0.0)) // gpus_per_job)

    slots = {number: new_slot() for number in range(count)}
    numbers = iter(range(count, 1_000_000))
    logger.info("running %d jobs on %d Ray workers", len(jobs), count)
    queue: list[tuple[Job, int]] = [(job, 1) for job in jobs]
    flying: dict[Any, tuple[int, Job, int, float]] = {}
    results: list[JobResult] = []

    def finish(result: JobResult) -> None:
        results.append(result)
        logger.info("%s: %s", result.job.name, result.state)
        if on_result is not None:
            on_result(result)

    try:
        while queue or flying:
            if should_stop():
                logger.info("stopping: the running jobs stop with their workers and resume in the next run")
                break
            if queue and not slots:
                for job, attempt in queue:
                    finish(JobResult(job, "failed", job.run_dir(out), error="no Ray worker is left", attempts=attempt))
                queue.clear()
                continue
            for number, slot in slots.items():
                if slot.busy or not queue:
                    continue
                pick = next((i for i, (job, _) in enumerate(queue) if job.model in slot.models), 0)
                job, attempt = queue.pop(pick)
                ref = slot.actor.run.remote(job.to_json(), str(out), attempt)
                flying[ref] = (number, job, attempt, time.perf_counter())
                slot.busy = True
                if job.model:
                    slot.models = {job.model}
            done, _ = ray.wait(list(flying), num_returns=1, timeout=0.5)
            for ref in done:
                number, job, attempt, started = flying.pop(ref)
                try:
                    value = ray.get(ref)
                except RayActorError as exc:
                    logger.warning("the worker running %s (attempt %d) died: %s", job.name, attempt, exc)
                    del slots[number]
                    if len(slots) < capacity_now():  # the node is still there: a new worker takes the place
                        slots[next(numbers)] = new_slot()
                    if attempt < MAX_ATTEMPTS:
                        queue.insert(0, (job, attempt + 1))
                    else:
                        finish(JobResult(job, "failed", job.run_dir(out), error=str(exc), attempts=attempt))
                    continue
                slots[number].busy = False
                finish(
                    JobResult(
                        job, value["state"], job.run_dir(out), Path(value["video"]) if value["video"] else None,
                        value["error"], time.perf_counter() - started, attempt,
                    )
                )  # fmt: skip
    finally:
        for slot in slots.values():
            ray.kill(slot.actor)
    return results
