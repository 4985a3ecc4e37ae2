"""Finding models by path, A1111 name or hash, or cached Hugging Face id, and loading them offline.

A model is one of:

- a diffusers folder (it has ``model_index.json``);
- a single-file checkpoint (``.safetensors``, ``.ckpt``, ``.pt``, ``.bin``) in the original LDM/A1111
  layout: SD 1.x, SD 2.x or SDXL base, loaded with the bundled config skeletons
  (:mod:`dreamreel.pipelines.configs`) or an explicit ``config`` folder;
- a Hugging Face id ``org/name`` that is already in the local Hugging Face cache (never downloaded).

``--models-dir DIR`` is an AUTOMATIC1111 install folder: checkpoints in ``DIR/models/Stable-diffusion``,
LoRAs in ``DIR/models/Lora``, VAEs in ``DIR/models/VAE``, embeddings in ``DIR/embeddings`` and
ControlNets in ``DIR/models/ControlNet``. A name matches a file's stem or relative path (any case,
with or without extension, in subfolders too), and A1111's ``name [hash]`` form and bare hashes
(:mod:`dreamreel.pipelines.hashes`) work as well; that lookup is :mod:`dreamreel.pipelines.finding`.
Pickle files are read only through :mod:`dreamreel.pipelines.safety`. Nothing here touches the network.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from dreamreel.errors import ModelLoadError
from dreamreel.pipelines import safety
from dreamreel.pipelines.configs import (
    Family,
    controlnet_config_dir,
    detect_family,
    skeleton_components,
    skeleton_dir,
)
from dreamreel.pipelines.finding import (
    HUB_ID,
    ModelPaths,
    _candidates,
    _is_model_path,
    _not_found,
    _NotFound,
    find_checkpoint,
    find_controlnet,
    find_vae,
    hub_snapshot,
)

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, AutoencoderTiny, ControlNetModel, DiffusionPipeline

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSource:
    """A resolved base model.

    Attributes:
        kind: ``"diffusers"`` (a folder with model_index.json) or ``"single_file"``.
        path: the folder or file.
        family: ``"sd1"``, ``"sd2"`` or ``"sdxl"``; None for a pickle file until it is loaded.
        name: what the user wrote.
        hub_id: the Hugging Face id when the folder came from the local Hugging Face cache.
    """

    kind: Literal["diffusers", "single_file"]
    path: Path
    family: Family | None
    name: str
    hub_id: str | None = None


# --- hypernetworks ------------------------------------------------------------------------------


def hypernetwork_error(name: str) -> ModelLoadError:
    """The error for a hypernetwork (``<hypernet:name:weight>``), which dreamreel does not support."""
    return ModelLoadError(
        f"hypernetwork {name!r}: hypernetworks are not supported by dreamreel (diffusers has no loader for "
        "them). Remove the <hypernet:...> tag, or use a LoRA trained for the same purpose instead."
    )


# --- resolving the base model -------------------------------------------------------------------


def _family_of_folder(folder: Path) -> Family:
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    if "XL" in str(index.get("_class_name", "")):
        return "sdxl"
    unet_config = folder / "unet" / "config.json"
    if unet_config.is_file():
        cross = json.loads(unet_config.read_text(encoding="utf-8")).get("cross_attention_dim")
        if cross == 1024:
            return "sd2"
    return "sd1"


def _source_for_path(path: Path, name: str, hub_id: str | None = None) -> ModelSource:
    if "hypernetworks" in {part.lower() for part in path.parts}:
        raise hypernetwork_error(name)
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return ModelSource("diffusers", path, _family_of_folder(path), name, hub_id)
        raise ModelLoadError(
            f"{path} is a folder without model_index.json, so it is not a diffusers model. Pass the "
            "checkpoint file inside it, or a diffusers model folder."
        )
    suffix = path.suffix.lower()
    if suffix not in safety.WEIGHT_SUFFIXES:
        raise ModelLoadError(
            f"{path}: not a model file; expected a diffusers folder or one of {', '.join(safety.WEIGHT_SUFFIXES)}."
        )
    family = None if safety.is_pickle(path) else detect_family(safety.tensor_shapes(path), source=str(path))
    return ModelSource("single_file", path, family, name, hub_id)


def _from_hub_cache(repo_id: str, name: str) -> ModelSource:
    folder = hub_snapshot(
        repo_id,
        otherwise="pass a local path: a diffusers model folder or a .safetensors checkpoint, or a checkpoint name "
        "with --models-dir DIR (an AUTOMATIC1111 install).",
    )
    if not (folder / "model_index.json").is_file():
        raise ModelLoadError(
            f"{repo_id!r} is in the Hugging Face cache ({folder}) but it is not a diffusers pipeline (no "
            "model_index.json). Pass the path of the checkpoint file inside it instead."
        )
    return _source_for_path(folder, name, hub_id=repo_id)


def resolve_model(name_or_path: str, *, models_dir: Path | None = None) -> ModelSource:
    """Resolve the base model the user named.

    Tried in order: an existing path; a checkpoint name or hash in ``models_dir``; a Hugging Face id
    in the local cache.

    Args:
        name_or_path: a path, an A1111 checkpoint name (``"v1-5-pruned-emaonly [6ce0161689]"``,
            ``"sub/model.safetensors"``, a hash), or ``org/name``.
        models_dir: an AUTOMATIC1111 install folder, or None.

    Raises:
        ModelLoadError: nothing matched (with the closest names), or the file is not a supported
            checkpoint.
    """
    text = name_or_path.strip()
    direct = Path(text).expanduser()
    if text and direct.exists() and (models_dir is None or _is_model_path(direct, safety.WEIGHT_SUFFIXES, True)):
        return _source_for_path(direct, text)
    missing: ModelLoadError | None = None
    if models_dir is not None:
        try:
            return _source_for_path(find_checkpoint(text, models_dir), text)
        except _NotFound as exc:
            missing = exc
    if HUB_ID.match(text) and Path(text).suffix.lower() not in safety.WEIGHT_SUFFIXES:
        try:
            return _from_hub_cache(text, text)
        except ModelLoadError as exc:
            if missing is None:
                raise
            raise ModelLoadError(f"{missing} It is not in the local Hugging Face cache either.") from exc
    raise missing or _not_found(text, "checkpoint", (), [])


# --- loading ------------------------------------------------------------------------------------


@contextmanager
def _loading(what: str, path: Path, hint: str = "") -> Iterator[None]:
    """Turn a library's loading failure into a ModelLoadError naming the file."""
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    try:
        yield
    except ModelLoadError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, SingleFileComponentError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelLoadError(f"could not load the {what} {path}: {first.rstrip('.')}.{hint}") from exc


