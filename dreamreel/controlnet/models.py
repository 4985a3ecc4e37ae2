"""ControlNet models for the preprocessors: the usual model of each, and whether a model fits.

:data:`DEFAULT_CONTROLNET_MODELS` names the SD 1.5 ControlNet 1.1 model that goes with each
preprocessor. :func:`model_families` reads the kind of a ControlNet (pose, soft edge, depth, ...)
from its file or folder name, and :func:`check_model_matches` uses it to refuse a model that is
clearly for another kind of map than the preprocessor makes, before any model loads. Only names
are read here; nothing is loaded or downloaded.
"""

from __future__ import annotations

import re
from pathlib import Path

from dreamreel.controlnet.preprocessors import _SPECS, canonical_name
from dreamreel.errors import SettingsError

_OPENPOSE_MODEL = "lllyasviel/control_v11p_sd15_openpose"
DEFAULT_CONTROLNET_MODELS: dict[str, str] = {
    **{name: _OPENPOSE_MODEL for name, spec in _SPECS.items() if spec.kind == "openpose"},
    "hed": "lllyasviel/control_v11p_sd15_softedge",
    "hed_safe": "lllyasviel/control_v11p_sd15_softedge",
    "canny": "lllyasviel/control_v11p_sd15_canny",
}
"""The usual SD 1.5 ControlNet 1.1 model of each canonical preprocessor name (``none`` has none)."""

# family: (words found inside a name token, whole name tokens)
_MODEL_FAMILIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "openpose": (("openpose", "dwpose"), ("pose",)),
    "softedge": (("softedge", "pidinet"), ("hed", "pidi")),
    "canny": (("canny",), ()),
    "lineart": (("lineart",), ()),
    "scribble": (("scribble", "sketch"), ()),
    "mlsd": (("mlsd",), ()),
    "depth": (("depth", "midas"), ("zoe", "leres")),
    "normal": (("normalbae",), ("normal", "normals")),
    "segmentation": (("segment",), ("seg",)),
    "inpaint": (("inpaint",), ()),
    "tile": (("tile",), ()),
    "shuffle": (("shuffle",), ()),
    "instruct-pix2pix": (("ip2p", "pix2pix"), ()),
}
_EDGES = frozenset({"softedge", "canny", "lineart", "scribble", "mlsd"})
_FITS = {"openpose": frozenset({"openpose"}), "hed": _EDGES, "canny": _EDGES}
_WHAT = {"openpose": "pose", "hed": "soft-edge", "canny": "edge"}


def model_families(model_name: str | Path) -> set[str]:
    """The kinds of ControlNet a model's file or folder name says it is (``"openpose"``, ``"depth"``, ...)."""
    last = re.split(r"[\\/]", str(model_name).rstrip("/\\"))[-1].lower()
    stem = re.sub(r"\.(safetensors|pth|ckpt|bin|pt)$", "", last)
    tokens = [token for token in re.split(r"[^a-z0-9]+", stem) if token]
    return {
        family
        for family, (inner, whole) in _MODEL_FAMILIES.items()
        if any(word in token for token in tokens for word in inner) or any(token in whole for token in tokens)
    }


def check_model_matches(preprocessor_name: str, controlnet_model_name: str | Path, *, key: str | None = None) -> None:
    """Raise when a ControlNet model's name clearly says it is for another kind of map.

    Only the last path component is read (``.../control_v11p_sd15_canny.safetensors``,
    ``lllyasviel/control_v11p_sd15_openpose``). Names that name no kind, or name a fitting one,
    pass; ``none`` fits every model. Edge maps (hed, canny) fit every edge-like model (softedge,
    canny, lineart, scribble, mlsd).

    Raises:
        SettingsError: e.g. preprocessor ``openpose`` with a model named ``*canny*``.
    """
    name = canonical_name(preprocessor_name, key=key)
    kind = _SPECS[name].kind
    if kind not in _FITS:
        return
    families = model_families(controlnet_model_name)
    if not families or families & _FITS[kind]:
        return
    said = " / ".join(sorted(families))
    raise SettingsError(
        f"the preprocessor {name!r} makes {_WHAT[kind]} maps, but the ControlNet model {str(controlnet_model_name)!r} "
        f"is a {said} model by its name. Use a model for {_WHAT[kind]} maps (e.g. {DEFAULT_CONTROLNET_MODELS[name]}) "
        f"or a preprocessor that fits the model; if the name is misleading, rename the file or folder.",
        key=key,
    )
