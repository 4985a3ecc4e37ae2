"""Composable diffusion (``AND``): A1111's ``combine_denoised`` on the UNet's predictions, tiny model end to end."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from dreamreel.errors import SettingsError
from dreamreel.generation import ControlInput, GenerationRequest
from dreamreel.pipelines.composable import ComposableGuidance, SubPrompt, installed
from dreamreel.pipelines.generator import DiffusersGenerator, GeneratorOptions

BASE = GenerationRequest(prompt="a red cat", negative_prompt="blue", width=64, height=64, steps=3, seed=11)


@pytest.fixture(scope="module")
def generator(tiny_model_dir: Path) -> DiffusersGenerator:
    options = GeneratorOptions(controlnets=(str(tiny_model_dir / "controlnet-openpose"),))
    return DiffusersGenerator.from_source(str(tiny_model_dir), options)


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


def _fake_unet(
    sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor, return_dict: bool = True
) -> Any:
    """A prediction that depends on the row's embedding: sample * mean(embedding)."""
    return (sample * encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1),)


@pytest.mark.parametrize("cfg", [True, False])
def test_combine_is_a1111_combine_denoised(cfg: bool) -> None:
    # CFGDenoiser.combine_denoised: uncond + scale * sum_i w_i * (cond_i - uncond); the pipeline adds the scale
    uncond, c1, c1b, c2 = (torch.full((1, 77, 4), v) for v in (1.0, 3.0, 5.0, 7.0))
    parts = [SubPrompt([(1, c1), (3, c1b)], 0.5), SubPrompt([(3, c2)], -0.25)]
    guidance = ComposableGuidance(parts, uncond, count=2, cfg=cfg)
    sample = torch.ones(4 if cfg else 2, 4, 2, 2)
    for step, first in ((0, 3.0), (1, 3.0), (2, 5.0)):
        guidance(None, step - 1, None, {}) if step else None
        (out,) = guidance.forward(
            _fake_unet, sample, 1, encoder_hidden_states=torch.zeros(len(sample), 77, 4), return_dict=False
        )
        combined = 1.0 + 0.5 * (first - 1.0) - 0.25 * (7.0 - 1.0)
        expected = (
            torch.cat([torch.ones(2, 4, 2, 2), torch.full((2, 4, 2, 2), combined)])
            if cfg
            else torch.full((2, 4, 2, 2), combined)
        )
        assert torch.allclose(out, expected)


def test_installed_restores_the_unet() -> None:
    unet = torch.nn.Linear(1, 1)
    guidance = ComposableGuidance([SubPrompt([(1, torch.zeros(1, 77, 4))], 1.0)], torch.zeros(1, 77, 4), 1, cfg=True)
    with installed(guidance, unet):
        assert "forward" in vars(unet)
    assert "forward" not in vars(unet)
    with installed(None, unet):
        assert "forward" not in vars(unet)


def test_plain_prompt_takes_the_pipeline_guidance(generator: DiffusersGenerator) -> None:
    assert generator._composable(BASE, BASE.prompt, 1) is None
    assert generator._composable(replace(BASE, prompt_parts=(("a", 0.5), ("b", 0.5))), "", 1) is None
    before = generator.generate(BASE)
    generator.generate(replace(BASE, prompt="a red cat AND a dog"))
    assert np.array_equal(generator.generate(BASE), before)  # nothing left behind on the UNet
    assert "forward" not in vars(generator._txt2img.unet)


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"cfg_scale": 1.0},
        {"steps": 4, "prompt": "a [red:blue:2] cat"},
        {"controls": (ControlInput(0, np.full((64, 64, 3), 255, np.uint8), 1.0),)},
    ],
)
def test_x_and_x_at_half_weights_equals_x(generator: DiffusersGenerator, change: dict[str, Any]) -> None:
    request = replace(BASE, **change)
    plain = generator.generate_batch(request, 2)
    doubled = generator.generate_batch(replace(request, prompt=f"{request.prompt} :0.5 AND {request.prompt}:0.5"), 2)
    assert all(_close(a, b) for a, b in zip(plain, doubled, strict=True))


def test_x_and_x_img2img(generator: DiffusersGenerator) -> None:
    init = generator.generate(BASE)
    request = replace(BASE, init_image=init, strength=0.6, steps=5)
    assert _close(
        generator.generate(request), generator.generate(replace(request, prompt="a red cat:.5 AND a red cat:.5"))
    )


def test_and_weights_change_the_image(generator: DiffusersGenerator) -> None:
    red = generator.generate(BASE)
    both = generator.generate(replace(BASE, prompt="a red cat AND the blue dog"))
    light = generator.generate(replace(BASE, prompt="a red cat AND the blue dog:0.2"))
    scaled = generator.generate(replace(BASE, prompt="a red cat:2"))
    assert not np.array_equal(both, red) and not np.array_equal(light, both) and not np.array_equal(scaled, red)


def test_each_part_has_its_own_schedule(generator: DiffusersGenerator) -> None:
    request = replace(BASE, steps=4)
    edited = generator.generate(replace(request, prompt="a red cat AND [a dog:a fox:2]"))
    dog = generator.generate(replace(request, prompt="a red cat AND a dog"))
    fox = generator.generate(replace(request, prompt="a red cat AND a fox"))
    assert not np.array_equal(edited, dog) and not np.array_equal(edited, fox)


def test_and_with_blending(generator: DiffusersGenerator) -> None:
    text = "a red cat AND the blue dog:0.5"
    plain = generator.generate(replace(BASE, prompt=text))
    blended = generator.generate(replace(BASE, prompt_parts=((text, 0.25), (text, 0.75))))
    assert _close(plain, blended)
    with pytest.raises(SettingsError, match="AND"):
        generator.generate(replace(BASE, prompt_parts=(("a AND b", 0.5), ("c", 0.5))))


def test_and_in_the_hires_pass(generator: DiffusersGenerator) -> None:
    request = replace(BASE, prompt="a red cat :0.5 AND a red cat :0.5")
    latents = generator.generate_latents(request, 1)
    second = replace(request, strength=0.5, steps=2)
    images = generator.generate_hires_pass(second, latents)
    plain = generator.generate_hires_pass(replace(second, prompt="a red cat"), generator.generate_latents(BASE, 1))
    assert _close(images[0].cpu().numpy(), plain[0].cpu().numpy())


def test_hires_pass_prompt_editing_counts_on_from_the_first_pass(generator: DiffusersGenerator) -> None:
    # A1111 >= 1.6 (hires_steps given): "." -> (v - 1.0) * hires_steps, so 0.5 is past: "b" throughout
    latents = generator.generate_latents(BASE, 1)
    second = replace(BASE, prompt="[a red cat:the blue dog:0.5]", strength=0.5, steps=2)
    (shifted,) = generator.generate_hires_pass(second, latents, first_pass_steps=3)
    (dog,) = generator.generate_hires_pass(replace(second, prompt="the blue dog"), latents)
    (own,) = generator.generate_hires_pass(second, latents)
    assert torch.equal(shifted, dog) and not torch.equal(own, dog)
