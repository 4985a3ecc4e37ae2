"""Upscalers: tiny files in users' layouts, finding them by name, safe loading, tiling, sizes, errors."""

from __future__ import annotations

import itertools
import logging
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import spandrel  # type: ignore[import-untyped]
import torch
from PIL import Image as PILImage
from safetensors.torch import save_file

from dreamreel.errors import RenderError, SettingsError
from dreamreel.finish import _testing_upscale as tiny
from dreamreel.finish import upscale
from dreamreel.finish.upscale import LanczosUpscaler, Upscaler, load_upscaler


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One of each tiny upscaler file, written once for the module."""
    folder = tmp_path_factory.mktemp("upscalers")
    return {
        "esrgan_pth": tiny.write_tiny_esrgan(folder / "esrgan4.pth"),
        "esrgan_st": tiny.write_tiny_esrgan(folder / "esrgan4.safetensors"),
        "esrgan_x2": tiny.write_tiny_esrgan(folder / "esrgan2.pth", scale=2),
        "esrgan_x1": tiny.write_tiny_esrgan(folder / "esrgan1.pth", scale=1),
        "compact": tiny.write_tiny_compact(folder / "compact4.pth"),
        "compact0": tiny.write_tiny_compact(folder / "compact4_0.pth", num_conv=0),
        "compact_x2": tiny.write_tiny_compact(folder / "compact2.safetensors", scale=2),
        "compact_pt": tiny.write_tiny_compact(folder / "compact3.pt", scale=3, wrapper=None),
        "swinir": tiny.write_tiny_swinir(folder / "swinir4.pth"),
    }


def _model(path: Path, **options: Any) -> Upscaler:
    return Upscaler.from_file(path, **options)


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Noise over smooth gradients: detail everywhere, so seams and offsets show."""
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = np.stack([xx * 255 / max(width - 1, 1), yy * 255 / max(height - 1, 1), (xx + yy) % 97 * 2.6], -1)
    noise = np.random.default_rng(seed).normal(0, 20, (height, width, 3))
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)


# --- the tiny files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "arch", "scale"),
    [
        ("esrgan_pth", "ESRGAN", 4),
        ("esrgan_st", "ESRGAN", 4),
        ("esrgan_x2", "ESRGAN", 2),
        ("compact", "Compact", 4),
        ("compact_x2", "Compact", 2),
        ("compact_pt", "Compact", 3),
        ("swinir", "SwinIR", 4),
    ],
)
def test_spandrel_detects_the_tiny_files(files: dict[str, Path], name: str, arch: str, scale: int) -> None:
    state = upscale.read_state_dict(files[name])
    descriptor = spandrel.ModelLoader(device="cpu").load_from_state_dict(state)
    assert isinstance(descriptor, spandrel.ImageModelDescriptor)
    assert (descriptor.architecture.id, descriptor.scale, descriptor.purpose) == (arch, scale, "SR")
    up = load_upscaler(files[name])
    assert isinstance(up, Upscaler) and up.scale == scale and up.architecture == descriptor.architecture.name
    assert up.dtype == torch.float32 and up.device.type == "cpu"


def test_the_tiny_files_have_the_real_key_layouts(files: dict[str, Path]) -> None:
    esrgan = torch.load(files["esrgan_pth"], weights_only=True)
    assert list(esrgan) == ["params_ema"]  # as in RealESRGAN_x4plus.pth
    keys = set(esrgan["params_ema"])
    assert {"conv_first.weight", "body.0.rdb1.conv1.weight", "body.0.rdb3.conv5.bias", "conv_body.weight"} <= keys
    assert {"conv_up1.weight", "conv_up2.weight", "conv_hr.weight", "conv_last.weight"} <= keys
    assert esrgan["params_ema"]["body.0.rdb1.conv2.weight"].shape == (32, 8 + 32, 3, 3)  # grow channels 32
    assert upscale.read_state_dict(files["esrgan_x2"])["params_ema"]["conv_first.weight"].shape[1] == 12  # unshuffled
    assert set(upscale.read_state_dict(files["esrgan_st"])) == keys  # safetensors: flat
    compact = torch.load(files["compact"], weights_only=True)
    assert list(compact) == ["params"] and {"body.0.weight", "body.1.weight", "body.4.weight"} <= set(compact["params"])
    swinir = upscale.read_state_dict(files["swinir"])["params_ema"]
    assert "layers.0.residual_group.blocks.1.attn_mask" in swinir and "conv_up2.weight" in swinir


