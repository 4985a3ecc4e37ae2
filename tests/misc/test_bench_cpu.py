"""The CPU benchmarks run as written, at a tiny size (each part prints its figure and target)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_finishing_benchmark_runs_every_part_at_a_tiny_size() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_finish.py"), "--frames", "3"],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line[:2] for line in lines] == ["1.", "2.", "3."]
    assert re.search(r"= \d+\.\d{3} \(target <= 1\.10\)", lines[0])
    assert re.search(r"IFNet at 256x256: \d+\.\d / \d+\.\d ms per frame pair", lines[1])
    assert re.search(r"-?\d+\.\d MB \(target <= 50 MB", lines[2])


@pytest.mark.slow
def test_the_batch_benchmark_runs_at_a_tiny_size() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_batch.py"), "--jobs", "2", "--frames", "2", "--size", "64",
         "--steps", "2"],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert re.search(r"speedup \d+\.\d\dx \(target >= 1\.7x\); Ray start-up \d+\.\d s; per-job overhead", done.stdout)