def pipeline_class(family: Family, *, controlnet: bool = False) -> type[DiffusionPipeline]:
    """The diffusers txt2img pipeline class for a family (switch to img2img with ``from_pipe``)."""
    import diffusers

    xl = "XL" if family == "sdxl" else ""
    cls: type[DiffusionPipeline] = getattr(
        diffusers, f"StableDiffusion{xl}{'ControlNet' if controlnet else ''}Pipeline"
    )
    return cls


def _load_vae_folder(path: Path, dtype: torch.dtype) -> AutoencoderKL | AutoencoderTiny:
    from diffusers import AutoencoderKL, AutoencoderTiny

    if (path / "model_index.json").is_file():
        path = path / "vae"
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: not a diffusers VAE folder (no readable config.json).") from exc
    cls = AutoencoderTiny if config.get("_class_name") == "AutoencoderTiny" else AutoencoderKL
    with _loading("VAE", path):
        # mypy sees diffusers' unannotated dummy classes (diffusers/__init__.py's TYPE_CHECKING branch)
        model: AutoencoderKL | AutoencoderTiny = cls.from_pretrained(path, local_files_only=True, torch_dtype=dtype)  # type: ignore[no-untyped-call, unused-ignore]
        return model


def _find_taesd(name: str, models_dir: Path | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    for candidate in _candidates(ModelPaths.a1111(models_dir).vae, (), folders=True):
        if candidate.path.name.lower() == name:
            return candidate.path
    try:
        return Path(snapshot_download(f"madebyollin/{name}", local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    raise ModelLoadError(
        f"VAE {name!r} (the tiny autoencoder TAESD) is not available locally. Put the diffusers-format TAESD "
        f"(config.json and diffusion_pytorch_model.safetensors from the Hugging Face repo madebyollin/{name}) in "
        f"a folder named {name} under models/VAE of --models-dir, or pass that folder's path as the VAE."
    )


def load_vae(
    name_or_path: str | Path,
    *,
    family: Family = "sd1",
    config: Path | None = None,
    models_dir: Path | None = None,
    dtype: torch.dtype = torch.float32,
) -> AutoencoderKL | AutoencoderTiny:
    """Load a replacement VAE.

    Args:
        name_or_path: a ``.safetensors``/``.ckpt``/``.pt`` VAE file in LDM or diffusers layout, a
            diffusers VAE folder (``AutoencoderKL`` or ``AutoencoderTiny``), a name in
            ``models_dir/models/VAE``, or ``"taesd"`` (the tiny autoencoder, from a ``taesd`` folder
            there or the local Hugging Face cache).
        family: the base model's family (picks the bundled VAE config and TAESD variant).
        config: a folder with ``vae/config.json`` describing a single-file VAE's architecture
            (default: the family's bundled config).
        models_dir: an AUTOMATIC1111 install folder, or None.
        dtype: weights dtype.
    """
    from diffusers import AutoencoderKL

    text = str(name_or_path).strip()
    if text.lower() in ("taesd", "taesdxl"):
        path = _find_taesd("taesdxl" if family == "sdxl" else text.lower(), models_dir)
    else:
        path = find_vae(text, models_dir)
    if path.is_dir():
        return _load_vae_folder(path, dtype)
    state = safety.load_state_dict(path)
    vae_config = Path(config) if config is not None else skeleton_dir(family)
    hint = " Is it a VAE for this model's family (SD 1.x/2.x VAEs differ from SDXL's)?"
    with _loading("VAE", path, hint):
        model: AutoencoderKL = AutoencoderKL.from_single_file(
            state, config=str(vae_config), subfolder="vae", local_files_only=True, torch_dtype=dtype
        )
        return model


def load_controlnet(
    name_or_path: str | Path,
    *,
    family: Family = "sd1",
    models_dir: Path | None = None,
    model_dir: Path | None = None,
    config: Path | None = None,
    dtype: torch.dtype = torch.float32,
) -> ControlNetModel:
    """Load a ControlNet from a diffusers folder or a single file (A1111 or diffusers layout).

    Args:
        name_or_path: a path, a name in ``models_dir/models/ControlNet`` (``"name [hash]"`` works),
            or a name ``n`` with a ``model_dir/controlnet-n`` folder.
        family: the base model's family (picks the bundled single-file config; SD 1.x only).
        models_dir: an AUTOMATIC1111 install folder, or None.
        model_dir: the base model's diffusers folder, if it has one.
        config: a folder with the ``config.json`` of a single file's architecture; by default the
            file's own folder if it has a ``config.json``, else the bundled SD 1.5 config.
        dtype: weights dtype.
    """
    from diffusers import ControlNetModel

    path = find_controlnet(str(name_or_path), models_dir, model_dir=model_dir)
    if path.is_dir():
        with _loading("ControlNet", path):
            # mypy sees diffusers' unannotated dummy classes (diffusers/__init__.py's TYPE_CHECKING branch)
            net: ControlNetModel = ControlNetModel.from_pretrained(path, local_files_only=True, torch_dtype=dtype)  # type: ignore[no-untyped-call, unused-ignore]
            return net
    if config is None:
        config = path.parent if (path.parent / "config.json").is_file() else controlnet_config_dir(family)
    state = safety.load_state_dict(path)
    with _loading("ControlNet", path, f" Is it a ControlNet for {family} models?"):
        net = ControlNetModel.from_single_file(state, config=str(config), local_files_only=True, torch_dtype=dtype)
        return net


def _family_of_pickle(path: Path) -> Family:
    """Read a pickle checkpoint safely (the safety gate) and tell its family."""
    state = safety.load_state_dict(path)
    shapes = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    del state
    return detect_family(shapes, source=str(path))


def _from_single_file(
    cls: type[DiffusionPipeline],
    source: ModelSource,
    family: Family,
    parts: dict[str, Any],
    config: Path | None,
    vae: str | Path | None,
    models_dir: Path | None,
    dtype: torch.dtype,
) -> DiffusionPipeline:
    config_dir = Path(config) if config is not None else skeleton_dir(family)
    if config is None:
        parts.update(skeleton_components(family, source.path))
    if vae is not None:
        parts["vae"] = load_vae(vae, family=family, config=config_dir, models_dir=models_dir, dtype=dtype)
    hint = "" if config else " For a non-standard model, pass a diffusers folder of its architecture as config."
    with _loading("checkpoint", source.path, hint):
        pipe: DiffusionPipeline = cls.from_single_file(
            str(source.path), config=str(config_dir), local_files_only=True, torch_dtype=dtype, **parts
        )
        return pipe


def load_pipeline(
    source: ModelSource | str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    vae: str | Path | None = None,
    controlnets: Sequence[str | Path] = (),
    config: Path | None = None,
    models_dir: Path | None = None,
) -> DiffusionPipeline:
    """Load a txt2img pipeline offline, with the safety checker off.

    Args:
        source: a resolved :class:`ModelSource`, or anything :func:`resolve_model` accepts.
        device: where to put the pipeline.
        dtype: weights dtype.
        vae: a replacement VAE (see :func:`load_vae`), or None for the model's own.
        controlnets: ControlNets (see :func:`load_controlnet`); with any, the pipeline is the
            ControlNet variant and ``pipe.controlnet`` is one model, or a MultiControlNetModel for 2+.
        config: for a single file, a diffusers folder of the same architecture to take configs and
            tokenizer from instead of the bundled skeleton (required for non-standard sizes); not
            used for diffusers folders.
        models_dir: an AUTOMATIC1111 install folder for names, or None.

    Returns:
        ``StableDiffusionPipeline``/``StableDiffusionXLPipeline`` or their ControlNet variants.

    Raises:
        ModelLoadError: a file is missing, unsafe, of an unsupported kind or does not fit.
    """
    if not isinstance(source, ModelSource):
        source = resolve_model(str(source), models_dir=models_dir)
    family = source.family or _family_of_pickle(source.path)
    model_dir = source.path if source.kind == "diffusers" else None
    nets = [
        load_controlnet(c, family=family, models_dir=models_dir, model_dir=model_dir, dtype=dtype) for c in controlnets
    ]
    cls = pipeline_class(family, controlnet=bool(nets))
    parts: dict[str, Any] = {}
    if nets:
        parts["controlnet"] = nets[0] if len(nets) == 1 else nets
    if family != "sdxl":
        parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if source.kind == "diffusers":
        if vae is not None:
            parts["vae"] = load_vae(vae, family=family, config=source.path, models_dir=models_dir, dtype=dtype)
        with _loading("model", source.path):
            # mypy sees diffusers' unannotated dummy classes (diffusers/__init__.py's TYPE_CHECKING branch)
            pipe: DiffusionPipeline = cls.from_pretrained(  # type: ignore[no-untyped-call, unused-ignore]
                source.path, local_files_only=True, torch_dtype=dtype, **parts
            )
    else:
        pipe = _from_single_file(cls, source, family, parts, config, vae, models_dir, dtype)
    logger.info("loaded %s (%s, %s) as %s", source.path, family, source.kind, type(pipe).__name__)
    # diffusers' dummy DiffusionPipeline (what mypy sees) has no `to`; the real one does
    moved: DiffusionPipeline = pipe.to(device)  # type: ignore[attr-defined]
    return moved