# --- sizes and passes -------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [4, 2, 2.5, 1, 0.5, 1.37, 8])  # 23 x 2.5 and 19 x 0.5 end in a half: rounded up
def test_exact_output_size(files: dict[str, Path], scale: float) -> None:
    up = _model(files["compact"])
    image = _image(19, 23)
    out = up.upscale(image, scale)
    assert out.shape == (int(19 * scale + 0.5), int(23 * scale + 0.5), 3) and out.dtype == np.uint8
    plain = LanczosUpscaler().upscale(image, scale)
    assert plain.shape == out.shape


def test_passes_follow_a1111(files: dict[str, Path]) -> None:
    up = _model(files["compact"])
    assert [up.passes(100, 80, s) for s in (0.5, 1, 2, 4, 4.01, 16, 64, 100)] == [0, 1, 1, 1, 2, 2, 3, 3]
    image = _image(12, 10)
    native = up.upscale_native(image)
    assert native.shape == (48, 40, 3)
    assert np.array_equal(up.upscale(image, 4), native)
    assert np.array_equal(up.upscale(image, 2), upscale.lanczos_resize(native, 24, 20))  # down from the 4x result
    twice = up.upscale_native(native)
    assert np.array_equal(up.upscale(image, 6), upscale.lanczos_resize(twice, 72, 60))
    assert np.array_equal(up.upscale(image, 0.5), upscale.lanczos_resize(image, 6, 5))  # no model below 1


def test_both_kinds_follow_the_protocol(files: dict[str, Path]) -> None:
    kinds: list[upscale.ImageUpscaler] = [LanczosUpscaler(), _model(files["compact"])]  # checked by mypy
    image = _image(10, 12)
    assert [kind.upscale(image, 1.5).shape for kind in kinds] == [(15, 18, 3)] * 2
    assert [kind.scale for kind in kinds] == [None, 4]
    assert [kind.name for kind in kinds] == ["lanczos", "compact4"]


def test_lanczos_upscaler_is_pil_lanczos() -> None:
    image = _image(17, 21)
    expected = PILImage.fromarray(image).resize((53, 43), resample=PILImage.Resampling.LANCZOS)
    for name in (None, "lanczos", "None", " LANCZOS "):
        plain = load_upscaler(name)
        assert isinstance(plain, LanczosUpscaler) and plain.scale is None and plain.name == "lanczos"
        assert np.array_equal(plain.upscale(image, 2.5), np.asarray(expected))


@pytest.mark.parametrize("scale", [0, -1, float("nan"), float("inf"), "2", True])
def test_bad_factors(scale: object) -> None:
    with pytest.raises(SettingsError, match="upscale factor must be a number above 0"):
        LanczosUpscaler().upscale(_image(4, 4), scale)  # type: ignore[arg-type]


def test_images_must_be_rgb_uint8(files: dict[str, Path]) -> None:
    up = _model(files["compact"])
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        up.upscale(np.zeros((8, 8, 3), np.float32), 2)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        up.upscale(np.zeros((8, 8, 4), np.uint8), 2)


