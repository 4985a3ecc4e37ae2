"""SDXL: A1111's conditioning on both text encoders, and generation with the tiny SDXL model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from dreamreel.cli import main
from dreamreel.generation import GenerationRequest
from dreamreel.pipelines.generator import DiffusersGenerator
from dreamreel.pipelines.loading import load_pipeline
from dreamreel.pipelines.sdxl import SdxlConditioner, encode_sdxl_prompt, size_conditioning
from dreamreel.testing import TINY_PROMPT, save_tiny_sdxl_model, save_tiny_sdxl_single_file

BASE = GenerationRequest(prompt=TINY_PROMPT, negative_prompt="blue", width=64, height=64, steps=3, seed=11)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_sdxl_model(tmp_path_factory.mktemp("sdxl") / "tiny-xl")


@pytest.fixture(scope="module")
def generator(model: Path) -> DiffusersGenerator:
    return DiffusersGenerator.from_source(str(model))


@pytest.fixture(scope="module")
def pipe(generator: DiffusersGenerator) -> Any:
    return generator._txt2img


def test_plain_prompt_equals_diffusers_encode_prompt(pipe: Any) -> None:
    embeds, pooled = encode_sdxl_prompt(TINY_PROMPT, pipe)
    assert embeds.shape == (1, 77, 80) and pooled.shape == (1, 32)
    expected, _, expected_pooled, _ = pipe.encode_prompt(TINY_PROMPT, device="cpu", do_classifier_free_guidance=False)
    assert torch.equal(embeds, expected) and torch.equal(pooled, expected_pooled)


def test_weights_change_both_encoders_but_not_the_pooled_embedding(pipe: Any) -> None:
    plain, pooled = encode_sdxl_prompt(TINY_PROMPT, pipe)
    weighted, weighted_pooled = encode_sdxl_prompt("a (red:1.5) cat and the blue dog", pipe)
    assert not torch.equal(plain[..., :32], weighted[..., :32])  # CLIP-L half
    assert not torch.equal(plain[..., 32:], weighted[..., 32:])  # G half
    assert torch.equal(pooled, weighted_pooled)  # A1111: the pooled output is not weighted


def test_long_prompts_and_break_make_chunks_on_both_encoders_pooled_from_the_first(pipe: Any) -> None:
    long, pooled = encode_sdxl_prompt(" ".join(["red cat"] * 40), pipe)
    assert long.shape == (1, 154, 80)
    first, first_pooled = encode_sdxl_prompt(" ".join(["red cat"] * 37 + ["red"]), pipe)  # the first 75 tokens
    close = {"atol": 1e-5, "rtol": 1e-5}  # a batch of 2 chunks rounds a little differently from 1
    assert torch.allclose(long[:, :77], first, **close) and torch.allclose(pooled, first_pooled, **close)
    broken, broken_pooled = encode_sdxl_prompt("red cat BREAK blue dog", pipe)
    assert broken.shape == (1, 154, 80)
    assert torch.allclose(broken_pooled, encode_sdxl_prompt("red cat", pipe)[1], **close)
    assert torch.allclose(broken[:, 77:], encode_sdxl_prompt("blue dog", pipe)[0], **close)


def test_empty_negative_is_zeros_and_pairs_are_padded(pipe: Any) -> None:
    conditioner = SdxlConditioner(pipe)
    cond, uncond = conditioner.pair(" ".join(["red cat"] * 40), "")
    assert cond.shape == uncond.shape == (1, 154, 80)
    assert not uncond[:, :77].any() and torch.equal(uncond[:, 77:], conditioner.text("")[0])
    kwargs = conditioner.call_kwargs(TINY_PROMPT, "", height=64, width=96, count=2)
    assert kwargs["pooled_prompt_embeds"].shape == (2, 32) and not kwargs["negative_pooled_prompt_embeds"].any()
    assert kwargs["original_size"] == kwargs["target_size"] == (64, 96) and kwargs["crops_coords_top_left"] == (0, 0)
    assert size_conditioning(64, 96)["original_size"] == (64, 96)


def test_txt2img_and_img2img_are_deterministic(generator: DiffusersGenerator) -> None:
    image = generator.generate(BASE)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert np.array_equal(generator.generate(BASE), image)
    assert not np.array_equal(generator.generate(replace(BASE, seed=12)), image)
    assert not np.array_equal(generator.generate(replace(BASE, prompt="a (red:1.4) cat")), image)
    request = replace(BASE, steps=4, strength=0.5, init_image=image)
    again = generator.generate(request)
    assert np.array_equal(generator.generate(request), again)
    assert not np.array_equal(generator.generate(replace(request, seed=12)), again)
    edited = generator.generate(replace(BASE, prompt="a [red:blue:2] cat", negative_prompt=""))  # prompt editing
    assert edited.shape == (64, 64, 3)


def test_still_cli_with_the_tiny_sdxl_model(model: Path, tmp_path: Path) -> None:
    args = ["still", TINY_PROMPT, "--model", str(model), "--size", "64x64", "--steps", "2", "--seed", "5"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    (first,) = sorted((tmp_path / "a").glob("*.png"))
    (second,) = sorted((tmp_path / "b").glob("*.png"))
    assert first.read_bytes() == second.read_bytes()


def test_single_file_loads_the_same_model_and_generates_the_same_images(
    generator: DiffusersGenerator, tmp_path: Path
) -> None:
    """The SGM/A1111 layout (conditioner.embedders.0.transformer / 1.model, label_emb) loads offline, bit-exact."""
    from safetensors import safe_open

    path = save_tiny_sdxl_single_file(tmp_path / "tiny-xl.safetensors", config_dir=tmp_path / "config")
    with safe_open(str(path), "pt") as file:
        keys = set(file.keys())
    assert "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight" in keys
    assert "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight" in keys
    assert "model.diffusion_model.label_emb.0.0.weight" in keys
    single = DiffusersGenerator(load_pipeline(path, config=tmp_path / "config"))
    assert np.array_equal(single.generate(BASE), generator.generate(BASE))
    blend = replace(BASE, prompt_parts=((TINY_PROMPT, 0.5), ("red", 0.5)))
    blended = single.generate(blend)
    assert np.abs(blended.astype(int) - generator.generate(blend)).max() <= 1  # rounding of the sums
    assert not np.array_equal(blended, generator.generate(BASE))


def test_sdxl_embeddings_load_into_both_encoders(model: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from dreamreel.errors import ModelLoadError
    from dreamreel.pipelines.generator import GeneratorOptions
    from dreamreel.testing import save_tiny_embedding

    vectors = torch.Generator().manual_seed(3)
    path = tmp_path / "xlemb.safetensors"
    save_file({"clip_l": torch.randn(2, 32, generator=vectors), "clip_g": torch.randn(2, 48, generator=vectors)}, path)
    generator = DiffusersGenerator.from_source(str(model), GeneratorOptions(embeddings=(path,)))
    with_embedding = generator.generate(replace(BASE, prompt="a xlemb cat"))
    assert generator._txt2img.tokenizer_2.convert_tokens_to_ids("xlemb_1") > 0  # two vectors, on the G side too
    assert not np.array_equal(with_embedding, generator.generate(replace(BASE, prompt="a cat")))
    sd1 = save_tiny_embedding(tmp_path / "sd1emb.safetensors", 32)
    generator.add_embedding(str(sd1))
    with pytest.raises(ModelLoadError, match="not an SDXL embedding"):
        generator.generate(replace(BASE, prompt="a sd1emb cat"))


def test_sdxl_lora_changes_the_output_and_unloads(model: Path, tmp_path: Path) -> None:
    from dreamreel.testing import save_tiny_lora

    generator = DiffusersGenerator.from_source(str(model))
    plain = generator.generate(BASE)
    lora = save_tiny_lora(tmp_path / "xl-style.safetensors", generator._txt2img, seed=3)  # UNet + CLIP-L
    styled = generator.generate(replace(BASE, prompt=f"{TINY_PROMPT} <lora:{lora}:1.0>"))
    assert not np.array_equal(styled, plain)
    assert np.array_equal(generator.generate(BASE), plain)


def test_hires_fix_passes_run_on_sdxl(generator: DiffusersGenerator) -> None:
    latents = generator.generate_latents(BASE, 1)
    assert tuple(latents.shape) == (1, 4, 8, 8)
    (image,) = generator.generate_hires_pass(replace(BASE, strength=0.5), latents)
    assert tuple(image.shape) == (64, 64, 3)
