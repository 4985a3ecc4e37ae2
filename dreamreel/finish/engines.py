"""Frame-interpolation engines behind one protocol: RIFE, FILM and ffmpeg's ``minterpolate``.

An :class:`Interpolator` multiplies the frame rate of a run of consecutive frames by a whole number
``x``: :meth:`Interpolator.sequence` turns ``n`` frames into ``(n - 1) * x + 1``, each input frame
followed by the ``x - 1`` in-betweens at ``t = 1/x, 2/x, ..., (x-1)/x`` towards the next one and the
last input last. The inputs come back as exact copies at positions ``0, x, 2x, ...``, so runs that
overlap by one frame join without a seam (the stage runner drops the repeated frame). Across a hard
cut (:func:`~dreamreel.finish.rife.is_scene_cut` below ``scene_threshold``) every engine holds the
nearest input instead of morphing (``hold="first"`` holds the first, as Deforum does).

Engines (:func:`make_interpolator` makes one by name):
    * ``"rife"`` (:class:`RifeInterpolator`): the project's IFNet with a Practical-RIFE
      ``flownet.pkl`` (:mod:`dreamreel.finish.rife`), read without running code. Deforum's
      ``"RIFE v4.6"`` is the same engine; the file decides the version.
    * ``"minterpolate"`` (:class:`MinterpolateInterpolator`, also ``"ffmpeg"``): ffmpeg's
      motion-compensated interpolation in the bundled ffmpeg; no weights, no torch model, one ffmpeg
      process per call.
    * ``"film"`` (:class:`FilmInterpolator`): Deforum's FILM engine, the TorchScript export
      ``film_net_fp16.pt`` / ``film_net_fp32.pt`` of dajes/frame-interpolation-pytorch. A TorchScript
      file is a program: loading it runs its code, so it is loaded only when the user allows it
      (``--allow-torchscript``, settings key ``finish.interpolate.allow_torchscript``).

Every engine takes ``x >= 2`` (a :class:`~dreamreel.errors.SettingsError` otherwise, as
:func:`~dreamreel.finish.rife.in_between_times` raises) and holds a whole run in memory: its inputs
and its ``(n - 1) * x + 1`` outputs. The caller chunks long videos.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import subprocess
import tempfile
import threading
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from dreamreel.errors import RenderError, SettingsError, check_local_path, did_you_mean
from dreamreel.finish.rife import (
    SCENE_CUT_THRESHOLD,
    Hold,
    Rife,
    in_between_times,
    in_betweens,
    is_scene_cut,
    load_rife,
)
from dreamreel.generation import Image
from dreamreel.media.ffmpeg import ffmpeg_exe

logger = logging.getLogger(__name__)

__all__ = [
    "ENGINES",
    "FILM_PAD_MULTIPLE",
    "MINTERPOLATE_MODES",
    "FilmInterpolator",
    "Interpolator",
    "MinterpolateInterpolator",
    "RifeInterpolator",
    "make_interpolator",
    "output_count",
]

ENGINES: dict[str, str] = {
    "rife": "rife",
    "rife v4.6": "rife",
    "film": "film",
    "minterpolate": "minterpolate",
    "ffmpeg": "minterpolate",
}
"""Engine names :func:`make_interpolator` accepts (lower case; any case is accepted) and the engine each means."""

MINTERPOLATE_MODES: tuple[str, ...] = ("mci", "blend", "dup")
"""ffmpeg ``minterpolate``'s ``mi_mode``: motion-compensated, cross-fade, repeat."""

FILM_PAD_MULTIPLE = 64
"""FILM runs on frames padded to a multiple of this many pixels (black, centred) and crops back.

The film_net of dajes/frame-interpolation-pytorch builds a 7-level image pyramid (6 halvings, so
64) and its ``util.load_image`` pads to 64 the same way; Deforum's FILM code does the same.
"""

NOMINAL_FPS = 25
"""The frame rate minterpolate is told its input has; only the ratio ``x`` matters to the result."""