# --- tiling -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "overlap"), [("compact0", 8), ("compact", 12)])
def test_tiled_equals_untiled_for_a_small_receptive_field(files: dict[str, Path], name: str, overlap: int) -> None:
    # receptive field: num_conv + 2 input pixels (2 and 3) <= overlap // 4, the part of each tile edge left out
    image = _image(72, 80)
    whole = _model(files[name]).upscale_native(image)
    tiled_up = _model(files[name], tile=32, overlap=overlap)
    assert len(upscale.tile_starts(72, 32, overlap)) > 2 and len(upscale.tile_starts(80, 32, overlap)) > 2
    tiled = tiled_up.upscale_native(image)
    assert tiled.shape == whole.shape == (288, 320, 3)
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1  # float summation order only


def test_tiles_of_a_wide_receptive_field_blend_without_seams(files: dict[str, Path]) -> None:
    image = _image(53, 37)  # sizes that are no multiple of anything
    whole = _model(files["esrgan_pth"]).upscale_native(image)
    tiled = _model(files["esrgan_pth"], tile=24, overlap=8).upscale_native(image)
    assert tiled.shape == whole.shape == (212, 148, 3)
    diff = np.abs(tiled.astype(int) - whole.astype(int))
    assert diff.mean() < 0.5 and diff.max() <= 12


def test_tiling_with_size_requirements_and_discouraged_models(files: dict[str, Path]) -> None:
    image = _image(41, 45)
    x2 = _model(files["esrgan_x2"], tile=30, overlap=8)  # input unshuffled: tiles a multiple of 4
    assert x2.tile == 28
    assert x2.upscale_native(image).shape == (82, 90, 3)
    swinir = _model(files["swinir"], tile=32, overlap=8)
    assert swinir.upscale(image, 3).shape == (123, 135, 3)


