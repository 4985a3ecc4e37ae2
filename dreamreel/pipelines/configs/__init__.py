"""Bundled config-only diffusers skeletons for loading single-file checkpoints offline.

Each family folder (``sd1``, ``sd2``, ``sdxl``) holds what ``from_single_file(config=...)`` reads:
``model_index.json``, ``scheduler/scheduler_config.json``, ``unet``/``vae``/``text_encoder*``
``config.json`` and the tokenizer configs. The folders hold no weights and not CLIP's BPE
vocabulary (1.6 MB): :func:`clip_tokenizer` builds ``vocab.json`` and ``merges.txt`` once, into
the dreamreel cache, from ``bpe_simple_vocab_16e6.txt.gz`` that open_clip_torch ships.

``controlnet-sd1/config.json`` is the SD 1.5 ControlNet config for single-file ControlNets.

The cache root is ``$DREAMREEL_CACHE_DIR``, else ``$XDG_CACHE_HOME/dreamreel``, else
``~/.cache/dreamreel``.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dreamreel.errors import MissingDependencyError, ModelLoadError

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

logger = logging.getLogger(__name__)

Family = Literal["sd1", "sd2", "sdxl"]
FAMILIES: tuple[Family, ...] = ("sd1", "sd2", "sdxl")

_HERE = Path(__file__).resolve().parent
_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
_N_MERGES = 49152 - 256 - 2  # CLIP's vocabulary: 256 bytes, 256 end-of-word bytes, merges, 2 specials
START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"


def cache_root() -> Path:
    """Return dreamreel's cache directory (not created)."""
    explicit = os.environ.get("DREAMREEL_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "dreamreel"


def skeleton_dir(family: Family) -> Path:
    """Return the bundled config skeleton of a model family (read-only package data)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")
    return _HERE / family


def controlnet_config_dir(family: Family) -> Path:
    """Return the folder holding the bundled ControlNet ``config.json`` of a family.

    Raises:
        ModelLoadError: there is no bundled ControlNet config for this family.
    """
    path = _HERE / f"controlnet-{family}"
    if not path.is_dir():
        raise ModelLoadError(
            f"dreamreel has no bundled config for single-file {family} ControlNets. Use the ControlNet in "
            "diffusers format instead (a folder with config.json and diffusion_pytorch_model.safetensors)."
        )
    return path


def clip_byte_symbols() -> list[str]:
    """Return the 256 characters CLIP's byte-level BPE uses for raw bytes, in vocabulary order.

    Printable Latin-1 bytes stand for themselves and come first; the other 68 bytes follow, in
    byte order, as the code points 256, 257, ...
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(256 - len(printable))]


def write_bpe_files(directory: Path, merges: list[tuple[str, str]]) -> None:
    """Write ``vocab.json`` and ``merges.txt`` of a CLIP byte-level BPE with these merges.

    The vocabulary is the byte symbols, the same with ``</w>``, one token per merge and the two
    special tokens, numbered in that order (CLIP's own layout).
    """
    symbols = clip_byte_symbols()
    vocab = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges), START_TOKEN, END_TOKEN]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _open_clip_bpe() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("open_clip_torch", "Loading single-file checkpoints (CLIP's BPE vocabulary)")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / _BPE_FILE
        if candidate.is_file():
            return candidate
    raise ModelLoadError(
        f"open_clip_torch is installed but its {_BPE_FILE} is missing; reinstall it with "
        "pip install --force-reinstall open_clip_torch, or pass a diffusers model folder as the config."
    )


def clip_vocab_dir() -> Path:
    """Return a folder with CLIP's full ``vocab.json`` and ``merges.txt``, building it at first use."""
    target = cache_root() / "clip-bpe-49408"
    if (target / "vocab.json").is_file() and (target / "merges.txt").is_file():
        return target
    source = _open_clip_bpe()
    lines = gzip.decompress(source.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _N_MERGES + 1]]
    if len(merges) != _N_MERGES or any(len(m) != 2 for m in merges):
        raise ModelLoadError(f"{source} does not look like CLIP's BPE merges file; reinstall open_clip_torch.")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".clip-bpe-", dir=target.parent))
        write_bpe_files(staging, merges)  # type: ignore[arg-type]
    except OSError as exc:
        raise ModelLoadError(
            f"could not write CLIP's vocabulary into the cache {target.parent} ({exc}); set the environment "
            "variable DREAMREEL_CACHE_DIR to a writable folder."
        ) from exc
    try:
        staging.rename(target)
    except OSError:  # another process won the race; its files are identical
        for child in staging.iterdir():
            child.unlink()
        staging.rmdir()
    logger.info("wrote CLIP's BPE vocabulary to %s", target)
    return target


