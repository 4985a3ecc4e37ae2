"""The diffusers generator: deterministic, A1111 semantics end to end, LoRA/embeddings load and unload."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dreamreel.errors import ModelLoadError, SettingsError
from dreamreel.generation import ControlInput, GenerationRequest
from dreamreel.pipelines.generator import DiffusersGenerator, GeneratorOptions
from dreamreel.testing import TINY_PROMPT, save_tiny_embedding, save_tiny_lora

BASE = GenerationRequest(prompt=TINY_PROMPT, negative_prompt="blue", width=64, height=64, steps=3, seed=11)


@pytest.fixture(scope="module")
def generator(tiny_model_dir: Path) -> DiffusersGenerator:
    options = GeneratorOptions(controlnets=(str(tiny_model_dir / "controlnet-openpose"),))
    return DiffusersGenerator.from_source(str(tiny_model_dir), options)


@pytest.fixture(scope="module")
def reference(generator: DiffusersGenerator) -> np.ndarray:
    return generator.generate(BASE)


def test_same_inputs_same_bits_and_seeds_matter(generator: DiffusersGenerator, reference: np.ndarray) -> None:
    assert reference.shape == (64, 64, 3) and reference.dtype == np.uint8
    assert np.array_equal(generator.generate(BASE), reference)
    assert not np.array_equal(generator.generate(replace(BASE, seed=12)), reference)


def test_generate_tensor_gives_the_images_of_generate(generator: DiffusersGenerator, reference: np.ndarray) -> None:
    """The device path of the frame loop (tensors in and out, no PIL, no host copy) samples the same images."""
    import torch

    txt2img = generator.generate_tensor(BASE, None)
    assert txt2img.dtype == torch.uint8 and tuple(txt2img.shape) == (64, 64, 3)
    assert np.array_equal(txt2img.numpy(), reference)
    init = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    request = replace(BASE, steps=4, strength=0.5)
    on_device = generator.generate_tensor(request, torch.from_numpy(init)).numpy()
    assert np.array_equal(on_device, generator.generate(replace(request, init_image=init)))
    assert not np.array_equal(on_device, reference)
    assert str(generator.device) == "cpu"


def test_img2img_runs_steps_times_strength(generator: DiffusersGenerator) -> None:
    calls: list[int] = []
    unet = generator._txt2img.unet
    handle = unet.register_forward_hook(lambda *_: calls.append(1))
    try:
        init = np.full((64, 64, 3), 128, np.uint8)
        generator.generate(replace(BASE, steps=10, init_image=init, strength=0.5))
        assert len(calls) == 5  # A1111: an img2img call runs int(steps * denoising strength) steps
        calls.clear()
        generator.generate(replace(BASE, steps=10))
        assert len(calls) == 10
    finally:
        handle.remove()


def test_samplers_switch_and_switch_back(generator: DiffusersGenerator, reference: np.ndarray) -> None:
    others = {name: generator.generate(replace(BASE, sampler=name)) for name in ("DPM++ 2M Karras", "DDIM", "UniPC")}
    for name, image in others.items():
        assert not np.array_equal(image, reference), name
    assert np.array_equal(generator.generate(BASE), reference)


def test_unknown_sampler_fails_with_suggestions(generator: DiffusersGenerator) -> None:
    with pytest.raises(SettingsError, match="Did you mean"):
        generator.generate(replace(BASE, sampler="Euler b"))


def test_noise_multiplier_changes_img2img_only_when_not_one(generator: DiffusersGenerator) -> None:
    init = np.full((64, 64, 3), 90, np.uint8)
    plain = generator.generate(replace(BASE, init_image=init, strength=0.5))
    assert np.array_equal(generator.generate(replace(BASE, init_image=init, strength=0.5, noise_multiplier=1.0)), plain)
    assert not np.array_equal(
        generator.generate(replace(BASE, init_image=init, strength=0.5, noise_multiplier=1.3)), plain
    )
    # the wrapper is gone afterwards
    assert np.array_equal(generator.generate(replace(BASE, init_image=init, strength=0.5)), plain)


def test_prompt_weights_and_editing_change_the_image(generator: DiffusersGenerator, reference: np.ndarray) -> None:
    weighted = generator.generate(replace(BASE, prompt="a (red:1.6) cat and the blue dog"))
    edited = generator.generate(replace(BASE, prompt="a [red:blue:0.5] cat and the blue dog"))
    blue = generator.generate(replace(BASE, prompt="a blue cat and the blue dog"))
    assert not np.array_equal(weighted, reference)
    assert not np.array_equal(edited, reference) and not np.array_equal(edited, blue)


def test_prompt_blend_endpoints_equal_plain_prompts(generator: DiffusersGenerator) -> None:
    red = generator.generate(replace(BASE, prompt="a red cat"))
    only_red = generator.generate(replace(BASE, prompt_parts=(("a red cat", 1.0),)))
    half = generator.generate(replace(BASE, prompt_parts=(("a red cat", 0.5), ("the blue dog", 0.5))))
    assert np.abs(only_red.astype(int) - red.astype(int)).max() <= 1
    assert not np.array_equal(half, red)


def test_lora_changes_output_and_unloads(generator: DiffusersGenerator, reference: np.ndarray, tmp_path: Path) -> None:
    lora = save_tiny_lora(tmp_path / "style", generator._txt2img, seed=3)
    file = next(lora.glob("*.safetensors")) if lora.is_dir() else lora
    styled = generator.generate(replace(BASE, prompt=f"{TINY_PROMPT} <lora:{file}:1.0>"))
    assert not np.array_equal(styled, reference)
    half = generator.generate(replace(BASE, prompt=f"{TINY_PROMPT} <lora:{file}:0.3>"))
    assert not np.array_equal(half, styled)
    assert np.array_equal(generator.generate(BASE), reference)


def test_missing_lora_is_a_clear_error(generator: DiffusersGenerator) -> None:
    with pytest.raises(ModelLoadError, match="nonexistent"):
        generator.generate(replace(BASE, prompt=f"{TINY_PROMPT} <lora:nonexistent:1>"))


def test_embedding_used_by_name(tiny_model_dir: Path, tmp_path: Path) -> None:
    hidden = 32
    file = save_tiny_embedding(tmp_path / "embeddings" / "shiny.safetensors", hidden, seed=5)
    gen = DiffusersGenerator.from_source(str(tiny_model_dir), GeneratorOptions(embeddings=(file,)))
    plain = gen.generate(BASE)
    with_embedding = gen.generate(replace(BASE, prompt=f"{TINY_PROMPT} shiny"))
    assert not np.array_equal(with_embedding, plain)
    assert np.array_equal(gen.generate(BASE), plain)


def test_controlnet_conditioning_reaches_the_pipeline(generator: DiffusersGenerator, reference: np.ndarray) -> None:
    bright = np.full((64, 64, 3), 255, np.uint8)
    dark = np.zeros((64, 64, 3), np.uint8)
    a = generator.generate(replace(BASE, controls=(ControlInput(0, bright, 1.0),)))
    b = generator.generate(replace(BASE, controls=(ControlInput(0, dark, 1.0),)))
    zero = generator.generate(replace(BASE, controls=(ControlInput(0, bright, 0.0),)))
    assert not np.array_equal(a, b)
    assert np.abs(zero.astype(int) - reference.astype(int)).max() <= 1


def test_batch_matches_single_calls(generator: DiffusersGenerator, reference: np.ndarray) -> None:
    first, second = generator.generate_batch(BASE, 2)
    assert np.abs(first.astype(int) - reference.astype(int)).max() <= 1
    single = generator.generate(replace(BASE, seed=BASE.seed + 1))
    assert np.abs(second.astype(int) - single.astype(int)).max() <= 1


def test_a_step_schedule_does_not_re_encode_the_same_prompt(generator: DiffusersGenerator) -> None:
    calls: list[int] = []
    handle = generator._txt2img.text_encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        prompt = f"{TINY_PROMPT} unique-{len(generator._encoded)}"  # not cached by an earlier test
        for steps in (2, 3, 4, 5):
            generator.generate(replace(BASE, prompt=prompt, steps=steps))
        first = len(calls)
        assert first > 0
        for steps in (6, 7, 2):
            generator.generate(replace(BASE, prompt=prompt, steps=steps))
        assert len(calls) == first  # the encoding depends on the text, not on the step count
        # prompt editing still switches at the step it names, for every step count
        edited = f"[{prompt}:a cat:2]"
        generator.generate(replace(BASE, prompt=edited, steps=4))
        assert len(calls) > first
    finally:
        handle.remove()


@pytest.mark.parametrize("deforum_strength", [0.8, 0.9, 0.95])
def test_few_steps_at_a_high_deforum_strength_still_run_one_step(
    generator: DiffusersGenerator, deforum_strength: float
) -> None:
    from dreamreel.pipelines.generator import _steps_for

    denoise = 1.0 - deforum_strength  # 1 - 0.8 = 0.19999999999999996, as the schedule table computes it
    request = replace(BASE, steps=2, init_image=np.full((64, 64, 3), 128, np.uint8), strength=denoise)
    assert int(_steps_for(request, set()) * denoise) == 1
    assert generator.generate(request).shape == (64, 64, 3)


def test_latents_decode_to_the_txt2img_image(generator: DiffusersGenerator, reference: np.ndarray) -> None:
    """The hires fix's first pass with a latent upscaler: the same sampler call, stopped before the decode."""
    import torch

    latents = generator.generate_latents(BASE, 2)
    assert tuple(latents.shape) == (2, 4, 8, 8)
    first, _ = generator.decode_latents(latents)
    assert np.abs(first.numpy().astype(int) - reference.astype(int)).max() <= 1  # batched: within 1
    single = generator.decode_latents(generator.generate_latents(BASE, 1))[0]
    assert single.dtype == torch.uint8 and np.array_equal(single.numpy(), reference)


