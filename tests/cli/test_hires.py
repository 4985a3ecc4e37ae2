"""`dreamreel still --hires`: A1111's hires fix (two passes) with the tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamreel.cli import main
from dreamreel.jobs.still import StillRequest, render_stills
from dreamreel.pipelines.generator import DiffusersGenerator
from dreamreel.pnginfo import GenerationInfo, read_info
from dreamreel.testing import TINY_PROMPT

COMMON = ["--size", "64x64", "--steps", "3", "--seed", "5"]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dreamreel.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("hires") / "tiny", controlnets=())


@pytest.fixture(scope="module")
def generator(model: Path) -> DiffusersGenerator:
    return DiffusersGenerator.from_source(str(model))


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An A1111 install with one upscaler, ``models/ESRGAN/tiny-x2.pth``."""
    from dreamreel.finish._testing_upscale import write_tiny_esrgan

    root = tmp_path_factory.mktemp("a1111")
    write_tiny_esrgan(root / "models" / "ESRGAN" / "tiny-x2.pth", scale=2)
    return root


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def only_png(folder: Path) -> Path:
    (file,) = folder.glob("*.png")
    return file


def test_hires_writes_the_hires_size_and_a1111_info_and_from_regenerates_it(model: Path, tmp_path: Path) -> None:
    args = ["still", TINY_PROMPT, "--negative", "blue", "--model", str(model), *COMMON]
    hires = ["--hires", "2", "--hires-steps", "2", "--denoise", "0.6"]
    assert main([*args, *hires, "--out", str(tmp_path / "a")]) == 0
    file = only_png(tmp_path / "a")
    assert pixels(file).shape == (128, 128, 3)
    text = read_info(file).to_text()
    assert text.splitlines()[-1].startswith(  # A1111's order; Size is the first pass's
        "Steps: 3, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 64x64, Model: tiny, Denoising strength: 0.6, "
        "Hires upscale: 2, Hires steps: 2, Hires upscaler: Latent, Version: dreamreel"
    )
    # the same parameters give the same bits
    assert main(["still", "--from", str(file), "--model", str(model), "--out", str(tmp_path / "b")]) == 0
    assert np.array_equal(pixels(only_png(tmp_path / "b")), pixels(file))
    # the first pass alone is another (smaller) image
    assert main([*args, "--out", str(tmp_path / "c")]) == 0
    assert pixels(only_png(tmp_path / "c")).shape == (64, 64, 3)


def test_hires_resize_prompts_and_model_upscaler_round_trip(model: Path, models_dir: Path, tmp_path: Path) -> None:
    args = ["still", "a cat", "--model", str(model), "--models-dir", str(models_dir), *COMMON]
    hires = ["--hires-resize", "96x128", "--hires-upscaler", "tiny-x2", "--hires-prompt", "a red cat, detailed"]
    assert main([*args, *hires, "--out", str(tmp_path / "a")]) == 0
    file = only_png(tmp_path / "a")
    assert pixels(file).shape == (128, 96, 3)  # 64x64 covers 96x128 at 128x128, cropped to 96 wide
    info = read_info(file)
    assert 'Hires prompt: "a red cat, detailed", Hires resize: 96x128, Hires upscaler: tiny-x2' in info.to_text()
    assert "Hires steps" not in info.params and info.params["Denoising strength"] == "0.7"  # A1111's defaults
    request = StillRequest.from_info(info)
    assert (request.hires, request.hires_resize_x, request.hires_resize_y) == (True, 96, 128)
    assert request.hires_prompt == "a red cat, detailed" and request.hires_negative_prompt == ""
    from_png = ["still", "--from", str(file), "--model", str(model), "--models-dir", str(models_dir)]
    assert main([*from_png, "--out", str(tmp_path / "b")]) == 0
    assert np.array_equal(pixels(only_png(tmp_path / "b")), pixels(file))