MCI_MIN_SIDE = 32
"""minterpolate's ``mci`` mode refuses frames with a side under 32 pixels ("Height or width < 32");
smaller frames are padded (edge pixels repeated, at the right and bottom) and cropped back."""


def output_count(count: int, multiplier: int) -> int:
    """How many frames :meth:`Interpolator.sequence` returns for ``count`` inputs: ``(count - 1) * multiplier + 1``."""
    return (count - 1) * multiplier + 1


@runtime_checkable
class Interpolator(Protocol):
    """A frame-interpolation engine.

    Attributes:
        name: the engine's name (``"rife"``, ``"film"``, ``"minterpolate"``).
    """

    name: str

    def sequence(self, frames: Sequence[Image], x: int) -> list[Image]:
        """Multiply the frame rate of ``frames`` by ``x``.

        Args:
            frames: ``n >= 1`` consecutive (H, W, 3) uint8 RGB frames of one size.
            x: the multiplier, at least 2.

        Returns:
            ``(n - 1) * x + 1`` frames: each input (an exact copy, at positions ``0, x, 2x, ...``)
            followed by ``x - 1`` in-betweens at ``t = k / x`` towards the next input; the last input last.
        """
        ...


# --------------------------------------------------------------------------------------------- shared


def _check_frames(frames: Sequence[Image]) -> list[Image]:
    checked = list(frames)
    if not checked:
        raise ValueError("give at least one frame to interpolate.")
    for index, image in enumerate(checked):
        if not isinstance(image, np.ndarray):
            raise TypeError(f"frame {index} must be an (H, W, 3) uint8 numpy array; got a {type(image).__name__}.")
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
            raise ValueError(
                f"frame {index} must be an (H, W, 3) uint8 RGB image; got shape {image.shape} dtype {image.dtype}."
            )
        if image.shape != checked[0].shape:
            raise ValueError(
                f"every frame must have the size of the first ({checked[0].shape[1]}x{checked[0].shape[0]}); "
                f"frame {index} is {image.shape[1]}x{image.shape[0]}."
            )
    return checked


def _check_hold(hold: str) -> Hold:
    if hold not in ("nearest", "first"):
        raise ValueError(f"hold must be 'nearest' or 'first'; got {hold!r}.")
    return "nearest" if hold == "nearest" else "first"


def _holds(a: Image, b: Image, times: Sequence[float], hold: Hold) -> list[Image]:
    """The in-betweens across a cut: copies of ``a`` before the middle and of ``b`` after (or all ``a``)."""
    return [a.copy() if hold == "first" or t < 0.5 else b.copy() for t in times]


# --------------------------------------------------------------------------------------------- RIFE


class RifeInterpolator:
    """The RIFE engine: :func:`~dreamreel.finish.rife.in_betweens` for every pair of neighbours.

    The ``x - 1`` in-betweens of a pair run as one batch of the network (``Rife.interpolate_many``,
    4 at a time); pairs run one after the other.

    Args:
        rife: a network from :func:`~dreamreel.finish.rife.load_rife`.
        scene_threshold: pairs less alike than this (:func:`~dreamreel.finish.rife.scene_similarity`)
            are cuts and hold instead of morphing; below -1 nothing is a cut.
        hold: across a cut, ``"nearest"`` (the input nearer in time) or ``"first"`` (Deforum's).
        scale: RIFE's flow resolution; None for the network's own choice.
    """

    name = "rife"

    def __init__(
        self,
        rife: Rife,
        *,
        scene_threshold: float = SCENE_CUT_THRESHOLD,
        hold: Hold = "nearest",
        scale: float | None = None,
    ) -> None:
        self.rife = rife
        self.scene_threshold = float(scene_threshold)
        self.hold = _check_hold(hold)
        self.scale = scale

    def __repr__(self) -> str:
        return f"RifeInterpolator({self.rife!r}, scene_threshold={self.scene_threshold})"

    def sequence(self, frames: Sequence[Image], x: int) -> list[Image]:
        """Multiply the frame rate by ``x`` (see :meth:`Interpolator.sequence`)."""
        in_between_times(x)
        checked = _check_frames(frames)
        out = [checked[0].copy()]
        for a, b in pairwise(checked):
            out.extend(
                in_betweens(self.rife, a, b, x, threshold=self.scene_threshold, scale=self.scale, hold=self.hold)
            )
            out.append(b.copy())
        return out


