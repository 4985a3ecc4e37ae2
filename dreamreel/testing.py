"""Tiny random-weight Stable Diffusion models for tests and examples.

Everything here is built from the real diffusers/transformers classes at tiny sizes, seeded, with
no network access:

- :func:`save_tiny_model`: a diffusers folder (UNet, 4-level VAE so ``vae_scale_factor == 8``, CLIP
  text encoder, a small byte-level BPE tokenizer) plus ControlNets in ``controlnet-<name>``.
- :func:`save_tiny_single_file`: the same kind of model as one ``.safetensors`` file in the original
  LDM/A1111 key layout.
- :func:`tiny_sdxl_pipeline`, :func:`save_tiny_sdxl_model`, :func:`save_tiny_sdxl_single_file`: a tiny SDXL
  model (two text encoders, ``text_time`` UNet) in memory, as a diffusers folder, or as one file in
  SGM/A1111's layout.
- :func:`save_tiny_lora`, :func:`save_tiny_embedding`, :func:`save_tiny_vae`, :func:`save_tiny_taesd`.
- :func:`save_tiny_depth_model`: a tiny DPT depth model for the 3D warp.
- :func:`tiny_annotator_network`, :func:`save_tiny_annotators`: ControlNet detector networks
  (HED, OpenPose) with random weights, in memory or as an lllyasviel/Annotators-style folder.

From the shell: ``python -m dreamreel.testing tiny-model DIR``,
``python -m dreamreel.testing tiny-single-file FILE`` and
``python -m dreamreel.testing tiny-annotators DIR``.
"""

from __future__ import annotations

import argparse
import copy
import logging
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, cast

import torch

# mypy resolves these names to diffusers' placeholder (dummy) classes, from the TYPE_CHECKING branch of
# diffusers/__init__.py: they lack the real classes' attributes and annotations. The `type: ignore`s marked
# "diffusers dummy class" below are for that.
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    ControlNetModel,
    DiffusionPipeline,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from dreamreel.pipelines.configs import write_bpe_files

logger = logging.getLogger(__name__)

TINY_PROMPT = "a red cat and the blue dog"
"""A prompt made of the words the tiny tokenizer has merges for."""

_MERGES = [
    ("a", "n"), ("an", "d</w>"), ("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>"), ("t", "h"),
    ("th", "e</w>"), ("r", "e"), ("re", "d</w>"), ("b", "l"), ("bl", "u"), ("blu", "e</w>"),
]  # fmt: skip
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def tiny_tokenizer(directory: Path) -> CLIPTokenizer:
    """Write a 527-token CLIP byte-level BPE vocabulary to ``directory`` and load it.

    Any text can be encoded (bytes fall back to single-character tokens); the words of
    :data:`TINY_PROMPT` are single tokens.
    """
    write_bpe_files(Path(directory), _MERGES)
    # positional: the keywords differ between transformers 4 (vocab_file) and 5 (vocab)
    return CLIPTokenizer(
        str(Path(directory) / "vocab.json"),
        str(Path(directory) / "merges.txt"),
        pad_token="<|endoftext|>",
        model_max_length=77,  # the default (1e30) makes the pipelines fail
    )


def _tiny_unet(sd1_layout: bool) -> UNet2DConditionModel:
    if sd1_layout:
        return UNet2DConditionModel(  # type: ignore[no-untyped-call, unused-ignore]  # diffusers dummy class
            block_out_channels=(32, 32, 64, 64),
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=32,
            attention_head_dim=8,
            sample_size=8,
        )
    return UNet2DConditionModel(  # type: ignore[no-untyped-call, unused-ignore]  # diffusers dummy class
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        sample_size=8,
    )


def _tiny_vae(sd1_layout: bool) -> AutoencoderKL:
    return AutoencoderKL(  # type: ignore[no-untyped-call, unused-ignore]  # diffusers dummy class
        block_out_channels=(32, 32, 64, 64) if sd1_layout else (32, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2 if sd1_layout else 1,
        sample_size=64,
    )


def _tiny_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=3,
        max_position_embeddings=77,
        projection_dim=32,
    )
    return CLIPTextModel(config)


