"""Finding model files by path, A1111 name or hash in an AUTOMATIC1111 models folder.

``--models-dir DIR`` is an AUTOMATIC1111 install folder (:class:`ModelPaths`): checkpoints in
``DIR/models/Stable-diffusion``, LoRAs in ``DIR/models/Lora``, VAEs in ``DIR/models/VAE``,
embeddings in ``DIR/embeddings`` and ControlNets in ``DIR/models/ControlNet``. A name matches a
file's stem or relative path (any case, with or without extension, in subfolders too), and
A1111's ``name [hash]`` form and bare hashes (:mod:`dreamreel.pipelines.hashes`) work as well. An
unknown name raises a :class:`~dreamreel.errors.ModelLoadError` with the closest names. Nothing is
loaded here (:mod:`dreamreel.pipelines.loading` loads), and nothing touches the network.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from dreamreel.errors import ModelLoadError, did_you_mean
from dreamreel.pipelines import hashes, safety

logger = logging.getLogger(__name__)

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
"""A Hugging Face model id (``org/name``)."""

_HASH_SUFFIX = re.compile(r"^(?P<name>.*?)\s*\[(?P<hash>[0-9a-fA-F]{8,64})\]\s*$")
_HEX = re.compile(r"^[0-9a-fA-F]{8,64}$")
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
    try:
        return _find(name, "ControlNet", ModelPaths.a1111(models_dir).controlnet, safety.WEIGHT_SUFFIXES, folders=True)
    except _NotFound as missing:
        if not HUB_ID.match(name.strip()) or Path(name.strip()).suffix.lower() in safety.WEIGHT_SUFFIXES:
            raise
        return _controlnet_from_hub_cache(name.strip(), missing)


def hub_snapshot(repo_id: str, *, otherwise: str) -> Path:
    """The folder of ``repo_id`` in the local Hugging Face cache (never downloaded).

    Args:
        repo_id: ``org/name``.
        otherwise: what the user can pass instead, for the error message.

    Raises:
        ModelLoadError: it is not in the cache.
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{repo_id!r} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}), and dreamreel never "
            f"downloads models. Download it yourself first "
            f"(hf download {repo_id}), or {otherwise}"
        ) from exc


def _controlnet_from_hub_cache(repo_id: str, missing: ModelLoadError) -> Path:
    """A ControlNet's diffusers folder from the local Hugging Face cache."""
    folder = hub_snapshot(
        repo_id,
        otherwise=f"give a local ControlNet as PREPROCESSOR:WEIGHT:PATH (a diffusers folder or a .safetensors file). "
        f"{missing}",
    )
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{repo_id!r} in the Hugging Face cache ({folder}) has no config.json: not a ControlNet")
    return folder