# --------------------------------------------------------------------------------------------- minterpolate


class MinterpolateInterpolator:
    """The weights-free engine: ffmpeg's ``minterpolate`` filter in the bundled ffmpeg (imageio-ffmpeg).

    One ffmpeg process per :meth:`sequence` call: the frames go in as raw video at a nominal
    :data:`NOMINAL_FPS`, ``minterpolate=fps=<NOMINAL_FPS * x>:mi_mode=mci:mc_mode=aobmc:me_mode=bidir:
    vsbmc=1:scd=fdiff`` runs, and raw video comes out.

    No colour conversion happens: minterpolate takes only YUV and grey formats, so each RGB frame is
    sent as planar ``yuv444p`` with its G, B and R planes in the Y, U and V places (ffmpeg's ``gbrp``
    layout) and read back the same way. Motion is estimated on the first plane (green, the closest to
    luma); all three planes are compensated alike (no chroma subsampling). Sending ``rgb24`` or
    ``gbrp`` instead makes ffmpeg convert to YUV and back, which moves the inputs' own copies by up to
    2 levels (measured on noise).

    What minterpolate emits (FFmpeg 9.0.2 bundled with imageio-ffmpeg, measured): for ``m`` frames in
    at ``r`` fps and ``fps = x * r``, ``(m - 2) * x + 1`` frames for ``m >= 3`` and none for ``m <= 2``.
    It interpolates between the 2nd and 3rd frames of a 4-frame window and does not flush at the end
    of the stream, so the output stops at the second-to-last input. Its ``scd=fdiff`` scene-change
    test compares a pair's mean absolute difference with the previous pair's, which starts at 0, so the
    first pair of every stream is taken for a cut (a hold) whenever its mean difference reaches
    ``scd_threshold``. The contract is made exact by sending ``frames[1], frames[0], ..., frames[-1],
    frames[-1]``: the mirrored lead-in gives the first real pair a predecessor with the same
    difference (no false cut), the repeated last frame lets the last pair out, and of the
    ``n * x + 1`` frames that come back the first ``x`` (the lead-in pair) are dropped. The kept
    frames do not depend on the padding frame (checked: any frame there gives the same bits). The
    frames at the inputs' positions are ffmpeg's exact copies (checked, else a RenderError) and are
    replaced by the inputs themselves. ``mci`` refuses frames with a side under :data:`MCI_MIN_SIDE`
    pixels; those are padded with their edge pixels and cropped back.

    Pairs that dreamreel's own test calls cuts (``scene_threshold``, as for RIFE) hold the nearest
    input; ffmpeg's ``scd=fdiff`` (``scd_threshold``, 0-100, ffmpeg's default 10; None turns it off)
    also holds pairs whose difference jumps against the previous pair's (the frame nearer in time, as
    ffmpeg picks it). The output is deterministic (minterpolate has no slice threading; same input,
    same bits). Speed at 256x256, 49 inputs, one call, process start included, on a shared 2-core
    CPU: ``mci`` 6.2 ms per output frame at x=2 (12.6 ms per made in-between), 7.6 ms at x=4 (10.3);
    ``blend`` about 0.5 ms.

    Args:
        mode: ``mi_mode``: ``"mci"`` (motion-compensated), ``"blend"`` (cross-fade) or ``"dup"`` (repeat).
        scene_threshold: dreamreel's cut test, as for RIFE; below -1 nothing is a cut.
        scd_threshold: ffmpeg's own scene-change threshold, or None for ``scd=none``.
        hold: across a cut found by dreamreel's test, ``"nearest"`` or ``"first"``.
    """

    name = "minterpolate"

    def __init__(
        self,
        *,
        mode: str = "mci",
        scene_threshold: float = SCENE_CUT_THRESHOLD,
        scd_threshold: float | None = 10.0,
        hold: Hold = "nearest",
    ) -> None:
        chosen = str(mode).strip().lower()
        if chosen not in MINTERPOLATE_MODES:
            raise SettingsError(
                f"unknown minterpolate mode {mode!r}; use {', '.join(MINTERPOLATE_MODES)}."
                + did_you_mean(str(mode), MINTERPOLATE_MODES),
                key="mode",
            )
        if scd_threshold is not None and not 0.0 <= float(scd_threshold) <= 100.0:
            raise SettingsError(
                f"ffmpeg's scene-change threshold is between 0 and 100; got {scd_threshold!r}", key="scd_threshold"
            )
        self.mode = chosen
        self.scene_threshold = float(scene_threshold)
        self.scd_threshold = None if scd_threshold is None else float(scd_threshold)
        self.hold = _check_hold(hold)

    def __repr__(self) -> str:
        return (
            f"MinterpolateInterpolator(mode={self.mode!r}, scene_threshold={self.scene_threshold}, "
            f"scd_threshold={self.scd_threshold})"
        )

    def filter_graph(self, x: int) -> str:
        """The ``-vf`` argument for a multiplier ``x``."""
        scd = "none" if self.scd_threshold is None else f"fdiff:scd_threshold={self.scd_threshold:g}"
        return f"minterpolate=fps={NOMINAL_FPS * x}:mi_mode={self.mode}:mc_mode=aobmc:me_mode=bidir:vsbmc=1:scd={scd}"

    def command(self, width: int, height: int, x: int) -> list[str]:
        """The ffmpeg command line: raw planar frames on stdin, raw planar frames on stdout."""
        raw = ["-f", "rawvideo", "-pix_fmt", "yuv444p"]
        return [
            ffmpeg_exe(),
            *("-nostdin", "-hide_banner", "-nostats", "-loglevel", "warning"),
            *raw,
            *("-s", f"{width}x{height}", "-framerate", str(NOMINAL_FPS), "-i", "pipe:0"),
            *("-vf", self.filter_graph(x), "-fps_mode", "passthrough", "-an"),
            *raw,
            "pipe:1",
        ]

    def sequence(self, frames: Sequence[Image], x: int) -> list[Image]:
        """Multiply the frame rate by ``x`` (see :meth:`Interpolator.sequence`).

        Raises:
            SettingsError: ``x`` is not a whole number of at least 2.
            RenderError: ffmpeg failed or gave other frames than expected (with its last messages).
        """
        times = in_between_times(x)
        checked = _check_frames(frames)
        if len(checked) == 1:
            return [checked[0].copy()]
        height, width = checked[0].shape[:2]
        side = MCI_MIN_SIDE if self.mode == "mci" else 1
        bottom, right = max(0, side - height), max(0, side - width)
        sent = [checked[1], *checked, checked[-1]]
        if bottom or right:
            sent = [np.pad(image, ((0, bottom), (0, right), (0, 0)), mode="edge") for image in sent]
        produced = self._run(sent, x, skip=x, keep=output_count(len(checked), x))
        if bottom or right:
            produced = [np.ascontiguousarray(image[:height, :width]) for image in produced]
        out: list[Image] = []
        for index, (a, b) in enumerate(pairwise(checked)):
            if index == 0:
                out.append(a.copy())
            start = index * x
            if not np.array_equal(produced[start + x], b) or (index == 0 and not np.array_equal(produced[0], a)):
                raise RenderError(
                    "ffmpeg's minterpolate did not put the input frames where expected (a different ffmpeg "
                    f"version?); the command was: {shlex.join(self.command(a.shape[1], a.shape[0], x))}"
                )
            if is_scene_cut(a, b, self.scene_threshold):
                logger.debug("scene cut after input %d: %d in-between frames hold", index, x - 1)
                out.extend(_holds(a, b, times, self.hold))
            else:
                out.extend(produced[start + 1 : start + x])
            out.append(b.copy())
        return out

    def _run(self, frames: Sequence[Image], x: int, *, skip: int, keep: int) -> list[Image]:
        """Run ffmpeg over ``frames``; return its output frames ``skip .. skip + keep - 1``."""
        height, width = frames[0].shape[:2]
        cmd = self.command(width, height, x)
        logger.debug("ffmpeg: %s", shlex.join(cmd))
        kept: list[Image] = []
        total = 0
        with tempfile.TemporaryFile() as errors:
            try:
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors)
            except OSError as exc:
                raise _ffmpeg_failure(cmd, str(exc), None) from exc
            assert proc.stdin is not None and proc.stdout is not None
            writer = threading.Thread(target=_feed, args=(proc.stdin, frames), name="minterpolate-feed", daemon=True)
            writer.start()
            try:
                for image in _read_frames(proc.stdout, height, width):
                    if skip <= total < skip + keep:
                        kept.append(image)
                    total += 1
                proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                proc.stdout.close()
                writer.join()
            errors.seek(0)
            stderr = errors.read().decode("utf-8", "replace")
        if proc.returncode != 0:
            raise _ffmpeg_failure(cmd, stderr, proc.returncode)
        if stderr.strip():
            logger.debug("ffmpeg said:\n%s", _tail(stderr))
        if len(kept) != keep:
            raise RenderError(
                f"ffmpeg's minterpolate gave {total} frames for {len(frames)} inputs at x{x}; dreamreel expected "
                f"at least {skip + keep}. Command: {shlex.join(cmd)}\n  ffmpeg's last messages:\n{_tail(stderr)}"
            )
        logger.debug("minterpolate: %d frames in, %d out, kept %d from the %dth", len(frames), total, keep, skip)
        return kept