def tiny_pipeline(*, sd1_layout: bool = False) -> StableDiffusionPipeline:
    """Build the tiny ``StableDiffusionPipeline`` in memory (seeded, deterministic, no ControlNet)."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = tiny_tokenizer(Path(tmp))
    torch.manual_seed(0)
    unet = _tiny_unet(sd1_layout)
    torch.manual_seed(0)
    vae = _tiny_vae(sd1_layout)
    torch.manual_seed(0)
    text_encoder = _tiny_text_encoder(tokenizer)
    scheduler = PNDMScheduler(  # type: ignore[no-untyped-call, unused-ignore]  # diffusers dummy class
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1
    )
    return StableDiffusionPipeline(  # type: ignore[no-untyped-call, unused-ignore]  # diffusers dummy class
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def tiny_controlnet(unet: UNet2DConditionModel, *, seed: int = 1) -> ControlNetModel:
    """A ControlNet copied from ``unet`` whose zero convolutions get small random weights.

    A freshly made ControlNet has zero output layers and so does nothing; these do, and two
    seeds give two different ControlNets. The conditioning embedding downsamples by 8, so it takes
    control images at the output size.
    """
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16, 16, 32))
    generator = torch.Generator().manual_seed(seed)
    zero_modules = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]
    zero_modules.append(controlnet.controlnet_cond_embedding.conv_out)
    with torch.no_grad():
        for module in zero_modules:
            module.weight.normal_(0.0, 0.05, generator=generator)
            module.bias.zero_()
    return cast(ControlNetModel, controlnet)  # from_unet is Any on diffusers' dummy class


def save_tiny_model(
    path: Path | str, *, controlnets: Sequence[str] = ("openpose", "hed"), sd1_layout: bool = False
) -> Path:
    """Save a tiny random-weight SD 1.x-style model as a diffusers folder.

    Args:
        path: the folder to create (parents too); existing files are overwritten.
        controlnets: a ControlNet is saved in ``path/controlnet-<name>`` for each name.
        sd1_layout: use the UNet/VAE with SD 1.x's block layout (what :func:`save_tiny_single_file`
            converts); a bit slower than the default, smaller one.

    Returns:
        ``path``. A 64x64 image has 8x8 latents; prompts longer than 75 tokens are truncated.
    """
    path = Path(path)
    for name in controlnets:
        if not _NAME.match(name):
            raise ValueError(f"ControlNet name {name!r} must be letters, digits, '_', '-' or '.'")
    pipe = tiny_pipeline(sd1_layout=sd1_layout)
    pipe.save_pretrained(path, safe_serialization=True)  # type: ignore[attr-defined]  # diffusers dummy class
    for index, name in enumerate(controlnets):
        cn_dir = path / f"controlnet-{name}"
        tiny_controlnet(pipe.unet, seed=index + 1).save_pretrained(cn_dir, safe_serialization=True)  # type: ignore[attr-defined]  # diffusers dummy class
    logger.info("saved a tiny model to %s", path)
    return path


# --- diffusers -> LDM (A1111 single-file) key names ---------------------------------------------

_LDM_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_LDM_UNET_TOP = {
    "conv_in.": "input_blocks.0.0.",
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
_UNET_BLOCK = re.compile(r"(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.+)")
_MID_BLOCK = re.compile(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)")


def _resnet_to_ldm(rest: str) -> str:
    name, _, tail = rest.partition(".")
    return f"{_LDM_RESNET[name]}.{tail}"


def unet_key_to_ldm(key: str, layers_per_block: int, up_has_attention: Sequence[bool]) -> str:
    """Map one diffusers ``UNet2DConditionModel`` key to its LDM name (without ``model.diffusion_model.``)."""
    for old, new in _LDM_UNET_TOP.items():
        if key.startswith(old):
            return new + key[len(old) :]
    per_level = layers_per_block + 1
    if match := _UNET_BLOCK.fullmatch(key):
        side, level, part, index, rest = match[1], int(match[2]), match[3], int(match[4]), match[5]
        rest = _resnet_to_ldm(rest) if part == "resnets" else rest
        if part == "downsamplers":
            return f"input_blocks.{per_level * (level + 1)}.0.{rest.replace('conv.', 'op.', 1)}"
        if part == "upsamplers":
            slot = 2 if up_has_attention[level] else 1
            return f"output_blocks.{per_level * level + layers_per_block}.{slot}.{rest}"
        slot = 0 if part == "resnets" else 1
        if side == "down":
            return f"input_blocks.{per_level * level + index + 1}.{slot}.{rest}"
        return f"output_blocks.{per_level * level + index}.{slot}.{rest}"
    if match := _MID_BLOCK.fullmatch(key):
        part, index, rest = match[1], int(match[2]), match[3]
        if part == "attentions":
            return f"middle_block.1.{rest}"
        return f"middle_block.{2 * index}.{_resnet_to_ldm(rest)}"
    raise KeyError(f"no LDM name for UNet key {key!r}")


_VAE_BLOCK = re.compile(r"(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.+)")
_VAE_MID = re.compile(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.+)")
_VAE_ATTENTION = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}


def vae_key_to_ldm(key: str, levels: int) -> str:
    """Map one diffusers ``AutoencoderKL`` key to its LDM name (without ``first_stage_model.``)."""
    key = key.replace("conv_norm_out.", "norm_out.")
    if match := _VAE_BLOCK.fullmatch(key):
        coder, _, level, part, index, rest = match.groups()
        ldm_level = int(level) if coder == "encoder" else levels - 1 - int(level)
        where = f"{coder}.{'down' if coder == 'encoder' else 'up'}.{ldm_level}"
        if part == "resnets":
            return f"{where}.block.{index}.{rest.replace('conv_shortcut.', 'nin_shortcut.')}"
        return f"{where}.{'downsample' if part == 'downsamplers' else 'upsample'}.{rest}"
    if match := _VAE_MID.fullmatch(key):
        coder, part, index, rest = match.groups()
        if part == "resnets":
            return f"{coder}.mid.block_{int(index) + 1}.{rest.replace('conv_shortcut.', 'nin_shortcut.')}"
        for old, new in _VAE_ATTENTION.items():
            rest = rest.replace(old, new, 1) if rest.startswith(old) else rest
        return f"{coder}.mid.attn_1.{rest}"
    return key


def vae_to_ldm(vae: AutoencoderKL) -> dict[str, torch.Tensor]:
    """The VAE's weights in LDM layout (no prefix); attention projections become 1x1 convolutions."""
    levels = len(vae.config.block_out_channels)  # type: ignore[attr-defined]  # diffusers dummy class
    out = {}
    for key, value in vae.state_dict().items():  # type: ignore[attr-defined]  # diffusers dummy class
        name = vae_key_to_ldm(key, levels)
        if ".mid.attn_1." in name and name.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]
        out[name] = value.contiguous()
    return out