def clip_tokenizer(tokenizer_config_dir: Path) -> CLIPTokenizer:
    """Build the real CLIP tokenizer described by a skeleton's tokenizer folder.

    Args:
        tokenizer_config_dir: a folder with ``tokenizer_config.json`` (special tokens, length).

    Returns:
        A ``CLIPTokenizer`` with CLIP's 49408-token vocabulary.
    """
    from transformers import CLIPTokenizer

    settings = json.loads((tokenizer_config_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    vocab = clip_vocab_dir()
    # positional: the keywords differ between transformers 4 (vocab_file) and 5 (vocab)
    return CLIPTokenizer(
        str(vocab / "vocab.json"),
        str(vocab / "merges.txt"),
        bos_token=settings.get("bos_token", START_TOKEN),
        eos_token=settings.get("eos_token", END_TOKEN),
        unk_token=settings.get("unk_token", END_TOKEN),
        pad_token=settings.get("pad_token", END_TOKEN),
        model_max_length=int(settings.get("model_max_length", 77)),
    )


def _looks_like(keys: list[str]) -> str | None:
    """Name the kind of a non-checkpoint weight file from its keys, if it is a known kind."""
    if any("lora_" in k or ".lora." in k or k.startswith(("lycoris_", "hada_")) for k in keys):
        return "a LoRA (use it in the prompt as <lora:name:weight>)"
    if any(k.startswith(("control_model.", "controlnet_cond_embedding.", "input_hint_block.")) for k in keys):
        return "a ControlNet model (give it as a ControlNet unit's model)"
    if any(k in ("emb_params", "string_to_param", "string_to_token") for k in keys):
        return "a textual-inversion embedding (put it in the embeddings folder and use its name in the prompt)"
    if any(k.startswith(("encoder.down", "decoder.up", "first_stage_model.")) for k in keys):
        return "a VAE (pass it as the VAE)"
    return None


def detect_family(shapes: Mapping[str, tuple[int, ...]], *, source: str) -> Family:
    """Tell which family a single-file (LDM/A1111 layout) checkpoint belongs to, from its keys.

    Args:
        shapes: tensor names and shapes of the checkpoint.
        source: the file name, for messages.

    Raises:
        ModelLoadError: not a full SD 1.x / 2.x / XL base checkpoint (a LoRA, VAE, ControlNet,
            inpainting model, SDXL refiner, or another architecture).
    """
    keys = list(shapes)
    unet_in = shapes.get("model.diffusion_model.input_blocks.0.0.weight")
    if unet_in is None:
        kind = _looks_like(keys)
        what = f"it looks like {kind}" if kind else "it has no Stable Diffusion UNet (model.diffusion_model.*)"
        raise ModelLoadError(
            f"{source} is not a Stable Diffusion checkpoint: {what}. dreamreel loads SD 1.x, SD 2.x and SDXL "
            "base checkpoints (.safetensors or .ckpt) and diffusers model folders."
        )
    if len(unet_in) == 4 and unet_in[1] != 4:
        raise ModelLoadError(
            f"{source}: its UNet takes {unet_in[1]} input channels, so it is an inpainting, depth or "
            "instruct-pix2pix model; dreamreel needs a regular text-to-image checkpoint (4 input channels)."
        )
    if any(k.startswith("conditioner.embedders.") for k in keys):
        if any(k.startswith("conditioner.embedders.0.transformer.") for k in keys):
            return "sdxl"
        raise ModelLoadError(
            f"{source} looks like an SDXL refiner, which dreamreel does not support; use a base model."
        )
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return "sd2"
    if any(k.startswith("cond_stage_model.transformer.") for k in keys):
        return "sd1"
    raise ModelLoadError(
        f"{source} has a UNet but no known text encoder (cond_stage_model.* or conditioner.*), so its family "
        "cannot be told. Pass a diffusers folder of the same architecture as the config."
    )


def sd2_prediction_type(checkpoint: Path) -> str:
    """The prediction type of an SD 2.x single file, from A1111's ``<checkpoint>.yaml`` beside it.

    A yaml with ``parameterization: "v"`` means v-prediction, any other yaml epsilon; without a yaml
    the file is taken for a 768-v model (v-prediction), like SD 2.0/2.1 768.
    """
    sidecar = Path(checkpoint).with_suffix(".yaml")
    if not sidecar.is_file():
        logger.info("%s: SD 2.x without a .yaml beside it; assuming v-prediction (768-v)", Path(checkpoint).name)
        return "v_prediction"
    text = sidecar.read_text(encoding="utf-8", errors="replace")
    return "v_prediction" if re.search(r"^\s*parameterization:\s*[\"']?v[\"']?\s*$", text, re.M) else "epsilon"


def skeleton_components(family: Family, checkpoint: Path) -> dict[str, Any]:
    """Components to pass to ``from_single_file`` beside a family's skeleton config.

    The real CLIP tokenizer(s), built from the cached vocabulary, and for an SD 2.x epsilon model
    (see :func:`sd2_prediction_type`) a scheduler with that prediction type.
    """
    skeleton = skeleton_dir(family)
    parts: dict[str, Any] = {"tokenizer": clip_tokenizer(skeleton / "tokenizer")}
    if family == "sdxl":
        parts["tokenizer_2"] = clip_tokenizer(skeleton / "tokenizer_2")
    if family == "sd2" and sd2_prediction_type(checkpoint) != "v_prediction":
        from diffusers import DDIMScheduler

        settings = DDIMScheduler.load_config(str(skeleton), subfolder="scheduler")
        # mypy sees diffusers' unannotated dummy classes (diffusers/__init__.py's TYPE_CHECKING branch)
        parts["scheduler"] = DDIMScheduler.from_config(settings, prediction_type="epsilon")  # type: ignore[no-untyped-call, unused-ignore]
    return parts