def _feed(pipe: IO[bytes], frames: Sequence[Image]) -> None:
    """Write frames to ffmpeg as planar G, B, R (sent as yuv444p); stop quietly if ffmpeg goes away."""
    # OSError (BrokenPipeError) and ValueError (a closed pipe): ffmpeg exited early; its status and messages tell why
    with contextlib.suppress(OSError, ValueError):
        try:
            for image in frames:
                pipe.write(np.ascontiguousarray(image[:, :, (1, 2, 0)].transpose(2, 0, 1)).tobytes())
        finally:
            pipe.close()


def _read_frames(pipe: IO[bytes], height: int, width: int) -> Iterator[Image]:
    """Planar G, B, R frames from ffmpeg's stdout as (H, W, 3) RGB images; a partial last frame is dropped."""
    size = 3 * height * width
    while True:
        data = pipe.read(size)
        if len(data) < size:
            if data:
                logger.debug("ffmpeg's output ended inside a frame (%d of %d bytes)", len(data), size)
            return
        planes = np.frombuffer(data, np.uint8).reshape(3, height, width)
        yield np.ascontiguousarray(planes[(2, 0, 1), :, :].transpose(1, 2, 0))


def _tail(text: str, lines: int = 8) -> str:
    kept = [line.rstrip() for line in text.strip().splitlines() if line.strip()][-lines:]
    return "\n".join(f"    {line}" for line in kept) if kept else "    (ffmpeg printed nothing)"