def test_every_upscaler_path_gives_the_hires_size(
    generator: DiffusersGenerator, models_dir: Path, tmp_path: Path
) -> None:
    model_file = models_dir / "models" / "ESRGAN" / "tiny-x2.pth"
    names = [
        "Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)", "Latent (nearest)",
        "Latent (nearest-exact)", "Lanczos", "None", "Nearest", "tiny-x2", str(model_file),
    ]  # fmt: skip
    images = {}
    for index, name in enumerate(names):
        request = StillRequest(
            TINY_PROMPT, steps=3, seed=5, width=64, height=64, hires=True, hires_upscaler=name, hires_steps=2
        )
        (file,) = render_stills(request, tmp_path / str(index), lambda _: generator, models_dir=models_dir)
        assert read_info(file).params["Hires upscaler"] == name
        images[name] = pixels(file)
        assert images[name].shape == (128, 128, 3), name
    assert np.array_equal(images["Lanczos"], images["None"])  # both a Lanczos resize, as A1111's resize_image
    assert np.array_equal(images["tiny-x2"], images[str(model_file)])  # a name in --models-dir, or the path
    # (at exactly 2x, nearest and nearest-exact pick the same latents, and antialiasing changes only downscales)
    distinct = {name: images[name] for name in ("Latent", "Latent (bicubic)", "Latent (nearest)", "Lanczos", "Nearest",
                                                "tiny-x2")}  # fmt: skip
    for a in distinct:
        for b in distinct:
            assert a == b or not np.array_equal(distinct[a], distinct[b]), (a, b)


def test_hires_batches_equal_single_images_and_denoise_0_skips_the_second_pass(
    generator: DiffusersGenerator, tmp_path: Path
) -> None:
    common = {"prompt": TINY_PROMPT, "steps": 3, "width": 64, "height": 64, "hires": True, "hires_steps": 2}
    batch = render_stills(
        StillRequest(**common, seed=7, batch_size=2, hires_upscaler="Lanczos"),  # type: ignore[arg-type]
        tmp_path / "batch",
        lambda _: generator,
    )
    assert [f.name for f in batch] == ["00000-7.png", "00001-8.png"]
    for index, file in enumerate(batch):  # both passes are batched with seeds seed + i
        single = render_stills(
            StillRequest(**common, seed=7 + index, hires_upscaler="Lanczos"),  # type: ignore[arg-type]
            tmp_path / f"single{index}",
            lambda _: generator,
        )
        assert np.abs(pixels(single[0]) - pixels(file)).max() <= 1, file.name
    # denoising strength 0: the upscale of the first pass is the result
    (lowres,) = render_stills(StillRequest(TINY_PROMPT, steps=3, seed=7, width=64, height=64), tmp_path / "low",
                              lambda _: generator)  # fmt: skip
    (upscaled,) = render_stills(
        StillRequest(**common, seed=7, hires_upscaler="Lanczos", hires_denoising_strength=0.0),  # type: ignore[arg-type]
        tmp_path / "zero",
        lambda _: generator,
    )
    expected = Image.fromarray(pixels(lowres).astype(np.uint8)).resize((128, 128), Image.Resampling.LANCZOS)
    assert np.array_equal(pixels(upscaled), np.asarray(expected).astype(int))


@pytest.mark.parametrize(
    ("text", "hires", "upscale", "resize", "steps", "upscaler", "denoise"),
    [
        ("Steps: 20, Seed: 1, Size: 512x768, Denoising strength: 0.45, Hires upscale: 1.5, Hires steps: 12, "
         "Hires upscaler: Latent (bicubic antialiased)", True, 1.5, (0, 0), 12, "Latent (bicubic antialiased)", 0.45),
        ("Steps: 20, Seed: 1, Size: 512x768, Denoising strength: 0.5, Hires resize: 1024x0, Hires upscaler: "
         "R-ESRGAN 4x+", True, 2.0, (1024, 0), 0, "R-ESRGAN 4x+", 0.5),
        ("Steps: 20, Seed: 1, Size: 512x768, Denoising strength: 0.3", False, 2.0, (0, 0), 0, "Latent", 0.7),
        ("Steps: 20, Seed: 1, Size: 512x768, Hires upscale: 2", False, 2.0, (0, 0), 0, "Latent", 0.7),
    ],
)  # fmt: skip
def test_a1111_infotexts_turn_the_hires_fix_on_as_a1111_pastes_them(
    text: str, hires: bool, upscale: float, resize: tuple[int, int], steps: int, upscaler: str, denoise: float
) -> None:
    request = StillRequest.from_info(GenerationInfo.from_text(f"a cat\n{text}"))
    assert request.hires is hires
    assert (request.hires_upscale, (request.hires_resize_x, request.hires_resize_y)) == (upscale, resize)
    assert (request.hires_steps, request.hires_upscaler, request.hires_denoising_strength) == (steps, upscaler, denoise)
    if not hires and "Denoising strength" in text:
        assert request.denoising_strength == 0.3  # img2img's


