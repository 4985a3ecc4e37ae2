"""RIFE: reading flownet.pkl files, recognising the version, the network's plumbing, scene cuts."""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dreamreel.errors import SettingsError
from dreamreel.finish import rife
from dreamreel.finish._testing_rife import TINY_WIDTHS, tiny_ifnet, write_tiny_flownet
from dreamreel.finish.rife_arch import (
    FAMILIES,
    UnknownArchitecture,
    detect_arch,
    expected_shapes,
    family_arch,
    normalize_version,
    warp,
)
from dreamreel.testcard import make_test_card

RELEASES = ["4.6", "4.7", "4.8", "4.9", "4.21", "4.22", "4.23", "4.25", "4.26"]
FAMILY = {"4.6": "4.6", "4.7": "4.7", "4.8": "4.7", "4.9": "4.7", "4.21": "4.22", "4.22": "4.22", "4.23": "4.22"}
FAMILY |= {"4.25": "4.25", "4.26": "4.25"}


def _field(seed: int, height: int = 96, width: int = 128) -> np.ndarray:
    """A smooth random colour picture (blobs of about 10 pixels)."""
    noise = np.random.default_rng(seed).random((height, width, 3)).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), 4)
    scaled = (blurred - blurred.min()) / (blurred.max() - blurred.min())
    return (scaled * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("rife")
    return {family: write_tiny_flownet(folder / family / "flownet.pkl", family) for family in FAMILIES}


@pytest.fixture(scope="module")
def blending(tmp_path_factory: pytest.TempPathFactory) -> rife.Rife:
    """A 4.25-family network whose flows and mask are zero: it blends the two frames half and half."""
    path = write_tiny_flownet(tmp_path_factory.mktemp("still") / "flownet.pkl", "4.25", zero_flow=True)
    return rife.load_rife(path)


# --- times and sizes ----------------------------------------------------------------------------


def test_in_between_times() -> None:
    assert rife.in_between_times(2) == [0.5]
    assert rife.in_between_times(3) == [1 / 3, 2 / 3]
    assert rife.in_between_times(4) == [0.25, 0.5, 0.75]
    assert len(rife.in_between_times(10)) == 9
    assert rife.in_between_times(np.int64(2)) == [0.5]
    for wrong in (1, 0, -3, 2.5, True, "2"):
        with pytest.raises(SettingsError, match="whole number of at least 2") as caught:
            rife.in_between_times(wrong)  # type: ignore[arg-type]
        assert caught.value.key == "frame_interpolation_x_amount"


def test_scale_and_padding_follow_deforum() -> None:
    assert rife.auto_scale(512, 512) == 1.0
    assert rife.auto_scale(1440, 2560) == 1.0  # Deforum's "UHD" needs both sides >= 2048
    assert rife.auto_scale(2160, 3840) == 0.5
    assert rife.auto_scale(2048, 2048) == 0.5
    assert [rife.pad_multiple(s) for s in (0.25, 0.5, 1.0, 2.0, 4.0)] == [512, 256, 128, 128, 128]
    for family in FAMILIES.values():  # the padding is always enough for the coarsest block
        assert all(rife.pad_multiple(s) % int(family.pad_multiple / min(s, 1.0)) == 0 for s in rife.SCALES)


def test_padding_and_cropping_round_trip() -> None:
    frames = torch.rand(2, 3, 46, 70)
    padded = rife.pad_frames(frames, 128)
    assert padded.shape == (2, 3, 128, 128)
    assert torch.equal(padded[:, :, :46, :70], frames)
    assert padded[:, :, 46:].abs().sum() == 0 and padded[:, :, :, 70:].abs().sum() == 0
    assert rife.pad_frames(torch.rand(1, 3, 256, 128), 128).shape == (1, 3, 256, 128)


# --- the network's plumbing ---------------------------------------------------------------------


def test_warp_with_zero_flow_is_the_identity() -> None:
    image = torch.rand(2, 5, 37, 53)
    out = warp(image, torch.zeros(2, 2, 37, 53))
    torch.testing.assert_close(out, image, atol=1e-5, rtol=0)


def test_warp_moves_by_whole_pixels_and_repeats_the_border() -> None:
    image = torch.rand(1, 3, 20, 30)
    flow = torch.zeros(1, 2, 20, 30)
    flow[:, 0] = 3.0  # out[y, x] = image[y, x + 3]
    flow[:, 1] = -2.0  # out[y, x] = image[y - 2, x + 3]
    out = warp(image, flow)
    torch.testing.assert_close(out[..., 2:, :27], image[..., :18, 3:], atol=1e-4, rtol=0)
    torch.testing.assert_close(out[..., 2:, 27:], image[..., :18, 29:].expand(-1, -1, -1, 3), atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_zero_flow_network_blends_half_and_half(tmp_path: Path, family: str) -> None:
    net = rife.load_rife(write_tiny_flownet(tmp_path / "flownet.pkl", family, zero_flow=True))
    a, b = _field(1, 46, 70), _field(2, 46, 70)
    assert np.array_equal(net.interpolate(a, a, 0.3), a)  # identical frames in: the frame out, exactly
    expected = (a.astype(np.float64) + b) / 2
    for t in (0.25, 0.5, 0.9):
        assert np.abs(net.interpolate(a, b, t) - expected).max() <= 0.5 + 1e-6


# --- versions -----------------------------------------------------------------------------------

PUBLISHED_SHAPES = {
    "4.6": {
        "block0.conv0.0.0.weight": (96, 7, 3, 3),
        "block1.conv0.0.0.weight": (64, 12, 3, 3),
        "block0.lastconv.0.weight": (192, 24, 4, 4),
        "block3.convblock.7.beta": (1, 64, 1, 1),
    },
    "4.7": {
        "encode.0.weight": (16, 3, 3, 3),
        "encode.1.weight": (16, 4, 4, 4),
        "block0.conv0.0.0.weight": (96, 15, 3, 3),
        "block1.conv0.0.0.weight": (64, 20, 3, 3),
        "block3.lastconv.0.weight": (64, 24, 4, 4),
    },
    "4.22": {
        "encode.cnn0.weight": (32, 3, 3, 3),
        "encode.cnn3.weight": (32, 8, 4, 4),
        "block0.conv0.0.0.weight": (128, 23, 3, 3),
        "block1.conv0.0.0.weight": (96, 36, 3, 3),
        "block0.lastconv.0.weight": (256, 52, 4, 4),
    },
    "4.25": {
        "encode.cnn0.weight": (16, 3, 3, 3),
        "encode.cnn3.weight": (16, 4, 4, 4),
        "block0.conv0.0.0.weight": (96, 15, 3, 3),
        "block4.conv0.0.0.weight": (16, 28, 3, 3),
        "block4.lastconv.0.weight": (32, 52, 4, 4),
    },
}
PUBLISHED_COUNTS = {  # tensors, numbers
    "4.6": (120, 5_306_256),
    "4.7": (124, 5_325_012),
    "4.22": (128, 9_322_416),
    "4.25": (158, 5_664_776),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_published_shapes_are_recognised(family: str) -> None:
    shapes = expected_shapes(FAMILIES[family])
    for name, shape in PUBLISHED_SHAPES[family].items():
        assert shapes[name] == shape, name
    count, numbers = PUBLISHED_COUNTS[family]
    assert (len(shapes), sum(int(np.prod(s)) for s in shapes.values())) == (count, numbers)
    arch = detect_arch(shapes)
    assert arch == FAMILIES[family]
    assert arch.variant == family


@pytest.mark.parametrize("release", RELEASES)
def test_every_release_file_loads_with_no_missing_or_unexpected_keys(tiny_files: dict[str, Path], release: str) -> None:
    path = tiny_files[FAMILY[release]]
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw and all(name.startswith("module.") for name in raw)  # as Practical-RIFE saves it
    state = rife.read_flownet(path)
    loaded = rife.load_rife(path, version=release)
    assert loaded.version == FAMILY[release]
    assert release in loaded.releases
    assert set(state) == set(loaded.net.state_dict()) and loaded.ignored_keys == ()
    assert loaded.arch.widths == TINY_WIDTHS[FAMILY[release]]
    assert rife.load_rife(path).version == FAMILY[release]  # detected without the override


def test_variants_with_the_same_layers(tmp_path: Path) -> None:
    heavy = family_arch("4.25", widths=(384, 256, 192, 128, 64))
    assert detect_arch(expected_shapes(heavy)).variant == "4.25.heavy"
    lite = family_arch("4.22", widths=(192, 128, 64, 32), encoder=(16, 4))
    assert detect_arch(expected_shapes(lite)).variant == "4.22.lite"
    heavy26 = family_arch("4.26", encoder=(16, 16))
    assert detect_arch(expected_shapes(heavy26)).variant == "4.26.heavy"
    refused = family_arch("4.25", widths=(192, 128, 96, 64, 24))
    with pytest.raises(UnknownArchitecture, match=r"4\.25\.lite.*other scales"):
        detect_arch(expected_shapes(refused))
    with pytest.raises(SettingsError, match=r"it is RIFE 4\.25\.lite.*Use the 4\.25 or 4\.26 flownet\.pkl\.$"):
        rife.load_rife(_save(tmp_path / "lite.pkl", {k: torch.zeros(v) for k, v in expected_shapes(refused).items()}))


def test_version_names() -> None:
    assert normalize_version("4.9") == "4.7"
    assert normalize_version("v4.26") == "4.25"
    assert normalize_version("rife49") == "4.7"
    assert normalize_version("rife426") == "4.25"
    assert normalize_version("4.6.0") == "4.6"
    assert normalize_version("4.25.heavy") == "4.25"
    assert normalize_version("4.22.lite") == "4.22"
    with pytest.raises(ValueError, match=r"4\.25\.lite, whose blocks run at other scales"):
        normalize_version("4.25.lite")
    with pytest.raises(ValueError, match=r"unknown RIFE version '4\.10'"):
        normalize_version("4.10")


def test_the_wrong_version_is_refused(tiny_files: dict[str, Path]) -> None:
    path = tiny_files["4.7"]
    with pytest.raises(SettingsError, match=r"it is not RIFE 4\.6: it holds 4 blocks.*2-layer encoder 16->4") as caught:
        rife.load_rife(path, version="4.6")
    assert caught.value.key == "--model" and str(path) in str(caught.value)
    with pytest.raises(
        SettingsError, match=r"^--rife-version: unknown RIFE version '5\.0'; dreamreel reads 4\.6, 4\.7"
    ):
        rife.load_rife(path, version="5.0", key="--rife-model")


def _save(path: Path, state: object) -> Path:
    torch.save(state, path)
    return path


def test_files_that_are_not_a_known_network(tmp_path: Path) -> None:
    other = _save(tmp_path / "esrgan.pth", {"conv_first.weight": torch.zeros(64, 3, 3, 3)})
    with pytest.raises(SettingsError, match="not a RIFE network dreamreel can run") as caught:
        rife.load_rife(other, key="--rife-model")
    message = str(caught.value)
    assert message.startswith(f"--rife-model: {other}:")
    assert "holds no IFNet blocks (block0...), no encoder, also conv_first" in message
    assert "4.6, 4.7-4.9, 4.21-4.23 and 4.25/4.26" in message and "\n" not in message

    state = tiny_ifnet("4.6").state_dict()
    del state["block2.convblock.3.beta"]
    with pytest.raises(SettingsError, match=r"4\.6 differs: block2\.convblock\.3\.beta missing"):
        rife.load_rife(_save(tmp_path / "broken.pkl", state))

    older = {  # RIFE 4.5: the blocks give 5 channels, not 6
        name: torch.zeros((shape[0], 20, 4, 4) if name.endswith("weight") else (20,)) if ".lastconv." in name
        else torch.zeros(shape)
        for name, shape in expected_shapes(FAMILIES["4.6"]).items()
    }  # fmt: skip
    with pytest.raises(SettingsError, match=r"block outputs 5 channels.*block0\.lastconv\.0\.weight is"):
        rife.load_rife(_save(tmp_path / "rife45.pkl", older))


def test_files_that_are_not_state_dicts(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"expected a dictionary of tensors.*found a list"):
        rife.load_rife(_save(tmp_path / "list.pkl", [torch.zeros(3)]))
    with pytest.raises(SettingsError, match="holds no tensors"):
        rife.load_rife(_save(tmp_path / "empty.pkl", {"epoch": 3}))
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"this is not a pickle" * 20)
    with pytest.raises(SettingsError, match="not a readable PyTorch file"):
        rife.load_rife(garbage)
    with pytest.raises(SettingsError, match="does not exist") as caught:
        rife.load_rife(tmp_path / "missing.pkl", key="--rife-model")
    assert caught.value.key == "--rife-model"
    with pytest.raises(SettingsError, match="does not download"):
        rife.load_rife("https://example.com/flownet.pkl")


def test_other_ways_the_weights_are_stored(tmp_path: Path) -> None:
    state = tiny_ifnet("4.9").state_dict()
    plain = _save(tmp_path / "rife49.pth", state)  # ComfyUI's files: no module. prefix
    assert rife.load_rife(plain).version == "4.7"
    wrapped = _save(tmp_path / "wrapped.pkl", {"state_dict": {f"module.{k}": v for k, v in state.items()}})
    assert rife.load_rife(wrapped).version == "4.7"
    legacy = tmp_path / "legacy.pkl"  # torch's old format cannot be memory-mapped
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    assert rife.load_rife(legacy).version == "4.7"
    training = _save(tmp_path / "training.pkl", {**state, "teacher.conv.weight": torch.zeros(2), "step": 7})
    assert rife.load_rife(training).ignored_keys == ("teacher.conv.weight",)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    evil = tmp_path / "flownet.pkl"
    torch.save({"module.block0.conv0.0.0.weight": torch.zeros(2), "payload": _Evil(marker)}, evil)
    with pytest.raises(SettingsError, match=r"asks to run code.*(posix|os)\.system.*refuses") as caught:
        rife.load_rife(evil)
    assert caught.value.key == "--model"
    assert not marker.exists()


def test_device_and_dtype_errors(tiny_files: dict[str, Path]) -> None:
    path = tiny_files["4.6"]
    with pytest.raises(SettingsError, match="float16 RIFE runs on CUDA only"):
        rife.load_rife(path, dtype="float16")
    with pytest.raises(SettingsError, match="unknown RIFE dtype 'bf16'"):
        rife.load_rife(path, dtype="bf16")
    with pytest.raises(SettingsError, match="unknown device"):
        rife.load_rife(path, device="toaster")
    with pytest.raises(SettingsError, match="scale must be one of"):
        rife.load_rife(path, scale=0.3)
    if not torch.cuda.is_available():
        with pytest.raises(SettingsError, match="no CUDA device"):
            rife.load_rife(path, device="cuda")
    assert rife.load_rife(path).dtype == torch.float32


# --- inference ----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(FAMILIES))
def test_interpolate_odd_sizes(tiny_files: dict[str, Path], family: str) -> None:
    net = rife.load_rife(tiny_files[family])
    a, b = _field(3, 46, 70), _field(4, 46, 70)
    out = net.interpolate(a, b, 0.5)
    assert out.shape == (46, 70, 3) and out.dtype == np.uint8
    assert out.flags.c_contiguous
    first, quarter, last = net.interpolate_many(a, b, [0.0, 0.25, 1.0])
    assert np.array_equal(first, a) and np.array_equal(last, b)  # the end points are the frames themselves
    assert first is not a and last is not b
    assert quarter.shape == a.shape
    assert net.interpolate(a, b, 0.5, scale=0.5).shape == (46, 70, 3)


def test_interpolate_checks_its_inputs(tiny_files: dict[str, Path]) -> None:
    net = rife.load_rife(tiny_files["4.6"])
    a = _field(3, 46, 70)
    with pytest.raises(ValueError, match="between 0 and 1"):
        net.interpolate(a, a, 1.5)
    with pytest.raises(ValueError, match="same size"):
        net.interpolate(a, a[:40], 0.5)
    with pytest.raises(ValueError, match=re.escape("(H, W, 3) uint8")):
        net.interpolate(a.astype(np.float32), a, 0.5)
    with pytest.raises(SettingsError, match="scale must be one of"):
        net.interpolate(a, a, 0.5, scale=3.0)


def test_a_batch_gives_what_single_pairs_give(tiny_files: dict[str, Path]) -> None:
    net = rife.load_rife(tiny_files["4.22"])
    a = torch.rand(3, 3, 40, 60)
    b = torch.rand(3, 3, 40, 60)
    times = [0.0, 0.3, 0.8]
    batch = net.interpolate_tensor(a, b, times)
    assert batch.shape == (3, 3, 40, 60) and batch.dtype == torch.float32
    assert torch.equal(batch[0], a[0])
    for i, t in enumerate(times):
        single = net.interpolate_tensor(a[i : i + 1], b[i : i + 1], t)
        torch.testing.assert_close(batch[i : i + 1], single, atol=1e-5, rtol=0)
    assert torch.equal(net.interpolate_tensor(a, b, torch.ones(3)), b)
    with pytest.raises(ValueError, match="one per frame pair"):
        net.interpolate_tensor(a, b, [0.5, 0.5])
    batches = net.interpolate_many(_field(1), _field(2), [0.2, 0.4, 0.6], batch_size=2)
    assert [image.shape for image in batches] == [(96, 128, 3)] * 3


# --- scene cuts ---------------------------------------------------------------------------------


def test_scene_cuts() -> None:
    picture, card = _field(0), make_test_card(128, 96)
    assert rife.scene_similarity(picture, picture) == pytest.approx(1.0)
    assert rife.is_scene_cut(picture, _field(100))  # unrelated pictures
    assert rife.is_scene_cut(picture, card)
    assert not rife.is_scene_cut(picture, np.roll(picture, 4, axis=1))  # moved by 3% of the width
    assert not rife.is_scene_cut(card, np.roll(card, 5, axis=1))
    assert not rife.is_scene_cut(card, (card * 0.7).astype(np.uint8))  # a fade is not a cut
    black, white = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)
    assert rife.is_scene_cut(black, white)


def test_in_betweens_hold_across_a_cut(blending: rife.Rife) -> None:
    a, b = _field(0), _field(100)
    held = rife.in_betweens(blending, a, b, 4)
    assert [image is a or image is b for image in held] == [False] * 3  # copies
    assert [np.array_equal(image, a) for image in held] == [True, False, False]  # t = 0.25 holds a, 0.5 and 0.75 b
    assert all(np.array_equal(image, b) for image in held[1:])
    first = rife.in_betweens(blending, a, b, 3, hold="first")  # Deforum's way
    assert all(np.array_equal(image, a) for image in first)
    morphed = rife.in_betweens(blending, a, b, 2, threshold=-2.0)  # no cut: the network's frame
    assert np.abs(morphed[0] - (a.astype(np.float64) + b) / 2).max() <= 0.5 + 1e-6


def test_in_betweens_morph_within_a_shot(blending: rife.Rife) -> None:
    a = _field(0)
    b = np.roll(a, 3, axis=1)
    frames = rife.in_betweens(blending, a, b, 5)
    assert len(frames) == 4
    expected = (a.astype(np.float64) + b) / 2
    assert all(np.abs(frame - expected).max() <= 0.5 + 1e-6 for frame in frames)
    with pytest.raises(SettingsError, match="at least 2"):
        rife.in_betweens(blending, a, b, 1)


# --- slow and GPU -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("release", ["4.6", "4.9", "4.22", "4.26"])
def test_published_size_files_load(tmp_path: Path, release: str) -> None:
    path = write_tiny_flownet(tmp_path / "flownet.pkl", release, published=True)
    net = rife.load_rife(path)
    assert net.arch == FAMILIES[FAMILY[release]] and net.ignored_keys == ()
    assert net.interpolate(_field(1, 64, 96), _field(2, 64, 96), 0.5).shape == (64, 96, 3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("family", list(FAMILIES))
def test_float16_on_cuda_agrees_with_float32(tmp_path: Path, family: str) -> None:
    path = write_tiny_flownet(tmp_path / "flownet.pkl", family, published=True)
    half = rife.load_rife(path, device="cuda")
    full = rife.load_rife(path, device="cuda", dtype="float32")
    assert half.dtype == torch.float16
    a, b = _field(1, 270, 480), _field(2, 270, 480)
    out_half, out_full = half.interpolate(a, b, 0.4), full.interpolate(a, b, 0.4)
    cpu = rife.load_rife(path).interpolate(a, b, 0.4)
    assert np.abs(out_full.astype(int) - cpu).max() <= 2
    assert np.abs(out_half.astype(int) - out_full).mean() < 1.0
