"""Frames per second of a Deforum-like 2D render on a GPU, through the path ``dreamreel render`` runs.

Each case writes a native settings file and renders it with ``dreamreel.jobs.render.render_settings``
(settings -> schedule table -> checks -> model load -> 2D motion, LAB colour coherence, noise,
anti-blur -> the diffusers generator -> a real run directory with the h264 encoder -> the video),
512x512, a zoom + rotation + pan camera, Deforum strength 0.65 (diffusers denoising strength 0.35):

    a  Euler a, 20 steps (int(20 x 0.35) = 7 denoising steps a frame), CFG 7
    b  LCM, 4 steps (int(4 x 0.35) = 1 denoising step a frame), CFG 1.5
    c  as b, with the tiny autoencoder TAESD as the VAE (--vae taesd)
    d  as a, with TAESD (only when asked for: --cases a,b,c,d)

Frame 0 has no init image, so it is txt2img with all the steps (and the GPU's warm-up): ``fps``,
``ms/frame``, ``host`` and ``generator`` cover all frames (host + generator = ms/frame); ``steady``
is the frame rate of frames 1 onwards; ``frame0 s`` is frame 0's time.
``host ms/frame`` is the critical path outside the generator: the loop's wall time minus the
``model`` stage of the render's StageTimer, per frame.

Without ``--model`` the model is built with random weights at Stable Diffusion 1.5's size from the
bundled SD 1.x configs (UNet 859.5M, VAE 83.7M and CLIP text encoder 123.1M parameters, the real
49408-token CLIP tokenizer) and saved as a diffusers folder, plus a random TAESD of the real size
(2.4M): timings do not depend on the weights. Nothing is downloaded.

    python benchmarks/bench_gpu.py                                  # random SD 1.5-size model, cuda, fp16
    python benchmarks/bench_gpu.py --model PATH [--taesd taesd|PATH|random] [--models-dir DIR]
    python benchmarks/bench_gpu.py --tiny --device cpu --dtype fp32 --frames 3   # seconds, on a CPU
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dreamreel.errors import DreamreelError

SD15_PARAMETERS = {
    "unet": 859_520_964,
    "vae": 83_653_863,
    "text_encoder": 123_060_480,
    "taesd": 2_445_063,
}
"""Parameter counts of the real Stable Diffusion 1.5 components and of madebyollin/taesd."""

DEFORUM_STRENGTH = 0.65
PROMPT = "a lighthouse on a cliff at dusk, oil painting, highly detailed"
NEGATIVE = "blurry, low quality"


@dataclass(frozen=True)
class Case:
    sampler: str
    steps: int
    cfg: float
    taesd: bool = False

    def describe(self, strength: float) -> str:
        denoise = denoising_steps(self.steps, strength)
        vae = ", TAESD" if self.taesd else ""
        return (
            f"{self.sampler}, {self.steps} steps x strength {strength:g} ({denoise} denoising), CFG {self.cfg:g}{vae}"
        )


CASES = {
    "a": Case("Euler a", 20, 7.0),
    "b": Case("LCM", 4, 1.5),
    "c": Case("LCM", 4, 1.5, taesd=True),
    "d": Case("Euler a", 20, 7.0, taesd=True),
}


def denoising_steps(steps: int, deforum_strength: float) -> int:
    """Sampler steps an img2img frame runs: ``int(steps * (1 - deforum_strength))``; when that is 0 the generator
    asks for more steps so that one runs (mirrors ``dreamreel.pipelines.generator._steps_for``)."""
    strength = 1.0 - deforum_strength
    if strength <= 0.0:
        return 0
    if int(steps * strength) >= 1:
        return int(steps * strength)
    return int(math.ceil(1.0 / strength - 1e-9) * strength)


def settings_for(case: Case, *, size: int, frames: int, prompt: str, strength: float) -> dict[str, Any]:
    """A Deforum-like 2D animation in dreamreel's native settings format (default colour coherence, noise,
    anti-blur and output: LAB, perlin noise, h264 crf 17 'slow')."""
    return {
        "dreamreel_settings": 1,
        "mode": "2d",
        "width": size,
        "height": size,
        "max_frames": frames,
        "fps": 15,
        "seed": 1,
        "sampler": case.sampler,
        "steps": case.steps,
        "prompts": {"0": prompt},
        "negative_prompt": NEGATIVE,
        "schedules": {
            "zoom": "0:(1.02)",
            "angle": "0:(0.5)",
            "translation_x": "0:(1)",
            "strength": f"0:({strength:g})",
            "cfg_scale": f"0:({case.cfg:g})",
        },
    }


# --- SD 1.5-sized random-weight components ------------------------------------------------------


def sd15_components(*, tokenizer: bool = True) -> dict[str, Any]:
    """UNet, VAE and text encoder with SD 1.5's configs (the bundled ``sd1`` skeleton), random weights, built on
    the current default device (``with torch.device('meta'):`` builds them without memory), and the scheduler
    and (with ``tokenizer``) the real CLIP tokenizer (a small one when open_clip_torch is missing)."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from dreamreel.pipelines.configs import clip_tokenizer, skeleton_dir

    skeleton = skeleton_dir("sd1")
    parts: dict[str, Any] = {
        "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(skeleton / "unet")),
        "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(skeleton / "vae")),
        "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(skeleton / "text_encoder")),
        "scheduler": PNDMScheduler.from_config(PNDMScheduler.load_config(skeleton / "scheduler")),
    }
    if tokenizer:
        try:
            parts["tokenizer"] = clip_tokenizer(skeleton / "tokenizer")
        except DreamreelError as exc:  # open_clip_torch missing: tokenizing costs the same either way
            from dreamreel.testing import tiny_tokenizer

            logging.getLogger(__name__).warning("using a small CLIP tokenizer (%s)", exc)
            with tempfile.TemporaryDirectory() as tmp:
                parts["tokenizer"] = tiny_tokenizer(Path(tmp))
    return parts