def ldm_state_dict(
    unet: UNet2DConditionModel, vae: AutoencoderKL, text_encoder: CLIPTextModel
) -> dict[str, torch.Tensor]:
    """Combine the three models into one A1111/LDM checkpoint state dict."""
    lpb = unet.config.layers_per_block  # type: ignore[attr-defined]  # diffusers dummy class
    has_attention = [name.startswith("CrossAttn") for name in unet.config.up_block_types]  # type: ignore[attr-defined]  # diffusers dummy class
    out = {
        "model.diffusion_model." + unet_key_to_ldm(k, lpb, has_attention): v.contiguous()
        for k, v in unet.state_dict().items()  # type: ignore[attr-defined]  # diffusers dummy class
    }
    out.update({"first_stage_model." + k: v for k, v in vae_to_ldm(vae).items()})
    for key, value in text_encoder.state_dict().items():
        name = key.removeprefix("text_model.")
        out["cond_stage_model.transformer.text_model." + name] = value.contiguous()
    return out


def controlnet_to_ldm(controlnet: ControlNetModel) -> dict[str, torch.Tensor]:
    """The ControlNet's weights in sd-webui-controlnet's layout (``control_model.*``)."""
    lpb = controlnet.config.layers_per_block  # type: ignore[attr-defined]  # diffusers dummy class
    last_hint = 2 * (len(controlnet.controlnet_cond_embedding.blocks) + 1)  # type: ignore[attr-defined]  # diffusers dummy class
    out = {}
    for key, value in controlnet.state_dict().items():  # type: ignore[attr-defined]  # diffusers dummy class
        head, _, rest = key.partition(".")
        if head == "controlnet_cond_embedding":
            part, _, tail = rest.partition(".")
            if part == "blocks":
                index, _, tail = tail.partition(".")
                name = f"input_hint_block.{2 * (int(index) + 1)}.{tail}"
            else:
                name = f"input_hint_block.{0 if part == 'conv_in' else last_hint}.{tail}"
        elif head == "controlnet_down_blocks":
            index, _, tail = rest.partition(".")
            name = f"zero_convs.{index}.0.{tail}"
        elif head == "controlnet_mid_block":
            name = f"middle_block_out.0.{rest}"
        else:
            name = unet_key_to_ldm(key, lpb, ())
        out["control_model." + name] = value.contiguous()
    return out


