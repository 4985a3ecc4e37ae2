"""The ``dreamreel`` command line. The only module that wires the pieces together and configures logging."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import ValidationError
from rich.console import Console
from rich.logging import RichHandler

from dreamreel import __version__
from dreamreel.errors import DreamreelError, SettingsError, check_local_path, describe_os_error

if TYPE_CHECKING:
    from dreamreel.generation import FrameGenerator
    from dreamreel.settings import Settings

logger = logging.getLogger("dreamreel.cli")

EXIT_USER_ERROR = 2


def _configure_logging(verbose: int, console: Console) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose == 1 else logging.WARNING
    handler = RichHandler(console=console, show_time=False, show_path=False, markup=False, rich_tracebacks=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("dreamreel")
    root.handlers[:] = [handler]
    root.setLevel(level)


def _quiet_libraries() -> None:
    """diffusers/transformers print loading bars and deprecation chatter; the CLI shows its own progress."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


def _quiet_model_libraries() -> None:
    """Turn off the loading bars and chatter of diffusers/transformers (the CLI shows its own progress)."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*`torch_dtype` is deprecated", category=FutureWarning)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


class _UsageError(DreamreelError):
    """The command line itself is wrong (unknown option, missing argument, a value its type refuses)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors go through :func:`main`'s one error output (``error: ...``, status 2)."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("argument "):  # "argument --frames: is 0; use 1 or more"
            raise _UsageError(message.removeprefix("argument "))
        raise _UsageError(f"{message} (see '{self.prog} --help')")