def taesd_component() -> Any:
    """A random-weight ``AutoencoderTiny`` of TAESD's size (diffusers' defaults are madebyollin/taesd's config)."""
    from diffusers import AutoencoderTiny

    return AutoencoderTiny()


def sd15_parameter_counts() -> dict[str, int]:
    """Parameter counts of :func:`sd15_components` and :func:`taesd_component`, built on the meta device."""
    import torch

    with torch.device("meta"):
        parts = sd15_components(tokenizer=False)
        parts["taesd"] = taesd_component()
    return {name: sum(p.numel() for p in parts[name].parameters()) for name in SD15_PARAMETERS}


def save_sd15_random(folder: Path, *, device: str, dtype: Any, seed: int = 0) -> Path:
    """Save the SD 1.5-sized random model as a diffusers folder (built on ``device``: fast on a GPU)."""
    import torch
    from diffusers import StableDiffusionPipeline

    torch.manual_seed(seed)
    with torch.device(device):
        parts = sd15_components()
    with _quiet_diffusers():
        for name in ("unet", "vae", "text_encoder"):
            parts[name] = parts[name].to("cpu", dtype)
        pipe = StableDiffusionPipeline(
            **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
        pipe.save_pretrained(folder, safe_serialization=True)  # type: ignore[attr-defined]  # diffusers dummy class
    return folder


def save_taesd_random(folder: Path, *, device: str, dtype: Any, seed: int = 0) -> Path:
    import torch

    torch.manual_seed(seed)
    with torch.device(device):
        taesd = taesd_component()
    with _quiet_diffusers():
        taesd.to("cpu", dtype).save_pretrained(folder, safe_serialization=True)
    return folder


@contextmanager
def _quiet_diffusers() -> Iterator[None]:
    """Hide diffusers' notes while casting and saving the random models (its 'modules kept in float32: []')."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)
        diffusers_logging.enable_progress_bar()


def _cached(folder: Path, build: Any) -> Path:
    """``build(folder)`` unless a previous run finished it (``.complete``): reruns with ``--work-dir`` skip it."""
    if (folder / ".complete").is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    build(folder)
    (folder / ".complete").write_text("")
    return folder


# --- running ------------------------------------------------------------------------------------


class Stamps:
    """A progress reporter that notes when the loop started and when each frame was written."""

    def __init__(self) -> None:
        self.started = 0.0
        self.written: list[float] = []

    def start(self, total: int, *, completed: int = 0) -> None:
        self.started = time.perf_counter()

    def advance(self, frame: int) -> None:
        self.written.append(time.perf_counter())

    def close(self) -> None:
        return None


@dataclass
class Result:
    case: str
    description: str
    frames: int
    loop_s: float
    model_s: float
    load_s: float
    first_s: float
    steady_fps: float | None
    peak_gib: float | None
    video: Path | None
    timer_lines: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.loop_s

    def row(self) -> str:
        ms = self.loop_s / self.frames * 1e3
        host = (self.loop_s - self.model_s) / self.frames * 1e3
        generator = self.model_s / self.frames * 1e3
        steady = f"{self.steady_fps:8.2f}" if self.steady_fps is not None else f"{'-':>8}"
        return (
            f"{self.case:<4} {self.fps:8.2f} {steady} {ms:9.1f} {host:9.1f} {generator:10.1f} {self.first_s:8.2f} "
            f"{self.load_s:7.1f}  {self.description}"
        )


HEADER = (
    f"{'case':<4} {'fps':>8} {'steady':>8} {'ms/frame':>9} {'host ms':>9} {'gen. ms':>10} {'frame0 s':>8} "
    f"{'load s':>7}  settings"
)


def run_case(name: str, case: Case, args: argparse.Namespace, work: Path, model: str, taesd: str | None) -> Result:
    import torch

    from dreamreel.jobs.render import RenderOptions, render_settings

    settings = settings_for(case, size=args.size, frames=args.frames, prompt=args.prompt, strength=args.strength)
    settings_file = work / f"case-{name}.json"
    settings_file.write_text(json.dumps(settings, indent=1), encoding="utf-8")
    options = RenderOptions(
        out=work / "runs" / name,
        overwrite=True,
        model=model,
        models_dir=args.models_dir,
        vae=taesd if case.taesd else None,
        device=args.device,
        dtype=args.dtype,
    )
    cuda = torch.cuda.is_available() and args.device.startswith(("cuda", "auto"))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    stamps = Stamps()
    report = render_settings(settings_file, options, progress=stamps)
    timer = report.timer
    loop = report.wall_seconds - timer.seconds.get("load", 0.0) - timer.seconds.get("join", 0.0)
    written = stamps.written
    steady = (len(written) - 1) / (written[-1] - written[0]) if len(written) > 1 and written[-1] > written[0] else None
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    result = Result(
        case=name,
        description=case.describe(args.strength),
        frames=report.frames_written,
        loop_s=loop,
        model_s=timer.seconds.get("model", 0.0),
        load_s=timer.seconds.get("load", 0.0),
        first_s=written[0] - stamps.started if written else float("nan"),
        steady_fps=steady,
        peak_gib=peak,
        video=report.video,
        timer_lines=timer.report(report.wall_seconds),
    )
    del report
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a real model: .safetensors file, diffusers folder or name (default: random)")
    parser.add_argument("--models-dir", type=Path, help="an AUTOMATIC1111 folder to find --model and TAESD in")
    parser.add_argument(
        "--taesd",
        help="the tiny autoencoder of cases c, d: 'taesd' (dreamreel finds it: models/VAE/taesd of --models-dir, "
        "or the local Hugging Face cache), a diffusers folder, or 'random' (random weights at TAESD's size). "
        "Default: 'taesd' with --model, else 'random'",
    )
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, cpu, mps or auto (default: cuda)")
    parser.add_argument("--dtype", default="fp16", choices=("fp16", "bf16", "fp32", "auto"), help="default: fp16")
    parser.add_argument("--frames", type=int, default=48, help="frames per case (default: 48)")
    parser.add_argument("--size", type=int, help="width and height (default: 512; 64 with --tiny)")
    parser.add_argument("--strength", type=float, default=DEFORUM_STRENGTH, help="Deforum strength (default 0.65)")
    parser.add_argument("--cases", default="a,b,c", help=f"comma-separated, of {','.join(CASES)} (default: a,b,c)")
    parser.add_argument("--prompt", help="the prompt (default: a lighthouse...; the tiny model's words with --tiny)")
    parser.add_argument(
        "--tiny", action="store_true", help="the tiny random test model and a tiny size: checks the script on a CPU"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="keep the settings, run directories and random models here; reruns reuse the models "
        "(default: a temporary folder, removed)",
    )
    return parser


def _check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown or not cases:
        parser.error(f"--cases: unknown case(s) {', '.join(unknown) or '(none)'}; use some of {', '.join(CASES)}")
    if args.tiny and args.model:
        parser.error("--tiny and --model exclude each other")
    if args.size is None:
        args.size = 64 if args.tiny else 512
    if args.size < 64 or args.size % 8:
        parser.error(f"--size must be a multiple of 8, at least 64; got {args.size}")
    if args.frames < 1:
        parser.error("--frames must be at least 1")
    if not 0.0 <= args.strength < 1.0:
        parser.error("--strength (Deforum's: 1 keeps the init) must be in [0, 1)")
    if args.prompt is None:
        from dreamreel.testing import TINY_PROMPT

        args.prompt = TINY_PROMPT if args.tiny else PROMPT
    if args.taesd is None:
        args.taesd = "taesd" if args.model else "random"
    return cases


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    cases = _check_args(args, parser)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _main(args, cases)
    except DreamreelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace, cases: list[str]) -> int:
    import torch

    from dreamreel.pipelines.generator import pick_device, pick_dtype

    device = pick_device(args.device)  # a named device is checked: no CUDA -> SettingsError, exit 2
    dtype = pick_dtype(args.dtype, device)
    import diffusers

    build_device = device.type if device.type == "cuda" else "cpu"
    if device.type == "cuda":
        gpu = f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
    else:
        gpu = f"{device.type}, {torch.get_num_threads()} threads"
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        if args.tiny:
            from dreamreel.testing import save_tiny_model, save_tiny_taesd

            model = str(_cached(work / "tiny-model", lambda f: save_tiny_model(f, controlnets=())))
            taesd = str(_cached(work / "tiny-taesd", save_tiny_taesd))
            what = "tiny random test model"
        elif args.model is None:
            suffix = str(dtype).removeprefix("torch.")
            model = str(
                _cached(work / f"sd15-random-{suffix}", lambda f: save_sd15_random(f, device=build_device, dtype=dtype))
            )
            what = "random weights at SD 1.5's size"
            taesd = args.taesd
        else:
            model, what, taesd = args.model, args.model, args.taesd
        if taesd == "random" and not args.tiny:
            suffix = str(dtype).removeprefix("torch.")
            taesd = str(
                _cached(
                    work / f"taesd-random-{suffix}", lambda f: save_taesd_random(f, device=build_device, dtype=dtype)
                )
            )
        built = time.perf_counter() - started
        print(
            f"dreamreel 2D render, {args.size}x{args.size}, {args.frames} frames a case, {args.dtype} on {gpu}; "
            f"model: {what}; torch {torch.__version__}, diffusers {diffusers.__version__}"
        )
        if args.model is None:
            print(f"random model built (or reused) in {built:.1f} s: {model}")
        results = []
        failed: dict[str, str] = {}
        for name in cases:
            try:
                results.append(run_case(name, CASES[name], args, work, model, taesd))
            except DreamreelError as exc:  # e.g. no TAESD weights: the other cases still count
                failed[name] = str(exc)
                print(f"  case {name} failed: {exc}", flush=True)
                continue
            steady = results[-1].steady_fps
            print(f"  case {name} done: {results[-1].fps:.2f} fps, steady {steady or 0:.2f} fps", flush=True)
    print()
    print(HEADER)
    for result in results:
        print(result.row())
    for name, message in failed.items():
        print(f"{name:<4} {'failed':>8}  {message}")
    print()
    print(
        "fps, ms/frame, host ms, gen. ms: all frames (host + gen. = ms/frame); steady: frames 1+; frame0 s: the "
        "txt2img first frame with warm-up; host ms: loop wall minus the StageTimer's 'model' stage; load s: model load"
    )
    for result in results:
        peak = f", peak GPU memory {result.peak_gib:.2f} GiB" if result.peak_gib is not None else ""
        print(f"case {result.case}: {result.frames} frames{peak}; where the time went:")
        for line in result.timer_lines:
            print("    " + line)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