@pytest.mark.parametrize(("steps", "strength", "schedule"), [(4, 0.3, 13), (3, 0.7, 4), (2, 1.0, 2), (5, 0.5, 10)])
def test_hires_pass_runs_exactly_its_steps_of_a_longer_schedule(
    generator: DiffusersGenerator, steps: int, strength: float, schedule: int
) -> None:
    """A1111's hires pass: ``steps`` sampler steps of a schedule of ``int(steps / min(strength, 0.999))``."""
    import torch

    calls: list[int] = []
    handle = generator._txt2img.unet.register_forward_hook(lambda *_: calls.append(1))
    try:
        latents = torch.nn.functional.interpolate(generator.generate_latents(BASE, 1), scale_factor=2.0)
        calls.clear()
        request = replace(BASE, width=128, height=128, steps=steps, strength=strength)
        (image,) = generator.generate_hires_pass(request, latents)
        assert len(calls) == steps
        assert len(generator._img2img.scheduler.timesteps) == schedule
        assert tuple(image.shape) == (128, 128, 3) and image.dtype == torch.uint8
        calls.clear()
        images = torch.from_numpy(np.stack([np.full((128, 128, 3), 90, np.uint8)] * 2))
        assert len(generator.generate_hires_pass(request, images)) == 2  # uint8 images are VAE-encoded
        assert len(calls) == steps
    finally:
        handle.remove()