def _ffmpeg_failure(cmd: Sequence[str], stderr: str, returncode: int | None) -> RenderError:
    status = "could not be started" if returncode is None else f"exited with status {returncode}"
    return RenderError(
        f"frame interpolation with ffmpeg's minterpolate failed: ffmpeg {status}. Command: {shlex.join(cmd)}\n"
        f"  ffmpeg's last messages:\n{_tail(stderr)}"
    )


# --------------------------------------------------------------------------------------------- FILM


def _torch_device(device: str | torch.device) -> torch.device:
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise SettingsError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps", key="--device") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError(f"the device {device} was asked for, but torch sees no CUDA device", key="--device")
    if target.type == "mps" and not torch.backends.mps.is_available():
        raise SettingsError(f"the device {device} was asked for, but torch sees no MPS device", key="--device")
    return target


def _archive_kind(path: Path) -> str:
    """``"torchscript"``, ``"torch"`` (a ``torch.save`` zip), or ``"other"``; reads only the zip directory."""
    try:
        if not zipfile.is_zipfile(path):
            return "other"
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return "other"
    if any(name.endswith("/constants.pkl") or name == "constants.pkl" for name in names) and any(
        "/code/" in name or name.startswith("code/") for name in names
    ):
        return "torchscript"
    return "torch" if any(name.endswith("/data.pkl") or name == "data.pkl" for name in names) else "other"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class FilmInterpolator:
    """The FILM engine: a TorchScript ``film_net`` (Deforum's ``film_net_fp16.pt``); make it with :meth:`from_file`.

    The model is called as dajes/frame-interpolation-pytorch documents it (its README and
    ``inference.py``): ``model(img0, img1, dt)`` with ``img0``, ``img1`` float ``(1, 3, H, W)`` RGB in
    0..1 and ``dt`` a ``(1, 1)`` tensor of the time, giving the ``(1, 3, H, W)`` frame at ``dt``. One
    pair at a time: the model multiplies its ``(B, C, H, W)`` pyramids by ``dt`` as given, so a
    ``(B, 1)`` time only broadcasts for ``B == 1``.

    The in-betweens of a pair are made the way that ``inference.py`` (and Deforum) makes them, because
    film_net is trained for the middle of a pair: repeatedly, the missing time nearest (exactly, in
    fractions) to the middle of the two known frames around it is made from those two, the earliest
    winning a tie. So x=4 makes 1/2 from the inputs, then 1/4 and 3/4 from the inputs and the 1/2
    frame; x=3 makes 1/3 at ``dt = 1/3``, then 2/3 from 1/3 and the second input at ``dt = 1/2``. Made
    frames stay float (clamped to 0..1) until they are rounded to the nearest level at the end.

    Frames are padded with black, centred, to multiples of :data:`FILM_PAD_MULTIPLE` and cropped
    back. The model runs in float16 on CUDA and in float32 elsewhere.
    """

    name = "film"

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        path: Path | None = None,
        device: str | torch.device = "cpu",
        scene_threshold: float = SCENE_CUT_THRESHOLD,
        hold: Hold = "nearest",
    ) -> None:
        self.device = _torch_device(device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.model = model.eval().to(device=self.device, dtype=self.dtype)
        self.path = path
        self.scene_threshold = float(scene_threshold)
        self.hold = _check_hold(hold)

    def __repr__(self) -> str:
        return f"FilmInterpolator({self.path}, device={self.device}, dtype={str(self.dtype).removeprefix('torch.')})"

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        allow_code: bool,
        device: str | torch.device = "cpu",
        key: str = "--model",
        allow_key: str = "finish.interpolate.allow_torchscript",
        scene_threshold: float = SCENE_CUT_THRESHOLD,
        hold: Hold = "nearest",
    ) -> FilmInterpolator:
        """Load a FILM TorchScript file (``film_net_fp16.pt`` / ``film_net_fp32.pt``).

        The file is checked to be a TorchScript archive by reading its zip directory only; it is
        loaded (``torch.jit.load``, which runs the program's code) only when ``allow_code`` is true.

        Args:
            path: the TorchScript file.
            allow_code: the user allowed running TorchScript (``--allow-torchscript``).
            device: where the model runs.
            key: the option or settings key that named the file, for error messages.
            allow_key: the settings key that allows TorchScript, for the refusal's message.
            scene_threshold, hold: as for :class:`RifeInterpolator`.

        Raises:
            SettingsError: the file is missing, not TorchScript, not allowed, does not load or does not
                take ``(img0, img1, dt)``; the device does not exist.
        """
        checked = check_local_path(str(path), key=key, what="FILM model (film_net_fp16.pt)")
        kind = _archive_kind(checked)
        if kind != "torchscript":
            found = (
                "a PyTorch file of tensors (torch.save), not a TorchScript program"
                if kind == "torch"
                else "not a TorchScript archive (TorchScript files are zip archives with compiled code)"
            )
            raise SettingsError(
                f"{checked}: {found}, so not a FILM model dreamreel can run. The FILM engine runs the TorchScript "
                "export film_net_fp16.pt (or film_net_fp32.pt) of dajes/frame-interpolation-pytorch, the file "
                "Deforum's FILM engine uses; for RIFE weights use the rife engine.",
                key=key,
            )
        if not allow_code:
            raise SettingsError(
                f"{checked}: this FILM model is a TorchScript program (compiled code beside the weights), and "
                "loading it runs that code with your rights, so dreamreel does not load it unless you allow it. "
                f"If you trust where the file came from, give --allow-torchscript (settings key {allow_key}); or "
                "use the rife engine (a flownet.pkl, read as plain tensors) or the minterpolate engine (ffmpeg, "
                "no model file).",
                key=key,
            )
        target = _torch_device(device)
        logger.info("%s: loading a TorchScript program (allowed by %s); it runs its own code", checked, allow_key)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated", category=FutureWarning)
                model = torch.jit.load(str(checked), map_location="cpu")
        except Exception as exc:  # a damaged archive can make the loader raise anything
            raise SettingsError(
                f"{checked}: the TorchScript file could not be loaded ({_first_line(exc)}); it is damaged or an "
                "incomplete download. Download film_net_fp16.pt again.",
                key=key,
            ) from None
        arguments = _forward_arguments(model)
        if arguments is not None and len(arguments) != 3:
            raise SettingsError(
                f"{checked}: this TorchScript program's forward takes ({', '.join(arguments)}), not FILM's "
                "(img0, img1, dt); it is not a film_net export.",
                key=key,
            )
        interpolator = cls(model, path=checked, device=target, scene_threshold=scene_threshold, hold=hold)
        logger.info("loaded FILM from %s on %s (%s)", checked, target, str(interpolator.dtype).removeprefix("torch."))
        return interpolator

    def sequence(self, frames: Sequence[Image], x: int) -> list[Image]:
        """Multiply the frame rate by ``x`` (see :meth:`Interpolator.sequence`)."""
        times = in_between_times(x)
        checked = _check_frames(frames)
        out = [checked[0].copy()]
        for a, b in pairwise(checked):
            if is_scene_cut(a, b, self.scene_threshold):
                logger.debug("scene cut: %d in-between frames hold instead of morphing", x - 1)
                out.extend(_holds(a, b, times, self.hold))
            else:
                out.extend(self.in_betweens(a, b, x))
            out.append(b.copy())
        return out

    @torch.no_grad()
    def in_betweens(self, a: Image, b: Image, x: int) -> list[Image]:
        """The ``x - 1`` frames between ``a`` and ``b`` at ``1/x ... (x-1)/x`` (no scene-cut test)."""
        in_between_times(x)
        first, second = _check_frames([a, b])
        height, width = first.shape[:2]
        bottom, right = -height % FILM_PAD_MULTIPLE, -width % FILM_PAD_MULTIPLE
        top, left = bottom // 2, right // 2
        padding = (left, right - left, top, bottom - top)
        known: dict[int, torch.Tensor] = {0: self._tensor(first, padding), x: self._tensor(second, padding)}
        missing = list(range(1, x))
        while missing:
            order = sorted(known)
            choices = []
            for start, end in pairwise(order):
                for step in missing:
                    if start < step < end:
                        choices.append((abs(Fraction(step - start, end - start) - Fraction(1, 2)), start, step, end))
            _, start, step, end = min(choices)
            dt = torch.full((1, 1), (step - start) / (end - start), device=self.device, dtype=self.dtype)
            known[step] = self.model(known[start], known[end], dt).clamp(0.0, 1.0)
            missing.remove(step)
        return [self._image(known[step], top, left, height, width) for step in range(1, x)]

    def _tensor(self, image: Image, padding: tuple[int, int, int, int]) -> torch.Tensor:
        host = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0)
        frame = host.to(self.device).float().div_(255.0)
        return F.pad(frame, padding).to(self.dtype)

    @staticmethod
    def _image(frame: torch.Tensor, top: int, left: int, height: int, width: int) -> Image:
        crop = frame[0, :, top : top + height, left : left + width].float()
        levels = (crop * 255.0).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        return np.ascontiguousarray(levels)