def test_blend_weights_partition_unity() -> None:
    for length, tile, overlap in [(80, 32, 8), (72, 32, 12), (1000, 512, 32), (33, 32, 8), (20, 32, 8)]:
        starts = upscale.tile_starts(length, tile, overlap)
        assert starts[0] == 0 and min(starts[-1] + tile, length) == length
        assert all(b - a <= tile - overlap for a, b in itertools.pairwise(starts))
        weights = upscale.blend_weights(length, starts, tile, overlap)
        total = np.zeros(length)
        for start, weight in zip(starts, weights, strict=True):
            total[start : start + len(weight)] += weight
            if start > 0:
                assert np.all(weight[: overlap // 4] == 0)  # the tile's own edge is left out
        np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_the_model_sees_only_tiles(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    up = _model(files["compact"], tile=32, overlap=8)
    seen: list[tuple[int, ...]] = []
    forward = up._forward

    def spy(tile: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(tile.shape))
        return forward(tile)

    monkeypatch.setattr(up, "_forward", spy)
    out = up.upscale_native(_image(150, 130))
    assert out.shape == (600, 520, 3)
    assert len(seen) == len(upscale.tile_starts(150, 32, 8)) * len(upscale.tile_starts(130, 32, 8))
    assert all(shape == (1, 3, 32, 32) for shape in seen)  # the working tensor does not grow with the frame


def _oom_above(up: Upscaler, limit: int, sizes: list[int]) -> Callable[[torch.Tensor], torch.Tensor]:
    forward = up._forward

    def fake(tile: torch.Tensor) -> torch.Tensor:
        sizes.append(max(tile.shape[-2:]))
        if max(tile.shape[-2:]) > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(tile)

    return fake


def test_out_of_memory_halves_the_tile(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    image = _image(150, 130)
    whole = _model(files["compact"]).upscale_native(image)
    up = _model(files["compact"], tile=256, overlap=32)
    sizes: list[int] = []
    monkeypatch.setattr(up, "_forward", _oom_above(up, 64, sizes))
    with caplog.at_level(logging.WARNING, logger="dreamreel.finish.upscale"):
        out = up.upscale_native(image)
    assert sizes[0] == 150 and sizes[1] == 128 and max(sizes[2:]) == 64  # 256 (one 150x130 tile), 128, 64
    assert "retrying with 128" in caplog.text and "retrying with 64" in caplog.text
    assert np.abs(out.astype(int) - whole.astype(int)).max() <= 1  # overlap 16 = 64 // 4 still hides the edges
    monkeypatch.setattr(up, "_forward", _oom_above(up, 16, []))
    with pytest.raises(RenderError, match=r"ran out of memory.*tiles of 64 pixels.*--device cpu"):
        up.upscale_native(image)


# --- finding by name --------------------------------------------------------------------------


@pytest.fixture
def a1111(tmp_path: Path, files: dict[str, Path]) -> Path:
    root = tmp_path / "stable-diffusion-webui"
    for rel in (
        "ESRGAN/4x-UltraSharp.pth",
        "RealESRGAN/RealESRGAN_x4plus.pth",
        "RealESRGAN/realesr-animevideov3.pth",
        "SwinIR/SwinIR_4x.pth",
        "DAT/extra/DAT_x2.safetensors",
        "HAT/Real_HAT_GAN_SRx4.pth",
        "HAT/Real_HAT_GAN_SRx4.safetensors",
    ):
        target = root / "models" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"")  # finding reads no file
    return root


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("4x-UltraSharp", "ESRGAN/4x-UltraSharp.pth"),
        ("4x-ultrasharp", "ESRGAN/4x-UltraSharp.pth"),
        ("4X-UltraSharp.PTH", "ESRGAN/4x-UltraSharp.pth"),
        ("ESRGAN/4x-UltraSharp", "ESRGAN/4x-UltraSharp.pth"),
        ("R-ESRGAN 4x+", "RealESRGAN/RealESRGAN_x4plus.pth"),
        ("realesrgan-x4plus", "RealESRGAN/RealESRGAN_x4plus.pth"),  # Deforum's name
        ("R-ESRGAN AnimeVideo", "RealESRGAN/realesr-animevideov3.pth"),
        ("SwinIR 4x", "SwinIR/SwinIR_4x.pth"),
        ("dat_x2", "DAT/extra/DAT_x2.safetensors"),
        ("DAT x2", "DAT/extra/DAT_x2.safetensors"),
        ("extra/DAT_x2", "DAT/extra/DAT_x2.safetensors"),
        ("Real_HAT_GAN_SRx4", "HAT/Real_HAT_GAN_SRx4.safetensors"),  # the safetensors twin wins
    ],
)
def test_names_in_an_a1111_install(a1111: Path, name: str, expected: str) -> None:
    assert upscale.find_upscaler(name, a1111) == a1111 / "models" / expected


def test_a_path_is_taken_as_is(a1111: Path, files: dict[str, Path]) -> None:
    assert upscale.find_upscaler(str(files["compact"]), a1111) == files["compact"]
    assert upscale.find_upscaler(files["compact"]) == files["compact"]


def test_unknown_names_list_what_is_there(a1111: Path) -> None:
    with pytest.raises(SettingsError, match="4x-UltraShrp") as info:
        upscale.find_upscaler("4x-UltraShrp", a1111)
    message = str(info.value)
    assert message.startswith("--model: ")
    assert "found 6 upscaler(s)" in message and "RealESRGAN_x4plus" in message and "SwinIR_4x" in message
    assert "Did you mean '4x-UltraSharp'?" in message
    with pytest.raises(SettingsError, match="Did you mean one of 'R-ESRGAN 4x\\+'"):
        upscale.find_upscaler("R-ESRGAN 4x", a1111)


def test_ambiguous_names(a1111: Path) -> None:
    twin = a1111 / "models" / "upscale_models" / "4x-UltraSharp.pth"
    twin.parent.mkdir()
    twin.write_bytes(b"")
    with pytest.raises(SettingsError, match=r"matches several files: ESRGAN/4x-UltraSharp.pth, upscale_models/"):
        upscale.find_upscaler("4x-UltraSharp", a1111)
    assert upscale.find_upscaler("upscale_models/4x-UltraSharp", a1111) == twin


def test_names_without_a_usable_install(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"not a file here.*--models-dir"):
        upscale.find_upscaler("4x-UltraSharp", None)
    with pytest.raises(SettingsError, match=r"has no models folder.*stable-diffusion-webui"):
        upscale.find_upscaler("4x-UltraSharp", tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(SettingsError, match=r"no upscaler files"):
        upscale.find_upscaler("4x-UltraSharp", tmp_path, key="finish.model")


def test_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_upscaler(str(tmp_path / "missing.pth"))
    with pytest.raises(SettingsError, match="is a folder"):
        load_upscaler(str(tmp_path))
    text = tmp_path / "notes.txt"
    text.write_text("x")
    with pytest.raises(SettingsError, match=r"expected a \.pth, \.pt, \.ckpt or \.safetensors file"):
        load_upscaler(str(text))
    with pytest.raises(SettingsError, match="is a URL"):
        load_upscaler("https://example.com/4x-UltraSharp.pth")


def test_load_by_name(a1111: Path, files: dict[str, Path]) -> None:
    (a1111 / "models" / "ESRGAN" / "4x-UltraSharp.pth").write_bytes(files["esrgan_pth"].read_bytes())
    up = load_upscaler("4x-ultrasharp", models_dir=a1111)
    assert isinstance(up, Upscaler) and up.name == "4x-UltraSharp" and up.architecture == "ESRGAN"
    assert up.description == "ESRGAN 4x (8nf, 1nb), fp32 on cpu"


# --- refusing what cannot or must not be loaded -----------------------------------------------


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".ckpt"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, suffix: str) -> None:
    marker = tmp_path / "PWNED"
    evil = tmp_path / f"4x-Evil{suffix}"
    torch.save({"params_ema": {"conv_first.weight": torch.zeros(2)}, "payload": _Evil(marker)}, evil)
    with pytest.raises(SettingsError, match=r"--model: .*4x-Evil.*asks to run code.*(posix|os)\.system.*safetensors"):
        load_upscaler(str(evil))
    assert not marker.exists()


def test_weights_only_is_how_pickles_are_read(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, object]] = []
    real_load = torch.load

    def recording_load(*args: object, **kwargs: object) -> object:
        calls.append(kwargs)
        return real_load(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "load", recording_load)
    monkeypatch.setattr(spandrel.ModelLoader, "load_from_file", None)  # spandrel's own reader is not used
    load_upscaler(files["esrgan_pth"])
    assert calls == [{"map_location": "cpu", "weights_only": True, "mmap": True}]


