"""dreamreel.testing: the tiny models are real, deterministic, loadable and fast."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, StableDiffusionControlNetPipeline, StableDiffusionPipeline
from diffusers.loaders.single_file_utils import infer_diffusers_model_type
from PIL import Image
from safetensors.torch import load_file

from dreamreel import testing


def _run(pipe: StableDiffusionPipeline, **kwargs: object) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        testing.TINY_PROMPT,
        height=64,
        width=64,
        num_inference_steps=2,
        generator=torch.Generator("cpu").manual_seed(0),
        output_type="np",
        **kwargs,
    )
    return out.images[0]


@pytest.fixture
def tiny_pipe(tiny_model_dir: Path) -> StableDiffusionPipeline:
    return StableDiffusionPipeline.from_pretrained(tiny_model_dir, local_files_only=True)


def test_tiny_model_folder_layout(tiny_model_dir: Path) -> None:
    assert (tiny_model_dir / "model_index.json").is_file()
    for part in ("unet", "vae", "text_encoder"):
        assert list((tiny_model_dir / part).glob("*.safetensors")), part
    for name in ("openpose", "hed"):
        assert (tiny_model_dir / f"controlnet-{name}" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(tiny_model_dir.rglob("*.bin"))
    size = sum(f.stat().st_size for f in tiny_model_dir.rglob("*") if f.is_file())
    assert size < 30_000_000


def test_tiny_model_generates_a_64px_image_deterministically(tiny_pipe: StableDiffusionPipeline) -> None:
    assert tiny_pipe.vae_scale_factor == 8
    assert tiny_pipe.safety_checker is None
    first, second = _run(tiny_pipe), _run(tiny_pipe)
    assert first.shape == (64, 64, 3)
    assert np.array_equal(first, second)
    assert first.std() > 0.01  # not a blank image


def test_saving_twice_gives_identical_weights(tmp_path: Path, tiny_model_dir: Path) -> None:
    again = testing.save_tiny_model(tmp_path / "again", controlnets=("openpose",))
    for rel in ("unet/diffusion_pytorch_model.safetensors", "controlnet-openpose/diffusion_pytorch_model.safetensors"):
        a, b = load_file(tiny_model_dir / rel), load_file(again / rel)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), rel


def test_tokenizer_is_small_and_knows_the_prompt_words(tiny_pipe: StableDiffusionPipeline) -> None:
    tokenizer = tiny_pipe.tokenizer
    assert tokenizer.model_max_length == 77
    assert len(tokenizer) == 527
    ids = tokenizer(testing.TINY_PROMPT).input_ids
    assert len(ids) == 2 + len(testing.TINY_PROMPT.split())
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert len(tokenizer("Zebra, 42!").input_ids) > 2  # any text still encodes, byte by byte
    assert tiny_pipe.text_encoder.config.vocab_size == len(tokenizer)


def test_controlnets_differ_and_change_the_image(tiny_model_dir: Path, tiny_pipe: StableDiffusionPipeline) -> None:
    openpose = ControlNetModel.from_pretrained(tiny_model_dir / "controlnet-openpose", local_files_only=True)
    hed = ControlNetModel.from_pretrained(tiny_model_dir / "controlnet-hed", local_files_only=True)
    assert not torch.equal(openpose.controlnet_mid_block.weight, hed.controlnet_mid_block.weight)
    plain = _run(tiny_pipe)
    control = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    pipe = StableDiffusionControlNetPipeline.from_pipe(tiny_pipe, controlnet=openpose)
    controlled = _run(pipe, image=Image.fromarray(control))
    assert controlled.shape == plain.shape
    assert np.abs(controlled - plain).max() > 0.01


def test_single_file_has_the_ldm_layout_and_looks_like_sd1(tiny_single_file: tuple[Path, Path]) -> None:
    file, _ = tiny_single_file
    state = load_file(file)
    prefixes = {key.split(".")[0] for key in state}
    assert prefixes == {"model", "first_stage_model", "cond_stage_model"}
    assert "model.diffusion_model.output_blocks.11.0.skip_connection.weight" in state
    assert "first_stage_model.encoder.mid.attn_1.q.weight" in state
    assert state["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4
    assert "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight" in state
    assert infer_diffusers_model_type(state) == "v1"


def test_single_file_converts_an_existing_folder(tmp_path: Path, tiny_single_file: tuple[Path, Path]) -> None:
    file, config = tiny_single_file
    again = testing.save_tiny_single_file(tmp_path / "again.safetensors", model_dir=config)
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(file.read_bytes()).digest()


def test_lora_loads_and_changes_the_image(
    tmp_path: Path, tiny_model_dir: Path, tiny_pipe: StableDiffusionPipeline
) -> None:
    before = _run(tiny_pipe)
    written = testing.save_tiny_lora(tmp_path / "style", tiny_model_dir)
    assert written == tmp_path / "style" / "pytorch_lora_weights.safetensors"
    keys = load_file(written).keys()
    assert any(k.startswith("unet.") for k in keys) and any(k.startswith("text_encoder.") for k in keys)
    tiny_pipe.load_lora_weights(tmp_path / "style", adapter_name="style")
    assert np.abs(_run(tiny_pipe) - before).max() > 0.01


def test_lora_from_a_pipeline_to_a_single_file(tmp_path: Path, tiny_pipe: StableDiffusionPipeline) -> None:
    unet_before = {k: v.clone() for k, v in tiny_pipe.unet.state_dict().items()}
    written = testing.save_tiny_lora(tmp_path / "one.safetensors", tiny_pipe, text_encoder=False)
    assert written == tmp_path / "one.safetensors"
    assert tiny_pipe.unet.state_dict().keys() == unet_before.keys()  # the pipeline got no adapter
    tiny_pipe.load_lora_weights(written, adapter_name="one")
    assert tiny_pipe.get_list_adapters() == {"unet": ["one"]}


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_embedding_loads_as_textual_inversion(tmp_path: Path, tiny_pipe: StableDiffusionPipeline, suffix: str) -> None:
    hidden = tiny_pipe.text_encoder.config.hidden_size
    file = testing.save_tiny_embedding(tmp_path / f"tiny-style{suffix}", hidden, n_vectors=2)
    tiny_pipe.load_textual_inversion(str(file), token="<tiny-style>")
    ids = tiny_pipe.tokenizer.convert_tokens_to_ids(["<tiny-style>", "<tiny-style>_1"])
    table = tiny_pipe.text_encoder.get_input_embeddings().weight
    expected = torch.randn(2, hidden, generator=torch.Generator().manual_seed(0)) * 0.5
    assert torch.equal(table[ids], expected)


def test_tiny_vae_and_taesd_helpers(tmp_path: Path) -> None:
    ldm = load_file(testing.save_tiny_vae(tmp_path / "vae.safetensors"))
    assert "encoder.down.0.block.0.conv1.weight" in ldm and "decoder.up.3.block.0.conv1.weight" in ldm
    flat = load_file(testing.save_tiny_vae(tmp_path / "vae-diffusers.safetensors", layout="diffusers"))
    assert "encoder.down_blocks.0.resnets.0.conv1.weight" in flat
    folder = testing.save_tiny_taesd(tmp_path / "taesd")
    assert '"AutoencoderTiny"' in (folder / "config.json").read_text()


def test_cli_writes_a_model_and_a_single_file(tmp_path: Path) -> None:
    assert testing.main(["tiny-model", str(tmp_path / "m"), "--controlnets", "canny"]) == 0
    assert (tmp_path / "m" / "model_index.json").is_file()
    assert (tmp_path / "m" / "controlnet-canny" / "config.json").is_file()
    assert testing.main(["tiny-single-file", str(tmp_path / "m.safetensors"), "--config-dir", str(tmp_path / "c")]) == 0
    assert (tmp_path / "m.safetensors").stat().st_size > 1_000_000
    assert (tmp_path / "c" / "model_index.json").is_file()


def test_cli_needs_a_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        testing.main([])
    assert exit_info.value.code == 2
    assert "tiny-model" in capsys.readouterr().err


def test_bad_controlnet_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ControlNet name"):
        testing.save_tiny_model(tmp_path / "x", controlnets=("../escape",))
