"""Resolve every schedule of a Deforum-format settings file (Deforum's defaults) for 10,000 frames.

Target: under 50 ms on a 2-core machine (Deforum's per-frame parser takes seconds).

    python benchmarks/bench_schedules.py [--frames 10000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

from dreamreel.keyframes import parse_schedule, parse_string_schedule
from dreamreel.settings import resolve_schedules, settings_from_mapping
from dreamreel.settings.deforum import deforum_defaults


def deforum_default_file(frames: int) -> dict[str, object]:
    data = dict(deforum_defaults())
    data.update(
        max_frames=frames,
        seed=12345,
        prompts={"0": "a tiny bunny --neg nsfw", "30": "a cat", "60": "a coconut", "90": "a durian"},
        enable_steps_scheduling=True,
        enable_sampler_scheduling=True,
        enable_checkpoint_scheduling=True,
        enable_clipskip_scheduling=True,
        enable_ddim_eta_scheduling=True,
        enable_ancestral_eta_scheduling=True,
    )
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    data = deforum_default_file(args.frames)
    schedules = {k: v for k, v in data.items() if isinstance(v, str) and ":" in v and "(" in v}
    text_keys = {"sampler_schedule", "checkpoint_schedule", "mask_schedule", "noise_mask_schedule"}
    settings = settings_from_mapping(data)

    def parse_all() -> None:
        for key, value in schedules.items():
            if key in text_keys:
                parse_string_schedule(value, args.frames, seed=12345, name=key)
            else:
                parse_schedule(value, args.frames, seed=12345, name=key)

    for label, work in (
        (f"parse_schedule on all {len(schedules)} schedule strings", parse_all),
        ("resolve_schedules (whole table: schedules, prompts, seeds)", lambda: resolve_schedules(settings)),
    ):
        work()  # warm up (numexpr compiles and caches each expression once)
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            work()
            times.append(time.perf_counter() - start)
        print(
            f"{label}, {args.frames} frames: median {statistics.median(times) * 1e3:.1f} ms, "
            f"min {min(times) * 1e3:.1f} ms (target < 50 ms)"
        )


if __name__ == "__main__":
    main()
