"""Interpolation engines: the sequence contract for every engine, minterpolate's frame counts, FILM's gate."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dreamreel.errors import RenderError, SettingsError
from dreamreel.finish import engines
from dreamreel.finish._testing_rife import write_tiny_flownet
from dreamreel.finish.engines import (
    FilmInterpolator,
    Interpolator,
    MinterpolateInterpolator,
    RifeInterpolator,
    make_interpolator,
    output_count,
)
from dreamreel.finish.rife import in_betweens, load_rife

HEIGHT, WIDTH = 40, 48


def _field(seed: int, height: int, width: int) -> np.ndarray:
    """A smooth random colour picture (blobs of about 10 pixels)."""
    noise = np.random.default_rng(seed).random((height, width, 3)).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), 4)
    scaled = (blurred - blurred.min()) / (blurred.max() - blurred.min())
    return (scaled * 255).astype(np.uint8)


def _pan(count: int, *, step: int = 3, seed: int = 0, height: int = HEIGHT, width: int = WIDTH) -> list[np.ndarray]:
    """``count`` frames of a camera panning ``step`` pixels a frame over one picture."""
    picture = _field(seed, height, width + step * count)
    return [np.ascontiguousarray(picture[:, step * i : step * i + width]) for i in range(count)]


class Blend(torch.nn.Module):
    """FILM's call signature with a linear blend inside; checks what FILM's exports rely on."""

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        assert img0.shape[2] % 64 == 0 and img0.shape[3] % 64 == 0, "frames not padded to 64"
        assert img0.shape == img1.shape and dt.shape[0] == img0.shape[0] and dt.shape[1] == 1, "bad shapes"
        return img0 * (1 - dt) + img1 * dt


class NotFilm(torch.nn.Module):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image


class Recording(Blend):
    """A plain (unscripted) Blend that remembers the times it was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        assert tuple(dt.shape) == (1, 1) and img0.dtype == torch.float32
        self.times.append(round(float(dt), 6))
        return super().forward(img0, img1, dt)


@pytest.fixture(scope="module")
def film_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("film") / "film_net_fp16.pt"
    torch.jit.script(Blend()).save(str(path))
    return path


@pytest.fixture(scope="module")
def rife_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_flownet(tmp_path_factory.mktemp("rife") / "flownet.pkl", "4.6")


ENGINE_NAMES = ["rife", "film", "mci", "blend", "dup"]


@pytest.fixture(scope="module")
def all_engines(rife_file: Path, film_file: Path) -> dict[str, Interpolator]:
    return {
        "rife": RifeInterpolator(load_rife(rife_file)),
        "film": FilmInterpolator.from_file(film_file, allow_code=True),
        **{mode: MinterpolateInterpolator(mode=mode) for mode in ("mci", "blend", "dup")},
    }