def test_pre_zip_pickles_load_without_mmap(tmp_path: Path) -> None:
    old = tmp_path / "RRDB_ESRGAN_x4_old.pth"
    torch.save(tiny.esrgan_state_dict(), old, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(old)
    assert load_upscaler(str(old)).scale == 4


def test_damaged_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a pickle" * 20)
    with pytest.raises(SettingsError, match=r"garbage.pth is not a readable PyTorch weights file.*Download it again"):
        load_upscaler(str(garbage))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(SettingsError, match="not a readable PyTorch weights file"):
        load_upscaler(str(empty))
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 64)
    with pytest.raises(SettingsError, match=r"broken.safetensors is not a valid safetensors file"):
        load_upscaler(str(broken))
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(SettingsError, match="holds Tensor, not a dictionary of tensors"):
        load_upscaler(str(tensor))


def test_torchscript_is_refused(tmp_path: Path) -> None:
    scripted = tmp_path / "film_net_fp32.pt"
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 3, 1)), str(scripted))
    with pytest.raises(SettingsError, match=r"is a TorchScript file.*Use the \.pth or \.safetensors release"):
        load_upscaler(str(scripted))


def test_unsupported_architectures(tmp_path: Path) -> None:
    unknown = tmp_path / "mystery.safetensors"
    save_file({"encoder.block.0.weight": torch.zeros(4, 4), "decoder.weight": torch.zeros(4)}, str(unknown))
    unknown_message = r"does not recognise its architecture \(2 entries: decoder.weight, encoder.*ESRGAN.*SwinIR"
    with pytest.raises(SettingsError, match=unknown_message):
        load_upscaler(str(unknown))
    checkpoint = tmp_path / "v1-5-pruned.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2)}}, checkpoint)
    with pytest.raises(SettingsError, match="is a Stable Diffusion checkpoint, not an upscaler"):
        load_upscaler(str(checkpoint))
    misfit = tmp_path / "misfit.safetensors"
    state = tiny.compact_state_dict()
    state["body.2.weight"] = torch.zeros(8, 5, 3, 3)
    save_file(state, str(misfit))
    with pytest.raises(SettingsError, match="its weights do not fit the architecture"):
        load_upscaler(str(misfit))


