"""A long m2m video split into chunks through ``dreamreel batch``: locally, and on Ray workers, where two
workers, one worker and a worker killed mid-chunk all give the same bytes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from dreamreel.jobs.batch import read_batch, run_local, status


def _clip(path: Path, frames: int) -> Path:
    raw = path.with_suffix(".rgb")
    xs = np.arange(64)[None, :, None]
    raw.write_bytes(b"".join(np.broadcast_to(((xs * 4 + 7 * i) % 256), (48, 64, 3)).astype(np.uint8).tobytes()
                             for i in range(frames)))  # fmt: skip
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "64x48",
               "-r", "12", "-i", str(raw), "-f", "lavfi", "-i", f"sine=duration={frames / 12}", "-c:v", "libx264",
               "-qp", "0", "-c:a", "aac", "-shortest", str(path)]  # fmt: skip
    subprocess.run(command, check=True)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dreamreel.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("chunked") / "tiny", controlnets=())


def _batch(folder: Path, model: Path, frames: int, chunk: int) -> Path:
    _clip(folder / "clip.mp4", frames)
    (folder / "style.json").write_text(json.dumps({
        "dreamreel_settings": 1, "mode": "video", "width": 64, "height": 48, "seed": 5, "steps": 3,
        "prompts": {"0": "a red cat"}, "schedules": {"strength": "0:(0.5)"},
        "video_input": {"path": "clip.mp4"}, "temporal": {"color_match": True},
    }))  # fmt: skip
    batch = folder / "batch.json"
    job = {"kind": "m2m", "settings": "style.json", "input": "clip.mp4", "chunks": {"frames": chunk, "overlap": 2},
           "options": {"model": str(model)}}  # fmt: skip
    batch.write_text(json.dumps([job]))
    return batch


def test_a_chunked_m2m_job_runs_locally_and_a_rerun_skips_it(tmp_path: Path, model: Path) -> None:
    jobs = read_batch(_batch(tmp_path, model, frames=14, chunk=6))
    [result] = run_local(jobs, tmp_path / "runs")
    assert result.state == "done" and result.video is not None
    from dreamreel.media.ffmpeg import probe

    info, source = probe(result.video), probe(tmp_path / "clip.mp4")
    assert info.frame_count == 14 and info.has_audio and abs(info.duration - source.duration) <= 1 / 12
    [state] = status(jobs, tmp_path / "runs")
    assert state.state == "done" and state.frames_done == 14
    assert run_local(jobs, tmp_path / "runs")[0].state == "skipped"


@pytest.mark.slow
def test_chunks_on_two_ray_workers_equal_one_worker_and_survive_a_killed_worker(tmp_path: Path, model: Path) -> None:
    ray = pytest.importorskip("ray")
    from dreamreel.jobs.ray_batch import run_ray

    jobs = read_batch(_batch(tmp_path, model, frames=48, chunk=14))
    ray.init(num_cpus=2, resources={"dreamreel_gpu": 2}, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)  # fmt: skip
    try:
        [two] = run_ray(jobs, tmp_path / "two", resource="dreamreel_gpu")
        [one] = run_ray(jobs, tmp_path / "one", resource="dreamreel_gpu", workers=1)
        run_dir = jobs[0].run_dir(tmp_path / "killed")
        killed: list[int] = []

        def kill_a_worker() -> None:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not killed:
                for marker in run_dir.glob("chunks/*/worker.json"):
                    frames = list(marker.parent.glob("frames/*.npy"))
                    try:
                        pid = int(json.loads(marker.read_text())["pid"])
                    except (OSError, ValueError, KeyError):
                        continue
                    if len(frames) >= 3:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                        return
                time.sleep(0.01)

        killer = threading.Thread(target=kill_a_worker)
        killer.start()
        [survived] = run_ray(jobs, tmp_path / "killed", resource="dreamreel_gpu")
        killer.join()
    finally:
        ray.shutdown()
    assert two.state == one.state == survived.state == "done" and killed
    assert two.video is not None and one.video is not None and survived.video is not None
    assert two.video.read_bytes() == one.video.read_bytes() == survived.video.read_bytes()
    assert run_local(jobs, tmp_path / "local")[0].video.read_bytes() == two.video.read_bytes()  # type: ignore[union-attr]
