"""`dreamreel still` and `dreamreel info` as a user runs them (tiny model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamreel.cli import main
from dreamreel.pnginfo import read_info
from dreamreel.testing import TINY_PROMPT


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dreamreel.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("still") / "tiny", controlnets=())


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def test_batches_write_pngs_with_a1111_info_and_regenerate(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--model", str(model), "--size", "64x64", "--steps", "3", "--sampler", "DPM++ 2M Karras"]
    args = ["still", TINY_PROMPT, "--negative", "blue", "--seed", "10", "--batch-count", "2", "--batch-size", "2"]
    assert main([*args, *common, "--cfg", "6", "--out", str(tmp_path / "a")]) == 0
    files = sorted((tmp_path / "a").glob("*.png"))
    assert [f.name for f in files] == ["00000-10.png", "00001-11.png", "00002-12.png", "00003-13.png"]
    info = read_info(files[1])
    assert info.prompt == TINY_PROMPT and info.negative_prompt == "blue"
    assert info.params["Steps"] == "3" and info.params["Sampler"] == "DPM++ 2M Karras"
    assert info.params["CFG scale"] == "6" and info.params["Seed"] == "11" and info.params["Size"] == "64x64"
    assert "Denoising strength" not in info.params  # txt2img
    capsys.readouterr()
    assert main(["info", str(files[1])]) == 0
    assert "Seed: 11" in capsys.readouterr().out
    # a single call with seed 11 gives the second image of the first batch
    assert main(["still", TINY_PROMPT, "--negative", "blue", "--seed", "11", "--cfg", "6", *common,
                 "--out", str(tmp_path / "b")]) == 0  # fmt: skip
    assert np.abs(pixels(tmp_path / "b" / "00000-11.png") - pixels(files[1])).max() <= 1
    # --from regenerates the same image from its PNG info (a single call: within 1, as batching changes rounding)
    assert main(["still", "--from", str(files[2]), "--model", str(model), "--out", str(tmp_path / "c")]) == 0
    assert np.abs(pixels(tmp_path / "c" / "00000-12.png") - pixels(files[2])).max() <= 1


def test_batch_size_makes_one_sampler_call_per_batch(model: Path, tmp_path: Path) -> None:
    from dreamreel.jobs.still import StillRequest, render_stills
    from dreamreel.pipelines.generator import DiffusersGenerator

    generator = DiffusersGenerator.from_source(str(model))
    batch_calls: list[int] = []  # the count of each generate_batch call
    unet_batches: list[int] = []  # the batch dimension of each UNet forward
    generate_batch = generator.generate_batch

    def counting(request: object, count: int) -> list[np.ndarray]:
        batch_calls.append(count)
        return generate_batch(request, count)  # type: ignore[arg-type]

    generator.generate_batch = counting  # type: ignore[method-assign]
    unet = generator._txt2img.unet
    handle = unet.register_forward_pre_hook(lambda _, args: unet_batches.append(args[0].shape[0]))
    common = {"prompt": TINY_PROMPT, "negative_prompt": "blue", "steps": 3, "width": 64, "height": 64}
    try:
        request = StillRequest(**common, seed=20, batch_count=2, batch_size=3)  # type: ignore[arg-type]
        files = render_stills(request, tmp_path / "batched", lambda _: generator)
    finally:
        handle.remove()
    assert batch_calls == [3, 3]  # one sampler call per batch of 3
    assert unet_batches == [2 * 3] * (2 * 3)  # 2 calls x 3 steps, each over 3 images (x2 for CFG)
    assert [f.name for f in files] == [f"{i:05d}-{20 + i}.png" for i in range(6)]
    assert [read_info(f).params["Seed"] for f in files] == [str(20 + i) for i in range(6)]
    for index, file in enumerate(files):  # each equals a single-image run with its seed
        single = render_stills(
            StillRequest(**common, seed=20 + index),
            tmp_path / f"single{index}",
            lambda _: generator,  # type: ignore[arg-type]
        )
        assert np.abs(pixels(single[0]) - pixels(file)).max() <= 1, file.name


def test_batches_serve_queued_images_only_for_their_seed() -> None:
    from dreamreel.generation import GenerationRequest
    from dreamreel.jobs.still import _Batches

    calls: list[tuple[int, int]] = []

    class Fake:
        def generate(self, request: GenerationRequest) -> np.ndarray:
            return self.generate_batch(request, 1)[0]

        def generate_batch(self, request: GenerationRequest, count: int) -> list[np.ndarray]:
            calls.append((request.seed, count))
            return [np.full((8, 8, 3), request.seed + i, np.uint8) for i in range(count)]

    batches = _Batches(Fake(), 2)
    seeds = [5, 6, 7, 8, 20, 21]  # 20: not the queued seed 9, so a new batch starts
    images = [batches.generate(GenerationRequest(prompt="x", width=8, height=8, seed=s)) for s in seeds]
    assert [int(image[0, 0, 0]) for image in images] == seeds
    assert calls == [(5, 2), (7, 2), (20, 2)]


def test_img2img_still_records_denoising_strength(model: Path, tmp_path: Path) -> None:
    init = tmp_path / "init.png"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(init)
    assert main(["still", "a cat", "--model", str(model), "--size", "64x64", "--steps", "4", "--seed", "3",
                 "--init", str(init), "--strength", "0.5", "--out", str(tmp_path / "o")]) == 0  # fmt: skip
    assert read_info(tmp_path / "o" / "00000-3.png").params["Denoising strength"] == "0.5"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sampler", "Euler b"], "Did you mean"),
        (["--size", "big"], "--size: is 'big'"),
        (["--strength", "1.5"], "--strength"),
    ],
)
def test_bad_still_options_fail_before_loading(
    tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-model"
    assert main(["still", "a cat", "--model", str(missing), *extra, "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err
    assert message in error and "no-model" not in error  # the model was never looked at
