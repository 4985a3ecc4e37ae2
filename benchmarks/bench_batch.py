"""Batch benchmark (issue "Batches of renders ... on Ray"): 8 tiny-model renders on 2 Ray workers vs 1.

A local Ray instance (a custom resource stands in for GPUs, each worker pinned to one torch thread)
runs the same batch, the way ``dreamreel batch --ray`` runs it, once with one worker and once with
two; prints the speedup (target >= 1.7x on two cores; frames of 192x192 at 10 steps by default, so
that the model, not the encoder, is most of a job's work; two processes of pure single-threaded
matrix products scale by 1.67x on the 2-vCPU machines this was written on, which bounds it there),
Ray's start-up time and the per-job overhead (wall time of the one-worker batch minus the jobs' own
render time, per job).

    python benchmarks/bench_batch.py [--jobs 8] [--frames 16] [--workers 2] [--size 192] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

RESOURCE = "bench_gpu"


def _batch(folder: Path, model: Path, jobs: int, frames: int, size: int, steps: int) -> list:  # type: ignore[type-arg]
    from dreamreel.jobs.batch import read_batch

    settings = folder / "job.json"
    settings.write_text(json.dumps({
        "dreamreel_settings": 1, "mode": "2d", "width": size, "height": size, "max_frames": frames, "fps": 12,
        "seed": 1, "steps": steps, "prompts": {"0": "a red cat"},
        "schedules": {"zoom": "0:(1.03)", "strength": "0:(0.5)"},
    }))  # fmt: skip
    return read_batch(settings, defaults={"model": str(model)}, sweeps=[f"seed=1..{jobs}"])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=192, help="frame size in pixels (default 192)")
    parser.add_argument("--steps", type=int, default=10, help="sampler steps (default 10)")
    args = parser.parse_args(argv)
    import ray

    from dreamreel.jobs.ray_batch import run_ray
    from dreamreel.testing import save_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = save_tiny_model(folder / "tiny", controlnets=())
        jobs = _batch(folder, model, args.jobs, args.frames, args.size, args.steps)
        start = time.perf_counter()
        ray.init(num_cpus=args.workers, resources={RESOURCE: args.workers}, include_dashboard=False,
                 logging_level="ERROR", log_to_driver=False)  # fmt: skip
        startup = time.perf_counter() - start
        try:
            walls = {}
            renders = {}
            for workers in (1, args.workers):
                start = time.perf_counter()
                results = run_ray(jobs, folder / f"runs{workers}", resource=RESOURCE, workers=workers, torch_threads=1)
                walls[workers] = time.perf_counter() - start
                renders[workers] = sum(r.seconds for r in results)
                assert all(r.state == "done" for r in results), [r.error for r in results]
        finally:
            ray.shutdown()
    speedup = walls[1] / walls[args.workers]
    print(
        f"{args.jobs} tiny-model renders of {args.frames} frames {args.size}x{args.size}, {args.steps} steps: "
        f"1 worker {walls[1]:.1f} s, {args.workers} workers "
        f"{walls[args.workers]:.1f} s, speedup {speedup:.2f}x (target >= 1.7x); Ray start-up {startup:.1f} s; "
        f"per-job overhead {(walls[1] - renders[1]) / args.jobs:.2f} s"
    )


if __name__ == "__main__":
    main()