def _forward_arguments(model: object) -> list[str] | None:
    """The names of a TorchScript module's ``forward`` arguments (without ``self``), or None if unknown."""
    try:
        schema = model.forward.schema  # type: ignore[attr-defined]
        return [argument.name for argument in schema.arguments][1:]
    except (AttributeError, RuntimeError):
        return None


# --------------------------------------------------------------------------------------------- by name


def make_interpolator(
    engine: str,
    model: Path | None,
    *,
    allow_torchscript: bool = False,
    device: str = "cpu",
    rife_version: str | None = None,
    scene_threshold: float = SCENE_CUT_THRESHOLD,
    key_prefix: str = "finish.interpolate",
) -> Interpolator:
    """Make the engine a user named.

    Args:
        engine: ``"rife"`` (Deforum's ``"RIFE v4.6"`` too; the model file decides the version),
            ``"film"`` or ``"minterpolate"`` (``"ffmpeg"`` too), in any case.
        model: the RIFE ``flownet.pkl`` or FILM ``film_net_fp16.pt``; minterpolate needs none (one
            given is ignored, with a warning).
        allow_torchscript: the user allowed loading a TorchScript program (FILM).
        device: where RIFE or FILM runs (minterpolate runs ffmpeg on the CPU).
        rife_version: insist on a RIFE release (``"4.6"``); None for the file's.
        scene_threshold: the cut test of every engine (see :class:`RifeInterpolator`).
        key_prefix: the settings section, for error messages: ``<prefix>.engine``, ``<prefix>.model``,
            ``<prefix>.rife_version``, ``<prefix>.allow_torchscript``; ``"--"`` names the command
            line's ``--engine``, ``--model``, ``--rife-version`` and ``--allow-torchscript``.

    Raises:
        SettingsError: an unknown engine, a missing model path, or what loading the model raises.
    """

    def key(name: str) -> str:
        return f"--{name.replace('_', '-')}" if key_prefix == "--" else f"{key_prefix}.{name}"

    engine_key, model_key = key("engine"), key("model")
    wanted = " ".join(str(engine).split()).lower()
    if wanted == "none":
        raise SettingsError(
            "'None' turns frame interpolation off, so there is no engine to make; choose rife, film or minterpolate",
            key=engine_key,
        )
    chosen = ENGINES.get(wanted)
    if chosen is None:
        names = ["rife", "film", "minterpolate", "ffmpeg", "RIFE v4.6", "FILM"]
        raise SettingsError(
            f"unknown interpolation engine {engine!r}; use rife (Deforum's 'RIFE v4.6'), film or minterpolate "
            "(ffmpeg)." + did_you_mean(str(engine), names),
            key=engine_key,
        )
    if chosen == "minterpolate":
        if model is not None:
            logger.warning("the minterpolate engine uses no model file; ignoring %s (%s)", model, model_key)
        return MinterpolateInterpolator(scene_threshold=scene_threshold)
    if model is None or not str(model).strip():
        what = "a Practical-RIFE flownet.pkl" if chosen == "rife" else "the TorchScript film_net_fp16.pt"
        raise SettingsError(
            f"the {chosen} engine needs a model file ({what}); give its path, or use the minterpolate engine, "
            "which needs none",
            key=model_key,
        )
    path = Path(os.fspath(model))
    if chosen == "rife":
        rife = load_rife(path, version=rife_version, device=device, key=model_key, version_key=key("rife_version"))
        return RifeInterpolator(rife, scene_threshold=scene_threshold)
    return FilmInterpolator.from_file(
        path,
        allow_code=allow_torchscript,
        device=device,
        key=model_key,
        allow_key=key("allow_torchscript"),
        scene_threshold=scene_threshold,
    )