def save_tiny_single_file(
    path: Path | str, *, model_dir: Path | str | None = None, config_dir: Path | str | None = None
) -> Path:
    """Save a tiny model as one ``.safetensors`` file in the LDM/A1111 layout.

    Keys are ``model.diffusion_model.*``, ``first_stage_model.*`` and
    ``cond_stage_model.transformer.text_model.*``, with a UNet of SD 1.x's block layout, so the file
    looks like an SD 1.x checkpoint. Loading it needs a config folder that fits the tiny model (the
    bundled SD 1.x configs do not): pass ``config_dir`` and use that folder as the loader's config.

    Args:
        path: the ``.safetensors`` file to write.
        model_dir: convert this diffusers folder (e.g. from ``save_tiny_model(d, sd1_layout=True)``)
            instead of building a new model.
        config_dir: also save the diffusers folder the file was made from here (without ControlNets).

    Returns:
        ``path``.
    """
    path = Path(path)
    if model_dir is not None:
        pipe = StableDiffusionPipeline.from_pretrained(  # type: ignore[no-untyped-call, unused-ignore]  # diffusers dummy class
            model_dir, local_files_only=True, safety_checker=None, requires_safety_checker=False
        )
    else:
        pipe = tiny_pipeline(sd1_layout=True)
    if config_dir is not None:
        pipe.save_pretrained(config_dir, safe_serialization=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(ldm_state_dict(pipe.unet, pipe.vae, pipe.text_encoder), str(path))
    logger.info("saved a tiny single-file checkpoint to %s", path)
    return path


# --- SDXL ---------------------------------------------------------------------------------------


def tiny_sdxl_pipeline() -> Any:
    """Build a tiny ``StableDiffusionXLPipeline`` in memory (seeded, deterministic).

    The UNet has ``addition_embed_type="text_time"``; the text encoders are a ``CLIPTextModel`` and a
    ``CLIPTextModelWithProjection`` (32 and 48 features, so 80 cross-attention features, pooled 32);
    ``tokenizer_2`` pads with ``!`` (id 0) like SDXL's OpenCLIP tokenizer. 64x64 images, 8x8 latents.
    """
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModelWithProjection

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = tiny_tokenizer(Path(tmp))
        tokenizer_2 = CLIPTokenizer(
            str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"), pad_token="!", model_max_length=77
        )
    torch.manual_seed(0)
    unet = UNet2DConditionModel(  # type: ignore[no-untyped-call, unused-ignore]  # diffusers dummy class
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=32 + 48,
        sample_size=8,
    )
    torch.manual_seed(0)
    vae = _tiny_vae(False)
    torch.manual_seed(0)
    text_encoder = _tiny_text_encoder(tokenizer)
    torch.manual_seed(1)
    config = copy.deepcopy(text_encoder.config)
    config.pad_token_id = 0
    config.hidden_size = 48  # differs from CLIP-L's, as in SDXL (single-file loading tells them apart by it)
    text_encoder_2 = CLIPTextModelWithProjection(config)
    scheduler = EulerDiscreteScheduler(  # type: ignore[no-untyped-call, unused-ignore]  # diffusers dummy class
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    return StableDiffusionXLPipeline(  # type: ignore[no-untyped-call, unused-ignore]  # diffusers dummy class
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
    )


def save_tiny_sdxl_model(path: Path | str) -> Path:
    """Save :func:`tiny_sdxl_pipeline` as a diffusers folder at ``path``; returns ``path``."""
    path = Path(path)
    tiny_sdxl_pipeline().save_pretrained(path, safe_serialization=True)
    logger.info("saved a tiny SDXL model to %s", path)
    return path


def open_clip_state_dict(text_encoder: Any) -> dict[str, torch.Tensor]:
    """A ``CLIPTextModelWithProjection``'s weights in OpenCLIP's layout (SDXL's ``conditioner.embedders.1.model``):
    ``transformer.resblocks.N`` with fused ``attn.in_proj_*``, ``ln_final``, ``text_projection`` transposed."""
    out: dict[str, torch.Tensor] = {}
    state = {k.removeprefix("text_model."): v for k, v in text_encoder.state_dict().items()}
    out["positional_embedding"] = state.pop("embeddings.position_embedding.weight")
    out["token_embedding.weight"] = state.pop("embeddings.token_embedding.weight")
    out["text_projection"] = state.pop("text_projection.weight").T.contiguous()
    state.pop("embeddings.position_ids", None)
    layers = int(text_encoder.config.num_hidden_layers)
    for part in ("weight", "bias"):
        out[f"ln_final.{part}"] = state.pop(f"final_layer_norm.{part}")
        for index in range(layers):
            prefix, block = f"encoder.layers.{index}.", f"transformer.resblocks.{index}."
            qkv = [state.pop(f"{prefix}self_attn.{n}_proj.{part}") for n in "qkv"]
            out[f"{block}attn.in_proj_{part}"] = torch.cat(qkv)
            for old, new in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2")):
                out[f"{block}{new}.{part}"] = state.pop(f"{prefix}{old}.{part}")
            out[f"{block}mlp.c_fc.{part}"] = state.pop(f"{prefix}mlp.fc1.{part}")
            out[f"{block}mlp.c_proj.{part}"] = state.pop(f"{prefix}mlp.fc2.{part}")
    if state:
        raise ValueError(f"unconverted text encoder weights: {sorted(state)}")
    return {k: v.contiguous() for k, v in out.items()}


def save_tiny_sdxl_single_file(path: Path | str, *, config_dir: Path | str) -> Path:
    """Save :func:`tiny_sdxl_pipeline` as one ``.safetensors`` file in SGM/A1111's SDXL layout.

    Keys are ``model.diffusion_model.*`` (with ``label_emb.0.*``), ``first_stage_model.*``,
    ``conditioner.embedders.0.transformer.text_model.*`` (CLIP-L) and ``conditioner.embedders.1.model.*``
    (OpenCLIP-G). The diffusers folder it was made from is saved in ``config_dir``: load the file with that
    folder as the config (the bundled SDXL configs are real-sized).

    Returns:
        ``path``.
    """
    path = Path(path)
    pipe = tiny_sdxl_pipeline()
    pipe.save_pretrained(config_dir, safe_serialization=True)
    unet = pipe.unet
    lpb = unet.config.layers_per_block
    has_attention = [name.startswith("CrossAttn") for name in unet.config.up_block_types]
    out: dict[str, torch.Tensor] = {}
    for key, value in unet.state_dict().items():
        if key.startswith("add_embedding.linear_"):
            name = f"label_emb.0.{0 if key[len('add_embedding.linear_')] == '1' else 2}.{key.rsplit('.', 1)[1]}"
        else:
            name = unet_key_to_ldm(key, lpb, has_attention)
        out["model.diffusion_model." + name] = value.contiguous()
    out.update({"first_stage_model." + k: v for k, v in vae_to_ldm(pipe.vae).items()})
    for key, value in pipe.text_encoder.state_dict().items():
        name = key.removeprefix("text_model.")
        out["conditioner.embedders.0.transformer.text_model." + name] = value.contiguous()
    out.update({"conditioner.embedders.1.model." + k: v for k, v in open_clip_state_dict(pipe.text_encoder_2).items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path))
    logger.info("saved a tiny SDXL single-file checkpoint to %s", path)
    return path


# --- LoRA, embeddings, VAEs ---------------------------------------------------------------------


def _models_of(model: Path | str | DiffusionPipeline) -> tuple[UNet2DConditionModel, CLIPTextModel]:
    if isinstance(model, DiffusionPipeline):
        return copy.deepcopy(model.unet), copy.deepcopy(model.text_encoder)  # type: ignore[attr-defined]  # diffusers dummy class
    folder = Path(model)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", local_files_only=True)  # type: ignore[no-untyped-call, unused-ignore]  # diffusers dummy class
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True)
    return unet, text_encoder


def save_tiny_lora(
    path: Path | str,
    model: Path | str | DiffusionPipeline,
    *,
    rank: int = 4,
    text_encoder: bool = True,
    seed: int = 0,
) -> Path:
    """Save a random LoRA for a (tiny) model in diffusers' format.

    Args:
        path: a ``.safetensors`` file, or a folder that gets ``pytorch_lora_weights.safetensors``.
        model: the model folder or pipeline the LoRA is for (not modified).
        rank: LoRA rank.
        text_encoder: also adapt the text encoder's attention.
        seed: seed of the random weights (``lora_B`` is random too, so the LoRA has an effect).

    Returns:
        The ``.safetensors`` file written; ``pipe.load_lora_weights`` accepts it or its folder.
    """
    from diffusers.utils import convert_state_dict_to_diffusers  # type: ignore[attr-defined, unused-ignore]  # re-exported implicitly
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    path = Path(path)
    folder, weight_name = (path.parent, path.name) if path.suffix == ".safetensors" else (path, None)
    unet, encoder = _models_of(model)
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))  # type: ignore[attr-defined]  # diffusers dummy class
    layers: dict[str, Any] = {"unet_lora_layers": unet}
    if text_encoder:
        encoder.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=["q_proj", "k_proj", "v_proj"]))
        layers["text_encoder_lora_layers"] = encoder
    generator = torch.Generator().manual_seed(seed)
    for module in layers.values():
        with torch.no_grad():
            for name, param in module.named_parameters():
                if "lora_B" in name:
                    param.normal_(0.0, 0.1, generator=generator)
    state = {key: convert_state_dict_to_diffusers(get_peft_model_state_dict(m)) for key, m in layers.items()}  # type: ignore[no-untyped-call, unused-ignore]  # unannotated in diffusers
    StableDiffusionPipeline.save_lora_weights(folder, weight_name=weight_name, safe_serialization=True, **state)
    return folder / (weight_name or "pytorch_lora_weights.safetensors")


