"""benchmarks/bench_gpu.py: the CPU smoke run with the tiny model, the device check, the SD 1.5 sizes."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_gpu.py"


def _bench() -> ModuleType:
    """The benchmark script as a module (registered, as dataclasses need, under a name no other module has)."""
    name = "_dreamreel_bench_gpu"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPT)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout
    )


def test_tiny_cpu_run_prints_a_row_per_case_through_real_run_directories(tmp_path: Path) -> None:
    done = _run("--tiny", "--device", "cpu", "--dtype", "fp32", "--frames", "3", "--work-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {m[1]: m for m in re.finditer(r"^([abc])\s+(\d+\.\d+)\s+(\d+\.\d+|-)\s+(\d+\.\d+)", done.stdout, re.M)}
    assert sorted(rows) == ["a", "b", "c"], done.stdout
    for match in rows.values():
        assert float(match[2]) > 0  # fps
    for case in "abc":  # the real sink: a run directory with a manifest and the joined video
        run = tmp_path / "runs" / case
        assert (run / "manifest.json").is_file()
        assert (run / "video.mp4").stat().st_size > 0
    assert "taesd" in (tmp_path / "runs" / "c" / "manifest.json").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_exits_with_a_message() -> None:
    done = _run("--tiny", "--frames", "1")  # --device cuda is the default
    assert done.returncode == 2
    assert "error:" in done.stderr
    assert "CUDA" in done.stderr


def test_sd15_builder_has_sd15_parameter_counts() -> None:
    bench = _bench()
    assert bench.sd15_parameter_counts() == bench.SD15_PARAMETERS
    assert bench.SD15_PARAMETERS == {
        "unet": 859_520_964,
        "vae": 83_653_863,
        "text_encoder": 123_060_480,
        "taesd": 2_445_063,
    }


def test_denoising_steps_follow_deforum_strength() -> None:
    bench = _bench()
    assert bench.denoising_steps(20, 0.65) == 7
    assert bench.denoising_steps(4, 0.65) == 1
    assert bench.denoising_steps(2, 0.75) == 1  # the generator raises the steps so that one runs
    from dreamreel.settings import Settings, resolve_schedules

    settings = Settings.model_validate(
        bench.settings_for(bench.CASES["b"], size=512, frames=4, prompt="p", strength=0.65)
    )
    assert (settings.sampler, settings.steps, settings.width, settings.max_frames) == ("LCM", 4, 512, 4)
    table = resolve_schedules(settings)
    assert table.numeric["strength"][1] == pytest.approx(0.65)  # Deforum's
    assert table.numeric["denoise"][1] == pytest.approx(0.35)  # diffusers' strength, what the generator gets
