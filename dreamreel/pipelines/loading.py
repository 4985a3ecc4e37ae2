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
(:mod:`dreamreel.pipelines.hashes`) work as well. Pickle files are read only through
:mod:`dreamreel.pipelines.safety`. Nothing here touches the network.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from dreamreel.errors import ModelLoadError, did_you_mean
from dreamreel.pipelines import hashes, safety
from dreamreel.pipelines.configs import (
    Family,
    controlnet_config_dir,
    detect_family,
    skeleton_components,
    skeleton_dir,
)

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, AutoencoderTiny, ControlNetModel, DiffusionPipeline

logger = logging.getLogger(__name__)

_HASH_SUFFIX = re.compile(r"^(?P<name>.*?)\s*\[(?P<hash>[0-9a-fA-F]{8,64})\]\s*$")
_HEX = re.compile(r"^[0-9a-fA-F]{8,64}$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_MARKERS = ("model_index.json", "config.json")


@dataclass(frozen=True)
class ModelPaths:
    """The folders each kind of model is looked up in (first folder first)."""

    checkpoints: tuple[Path, ...] = ()
    lora: tuple[Path, ...] = ()
    vae: tuple[Path, ...] = ()
    embeddings: tuple[Path, ...] = ()
    controlnet: tuple[Path, ...] = ()
    hypernetworks: tuple[Path, ...] = ()

    @classmethod
    def a1111(cls, root: Path | None) -> ModelPaths:
        """The layout of an AUTOMATIC1111 install at ``root`` (no folders when ``root`` is None)."""
        if root is None:
            return cls()
        root = Path(root).expanduser()
        models = root / "models"
        return cls(
            checkpoints=(models / "Stable-diffusion",),
            lora=(models / "Lora", models / "LyCORIS"),
            vae=(models / "VAE",),
            embeddings=(root / "embeddings",),
            controlnet=(models / "ControlNet", root / "extensions" / "sd-webui-controlnet" / "models"),
            hypernetworks=(models / "hypernetworks",),
        )


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


# --- finding files ------------------------------------------------------------------------------


class _NotFound(ModelLoadError):
    """Nothing had the name (as opposed to a file that was found but is unusable)."""


@dataclass(frozen=True)
class _Candidate:
    path: Path
    rel: str  # relative to its search folder, posix


def _walk(folder: Path, suffixes: Sequence[str], folders: bool) -> Iterator[_Candidate]:
    for here, dirs, files in os.walk(folder, followlinks=True):
        base = Path(here)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if folders:
            for name in list(dirs):
                if any((base / name / marker).is_file() for marker in _MARKERS):
                    dirs.remove(name)  # a model folder is one candidate; do not look inside
                    yield _Candidate(base / name, (base / name).relative_to(folder).as_posix())
        for name in sorted(files):
            if Path(name).suffix.lower() in suffixes:
                yield _Candidate(base / name, (base / name).relative_to(folder).as_posix())


def _candidates(dirs: Sequence[Path], suffixes: Sequence[str], folders: bool) -> list[_Candidate]:
    return [c for d in dirs if d.is_dir() for c in _walk(d, suffixes, folders)]


def _labels(candidate: _Candidate) -> set[str]:
    rel = candidate.rel
    no_ext = rel[: -len(candidate.path.suffix)] if candidate.path.is_file() and candidate.path.suffix else rel
    return {rel, no_ext, candidate.path.name, Path(no_ext).name}


def _by_name(name: str, candidates: list[_Candidate]) -> list[_Candidate]:
    wanted = name.replace("\\", "/").strip("/")
    exact = [c for c in candidates if wanted in _labels(c)]
    found = exact or [c for c in candidates if wanted.lower() in {x.lower() for x in _labels(c)}]
    safe = [c for c in found if c.path.suffix.lower() == ".safetensors"]
    if len(found) > 1 and len(safe) == 1 and all(c.path.with_suffix("") == safe[0].path.with_suffix("") for c in found):
        return safe  # "model" names model.safetensors and model.ckpt: take the safetensors one
    return found


def _by_hash(wanted: str, candidates: list[_Candidate]) -> list[_Candidate]:
    files = [c for c in candidates if c.path.is_file()]
    wanted = wanted.lower()
    if len(wanted) == 8:
        found = [c for c in files if hashes.legacy_hash(c.path) == wanted]
        if found:
            return found
    return [c for c in files if hashes.sha256(c.path).startswith(wanted)]


def _is_model_path(path: Path, suffixes: Sequence[str], folders: bool) -> bool:
    if path.is_file():
        return path.suffix.lower() in suffixes
    return folders and any((path / marker).is_file() for marker in _MARKERS)


def _find(name: str, what: str, dirs: Sequence[Path], suffixes: Sequence[str], *, folders: bool = False) -> Path:
    """Find a model file (or folder) by path, name or hash; raise a helpful ModelLoadError if absent."""
    text = name.strip()
    direct = Path(text).expanduser()
    if text and _is_model_path(direct, suffixes, folders):
        return direct
    match = _HASH_SUFFIX.match(text)
    plain, wanted_hash = (match["name"], match["hash"]) if match else (text, None)
    candidates = _candidates(dirs, suffixes, folders)
    found = _by_name(plain, candidates) if plain else []
    if not found and (wanted_hash or _HEX.match(plain)):
        found = _by_hash(wanted_hash or plain, candidates)
    if len(found) == 1:
        logger.debug("%s %r is %s", what, name, found[0].path)
        return found[0].path
    if found:
        listing = ", ".join(c.rel for c in found)
        raise ModelLoadError(f"{what} {name!r} matches several files: {listing}. Give the relative path of one.")
    raise _not_found(text, what, dirs, candidates)


def _not_found(name: str, what: str, dirs: Sequence[Path], candidates: list[_Candidate]) -> _NotFound:
    if not dirs:
        return _NotFound(
            f"{what} {name!r}: no such file or folder. Pass a path, or --models-dir with the folder of an "
            "AUTOMATIC1111 install to look models up by name."
        )
    existing = [d for d in dirs if d.is_dir()]
    if not existing:
        return _NotFound(
            f"{what} {name!r}: the folder {dirs[0]} does not exist. --models-dir must be the "
            "stable-diffusion-webui folder itself (the one that holds models/ and embeddings/)."
        )
    names = {Path(c.rel).with_suffix("").as_posix() if c.path.is_file() else c.rel for c in candidates}
    choices = names | {Path(n).name for n in names}
    hint = did_you_mean(name, choices)
    if not hint:  # retry ignoring case, then show the real spelling
        hint = did_you_mean(name.lower(), {c.lower() for c in choices})
        for choice in choices:
            hint = hint.replace(repr(choice.lower()), repr(choice))
    where = ", ".join(str(d) for d in existing)
    return _NotFound(
        f"{what} {name!r} not found in {where} ({len(names)} model(s) there).{hint} Names are file names "
        "with or without extension, relative paths, or A1111 hashes."
    )


def find_checkpoint(name: str, models_dir: Path | None) -> Path:
    """Find a checkpoint file or diffusers folder in ``models_dir/models/Stable-diffusion``."""
    return _find(name, "checkpoint", ModelPaths.a1111(models_dir).checkpoints, safety.WEIGHT_SUFFIXES, folders=True)


def find_lora(name: str, models_dir: Path | None) -> Path:
    """Find a LoRA file in ``models_dir/models/Lora`` (or ``models/LyCORIS``)."""
    return _find(name, "LoRA", ModelPaths.a1111(models_dir).lora, safety.WEIGHT_SUFFIXES)


def find_embedding(name: str, models_dir: Path | None) -> Path:
    """Find a textual-inversion embedding in ``models_dir/embeddings``."""
    return _find(name, "embedding", ModelPaths.a1111(models_dir).embeddings, safety.WEIGHT_SUFFIXES)


def find_vae(name: str, models_dir: Path | None) -> Path:
    """Find a VAE file or diffusers VAE folder in ``models_dir/models/VAE``."""
    return _find(name, "VAE", ModelPaths.a1111(models_dir).vae, safety.WEIGHT_SUFFIXES, folders=True)


def find_controlnet(name: str, models_dir: Path | None, *, model_dir: Path | None = None) -> Path:
    """Find a ControlNet file or diffusers folder.

    Looks in ``model_dir/controlnet-<name>`` (the layout :func:`dreamreel.testing.save_tiny_model`
    writes) and then in ``models_dir/models/ControlNet``.
    """
    if model_dir is not None and Path(model_dir).is_dir():
        beside = Path(model_dir) / f"controlnet-{name.strip()}"
        if (beside / "config.json").is_file():
            return beside
    return _find(name, "ControlNet", ModelPaths.a1111(models_dir).controlnet, safety.WEIGHT_SUFFIXES, folders=True)


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
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{repo_id!r} looks like a Hugging Face model id, but it is not in the local Hugging Face cache "
            f"({constants.HF_HUB_CACHE}), and dreamreel never downloads models. Download it yourself first "
            f"(hf download {repo_id}), or pass a local path: a diffusers model folder or a .safetensors "
            "checkpoint, or a checkpoint name with --models-dir DIR (an AUTOMATIC1111 install)."
        ) from exc
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
    if _HUB_ID.match(text) and Path(text).suffix.lower() not in safety.WEIGHT_SUFFIXES:
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
    return getattr(diffusers, f"StableDiffusion{xl}{'ControlNet' if controlnet else ''}Pipeline")


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
        return cls.from_pretrained(path, local_files_only=True, torch_dtype=dtype)


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
        return AutoencoderKL.from_single_file(
            state, config=str(vae_config), subfolder="vae", local_files_only=True, torch_dtype=dtype
        )


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
            return ControlNetModel.from_pretrained(path, local_files_only=True, torch_dtype=dtype)
    if config is None:
        config = path.parent if (path.parent / "config.json").is_file() else controlnet_config_dir(family)
    state = safety.load_state_dict(path)
    with _loading("ControlNet", path, f" Is it a ControlNet for {family} models?"):
        return ControlNetModel.from_single_file(state, config=str(config), local_files_only=True, torch_dtype=dtype)


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
        return cls.from_single_file(
            str(source.path), config=str(config_dir), local_files_only=True, torch_dtype=dtype, **parts
        )


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
            pipe = cls.from_pretrained(source.path, local_files_only=True, torch_dtype=dtype, **parts)
    else:
        pipe = _from_single_file(cls, source, family, parts, config, vae, models_dir, dtype)
    logger.info("loaded %s (%s, %s) as %s", source.path, family, source.kind, type(pipe).__name__)
    return pipe.to(device)