def save_tiny_embedding(path: Path | str, token_dim: int, *, n_vectors: int = 2, seed: int = 0) -> Path:
    """Save a random A1111 textual-inversion embedding.

    ``.safetensors`` files hold ``emb_params`` of shape (n_vectors, token_dim); other suffixes
    (``.pt``) get A1111's pickle layout (``string_to_param`` / ``string_to_token``, plain tensors).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    vectors = torch.randn(n_vectors, token_dim, generator=torch.Generator().manual_seed(seed)) * 0.5
    if path.suffix == ".safetensors":
        save_file({"emb_params": vectors}, str(path))
    else:
        data = {"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": path.stem, "step": 0}
        torch.save(data, path)
    return path


def save_tiny_vae(
    path: Path | str,
    *,
    sd1_layout: bool = False,
    layout: Literal["ldm", "diffusers"] = "ldm",
    seed: int = 1,
) -> Path:
    """Save a tiny random VAE that fits :func:`save_tiny_model` (same ``sd1_layout``).

    Args:
        path: a ``.safetensors`` file (one file in ``layout``) or a folder (diffusers format).
        sd1_layout: match a model saved with ``sd1_layout=True``.
        layout: key layout of a single file: ``"ldm"`` (A1111 VAE files) or ``"diffusers"``.
        seed: weights seed; differs from the model's own VAE (seed 0) by default.
    """
    path = Path(path)
    torch.manual_seed(seed)
    vae = _tiny_vae(sd1_layout)
    if path.suffix != ".safetensors":
        vae.save_pretrained(path, safe_serialization=True)  # type: ignore[attr-defined]  # diffusers dummy class
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    state = vae_to_ldm(vae) if layout == "ldm" else {k: v.contiguous() for k, v in vae.state_dict().items()}  # type: ignore[attr-defined]  # diffusers dummy class
    save_file(state, str(path))
    return path


def save_tiny_taesd(path: Path | str, *, seed: int = 0) -> Path:
    """Save a tiny random ``AutoencoderTiny`` (TAESD-like, scale factor 8) as a diffusers folder."""
    torch.manual_seed(seed)
    taesd = AutoencoderTiny(  # type: ignore[no-untyped-call, unused-ignore]  # diffusers dummy class
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
    )
    taesd.save_pretrained(Path(path), safe_serialization=True)  # type: ignore[attr-defined]  # diffusers dummy class
    return Path(path)


# --- depth and ControlNet annotators ------------------------------------------------------------


def save_tiny_depth_model(path: Path | str, *, seed: int = 0) -> Path:
    """Save a tiny random-weight DPT depth model and its image processor to ``path``.

    Built from a config in code (no download): a 4-layer, 32-wide ViT with a DPT neck and depth
    head, about 140k parameters (~0.6 MB), 64x64 processor input. PyTorch's default layer
    initialisation replaces transformers' tiny one so the random depth map is not flat.
    Deterministic for a given ``seed``; the global torch RNG is left untouched.

    Returns:
        The folder, loadable with :meth:`dreamreel.anim.depth.TransformersDepth.from_pretrained`.
    """
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    config = DPTConfig(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=64,
        patch_size=16,
        backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        use_auxiliary_head=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DPTForDepthEstimation(config).eval()  # type: ignore[no-untyped-call, unused-ignore]  # unannotated in transformers
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d | torch.nn.Linear):
                module.reset_parameters()
    processor = DPTImageProcessor(
        size={"height": 64, "width": 64}, keep_aspect_ratio=False, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


_ANNOTATOR_SEEDS = {"hed": 0, "body": 1, "hand": 2, "face": 3}


def tiny_annotator_network(part: str, *, seed: int = 0) -> torch.nn.Module:
    """A ControlNet detector network of the real architecture with seeded random weights.

    Args:
        part: ``"hed"`` (ControlNetHED, 14.7M parameters), ``"body"`` (OpenPose body, 52M),
            ``"hand"`` (37M) or ``"face"`` (38M).
        seed: weights seed; the global torch RNG is left untouched.

    Random weights make HED maps that depend on the picture; OpenPose with random weights finds
    no person, so its maps are black.
    """
    from dreamreel.controlnet.preprocessors import ANNOTATOR_FILES, new_annotator_network

    if part not in ANNOTATOR_FILES:
        raise ValueError(f"unknown annotator network {part!r}; use one of {', '.join(ANNOTATOR_FILES)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return new_annotator_network(part)


def save_tiny_annotators(
    path: Path | str, *, detectors: Sequence[str] = ("hed",), seed: int = 0, dtype: torch.dtype = torch.float16
) -> Path:
    """Write random-weight detector weights in the lllyasviel/Annotators folder layout.

    The files have the real names, architectures and key layouts (``ControlNetHED.pth``,
    ``body_pose_model.pth``, ``hand_pose_model.pth``, ``facenet.pth``), so
    :func:`dreamreel.controlnet.preprocessors.make_preprocessor` loads them like real ones. In
    float16 (the default) HED is 29 MB; the OpenPose files are 105 MB (body), 74 MB (hand) and
    77 MB (face), so ask for them only when needed.

    Args:
        path: the folder to write (created with its parents).
        detectors: preprocessor names (e.g. ``"hed"``, ``"openpose"``, ``"openpose_full"``); the
            files they need are written once each.
        seed: weights seed (each network gets its own seed derived from it).
        dtype: storage dtype; the loader casts to float32.

    Returns:
        ``path``.
    """
    from dreamreel.controlnet.preprocessors import ANNOTATOR_FILES, annotator_state_dict, required_weight_files

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {name for detector in detectors for name in required_weight_files(detector)}
    for part, filename in ANNOTATOR_FILES.items():
        if filename not in wanted:
            continue
        network = tiny_annotator_network(part, seed=seed + _ANNOTATOR_SEEDS[part])
        state = {key: value.to(dtype).contiguous() for key, value in annotator_state_dict(part, network).items()}
        torch.save(state, folder / filename)
        logger.info("saved random %s weights to %s", part, folder / filename)
    return folder


# --- command line -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m dreamreel.testing`` argument parser (one subcommand per kind of fixture)."""
    parser = argparse.ArgumentParser(prog="python -m dreamreel.testing", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    model = commands.add_parser("tiny-model", help="save a tiny diffusers model folder")
    model.add_argument("directory", type=Path)
    model.add_argument("--controlnets", default="openpose,hed", help="comma-separated names ('' for none)")
    model.add_argument("--sd1-layout", action="store_true", help="use SD 1.x's UNet/VAE block layout")
    single = commands.add_parser("tiny-single-file", help="save a tiny LDM-layout .safetensors checkpoint")
    single.add_argument("file", type=Path)
    single.add_argument("--config-dir", type=Path, help="also save the matching diffusers folder (its config)")
    annotators = commands.add_parser("tiny-annotators", help="save random-weight ControlNet annotator weights")
    annotators.add_argument("directory", type=Path)
    annotators.add_argument(
        "--detectors", default="hed", help="comma-separated preprocessor names, e.g. hed,openpose_full (default: hed)"
    )
    upscaler = commands.add_parser("tiny-upscaler", help="save a tiny random-weight upscaler file (users' key layout)")
    upscaler.add_argument("file", type=Path, help=".pth or .safetensors")
    upscaler.add_argument("--arch", choices=["esrgan", "compact", "swinir"], default="esrgan")
    upscaler.add_argument("--scale", type=int, default=4)
    flownet = commands.add_parser("tiny-flownet", help="save a tiny random-weight RIFE flownet.pkl")
    flownet.add_argument("file", type=Path)
    flownet.add_argument("--version", default="4.6", help="RIFE version (4.6, 4.7, 4.22, 4.25, ...)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "tiny-model":
        names = [n.strip() for n in args.controlnets.split(",") if n.strip()]
        save_tiny_model(args.directory, controlnets=names, sd1_layout=args.sd1_layout)
    elif args.command == "tiny-single-file":
        save_tiny_single_file(args.file, config_dir=args.config_dir)
    elif args.command == "tiny-annotators":
        names = [n.strip() for n in args.detectors.split(",") if n.strip()]
        save_tiny_annotators(args.directory, detectors=names)
    elif args.command == "tiny-upscaler":
        from dreamreel.finish import _testing_upscale as tiny

        if args.arch == "esrgan":
            tiny.write_tiny_esrgan(args.file, scale=args.scale)
        elif args.arch == "compact":
            tiny.write_tiny_compact(args.file, scale=args.scale)
        else:
            tiny.write_tiny_swinir(args.file, scale=args.scale)
    elif args.command == "tiny-flownet":
        from dreamreel.finish._testing_rife import write_tiny_flownet

        write_tiny_flownet(args.file, args.version)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