@pytest.mark.parametrize(
    ("width", "height", "hires", "resize", "size"),
    [
        (64, 64, 2.0, (0, 0), (128, 128)),
        (64, 96, 1.5, (0, 0), (96, 144)),
        (72, 64, 1.3, (0, 0), (88, 80)),  # int(72 * 1.3) = 93 -> 88, int(64 * 1.3) = 83 -> 80
        (64, 96, 2.0, (256, 0), (256, 384)),  # one side 0: kept in proportion
        (64, 96, 2.0, (0, 128), (80, 128)),  # 128 * 64 // 96 = 85 -> 80
        (64, 96, 2.0, (128, 128), (128, 128)),  # covered at 128x192, 8 latents cropped (4 top, 4 bottom)
        (96, 64, 2.0, (136, 128), (136, 128)),  # covered at 192x128, (192 - 136) // 8 = 7 latents cropped
    ],
)
def test_hires_sizes_follow_a1111(
    width: int, height: int, hires: float, resize: tuple[int, int], size: tuple[int, int]
) -> None:
    request = StillRequest("a cat", hires=True, hires_upscale=hires, hires_resize_x=resize[0], hires_resize_y=resize[1])
    plan = request.hires_plan(width, height)
    assert plan is not None and plan.size == size


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--hires", "1"], "--hires: is 1; use an upscale factor above 1"),
        (["--hires", "0.5"], "--hires: is 0.5"),
        (["--hires", "40"], "--hires: is 40"),
        (["--hires", "nan"], "--hires: is nan"),
        (["--hires", "2", "--hires-upscaler", "Latnet"], "Did you mean one of 'Latent'"),
        (["--hires", "2", "--hires-upscaler", "4x-Missing"], "'Latent (bicubic antialiased)'"),
        (["--hires", "2", "--hires-steps", "-1"], "--hires-steps: is -1"),
        (["--hires", "2", "--denoise", "1.5"], "--denoise: is 1.5"),
        (["--hires", "2", "--denoise", "-0.1"], "--denoise: is -0.1"),
        (["--denoise", "0.5"], "--denoise: sets the hires fix, which is off"),
        (["--hires-steps", "4"], "--hires-steps: sets the hires fix"),
        (["--hires-upscaler", "Lanczos"], "--hires-upscaler: sets the hires fix"),
        (["--hires", "2", "--hires-resize", "128x128"], "--hires-resize: and --hires SCALE"),
        (["--hires-resize", "big"], "--hires-resize: the hires size is 'big'"),
        (["--hires-resize", "48x48"], "no upscale"),
        (["--hires-resize", "9000x0"], "--hires-resize: is 9000x0"),
        (["--hires", "2", "--strength", "0.5"], "--strength: is img2img's denoising strength"),
        (["--hires", "2", "--hires-prompt", "`1 +`"], "--hires-prompt"),
    ],
)
def test_bad_hires_options_fail_before_loading(
    tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-model"
    assert main(["still", "a cat", "--model", str(missing), *COMMON, *extra, "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err
    assert message in error and "no-model" not in error  # the model was never looked at
    assert error.count("error:") == 1 and "Traceback" not in error


def test_hires_with_init_and_unknown_model_names_fail_before_loading(
    tmp_path: Path, models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    init = tmp_path / "init.png"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(init)
    base = ["still", "a cat", "--model", str(tmp_path / "no-model"), *COMMON, "--hires", "2"]
    assert main([*base, "--init", str(init), "--out", str(tmp_path / "o")]) == 2
    assert "--hires: the hires fix is a txt2img feature" in capsys.readouterr().err
    named = ["--hires-upscaler", "tiny-x3", "--models-dir", str(models_dir)]
    assert main([*base, *named, "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err
    assert "--hires-upscaler:" in error and "Did you mean 'tiny-x2'?" in error and "'Latent (nearest)'" in error
    assert not (tmp_path / "o").exists()