# --- the contract, every engine ---------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINE_NAMES)
@pytest.mark.parametrize(("count", "x"), [(1, 2), (2, 2), (2, 3), (4, 2), (4, 3), (3, 5)])
def test_sequence_contract(all_engines: dict[str, Interpolator], engine: str, count: int, x: int) -> None:
    interpolator = all_engines[engine]
    assert isinstance(interpolator, Interpolator)
    frames = _pan(count)
    out = interpolator.sequence(frames, x)
    assert len(out) == output_count(count, x) == (count - 1) * x + 1
    for image in out:
        assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8 and image.flags.c_contiguous
    for index, frame in enumerate(frames):
        assert np.array_equal(out[index * x], frame), f"input {index} is not at position {index * x}"
        assert not np.shares_memory(out[index * x], frame), "inputs come back as copies"
    if count > 1 and engine not in ("dup",):  # something in between that is neither neighbour
        assert not np.array_equal(out[1], frames[0]) and not np.array_equal(out[1], frames[1])


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_scene_cuts_hold_the_nearest_frame(all_engines: dict[str, Interpolator], engine: str) -> None:
    first, second = _field(1, HEIGHT, WIDTH), _field(2, HEIGHT, WIDTH)
    out = all_engines[engine].sequence([first, second], 4)
    for image, expected in zip(out, [first, first, second, second, second], strict=True):  # t = 0, .25, .5, .75, 1
        assert np.array_equal(image, expected)


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_wrong_input_is_refused(all_engines: dict[str, Interpolator], engine: str) -> None:
    interpolator = all_engines[engine]
    frames = _pan(2)
    for x in (1, 0, 2.5):
        with pytest.raises(SettingsError, match="whole number of at least 2"):
            interpolator.sequence(frames, x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one frame"):
        interpolator.sequence([], 2)
    with pytest.raises(ValueError, match="size of the first"):
        interpolator.sequence([frames[0], frames[1][:, :-2]], 2)
    with pytest.raises(ValueError, match="uint8 RGB"):
        interpolator.sequence([frames[0].astype(np.float32)], 2)


# --- RIFE -------------------------------------------------------------------------------------


def test_rife_engine_is_in_betweens_per_pair(all_engines: dict[str, Interpolator]) -> None:
    engine = all_engines["rife"]
    assert isinstance(engine, RifeInterpolator)
    frames = _pan(3)
    out = engine.sequence(frames, 3)
    for index in range(2):
        expected = in_betweens(engine.rife, frames[index], frames[index + 1], 3)
        assert all(np.array_equal(a, b) for a, b in zip(out[3 * index + 1 : 3 * index + 3], expected, strict=True))


# --- minterpolate -----------------------------------------------------------------------------


def _raw_minterpolate(interpolator: MinterpolateInterpolator, frames: list[np.ndarray], x: int) -> np.ndarray:
    """What ffmpeg itself emits for ``frames`` (the engine's command, no lead-in, no padding): (N, H, W, 3)."""
    height, width = frames[0].shape[:2]
    planar = b"".join(np.ascontiguousarray(f[:, :, (1, 2, 0)].transpose(2, 0, 1)).tobytes() for f in frames)
    done = subprocess.run(interpolator.command(width, height, x), input=planar, capture_output=True, check=True)
    planes = np.frombuffer(done.stdout, np.uint8).reshape(-1, 3, height, width)
    return planes[:, (2, 0, 1)].transpose(0, 2, 3, 1)


def test_what_minterpolate_emits() -> None:
    """(m - 2) * x + 1 frames for m >= 3 inputs, none for m <= 2; the first pair looks like a cut to scd=fdiff."""
    interpolator = MinterpolateInterpolator()
    for count, x in [(1, 2), (2, 2), (2, 4), (3, 2), (4, 3), (6, 2)]:
        frames = _pan(count)
        out = _raw_minterpolate(interpolator, frames, x)
        assert len(out) == (max(count - 2, 0) * x + 1 if count >= 3 else 0)
        for index in range(count - 1 if count >= 3 else 0):  # ffmpeg's copies of the inputs are exact and in place
            assert np.array_equal(out[index * x], frames[index])
    frames = _pan(4)
    raw = _raw_minterpolate(interpolator, frames, 2)
    assert np.array_equal(raw[1], frames[0]), "scd=fdiff takes the first pair of a stream for a cut"
    assert not np.array_equal(raw[3], frames[1]) and not np.array_equal(raw[3], frames[2])
    fixed = interpolator.sequence(frames[:3], 2)
    assert not np.array_equal(fixed[1], frames[0]) and not np.array_equal(fixed[1], frames[1])
    # the frame after the last one only lets the last pair out: it changes none of the frames kept
    padded = [_raw_minterpolate(interpolator, [frames[1], *frames, extra], 2) for extra in (frames[-1], frames[0])]
    assert np.array_equal(padded[0][2:9], padded[1][2:9])


def test_minterpolate_is_deterministic_and_keeps_odd_sizes() -> None:
    interpolator = MinterpolateInterpolator()
    frames = _pan(4, height=33, width=47)
    first, second = interpolator.sequence(frames, 3), interpolator.sequence(frames, 3)
    assert len(first) == 10
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert all(np.array_equal(first[3 * i], frame) for i, frame in enumerate(frames))


@pytest.mark.parametrize("mode", ["mci", "blend", "dup"])
@pytest.mark.parametrize(("height", "width"), [(1, 1), (5, 3), (31, 48), (40, 17)])
def test_minterpolate_takes_small_frames(mode: str, height: int, width: int) -> None:
    """mci refuses sides under 32 pixels; the engine pads and crops."""
    frames = _pan(3, step=1, height=height, width=width)
    out = MinterpolateInterpolator(mode=mode).sequence(frames, 2)
    assert len(out) == 5 and out[1].shape == (height, width, 3)
    assert all(np.array_equal(out[2 * i], frame) for i, frame in enumerate(frames))


def test_minterpolate_blend_is_a_cross_fade() -> None:
    frames = _pan(2)
    out = MinterpolateInterpolator(mode="blend", scd_threshold=None).sequence(frames, 2)
    mean = (frames[0].astype(np.int16) + frames[1]) / 2
    assert np.abs(out[1] - mean).max() <= 1


def test_minterpolate_options() -> None:
    graph = MinterpolateInterpolator().filter_graph(3)
    assert graph.startswith("minterpolate=fps=75:mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1:scd=fdiff")
    assert MinterpolateInterpolator(scd_threshold=None, mode="BLEND").filter_graph(2).endswith("scd=none")
    with pytest.raises(SettingsError, match="Did you mean 'mci'") as caught:
        MinterpolateInterpolator(mode="mcii")
    assert caught.value.key == "mode"
    with pytest.raises(SettingsError, match="between 0 and 100"):
        MinterpolateInterpolator(scd_threshold=200)


def test_ffmpeg_failures_are_render_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    frames = _pan(3)
    broken = MinterpolateInterpolator()
    monkeypatch.setattr(broken, "filter_graph", lambda x: "minterpolate=mi_mode=nonsense")
    with pytest.raises(RenderError, match="minterpolate failed: ffmpeg exited with status") as caught:
        broken.sequence(frames, 2)
    assert "ffmpeg's last messages" in str(caught.value) and "nonsense" in str(caught.value)
    monkeypatch.setattr(engines, "ffmpeg_exe", lambda: "/nonexistent/ffmpeg")
    with pytest.raises(RenderError, match="could not be started"):
        MinterpolateInterpolator().sequence(frames, 2)


def test_minterpolate_checks_where_the_inputs_are(monkeypatch: pytest.MonkeyPatch) -> None:
    interpolator = MinterpolateInterpolator()
    run = interpolator._run
    monkeypatch.setattr(
        interpolator, "_run", lambda *args, **kwargs: [*run(*args, **kwargs)[1:], np.zeros_like(args[0][0])]
    )
    with pytest.raises(RenderError, match="did not put the input frames where expected"):
        interpolator.sequence(_pan(3), 2)


def test_minterpolate_short_output_is_a_render_error(monkeypatch: pytest.MonkeyPatch) -> None:
    interpolator = MinterpolateInterpolator()
    command = interpolator.command
    monkeypatch.setattr(interpolator, "command", lambda w, h, x: [*command(w, h, x)[:-1], "-frames:v", "3", "pipe:1"])
    with pytest.raises(RenderError, match="gave 3 frames for 5 inputs at x2"):
        interpolator.sequence(_pan(3), 2)


# --- FILM -------------------------------------------------------------------------------------


@pytest.fixture
def no_jit_load(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.jit.load must not be called")

    monkeypatch.setattr(torch.jit, "load", refuse)


@pytest.mark.usefixtures("no_jit_load")
def test_film_is_not_loaded_without_permission(film_file: Path) -> None:
    with pytest.raises(SettingsError, match="TorchScript program") as caught:
        FilmInterpolator.from_file(film_file, allow_code=False)
    message = str(caught.value)
    assert caught.value.key == "--model"
    assert "--allow-torchscript" in message and "finish.interpolate.allow_torchscript" in message
    assert "runs that code" in message and "rife" in message and "minterpolate" in message


@pytest.mark.usefixtures("no_jit_load")
@pytest.mark.parametrize("allow", [False, True])
def test_film_refuses_files_that_are_not_torchscript(tmp_path: Path, allow: bool) -> None:
    weights = tmp_path / "film_state.pt"
    torch.save({"weight": torch.zeros(3)}, weights)
    with pytest.raises(SettingsError, match=r"PyTorch file of tensors \(torch.save\), not a TorchScript program"):
        FilmInterpolator.from_file(weights, allow_code=allow)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(SettingsError, match="not a TorchScript archive"):
        FilmInterpolator.from_file(junk, allow_code=allow, key="finish.interpolate.model")
    with pytest.raises(SettingsError, match="does not exist"):
        FilmInterpolator.from_file(tmp_path / "missing.pt", allow_code=allow)


def test_film_refuses_a_program_with_another_signature(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.jit.script(NotFilm()).save(str(path))
    with pytest.raises(SettingsError, match=r"forward takes \(image\), not FILM's"):
        FilmInterpolator.from_file(path, allow_code=True)


def test_film_loads_and_interpolates(film_file: Path) -> None:
    film = FilmInterpolator.from_file(film_file, allow_code=True)
    assert isinstance(film.model, torch.jit.ScriptModule)
    assert film.dtype == torch.float32 and film.device == torch.device("cpu")
    frames = _pan(2, height=70, width=45)  # padded to 128 x 64, centred, and cropped back
    a, b = (frame.astype(np.float64) for frame in frames)
    for x in (2, 3, 4):
        out = film.sequence(frames, x)
        for k in range(1, x):
            expected = a * (1 - k / x) + b * (k / x)
            assert np.abs(out[k] - expected).max() <= 1, (x, k)


def test_a_threshold_below_minus_one_never_cuts(film_file: Path) -> None:
    film = FilmInterpolator.from_file(film_file, allow_code=True, scene_threshold=-2)
    first, second = _field(1, HEIGHT, WIDTH), _field(2, HEIGHT, WIDTH)
    middle = film.sequence([first, second], 2)[1]
    assert np.abs(middle - (first.astype(np.float64) + second) / 2).max() <= 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_film_runs_in_float16_on_cuda(film_file: Path) -> None:
    film = FilmInterpolator.from_file(film_file, allow_code=True, device="cuda")
    assert film.dtype == torch.float16
    frames = _pan(3)
    out = film.sequence(frames, 3)
    assert len(out) == 7 and all(np.array_equal(out[3 * i], frame) for i, frame in enumerate(frames))
    expected = frames[0].astype(np.float64) * 2 / 3 + frames[1].astype(np.float64) / 3
    assert np.abs(out[1] - expected).max() <= 2  # float16 steps


@pytest.mark.parametrize(("x", "times"), [(2, [0.5]), (3, [0.333333, 0.5]), (4, [0.5, 0.5, 0.5])])
def test_film_makes_middles_first(x: int, times: list[float]) -> None:
    recording = Recording()
    film = FilmInterpolator(recording)
    first, second = _pan(2)
    out = film.in_betweens(first, second, x)
    assert len(out) == x - 1
    assert recording.times == times


def test_film_engine_errors_from_the_device() -> None:
    with pytest.raises(SettingsError, match="unknown device"):
        FilmInterpolator(Recording(), device="toaster")


# --- by name ----------------------------------------------------------------------------------


def test_make_interpolator_by_name(rife_file: Path, film_file: Path) -> None:
    for name in ("minterpolate", "FFmpeg", " MInterpolate "):
        assert isinstance(make_interpolator(name, None), MinterpolateInterpolator)
    assert isinstance(make_interpolator("ffmpeg", rife_file), MinterpolateInterpolator)  # the model is ignored
    for name in ("rife", "RIFE v4.6", "Rife  V4.6"):
        made = make_interpolator(name, rife_file, rife_version="4.6")
        assert isinstance(made, RifeInterpolator) and made.rife.version == "4.6"
    film = make_interpolator("FILM", film_file, allow_torchscript=True, scene_threshold=-2)
    assert isinstance(film, FilmInterpolator) and film.scene_threshold == -2
    assert {made.name for made in (film, make_interpolator("ffmpeg", None))} == {"film", "minterpolate"}


@pytest.mark.usefixtures("no_jit_load")
def test_make_interpolator_errors(rife_file: Path, film_file: Path) -> None:
    def error(call: Callable[[], object]) -> SettingsError:
        with pytest.raises(SettingsError) as caught:
            call()
        return caught.value

    unknown = error(lambda: make_interpolator("rief", rife_file))
    assert unknown.key == "finish.interpolate.engine" and "Did you mean" in str(unknown) and "'rife'" in str(unknown)
    assert error(lambda: make_interpolator("none", None)).key == "finish.interpolate.engine"
    for name in ("rife", "film"):
        missing = error(lambda name=name: make_interpolator(name, None))  # type: ignore[misc]
        assert missing.key == "finish.interpolate.model" and "needs a model file" in str(missing)
    refused = error(lambda: make_interpolator("film", film_file, key_prefix="post.interp"))
    assert refused.key == "post.interp.model" and "post.interp.allow_torchscript" in str(refused)
    wrong = error(lambda: make_interpolator("rife", rife_file, rife_version="4.26"))
    assert wrong.key == "finish.interpolate.model"
    assert error(lambda: make_interpolator("rife", film_file)).key == "finish.interpolate.model"
