"""A1111 sampler names → diffusers schedulers; every sampler runs a tiny img2img call."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    PNDMScheduler,
    StableDiffusionImg2ImgPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from dreamreel.errors import MissingDependencyError, SettingsError
from dreamreel.pipelines.samplers import SAMPLERS, UNSUPPORTED_SAMPLERS, check_sampler, make_scheduler

# The scheduler config shipped with Stable Diffusion 1.5 (runwayml/stable-diffusion-v1-5).
SD15_SCHEDULER = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> StableDiffusionImg2ImgPipeline:
    directory = tmp_path_factory.mktemp("tok")
    vocab = ["<unk>", "c", "a", "t", "t</w>", "ca", "cat</w>", "<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(
        "{" + ", ".join(f'"{t}": {i}' for i, t in enumerate(vocab)) + "}", encoding="utf-8"
    )
    (directory / "merges.txt").write_text("#version: 0.2\nc a\nca t</w>\n", encoding="utf-8")
    tok = CLIPTokenizer(
        str(directory / "vocab.json"), str(directory / "merges.txt"), pad_token="<|endoftext|>", model_max_length=77
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            hidden_size=16,
            intermediate_size=16,
            num_attention_heads=2,
            num_hidden_layers=1,
            vocab_size=len(tok),
            max_position_embeddings=77,
        )
    )
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=16,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=1,
    )
    vae = AutoencoderKL(
        block_out_channels=[4, 8],
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        norm_num_groups=2,
    )
    pipe = StableDiffusionImg2ImgPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        unet=unet,
        scheduler=PNDMScheduler.from_config(SD15_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


INIT = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def run(pipe: StableDiffusionImg2ImgPipeline, seed: int = 0) -> np.ndarray:
    from PIL import Image

    out = pipe(
        "cat",
        image=Image.fromarray(INIT),
        strength=0.75,
        num_inference_steps=4,
        guidance_scale=5.0,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="np",
    )
    return out.images[0]


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_builds_and_runs_img2img(pipe: StableDiffusionImg2ImgPipeline, name: str) -> None:
    spec = SAMPLERS[name]
    scheduler = make_scheduler(name, SD15_SCHEDULER)
    assert type(scheduler).__name__ == spec.scheduler
    for key, value in spec.options.items():
        assert scheduler.config[key] == value, key
    # the model's noise schedule is kept
    assert scheduler.config.beta_schedule == "scaled_linear"
    assert scheduler.config.beta_start == pytest.approx(0.00085)
    pipe.scheduler = scheduler
    image = run(pipe)
    assert image.shape == (32, 32, 3)
    assert np.isfinite(image).all()
    assert 0.0 <= image.min() <= image.max() <= 1.0


def test_same_seed_same_image_for_a_stochastic_sampler(pipe: StableDiffusionImg2ImgPipeline) -> None:
    pipe.scheduler = make_scheduler("DPM++ SDE Karras", SD15_SCHEDULER)
    first, again, other = run(pipe, seed=3), run(pipe, seed=3), run(pipe, seed=4)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-4


def test_karras_changes_sigmas_and_switching_back_drops_it() -> None:
    karras = make_scheduler("DPM++ 2M Karras", SD15_SCHEDULER)
    karras.set_timesteps(10)
    plain = make_scheduler("DPM++ 2M", karras.config)  # built from the Karras scheduler's config
    assert plain.config.use_karras_sigmas is False
    plain.set_timesteps(10)
    assert not torch.allclose(karras.sigmas, plain.sigmas)
    assert make_scheduler("DPM++ 2M SDE", karras.config).config.algorithm_type == "sde-dpmsolver++"
    assert make_scheduler("DPM++ 2M", make_scheduler("DPM++ 3M SDE", {}).config).config.solver_order == 2


def test_model_settings_survive_a_switch() -> None:
    config = {**SD15_SCHEDULER, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}
    scheduler = make_scheduler("Euler a", make_scheduler("UniPC", config).config)
    assert scheduler.config.prediction_type == "v_prediction"
    assert scheduler.config.timestep_spacing == "trailing"
    assert scheduler.config.steps_offset == 1


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("Euler a", "Euler a"),
        ("euler_a", "Euler a"),
        ("k_euler_ancestral", "Euler a"),
        ("EULER A", "Euler a"),
        ("dpm2_ancestral", "DPM2 a"),
        ("k_dpm_2_a", "DPM2 a"),
        ("dpm++ 2m karras", "DPM++ 2M Karras"),
        ("dpmpp_2m_karras", "DPM++ 2M Karras"),
        ("  DPM++ 2M  SDE Karras ", "DPM++ 2M SDE Karras"),
        ("klms", "LMS"),
        ("k_lms", "LMS"),
        ("plms", "PLMS"),
        ("uni_pc", "UniPC"),
        ("dpmpp_sde", "DPM++ SDE"),
        ("dpm++ 2m sde exponential", "DPM++ 2M SDE Exponential"),
        ("lcm", "LCM"),
    ],
)
def test_names_are_case_insensitive_with_deforum_spellings(written: str, canonical: str) -> None:
    assert check_sampler(written) == canonical


def test_unknown_sampler_suggests_the_closest_names() -> None:
    with pytest.raises(SettingsError) as info:
        check_sampler("DPM++ 2M Karas")
    message = str(info.value)
    assert message.startswith("sampler: unknown sampler 'DPM++ 2M Karas'")
    assert "Did you mean" in message and "'DPM++ 2M Karras'" in message
    assert "Euler a" in message  # the list of supported samplers


def test_unknown_sampler_without_close_match() -> None:
    with pytest.raises(SettingsError, match="unknown sampler 'banana'") as info:
        check_sampler("banana", key="sampler_schedule")
    assert "Did you mean" not in str(info.value)
    assert info.value.key == "sampler_schedule"


@pytest.mark.parametrize("name", [*UNSUPPORTED_SAMPLERS, "dpm_fast", "k_dpm_ad", "dpmpp_2s_a"])
def test_samplers_without_equivalent_explain_why(name: str) -> None:
    with pytest.raises(SettingsError, match="is not available: diffusers has no"):
        check_sampler(name)


def test_make_scheduler_rejects_unknown_before_building() -> None:
    with pytest.raises(SettingsError, match="Did you mean 'Heun'"):
        make_scheduler("Huen", SD15_SCHEDULER)


def test_missing_dependency_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def fake(name: str, *args: object) -> object:
        return None if name == "scipy" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    with pytest.raises(MissingDependencyError, match=r"'scipy'.*pip install scipy"):
        check_sampler("LMS Karras")
    assert check_sampler("Euler") == "Euler"


def test_importing_the_table_needs_neither_torch_nor_diffusers() -> None:
    code = (
        "import sys, dreamreel.pipelines.samplers as s, dreamreel.pipelines.prompt_syntax\n"
        "s.check_sampler('DPM++ 2M Karras')\n"
        "print(sorted({'torch', 'diffusers', 'transformers'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"