def test_restoration_models_are_refused(files: dict[str, Path]) -> None:
    with pytest.raises(SettingsError, match=r"esrgan1.pth is a 1x ESRGAN restoration model.*does not\s+enlarge"):
        load_upscaler(files["esrgan_x1"])


def test_inpainting_and_face_models_are_refused(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    conv = torch.nn.Conv2d(3, 3, 1)

    def masked(self: object, state: object) -> object:
        return spandrel.MaskedImageModelDescriptor(
            conv, conv.state_dict(), spandrel.MAIN_REGISTRY["LaMa"].architecture, purpose="Inpainting", tags=[],
            supports_half=False, supports_bfloat16=False, input_channels=3, output_channels=3,
        )  # fmt: skip

    monkeypatch.setattr(spandrel.ModelLoader, "load_from_state_dict", masked)
    with pytest.raises(SettingsError, match=r"is a LaMa inpainting model.*not an upscaler"):
        load_upscaler(files["compact"])

    def face(self: object, state: object) -> object:
        return spandrel.ImageModelDescriptor(
            conv, conv.state_dict(), spandrel.MAIN_REGISTRY["GFPGAN"].architecture, purpose="FaceSR", tags=[],
            supports_half=False, supports_bfloat16=False, scale=1, input_channels=3, output_channels=3,
        )  # fmt: skip

    monkeypatch.setattr(spandrel.ModelLoader, "load_from_state_dict", face)
    with pytest.raises(SettingsError, match=r"GFPGAN face-restoration model"):
        load_upscaler(files["compact"])


def test_extra_arches_are_refused(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    conv = torch.nn.Conv2d(3, 12, 1)

    class SRFormerLike(type(spandrel.MAIN_REGISTRY["SwinIR"].architecture)):  # type: ignore[misc]
        __module__ = "spandrel_extra_arches.architectures.SRFormer"

    def extra(self: object, state: object) -> object:
        return spandrel.ImageModelDescriptor(
            conv, conv.state_dict(), SRFormerLike(), purpose="SR", tags=[], supports_half=False,
            supports_bfloat16=False, scale=2, input_channels=3, output_channels=3,
        )  # fmt: skip

    monkeypatch.setattr(spandrel.ModelLoader, "load_from_state_dict", extra)
    with pytest.raises(SettingsError, match=r"an architecture of spandrel_extra_arches.*does not use"):
        load_upscaler(files["compact"])


def test_precision_and_device(files: dict[str, Path]) -> None:
    with pytest.raises(SettingsError, match=r"dtype: fp16 upscaling needs a GPU"):
        load_upscaler(files["compact"], dtype="fp16")
    with pytest.raises(SettingsError, match=r"not one of auto, fp32, fp16, bf16. Did you mean one of 'fp16'"):
        load_upscaler(files["compact"], dtype="fp61")  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match=r"--device: 'gpu0' is not a device"):
        load_upscaler(files["compact"], device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(SettingsError, match="no CUDA GPU"):
            load_upscaler(files["compact"], device="cuda")
    with pytest.raises(SettingsError, match="tile: upscaler tiles need"):
        load_upscaler(files["compact"], tile=32, overlap=16)
