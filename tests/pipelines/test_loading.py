"""Model resolution and loading: diffusers folders, single files, hub cache, A1111 models dir, safety, hashes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderTiny,
    MultiControlNetModel,
    StableDiffusionControlNetPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLControlNetPipeline,
)
from safetensors.torch import load_file, save_file

from dreamreel import testing
from dreamreel.errors import ModelLoadError
from dreamreel.pipelines import configs, finding, hashes, loading, safety


def _image(pipe: StableDiffusionPipeline) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator("cpu").manual_seed(0)
    out = pipe(testing.TINY_PROMPT, height=64, width=64, num_inference_steps=2, generator=generator, output_type="np")
    return out.images[0]


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, different[:5]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory, tiny_single_file: tuple[Path, Path]) -> Path:
    """An AUTOMATIC1111-like install with a few tiny models."""
    root = tmp_path_factory.mktemp("webui")
    file, config = tiny_single_file
    checkpoints = root / "models" / "Stable-diffusion"
    (checkpoints / "sub").mkdir(parents=True)
    shutil.copy(file, checkpoints / "sub" / "MyModel.safetensors")
    shutil.copy(file, checkpoints / "Other-Model.safetensors")
    for folder in ("a", "b"):
        (checkpoints / folder).mkdir(exist_ok=True)
        shutil.copy(file, checkpoints / folder / "dup.safetensors")
    testing.save_tiny_lora(root / "models" / "Lora" / "styles" / "inkwash.safetensors", config)
    testing.save_tiny_embedding(root / "embeddings" / "bad-hands.safetensors", 32)
    testing.save_tiny_vae(root / "models" / "VAE" / "alt-vae.safetensors", sd1_layout=True)
    testing.save_tiny_taesd(root / "models" / "VAE" / "taesd")
    shutil.copytree(config, root / "models" / "Stable-diffusion" / "tiny-diffusers")
    return root


# --- diffusers folders and single files ---------------------------------------------------------


def test_diffusers_folder_resolves_and_generates(tiny_model_dir: Path) -> None:
    source = loading.resolve_model(str(tiny_model_dir))
    assert (source.kind, source.family, source.path) == ("diffusers", "sd1", tiny_model_dir)
    pipe = loading.load_pipeline(source)
    assert type(pipe) is StableDiffusionPipeline
    assert pipe.safety_checker is None and pipe.feature_extractor is None
    assert _image(pipe).shape == (64, 64, 3)


def test_single_file_loads_the_weights_it_was_made_from(tiny_single_file: tuple[Path, Path]) -> None:
    file, config = tiny_single_file
    source = loading.resolve_model(str(file))
    assert (source.kind, source.family) == ("single_file", "sd1")
    pipe = loading.load_pipeline(source, config=config)
    reference = StableDiffusionPipeline.from_pretrained(config, local_files_only=True)
    for part in ("unet", "vae", "text_encoder"):
        _assert_same_weights(getattr(pipe, part), getattr(reference, part))
    assert np.array_equal(_image(pipe), _image(reference))


def test_ckpt_pickle_of_plain_tensors_loads(tmp_path: Path, tiny_single_file: tuple[Path, Path]) -> None:
    file, config = tiny_single_file
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": load_file(file), "global_step": 7}, ckpt)
    source = loading.resolve_model(str(ckpt))
    assert (source.kind, source.family) == ("single_file", None)  # a pickle is only read when loading
    pipe = loading.load_pipeline(source, config=config)
    reference = StableDiffusionPipeline.from_pretrained(config, local_files_only=True)
    _assert_same_weights(pipe.unet, reference.unet)


def test_tiny_single_file_with_the_bundled_config_explains_the_mismatch(tiny_single_file: tuple[Path, Path]) -> None:
    file, _ = tiny_single_file
    with pytest.raises(ModelLoadError, match=r"could not load the checkpoint .*tiny-sd1\.safetensors.*config"):
        loading.load_pipeline(str(file))


# --- bundled configs and the real CLIP tokenizer -------------------------------------------------


def test_real_clip_tokenizer_from_open_clip_vocabulary(dreamreel_cache: Path) -> None:
    import open_clip

    tokenizer = configs.clip_tokenizer(configs.skeleton_dir("sd1") / "tokenizer")
    assert len(tokenizer) == 49408
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    text = "A (masterpiece:1.2), photo of an astronaut riding a horse on Mars, 8k, <lora:x:0.5>"
    assert tokenizer(text).input_ids[1:-1] == open_clip.tokenizer.SimpleTokenizer().encode(text)
    assert tokenizer.model_max_length == 77
    assert (dreamreel_cache / "clip-bpe-49408" / "merges.txt").is_file()
    sd2 = configs.clip_tokenizer(configs.skeleton_dir("sd2") / "tokenizer")
    assert sd2.pad_token == "!" and sd2.pad_token_id == 0


def test_skeleton_components_for_sdxl_and_sd2(tmp_path: Path) -> None:
    xl = configs.skeleton_components("sdxl", tmp_path / "xl.safetensors")
    assert (xl["tokenizer"].pad_token, xl["tokenizer_2"].pad_token) == ("<|endoftext|>", "!")
    assert len(xl["tokenizer_2"]) == 49408
    checkpoint = tmp_path / "sd2-base.safetensors"
    assert "scheduler" not in configs.skeleton_components("sd2", checkpoint)  # no yaml: 768-v
    checkpoint.with_suffix(".yaml").write_text("model:\n  params:\n    linear_start: 0.00085\n")
    parts = configs.skeleton_components("sd2", checkpoint)
    assert parts["scheduler"].config.prediction_type == "epsilon"
    checkpoint.with_suffix(".yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    assert configs.sd2_prediction_type(checkpoint) == "v_prediction"


def _params(cls: type, config: dict) -> int:
    with torch.device("meta"):
        model = cls(**config) if not hasattr(cls, "config_class") else cls(cls.config_class(**config))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        ("sd1", {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}),
        ("sd2", {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840}),
        (
            "sdxl",
            {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840},
        ),
    ],
)
def test_bundled_skeletons_describe_the_real_architectures(family: str, expected: dict[str, int]) -> None:
    import diffusers
    import transformers

    skeleton = configs.skeleton_dir(family)  # type: ignore[arg-type]
    index = json.loads((skeleton / "model_index.json").read_text())
    for part, count in expected.items():
        config = json.loads((skeleton / part / "config.json").read_text())
        library, name = index[part]
        cls = getattr(diffusers if library == "diffusers" else transformers, name)
        if library == "diffusers":
            config = {k: v for k, v in config.items() if not k.startswith("_")}
        assert _params(cls, config) == count, part
    assert sum(f.stat().st_size for f in skeleton.rglob("*") if f.is_file()) < 8000
    assert not list(skeleton.rglob("vocab.json"))


def _shapes(*keys: str, unet_in: int = 4) -> dict[str, tuple[int, ...]]:
    shapes = {key: (1,) for key in keys}
    shapes["model.diffusion_model.input_blocks.0.0.weight"] = (320, unet_in, 3, 3)
    return shapes


@pytest.mark.parametrize(
    ("shapes", "family"),
    [
        (_shapes("cond_stage_model.transformer.text_model.final_layer_norm.weight"), "sd1"),
        (_shapes("cond_stage_model.model.ln_final.weight"), "sd2"),
        (_shapes("conditioner.embedders.0.transformer.x", "conditioner.embedders.1.model.ln_final.weight"), "sdxl"),
    ],
)
def test_detect_family(shapes: dict[str, tuple[int, ...]], family: str) -> None:
    assert configs.detect_family(shapes, source="x") == family


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        ({"lora_unet_down_blocks_0.lora_down.weight": (4, 320)}, "looks like a LoRA"),
        ({"encoder.down.0.block.0.conv1.weight": (1,)}, "looks like a VAE"),
        ({"control_model.input_hint_block.0.weight": (1,)}, "looks like a ControlNet"),
        ({"emb_params": (2, 768)}, "textual-inversion embedding"),
        ({"something.else": (1,)}, "no Stable Diffusion UNet"),
        (_shapes("cond_stage_model.transformer.x", unet_in=9), "9 input channels"),
        (_shapes("conditioner.embedders.0.model.ln_final.weight"), "SDXL refiner"),
        (_shapes("weird.text_encoder"), "no known text encoder"),
    ],
)
def test_detect_family_explains_what_else_a_file_is(shapes: dict[str, tuple[int, ...]], message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        configs.detect_family(shapes, source="file.safetensors")


def test_pipeline_classes() -> None:
    assert loading.pipeline_class("sd2") is StableDiffusionPipeline
    assert loading.pipeline_class("sd1", controlnet=True) is StableDiffusionControlNetPipeline
    assert loading.pipeline_class("sdxl", controlnet=True) is StableDiffusionXLControlNetPipeline


# --- the Hugging Face cache ---------------------------------------------------------------------


def test_hub_id_not_in_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, models_dir: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError) as info:
        loading.resolve_model("someone/not-downloaded")
    message = str(info.value)
    assert "'someone/not-downloaded'" in message
    assert "not in the local Hugging Face cache" in message and "--models-dir" in message
    with pytest.raises(ModelLoadError, match=r"not found in .*Stable-diffusion.* not in the local Hugging Face"):
        loading.resolve_model("someone/not-downloaded", models_dir=models_dir)


def test_hub_id_in_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> None:
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--someone--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    source = loading.resolve_model("someone/tiny")
    assert (source.kind, source.hub_id, source.path.name) == ("diffusers", "someone/tiny", commit)
    assert type(loading.load_pipeline(source)) is StableDiffusionPipeline


def test_controlnet_hub_id_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path
) -> None:
    from huggingface_hub import constants

    from dreamreel.pipelines.finding import find_controlnet

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError, match=r"'someone/cn' is not in the local Hugging Face cache.*hf download"):
        find_controlnet("someone/cn", None)
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    repo = tmp_path / "models--someone--cn"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tiny_model_dir / "controlnet-openpose", repo / "snapshots" / commit)
    assert find_controlnet("someone/cn", None).name == commit
    assert type(loading.load_controlnet("someone/cn")).__name__ == "ControlNetModel"


# --- the A1111 models dir -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["MyModel", "mymodel", "MyModel.safetensors", "sub/MyModel", "sub/mymodel.SAFETENSORS", " MyModel "]
)
def test_checkpoint_by_name(models_dir: Path, name: str) -> None:
    source = loading.resolve_model(name, models_dir=models_dir)
    assert source.path == models_dir / "models" / "Stable-diffusion" / "sub" / "MyModel.safetensors"
    assert (source.kind, source.family, source.name) == ("single_file", "sd1", name.strip())


def test_checkpoint_by_hash(models_dir: Path, tiny_single_file: tuple[Path, Path]) -> None:
    target = models_dir / "models" / "Stable-diffusion" / "Other-Model.safetensors"
    full = hashlib.sha256(target.read_bytes()).hexdigest()
    # all copies have the same content, so a hash alone would match several files; the name picks one
    assert loading.resolve_model(f"Other-Model [{full[:10]}]", models_dir=models_dir).path == target
    with pytest.raises(ModelLoadError, match="matches several files"):
        loading.resolve_model(full[:10], models_dir=models_dir)
    unique = models_dir / "models" / "Stable-diffusion" / "unique.safetensors"
    save_file({"x": torch.arange(400_000, dtype=torch.float32)}, str(unique))
    data = unique.read_bytes()
    legacy = hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    assert finding.find_checkpoint(hashlib.sha256(data).hexdigest()[:10], models_dir) == unique
    assert finding.find_checkpoint(f"renamed [{legacy.upper()}]", models_dir) == unique
    unique.unlink()


def test_diffusers_folder_in_the_models_dir(models_dir: Path) -> None:
    source = loading.resolve_model("tiny-diffusers", models_dir=models_dir)
    assert (source.kind, source.path.name) == ("diffusers", "tiny-diffusers")


@pytest.mark.parametrize("typo", ["Other-Modle", "OTHER-MODLE"])
def test_unknown_name_suggests_the_closest(models_dir: Path, typo: str) -> None:
    with pytest.raises(ModelLoadError, match=rf"'{typo}' not found in .*Did you mean 'Other-Model'\?"):
        loading.resolve_model(typo, models_dir=models_dir)


def test_same_name_in_two_subfolders_is_ambiguous(models_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"matches several files: a/dup.safetensors, b/dup.safetensors"):
        loading.resolve_model("dup", models_dir=models_dir)
    assert loading.resolve_model("b/dup", models_dir=models_dir).path.parent.name == "b"


def test_safetensors_wins_over_a_pickle_of_the_same_name(tmp_path: Path, tiny_single_file: tuple[Path, Path]) -> None:
    folder = tmp_path / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    shutil.copy(tiny_single_file[0], folder / "model.safetensors")
    (folder / "model.ckpt").write_bytes(b"never read")
    assert finding.find_checkpoint("model", tmp_path) == folder / "model.safetensors"
    assert finding.find_checkpoint("model.ckpt", tmp_path) == folder / "model.ckpt"


def test_wrong_models_dir_and_no_models_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="must be the stable-diffusion-webui folder"):
        loading.resolve_model("anything", models_dir=tmp_path)
    with pytest.raises(ModelLoadError, match=r"no such file or folder.*--models-dir"):
        loading.resolve_model("anything")


def test_finding_loras_embeddings_vaes_and_controlnets(models_dir: Path, tiny_model_dir: Path) -> None:
    assert finding.find_lora("inkwash", models_dir).name == "inkwash.safetensors"
    assert finding.find_lora("styles/InkWash", models_dir).parent.name == "styles"
    assert finding.find_embedding("bad-hands", models_dir).name == "bad-hands.safetensors"
    assert finding.find_vae("alt-vae.safetensors", models_dir).name == "alt-vae.safetensors"
    assert finding.find_controlnet("hed", None, model_dir=tiny_model_dir).name == "controlnet-hed"
    with pytest.raises(ModelLoadError, match=r"LoRA 'inkwsh' not found.*Did you mean .*'inkwash'"):
        finding.find_lora("inkwsh", models_dir)


def test_a_same_named_folder_in_the_working_directory_is_not_a_model(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "inkwash").mkdir()
    (tmp_path / "Other-Model").mkdir()
    monkeypatch.chdir(tmp_path)
    assert finding.find_lora("inkwash", models_dir).suffix == ".safetensors"
    assert loading.resolve_model("Other-Model", models_dir=models_dir).kind == "single_file"


def test_hypernetworks_are_refused(tmp_path: Path) -> None:
    file = tmp_path / "models" / "hypernetworks" / "anime.pt"
    file.parent.mkdir(parents=True)
    torch.save({"layer_structure": [1, 2, 1]}, file)
    with pytest.raises(ModelLoadError, match="hypernetworks are not supported"):
        loading.resolve_model(str(file))
    assert "not supported" in str(loading.hypernetwork_error("anime"))


# --- VAE and ControlNet overrides ---------------------------------------------------------------


@pytest.mark.parametrize("layout", ["ldm", "diffusers", "folder"])
def test_vae_override(tmp_path: Path, tiny_model_dir: Path, layout: str) -> None:
    target = tmp_path / "vae" if layout == "folder" else tmp_path / "vae.safetensors"
    testing.save_tiny_vae(target, layout="diffusers" if layout == "diffusers" else "ldm", seed=5)
    reference = testing.save_tiny_vae(tmp_path / "reference", seed=5)
    pipe = loading.load_pipeline(str(tiny_model_dir), vae=str(target))
    own = StableDiffusionPipeline.from_pretrained(tiny_model_dir, local_files_only=True)
    _assert_same_weights(pipe.vae, loading.load_vae(reference))
    assert not torch.equal(pipe.vae.decoder.conv_out.weight, own.vae.decoder.conv_out.weight)


def test_vae_override_on_a_single_file_and_by_name(models_dir: Path, tiny_single_file: tuple[Path, Path]) -> None:
    file, config = tiny_single_file
    pipe = loading.load_pipeline(str(file), config=config, vae="alt-vae", models_dir=models_dir)
    expected = testing.save_tiny_vae(models_dir / "expected-vae", sd1_layout=True)
    _assert_same_weights(pipe.vae, loading.load_vae(expected))


def test_taesd_from_the_models_dir(models_dir: Path, tiny_model_dir: Path) -> None:
    pipe = loading.load_pipeline(str(tiny_model_dir), vae="taesd", models_dir=models_dir)
    assert isinstance(pipe.vae, AutoencoderTiny)
    assert pipe.vae_scale_factor == 8
    assert _image(pipe).shape == (64, 64, 3)


def test_taesd_missing_says_where_to_put_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelLoadError, match=r"madebyollin/taesd\b.*models/VAE"):
        loading.load_vae("taesd", models_dir=None)


def test_controlnets_beside_the_model(tiny_model_dir: Path) -> None:
    one = loading.load_pipeline(str(tiny_model_dir), controlnets=["openpose"])
    assert type(one) is StableDiffusionControlNetPipeline
    control = np.zeros((64, 64, 3), np.uint8)
    from PIL import Image

    one.set_progress_bar_config(disable=True)
    assert one("a cat", image=Image.fromarray(control), height=64, width=64, num_inference_steps=1).images
    two = loading.load_pipeline(str(tiny_model_dir), controlnets=["openpose", "hed"])
    assert isinstance(two.controlnet, MultiControlNetModel) and len(two.controlnet.nets) == 2
    with pytest.raises(ModelLoadError, match="ControlNet 'canny'"):
        loading.load_pipeline(str(tiny_model_dir), controlnets=["canny"])


def test_controlnet_single_files(tmp_path: Path, tiny_model_dir: Path) -> None:
    folder = tiny_model_dir / "controlnet-openpose"
    reference = loading.load_controlnet(folder)
    ldm = tmp_path / "control_tiny_openpose.safetensors"
    save_file(testing.controlnet_to_ldm(reference), str(ldm))
    _assert_same_weights(loading.load_controlnet(ldm, config=folder), reference)
    beside = loading.load_controlnet(folder / "diffusion_pytorch_model.safetensors")  # config.json next to it
    _assert_same_weights(beside, reference)


# --- pickle safety ------------------------------------------------------------------------------


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, suffix: str) -> None:
    marker = tmp_path / "PWNED"
    evil = tmp_path / f"evil{suffix}"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": _Evil(marker)}, evil)
    with pytest.raises(ModelLoadError, match=r"asks to run code.*(posix|os)\.system.*refuses.*safetensors"):
        loading.load_pipeline(str(evil))
    with pytest.raises(ModelLoadError, match="asks to run code"):
        safety.load_state_dict(evil)
    assert not marker.exists()


def test_damaged_files_are_reported(tmp_path: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="not a valid safetensors file"):
        loading.resolve_model(str(broken))
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"this is not a pickle" * 20)
    with pytest.raises(ModelLoadError, match="not a readable PyTorch weights file"):
        safety.load_state_dict(garbage)


# --- hashes -------------------------------------------------------------------------------------


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    path = tmp_path / "big.safetensors"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 1_200_000, dtype=np.uint8).tobytes())
    return path


def test_a1111_hashes(big_file: Path, tmp_path: Path) -> None:
    data = big_file.read_bytes()
    cache = hashes.HashCache(tmp_path / "h.json")
    assert hashes.sha256_short(big_file, cache=cache) == hashlib.sha256(data).hexdigest()[:10]
    assert hashes.legacy_hash(big_file, cache=cache) == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    entry = json.loads((tmp_path / "h.json").read_text())[str(big_file.resolve())]
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert entry["size"] == 1_200_000 and entry["mtime_ns"] == big_file.stat().st_mtime_ns


def test_hash_cache_serves_repeats_and_notices_changes(
    big_file: Path, dreamreel_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    real = hashes._hash_file
    monkeypatch.setattr(hashes, "_hash_file", lambda p: calls.append(p) or real(p))
    first = hashes.sha256(big_file)
    assert hashes.sha256(big_file) == first and len(calls) == 1
    assert str(big_file.resolve()) in json.loads((dreamreel_cache / "hashes.json").read_text())
    stat = big_file.stat()
    os.utime(big_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert hashes.sha256(big_file) == first and len(calls) == 2
    big_file.write_bytes(b"changed")
    assert hashes.sha256(big_file) == hashlib.sha256(b"changed").hexdigest() and len(calls) == 3


def test_unwritable_hash_cache_still_hashes(big_file: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    cache = hashes.HashCache(blocker / "h.json")
    assert len(hashes.sha256_short(big_file, cache=cache)) == 10


# --- real size (slow) ---------------------------------------------------------------------------


@pytest.mark.slow
def test_real_size_sd1_checkpoint_loads_with_the_bundled_config(tmp_path: Path) -> None:
    """An SD 1.5-sized LDM checkpoint (random fp16 weights) loads with the skeleton and built tokenizer."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    skeleton = configs.skeleton_dir("sd1")

    def config(part: str) -> dict:
        values = json.loads((skeleton / part / "config.json").read_text())
        return {k: v for k, v in values.items() if not k.startswith("_") and k != "architectures"}

    with torch.device("meta"):
        unet = UNet2DConditionModel(**config("unet"))
        vae = AutoencoderKL(**config("vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig(**config("text_encoder")))
    models = [m.to_empty(device="cpu").to(torch.float16) for m in (unet, vae, text_encoder)]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for model in models:
            for param in model.parameters():
                param.view(-1)[:16] = torch.randn(min(16, param.numel()), generator=generator).half()
    file = tmp_path / "sd15-sized.safetensors"
    save_file(testing.ldm_state_dict(*models), str(file))
    pipe = loading.load_pipeline(str(file), dtype=torch.float16)
    for mine, loaded in zip(models, (pipe.unet, pipe.vae, pipe.text_encoder), strict=True):
        expected, got = mine.state_dict(), loaded.state_dict()
        for key in [k for k in expected if "position_ids" not in k][::25]:
            assert torch.equal(expected[key].view(torch.int16), got[key].view(torch.int16)), key
    assert pipe.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
