"""``dreamreel batch --ray`` on a real local Ray instance (a custom resource stands in for GPUs): the same
videos as the local executor, a killed worker's job retried and resumed, a node lost mid-batch, and the
run directory's lease that keeps a zombie attempt from committing."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dreamreel.errors import RenderError
from dreamreel.jobs.batch import read_batch, run_local

ray = pytest.importorskip("ray")
GPU = "dreamreel_gpu"


def _settings(folder: Path, name: str, **overrides: object) -> Path:
    data: dict[str, object] = {
        "dreamreel_settings": 1, "mode": "2d", "width": 64, "height": 48, "max_frames": 8, "fps": 8, "seed": 3,
        "prompts": {"0": "a red cat"}, "schedules": {"zoom": "0:(1.04)", "angle": "0:(1)"},
    }  # fmt: skip
    data.update(overrides)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, resources={GPU: 2}, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _videos(results: list) -> dict[str, bytes]:  # type: ignore[type-arg]
    return {r.job.id: r.video.read_bytes() for r in results if r.video is not None}


def test_a_batch_on_two_ray_workers_gives_the_local_executors_videos(tmp_path: Path, local_ray: None) -> None:
    from dreamreel.jobs.ray_batch import run_ray

    settings = _settings(tmp_path, "s")
    jobs = read_batch(settings, defaults={"preview": True}, sweeps=["seed=1..3"])
    on_ray = run_ray(jobs, tmp_path / "ray", resource=GPU)
    assert sorted(r.state for r in on_ray) == ["done"] * 3
    local = run_local(jobs, tmp_path / "local")
    assert _videos(on_ray) == _videos(local)


@pytest.mark.slow
def test_a_killed_worker_s_job_is_retried_and_resumes_to_the_same_video(tmp_path: Path, local_ray: None) -> None:
    from dreamreel.jobs.ray_batch import run_ray

    settings = _settings(tmp_path, "long", max_frames=600)
    jobs = read_batch(settings, defaults={"preview": True, "segment_frames": 20})
    run_dir = jobs[0].run_dir(tmp_path / "ray")
    killed: list[int] = []

    def kill_the_worker() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                manifest = json.loads((run_dir / "manifest.json").read_text())
            except (OSError, json.JSONDecodeError):
                manifest = {}
            if manifest.get("status") == "rendering" and manifest.get("next_frame", 0) >= 40:
                killed.append(int(manifest["pid"]))
                os.kill(killed[0], signal.SIGKILL)
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_the_worker)
    killer.start()
    results = run_ray(jobs, tmp_path / "ray", resource=GPU)
    killer.join()
    assert killed and results[0].state == "done" and results[0].attempts == 2
    assert json.loads((run_dir / "manifest.json").read_text())["lease"]["attempt"] == 2
    local = run_local(jobs, tmp_path / "local", progress=None)
    assert _videos(results) == _videos(local)


@pytest.mark.slow
def test_a_node_removed_mid_batch_loses_no_job(tmp_path: Path) -> None:
    from ray.cluster_utils import Cluster

    from dreamreel.jobs.ray_batch import run_ray

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {GPU: 1}})
    node = cluster.add_node(num_cpus=1, resources={GPU: 1})
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    try:
        settings = _settings(tmp_path, "n", max_frames=200)
        jobs = read_batch(settings, defaults={"preview": True, "segment_frames": 20}, sweeps=["seed=1..4"])
        removed = threading.Timer(2.0, lambda: cluster.remove_node(node))
        removed.start()
        results = run_ray(jobs, tmp_path / "ray", resource=GPU)
        removed.join()
        assert sorted(r.state for r in results) == ["done"] * 4
        assert _videos(results) == _videos(run_local(jobs, tmp_path / "local"))
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_a_zombie_attempt_cannot_commit_after_its_job_was_retried(tmp_path: Path) -> None:
    from dreamreel.media.rundir import RunDirectory
    from dreamreel.settings import Settings, resolve_schedules

    settings = Settings(max_frames=4, seed=1)
    table = resolve_schedules(settings)
    from dreamreel.jobs.render import settings_files

    first = RunDirectory.create(tmp_path / "run", settings_files(settings), table, {})
    first.take_lease("job1", 1)
    first.commit()
    retry = RunDirectory.open(tmp_path / "run", lease=("job1", 2))
    retry.commit()
    with pytest.raises(RenderError, match="taken over by attempt 2"):
        first.commit()
    with pytest.raises(RenderError, match="later attempt"):
        RunDirectory.open(tmp_path / "run", lease=("job1", 1))