def _int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` (to ``high``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"is {text!r}, not a whole number") from None
        if value < low or (high is not None and value > high):
            allowed = f"{low} or more" if high is None else f"{low} to {high}"
            raise argparse.ArgumentTypeError(f"is {value}; use {allowed}")
        return value

    return parse


def _local_path(what: str, *, folder: bool = False) -> Callable[[str], Path]:
    """An argparse type: an existing local file (or folder); URLs are refused, ``~`` is expanded."""

    def parse(text: str) -> Path:
        try:
            return check_local_path(text, key="", what=what, folder=folder)
        except SettingsError as exc:
            raise argparse.ArgumentTypeError(exc.detail) from None

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dreamreel",
        description="Keyframed Stable Diffusion animation (Deforum-compatible) and video restyling.",
    )
    parser.add_argument("--version", action="version", version=f"dreamreel {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    plan = commands.add_parser(
        "plan",
        help="resolve every schedule of a settings file and show it (no model is loaded)",
        description="Resolve schedules, prompts and seeds of a settings file (dreamreel or Deforum format) and "
        "print the frames; nothing is rendered.",
    )
    plan.add_argument(
        "settings", metavar="SETTINGS", type=_local_path("settings file"),
        help="settings file (.json, or a Deforum settings .txt)",
    )  # fmt: skip
    plan.add_argument("--frames", help="frames to show, e.g. '0-10,30,60-90:5' (default: up to 40 spread out)")
    plan.add_argument("--csv", metavar="FILE", type=Path, help="write every schedule of every frame to a CSV file")
    plan.add_argument("--plot", metavar="FILE.png", type=Path, help="draw the changing schedules to a PNG")
    plan.set_defaults(handler=_cmd_plan)

    render = commands.add_parser(
        "render",
        help="render a settings file into a video (or --resume an interrupted run)",
        description="Render an animation: schedules are resolved and checked, the output is preflighted, then every "
        "frame is warped, diffused and streamed into the video. Ctrl-C stops after the current frame and leaves a "
        "playable video; --resume continues exactly where it stopped.",
    )
    render.add_argument(
        "settings", nargs="?", metavar="SETTINGS", type=_local_path("settings file"),
        help="settings file (.json, or a Deforum settings .txt)",
    )  # fmt: skip
    render.add_argument("--resume", metavar="RUN_DIR", type=Path, help="continue an interrupted run")
    render.add_argument("--preview", action="store_true", help="motion preview: every step but the model (no GPU)")
    render.add_argument(
        "--frames",
        type=_int_at_least(1),
        dest="max_frames",
        metavar="N",
        help="render the first N frames of the full animation",
    )
    _add_output_options(render, out_help="run directory (default: runs/<settings name>-<time>)")
    _add_model_options(render)
    render.add_argument("--depth-model", help="depth model for 3D: a local folder or a hub id in the local cache")
    render.set_defaults(handler=_cmd_render)

    still = commands.add_parser(
        "still",
        help="generate still images (txt2img, or img2img with --init)",
        description="Generate images with A1111 semantics; each PNG carries A1111's generation parameters.",
    )
    still.add_argument("prompt", nargs="?", help="prompt in A1111 syntax (omit with --from)")
    still.add_argument("--negative", help="negative prompt")
    still.add_argument(
        "--from", dest="from_image", metavar="IMAGE.png", type=_local_path("PNG"),
        help="regenerate from a PNG's A1111 parameters",
    )  # fmt: skip
    still.add_argument("--sampler", help="A1111 sampler name, e.g. 'Euler a', 'DPM++ 2M Karras' (default Euler a)")
    still.add_argument("--steps", type=int, help="sampler steps (default 25)")
    still.add_argument("--cfg", type=float, help="CFG scale (default 7)")
    still.add_argument("--seed", type=int, help="seed; -1 = random (default)")
    still.add_argument("--size", help="WIDTHxHEIGHT, e.g. 512x768 (default 512x512)")
    still.add_argument("--init", type=_local_path("image"), help="init image for img2img")
    still.add_argument("--strength", type=float, help="img2img denoising strength 0..1 (default 0.75)")
    still.add_argument("--clip-skip", type=int, help="A1111 clip skip (default 1)")
    still.add_argument("--batch-count", type=_int_at_least(1), default=1, help="how many batches (default 1)")
    still.add_argument("--batch-size", type=_int_at_least(1), default=1, help="images per batch (default 1)")
    hires = still.add_argument_group(
        "hires fix", "A1111's two-pass txt2img: generate at --size, upscale, then img2img at --denoise"
    )
    hires.add_argument("--hires", type=float, metavar="SCALE", help="turn the hires fix on: upscale by SCALE, e.g. 2")
    hires.add_argument(
        "--hires-resize", metavar="WxH",
        help="turn the hires fix on: upscale to this size instead (a side of 0 keeps the aspect ratio)",
    )  # fmt: skip
    hires.add_argument(
        "--hires-upscaler", metavar="NAME",
        help="Latent (default), 'Latent (antialiased)', 'Latent (bicubic)', 'Latent (bicubic antialiased)', "
        "'Latent (nearest)', 'Latent (nearest-exact)', Lanczos, Nearest, None, or an upscaler model file or its "
        "name in --models-dir",
    )  # fmt: skip
    hires.add_argument("--hires-steps", type=int, metavar="N", help="steps of the hires pass (default 0: --steps)")
    hires.add_argument("--denoise", type=float, metavar="X", help="denoising strength of the hires pass (default 0.7)")
    hires.add_argument("--hires-prompt", metavar="TEXT", help="prompt of the hires pass (default: the prompt)")
    hires.add_argument(
        "--hires-negative", metavar="TEXT", help="negative prompt of the hires pass (default: --negative)"
    )
    still.add_argument("--out", type=Path, default=Path("outputs"), help="folder for the PNGs (default outputs/)")
    _add_model_options(still)
    still.set_defaults(handler=_cmd_still)

    m2m = commands.add_parser(
        "m2m",
        help="restyle a video frame by frame (mov2mov) with ControlNet, keeping its timing and audio",
        description="Every (n-th) frame of the input goes through img2img with ControlNet conditioning computed from "
        "that frame; the output keeps the source's duration and audio. Options override --settings.",
    )
    m2m.add_argument("input", metavar="INPUT", type=_local_path("video"), help="input video")
    m2m.add_argument(
        "--settings", type=_local_path("settings file"),
        help="settings file to start from (its prompts, schedules, units)",
    )  # fmt: skip
    m2m.add_argument("--prompt", help="prompt (A1111 syntax); or prompts in --settings")
    m2m.add_argument("--negative", help="negative prompt")
    m2m.add_argument(
        "--controlnet", action="append", default=[], metavar="PRE[:WEIGHT[:MODEL]]",
        help="a ControlNet unit, e.g. openpose:1.0 or hed:0.5:path/to/controlnet (repeatable)",
    )  # fmt: skip
    m2m.add_argument("--strength", type=float, help="img2img denoising strength 0..1 (default 0.5)")
    m2m.add_argument("--sampler", help="A1111 sampler name (default Euler a)")
    m2m.add_argument("--steps", type=int, help="sampler steps (default 25)")
    m2m.add_argument("--cfg", type=float, help="CFG scale (default 7)")
    m2m.add_argument("--seed", type=int, help="seed; -1 = random")
    m2m.add_argument("--seed-behavior", choices=["fixed", "iter", "random"], help="seed per frame (default fixed)")
    m2m.add_argument("--size", help="WIDTHxHEIGHT (default: the input's aspect, longer side 512)")
    m2m.add_argument("--every", type=int, help="use every n-th input frame (output fps = input fps / n)")
    m2m.add_argument("--start", type=int, help="first input frame")
    m2m.add_argument("--end", type=int, help="last input frame (inclusive)")
    m2m.add_argument("--fps", type=float, help="output fps (default: input fps / --every)")
    m2m.add_argument("--no-audio", action="store_true", help="do not copy the input's audio (see also --audio)")
    m2m.add_argument("--flow-guidance", type=float, help="blend of the flow-warped previous output in each init, 0..1")
    m2m.add_argument("--cross-frame-attention", action="store_true", help="attend to the first and previous frame")
    m2m.add_argument("--no-color-match", action="store_true", help="do not match colours to the first output")
    _add_output_options(m2m, out_help="run directory (default: runs/<input name>-<time>)")
    _add_model_options(m2m)
    m2m.set_defaults(handler=_cmd_m2m)

    upscale = commands.add_parser(
        "upscale",
        help="upscale a video, a run directory's video or a PNG still (ESRGAN/Real-ESRGAN/SwinIR/... or Lanczos)",
        description="Upscale every frame with an upscaler file (any architecture spandrel detects: ESRGAN, "
        "Real-ESRGAN, SwinIR, HAT, DAT, ...) or a plain Lanczos resize. Videos are finished in segments: run the "
        "same command again after an interruption and it continues. A PNG keeps its A1111 parameters.",
    )
    upscale.add_argument("input", metavar="INPUT", help="a video, a dreamreel run directory or a PNG")
    upscale.add_argument(
        "--model", default="lanczos",
        help="upscaler file, or its name in --models-dir (A1111 models/ESRGAN, ...), or 'lanczos' (default)",
    )  # fmt: skip
    upscale.add_argument("--scale", type=float, default=2.0, help="size factor (default 2)")
    upscale.add_argument("--out", type=Path, required=True, help="the output video (.mp4, .mkv, .mov, .webm) or PNG")
    _add_finish_model_options(upscale)
    upscale.add_argument("--tile", type=_int_at_least(64), default=512, help="tile size in pixels (default 512)")
    upscale.set_defaults(handler=_cmd_upscale)

    interpolate = commands.add_parser(
        "interpolate",
        help="frame interpolation of a video or a run directory's video (RIFE, FILM or ffmpeg's minterpolate)",
        description="Put X-1 new frames between every two frames: RIFE (Practical-RIFE flownet.pkl, 4.6 to 4.26), "
        "FILM (film_net_fp16.pt, a TorchScript program: needs --allow-torchscript) or ffmpeg's minterpolate (no "
        "weights). The frame rate is multiplied by X, so the video keeps its length and its sound; with "
        "--slow-motion N the frame rate is divided by N and the video gets N times longer (its sound is left out).",
    )
    interpolate.add_argument("input", metavar="INPUT", help="a video or a dreamreel run directory")
    interpolate.add_argument("--engine", default=None, help="rife, film or minterpolate (default: rife with --model)")
    interpolate.add_argument("--model", type=_local_path("interpolation model"), help="RIFE flownet.pkl or FILM .pt")
    interpolate.add_argument("--x", type=_int_at_least(2, 64), default=2, help="frame multiplier, 2-64 (default 2)")
    interpolate.add_argument("--slow-motion", type=_int_at_least(1, 10), default=1, metavar="N", help="slow motion")
    interpolate.add_argument("--allow-torchscript", action="store_true", help="let a FILM .pt file run its code")
    interpolate.add_argument("--out", type=Path, required=True, help="the output video (.mp4, .mkv, .mov, .webm)")
    _add_finish_model_options(interpolate)
    interpolate.set_defaults(handler=_cmd_interpolate)

    batch = commands.add_parser(
        "batch",
        help="run a batch of renders (a file of jobs or a folder of settings files) locally or on Ray",
        description="Run every job of a batch file (.json, .jsonl, .toml) or folder of settings files into one run "
        "directory per job under --out. Running it again skips finished jobs and resumes unfinished ones. Options "
        "given here apply to every job that does not set them. --ray runs the jobs on a Ray cluster, one worker per "
        "GPU, the run directories on storage every worker sees.",
    )
    batch.add_argument("batch", metavar="BATCH", help="a batch file or a folder of settings files")
    batch.add_argument(
        "--sweep", action="append", default=[], metavar="KEY=VALUES",
        help="one job per value, e.g. seed=1..8 or cfg=5,7,9 (repeat for a grid)",
    )  # fmt: skip
    batch.add_argument(
        "--status", action="store_true", help="show each job's state, frames, ETA and video; run nothing"
    )
    batch.add_argument(
        "--ray", nargs="?", const="local", metavar="ADDRESS",
        help="run on Ray: a cluster address (ray://host:10001 or auto), or nothing to start a local Ray instance",
    )  # fmt: skip
    batch.add_argument("--gpus-per-job", type=float, default=1.0, help="GPUs each Ray worker holds (default 1)")
    batch.add_argument("--preview", action="store_true", help="motion previews of every job (no model)")
    batch.add_argument("--frames", type=_int_at_least(1), dest="max_frames", metavar="N", help="first N frames")
    _add_output_options(batch, out_help="folder of run directories, one per job (default runs/)")
    _add_model_options(batch)
    batch.set_defaults(handler=_cmd_batch)

    info = commands.add_parser(
        "info",
        help="print the A1111 generation parameters stored in a PNG",
        description="Print the generation parameters (prompt, negative prompt, steps, sampler, seed, ...) that "
        "A1111, dreamreel and other tools store in a PNG's 'parameters' text chunk.",
    )
    info.add_argument(
        "image", metavar="IMAGE", type=_local_path("PNG"), help="a PNG written by A1111, dreamreel or similar"
    )
    info.set_defaults(handler=_cmd_info)
    for command in commands.choices.values():
        command.set_defaults(option_names=_option_names(command))
    return parser


def _add_output_options(parser: argparse.ArgumentParser, *, out_help: str) -> None:
    """The run-directory and video options ``render`` and ``m2m`` share."""
    parser.add_argument("--out", type=Path, metavar="RUN_DIR", help=out_help)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    parser.add_argument("--save-frames", action="store_true", help="also keep every frame as a PNG with A1111 info")
    parser.add_argument("--codec", choices=["h264", "h265", "vp9", "gif"], help="video codec (default: settings, h264)")
    parser.add_argument(
        "--crf", type=_int_at_least(0, 63),
        help="quality, lower is better and larger: 0-51 for h264/h265, 0-63 for vp9 (default: settings, 17)",
    )  # fmt: skip
    parser.add_argument("--preset", help="x264/x265 preset, e.g. veryfast, medium, slow (default: settings, slow)")
    parser.add_argument(
        "--audio", type=_local_path("audio file"), help="audio file (or video with sound) to mux in as the soundtrack"
    )
    parser.add_argument(
        "--segment-frames", type=_int_at_least(1), default=60, metavar="N",
        help="frames per video segment; a checkpoint follows each (default 60)",
    )  # fmt: skip
    parser.add_argument(
        "--annotators", type=_local_path("annotators folder", folder=True), metavar="DIR",
        help="folder with ControlNet detector weights (lllyasviel/Annotators file names)",
    )  # fmt: skip
    parser.add_argument(
        "--frame-ops", default="auto", choices=["auto", "host", "torch"],
        help="where warps, colour matching, noise and blends run between diffusions: auto (on the generator's GPU "
        "for 2D renders, else OpenCV on the CPU), host (always OpenCV), torch (torch on the generator's device)",
    )  # fmt: skip


def _option_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Argument dest -> the name a user types (``max_frames`` -> ``--frames``, ``input`` -> ``INPUT``)."""
    names: dict[str, str] = {}
    for action in parser._actions:
        if action.option_strings:
            names[action.dest] = max(action.option_strings, key=len)
        elif isinstance(action.metavar, str):
            names[action.dest] = action.metavar
    return names


def _render_options(args: argparse.Namespace) -> Any:
    """The :class:`~dreamreel.jobs.render.RenderOptions` of ``render`` or ``m2m``, through the builder (and the
    checks) Python callers use too."""
    from dreamreel.jobs.render import RenderOptions

    return RenderOptions.from_values(vars(args))


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="checkpoint (.safetensors), diffusers folder, cached hub id or A1111 name")
    parser.add_argument(
        "--models-dir", type=_local_path("A1111 folder", folder=True), metavar="DIR",
        help="an AUTOMATIC1111 install: names resolve in its models/",
    )  # fmt: skip
    parser.add_argument("--vae", help="VAE to use instead of the model's (name, file, folder, or 'taesd')")
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cuda, cuda:1, mps, cpu")
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
        help="weights' precision (auto: fp16 on CUDA, fp32 elsewhere)",
    )  # fmt: skip
    parser.add_argument(
        "--offload", default="none", choices=["none", "model", "sequential"],
        help="model: like A1111 --medvram; sequential: like --lowvram",
    )  # fmt: skip
    parser.add_argument("--attention-slicing", action="store_true", help="lower memory, slower")
    parser.add_argument("--vae-tiling", action="store_true", help="decode large images in tiles")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (GPU; slow first frames)")


def _cmd_render(args: argparse.Namespace, console: Console) -> int:
    from dreamreel.jobs.render import render_settings, resume
    from dreamreel.progress import RichProgress

    if (args.settings is None) == (args.resume is None):
        raise SettingsError("give either a settings file or --resume RUN_DIR", key="render")
    options = _render_options(args)
    stop = _StopFlag()
    if not args.preview:
        _quiet_model_libraries()
    progress = RichProgress(console, "preview" if args.preview else "rendering")
    with stop.installed():
        if args.resume is not None:
            report = resume(args.resume, options, progress=progress, should_stop=stop)
        else:
            report = render_settings(Path(args.settings), options, progress=progress, should_stop=stop)
    for line in report.lines():
        console.print(line, markup=False, highlight=False)
    return 0 if report.finished else 130


def _cmd_still(args: argparse.Namespace, console: Console) -> int:
    from dreamreel.jobs.m2m import parse_size
    from dreamreel.jobs.still import StillRequest, parse_hires_resize, render_stills
    from dreamreel.pnginfo import read_info
    from dreamreel.progress import RichProgress

    width, height = parse_size(args.size) or (None, None)
    overrides = {
        "prompt": args.prompt, "negative_prompt": args.negative, "sampler": args.sampler, "steps": args.steps,
        "cfg_scale": args.cfg, "seed": args.seed, "width": width, "height": height, "init_image": args.init,
        "denoising_strength": args.strength, "clip_skip": args.clip_skip, "batch_count": args.batch_count,
        "batch_size": args.batch_size,
        "hires_upscaler": args.hires_upscaler, "hires_steps": args.hires_steps,
        "hires_denoising_strength": args.denoise, "hires_prompt": args.hires_prompt,
        "hires_negative_prompt": args.hires_negative,
    }  # fmt: skip
    if args.hires is not None and args.hires_resize is not None:
        raise SettingsError("and --hires SCALE both size the hires fix; give one of them", key="--hires-resize")
    if args.hires is not None:
        overrides.update(hires=True, hires_upscale=args.hires, hires_resize_x=0, hires_resize_y=0)
    elif args.hires_resize is not None:
        resize_x, resize_y = parse_hires_resize(args.hires_resize)
        overrides.update(hires=True, hires_resize_x=resize_x, hires_resize_y=resize_y)
    model = args.model
    if args.from_image is not None:
        info = read_info(args.from_image, key="--from")
        request = StillRequest.from_info(info, **overrides)
        model = model or info.params.get("Model")
    elif args.prompt is None:
        raise SettingsError("give a prompt, or --from IMAGE.png", key="still")
    else:
        request = StillRequest(**{k: v for k, v in overrides.items() if v is not None})
    if not request.hires:
        for dest in ("hires_upscaler", "hires_steps", "denoise", "hires_prompt", "hires_negative"):
            if getattr(args, dest) is not None:
                raise SettingsError(
                    "sets the hires fix, which is off; turn it on with --hires SCALE or --hires-resize WxH",
                    key=args.option_names[dest],
                )
    elif args.strength is not None:
        raise SettingsError(
            "is img2img's denoising strength (with --init); the hires pass's is --denoise", key="--strength"
        )
    if not model:
        raise SettingsError(
            "is required: a checkpoint file, diffusers folder, cached hub id or A1111 name", key="--model"
        )

    def factory(settings: Settings) -> FrameGenerator:
        from dreamreel.pipelines.generator import DiffusersGenerator, GeneratorOptions

        return DiffusersGenerator.from_source(
            model,
            GeneratorOptions(
                device=args.device, dtype=args.dtype, vae=args.vae, offload=args.offload, models_dir=args.models_dir,
                attention_slicing=args.attention_slicing, vae_tiling=args.vae_tiling, compile=args.compile,
            ),
        )  # fmt: skip

    from dreamreel.fileio import unwritable_folder
    from dreamreel.jobs.render import model_info

    problem = unwritable_folder(args.out)  # before the model loads; creates nothing
    if problem:
        raise SettingsError(f"cannot write {args.out}: {problem}", key="--out")
    _quiet_model_libraries()
    paths = render_stills(
        request, args.out, factory, model=model, model_info=model_info, progress=RichProgress(console, "generating"),
        models_dir=args.models_dir,
    )  # fmt: skip
    for path in paths:
        console.print(f"wrote {path}", markup=False, highlight=False)
    return 0


def _cmd_m2m(args: argparse.Namespace, console: Console) -> int:
    from dreamreel.jobs.m2m import m2m_settings
    from dreamreel.jobs.render import render_run
    from dreamreel.progress import RichProgress

    if args.audio is not None and args.no_audio:
        raise SettingsError("and --audio contradict each other; give one of them", key="--no-audio")
    settings = m2m_settings(args)
    options = _render_options(args)
    if not options.model and not settings.model:
        raise SettingsError(
            "is required: a checkpoint file, diffusers folder, cached hub id or A1111 name", key="--model"
        )
    _quiet_model_libraries()
    stop = _StopFlag()
    with stop.installed():
        report = render_run(
            settings, options, name=args.input.stem, progress=RichProgress(console, "m2m"), should_stop=stop
        )
    for line in report.lines():
        console.print(line, markup=False, highlight=False)
    return 0 if report.finished else 130


def _add_finish_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models-dir", type=_local_path("A1111 folder", folder=True), metavar="DIR",
        help="an AUTOMATIC1111 install: names resolve in its models/",
    )  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cuda, cuda:1, mps, cpu")


def _finish_device(args: argparse.Namespace) -> str:
    from dreamreel.pipelines.generator import pick_device

    return str(pick_device(args.device))


def _cmd_upscale(args: argparse.Namespace, console: Console) -> int:
    from dreamreel.finish.stream import UpscaleStep
    from dreamreel.finish.upscale import load_upscaler
    from dreamreel.jobs import finish
    from dreamreel.progress import RichProgress

    if not (args.scale > 0 and args.scale <= 16):
        raise SettingsError(f"is {args.scale:g}; use a factor above 0, at most 16", key="--scale")
    source_path = Path(args.input).expanduser()
    if finish.is_still(source_path):
        check_local_path(str(source_path), key="INPUT", what="PNG")
        out = finish.check_output(args.out, suffixes=(".png",))
        upscaler = load_upscaler(args.model, models_dir=args.models_dir, device=_finish_device(args), tile=args.tile)
        console.print(f"wrote {finish.upscale_still(source_path, upscaler, args.scale, out)}", markup=False)
        return 0
    source = finish.open_source(source_path)
    out = finish.check_output(args.out)
    upscaler = load_upscaler(args.model, models_dir=args.models_dir, device=_finish_device(args), tile=args.tile)
    step = UpscaleStep(upscaler, args.scale, model_id=_model_id(getattr(upscaler, "path", None)))
    video = finish.finish_video(source, [step], out, progress=RichProgress(console, "upscaling"))
    console.print(f"wrote {video}", markup=False, highlight=False)
    return 0


def _cmd_interpolate(args: argparse.Namespace, console: Console) -> int:
    from dreamreel.finish.engines import make_interpolator
    from dreamreel.finish.stream import InterpolateStep
    from dreamreel.jobs import finish
    from dreamreel.progress import RichProgress

    engine = args.engine or ("rife" if args.model is not None else None)
    if engine is None:
        raise SettingsError(
            "give an engine: --model flownet.pkl (RIFE), --engine film --model film_net_fp16.pt, or --engine "
            "minterpolate (ffmpeg, no weights)",
            key="--engine",
        )
    source = finish.open_source(Path(args.input).expanduser())
    out = finish.check_output(args.out)
    interpolator = make_interpolator(
        engine, args.model, allow_torchscript=args.allow_torchscript, device=_finish_device(args), key_prefix="--"
    )
    step = InterpolateStep(interpolator, args.x, args.slow_motion, model_id=_model_id(args.model))
    video = finish.finish_video(
        source, [step], out, keep_audio=args.slow_motion == 1, progress=RichProgress(console, "interpolating")
    )
    console.print(f"wrote {video}", markup=False, highlight=False)
    return 0


def _model_id(path: Path | None) -> str:
    """What identifies a weights file in a finishing manifest (size and modification time: cheap)."""
    if path is None:
        return ""
    stat = Path(path).stat()
    return f"{Path(path).name}:{stat.st_size}:{int(stat.st_mtime)}"


def _cmd_batch(args: argparse.Namespace, console: Console) -> int:
    from dreamreel.jobs import batch
    from dreamreel.jobs.render import RenderOptions

    defaults = vars(build_parser().parse_args(["batch", args.batch]))  # what every option is when not given
    fields = {f for f in RenderOptions.__dataclass_fields__ if f != "out"}
    given = {k: v for k, v in vars(args).items() if k in fields and v != defaults.get(k)}
    out = Path(args.out or "runs")
    jobs = batch.read_batch(Path(args.batch), defaults=given, sweeps=args.sweep)
    if args.status:
        for state in batch.status(jobs, out):
            console.print(state.line(), markup=False, highlight=False)
        return 0
    stop = _StopFlag()
    if not args.preview:
        _quiet_model_libraries()
    with stop.installed():
        if args.ray is not None:
            from dreamreel.jobs.ray_batch import run_ray

            address = None if args.ray == "local" else args.ray
            results = run_ray(jobs, out, address=address, gpus_per_job=args.gpus_per_job, should_stop=stop)
        else:
            from dreamreel.progress import BatchProgress

            progress = BatchProgress(console, len(jobs))
            try:
                results = batch.run_local(jobs, out, progress=progress, should_stop=stop)
            finally:
                progress.close()
    for line in batch.summary(results):
        console.print(line, markup=False, highlight=False)
    if any(r.state == "failed" for r in results):
        return 1
    return 0 if all(r.state in ("done", "skipped") for r in results) and len(results) == len(jobs) else 130


def _cmd_info(args: argparse.Namespace, console: Console) -> int:
    from dreamreel.pnginfo import read_info

    console.print(read_info(args.image, key="IMAGE").to_text(), markup=False, highlight=False)
    return 0


class _StopFlag:
    """First Ctrl-C or SIGTERM: finish the current frame, then stop cleanly. A second one: stop at once.

    SIGTERM (``kill PID``, what service managers, containers and cluster schedulers send) is handled
    exactly like Ctrl-C, so a stopped job always leaves a playable video and a run to ``--resume``.
    """

    SIGNALS = tuple(s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None)) if s is not None)

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    @contextmanager
    def installed(self) -> Iterator[None]:
        def handle(signum: int, frame: object) -> None:
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            logger.warning("%s: stopping after the current frame (again to stop at once)", name)

        previous = {sig: signal.signal(sig, handle) for sig in self.SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _cmd_plan(args: argparse.Namespace, console: Console) -> int:
    from dreamreel.plan import frame_table, plot_schedules, select_frames, summary_lines
    from dreamreel.settings import load_settings, resolve_schedules, with_resolved_seed

    settings = with_resolved_seed(load_settings(args.settings))
    if settings.mode == "video":  # the input video decides the number of frames and the fps
        from dreamreel.jobs.render import open_input_video

        settings = open_input_video(settings)[1]
    table = resolve_schedules(settings, source=str(args.settings))
    frames = select_frames(args.frames, settings.max_frames, table)
    for line in summary_lines(settings, table):
        console.print(line, markup=False, highlight=False)
    console.print(frame_table(table, frames))
    if len(frames) < settings.max_frames:
        console.print(
            f"showing {len(frames)} of {settings.max_frames} frames; --frames selects others, --csv writes all",
            style="dim",
        )
    writers = (("--csv", args.csv, table.to_csv), ("--plot", args.plot, lambda path: plot_schedules(table, path)))
    for option, path, write in writers:
        if path:
            try:
                write(path)
            except OSError as exc:
                raise SettingsError(describe_os_error(exc), key=option) from None
            console.print(f"wrote {path}", highlight=False)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dreamreel`` console script. Returns the exit status."""
    console = Console(stderr=False)
    if not console.is_terminal:
        console = Console(stderr=False, width=200)
    errors = Console(stderr=True)
    if not errors.is_terminal:
        errors = Console(stderr=True, width=200)
    try:
        args = build_parser().parse_args(argv)
    except _UsageError as exc:
        _print_error(errors, str(exc))
        return EXIT_USER_ERROR
    # long jobs say what they are doing (settings read, seed, plan, model); quick commands stay quiet
    chatty = args.command in ("render", "still", "m2m")
    _configure_logging(args.verbose + (1 if chatty else 0), errors)
    _quiet_libraries()
    # The one error translation: everything a user can cause ends here as one paragraph and status 2.
    try:
        return int(args.handler(args, console))
    except DreamreelError as exc:
        _print_error(errors, str(_blame_option(exc, args)))
    except ValidationError as exc:  # a model validated outside the settings loaders
        from dreamreel.settings.io import validation_error

        _print_error(errors, str(validation_error(exc)))
    except OSError as exc:  # a file the user named (or the disk) failed outside the checks
        logger.debug("%s", exc, exc_info=True)
        _print_error(errors, _os_error_text(exc, args))
    except KeyboardInterrupt:
        errors.print("interrupted", markup=False)
        return 130
    return EXIT_USER_ERROR


def _print_error(errors: Console, message: str) -> None:
    errors.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)


# Settings keys that a command-line option overrides: an error about one names the option when it was given.
_OVERRIDDEN_BY = {"output.crf": "crf", "output.codec": "codec", "output.preset": "preset", "output.audio": "audio"}


def _blame_option(exc: DreamreelError, args: argparse.Namespace) -> DreamreelError:
    dest = _OVERRIDDEN_BY.get(getattr(exc, "key", None) or "")
    if type(exc) is not SettingsError or dest is None or getattr(args, dest, None) is None:
        return exc
    return SettingsError(exc.detail, key=args.option_names.get(dest, f"--{dest}"))


def _os_error_text(exc: OSError, args: argparse.Namespace) -> str:
    """``"--out: cannot write /x/y: Permission denied"``: the option whose path failed, when there is one."""
    option, dest = None, None
    if exc.filename is not None:
        target = os.path.abspath(os.fsdecode(exc.filename))
        given_paths = {d: v for d, v in vars(args).items() if isinstance(v, Path) and d in args.option_names}
        for name, value in sorted(given_paths.items(), key=lambda item: -len(str(item[1]))):
            given = os.path.abspath(value.expanduser())
            if target == given or target.startswith(given.rstrip(os.sep) + os.sep):
                option, dest = args.option_names[name], name
                break
    action = {"out": "write", "csv": "write", "plot": "write", None: None}.get(dest, "read")
    text = describe_os_error(exc, action=action)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) and args.command in ("render", "m2m"):
        run_dir = getattr(args, "resume", None) or args.out or "RUN_DIR"
        text += (
            f"; the frames finished before it are safe: free some space and continue with "
            f"'dreamreel render --resume {run_dir}'"
        )
    return f"{option}: {text}" if option else text


if __name__ == "__main__":
    sys.exit(main())
