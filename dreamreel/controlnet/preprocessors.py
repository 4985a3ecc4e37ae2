"""ControlNet preprocessors ("annotators"): turn a video frame into a control map.

Build a preprocessor once per run with :func:`make_preprocessor` (detector weights load once) and
call it on every frame. Names follow sd-webui-controlnet / Deforum's ``cn_N_module`` spellings,
case-insensitively (weights needed in brackets):

- ``openpose`` body pose [body]; ``openpose_hand`` body + hands [body, hand]; ``openpose_face``
  body + face [body, face]; ``openpose_faceonly`` face only [body, face]; ``openpose_full`` body
  + hands + face [body, hand, face].
- ``hed`` (``softedge_hed``) soft HED edges [HED]; ``hed_safe`` (``softedge_hedsafe``) HED
  quantised to a few levels, A1111's "safe" mode [HED].
- ``canny``: OpenCV Canny edges with ``low_threshold`` / ``high_threshold`` (A1111's threshold A
  / B) [no weights].
- ``none``: the input unchanged, for control images the user supplies [no weights].

Weights are the lllyasviel/Annotators files (``body_pose_model.pth``, ``hand_pose_model.pth``,
``facenet.pth``, ``ControlNetHED.pth``), found in the annotators folder (or one folder below it,
as in sd-webui-controlnet's ``annotator/downloads/<module>/``) or in the local Hugging Face cache.
Nothing is ever downloaded, and ``.pth`` files are read with ``torch.load(weights_only=True)``.

Maps keep the input's aspect ratio exactly: a detector works at its own size (controlnet-aux
rounds to multiples of 64), and its map is resized so that its short side is
``detect_resolution`` and its long side follows the input's aspect. Resizing to the generation
size is :func:`dreamreel.controlnet.resize.resize_map`'s job. controlnet-aux is imported lazily.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Protocol, runtime_checkable

import cv2
import numpy as np
import torch

from dreamreel.controlnet.resize import scale_map
from dreamreel.errors import MissingDependencyError, ModelLoadError, SettingsError
from dreamreel.generation import Image
from dreamreel.settings.preprocessor_names import PREPROCESSOR_ALIASES, canonical_preprocessor

logger = logging.getLogger(__name__)

ANNOTATORS_REPO = "lllyasviel/Annotators"
"""The Hugging Face repository whose file names and layout the annotators folder uses."""

AnnotatorPart = Literal["hed", "body", "hand", "face"]
ANNOTATOR_FILES: dict[AnnotatorPart, str] = {
    "hed": "ControlNetHED.pth",
    "body": "body_pose_model.pth",
    "hand": "hand_pose_model.pth",
    "face": "facenet.pth",
}
"""The weight file of each detector network."""

_KEY_VERSION = "v1"  # bump when the way a map is made changes, so cached maps are not reused


@runtime_checkable
class Preprocessor(Protocol):
    """Turns an (H, W, 3) uint8 RGB frame into an (h, w, 3) uint8 RGB control map.

    Attributes:
        name: the canonical preprocessor name (e.g. ``"openpose_full"``).
        key: a stable string of the name and of every setting (and weights) that changes the
            output; equal keys mean equal maps for equal frames (used by the map cache).
    """

    name: str
    key: str

    def __call__(self, image: Image) -> Image:
        """Return the control map of ``image``."""
        ...


@dataclass(frozen=True)
class _Spec:
    kind: Literal["none", "canny", "hed", "openpose"]
    parts: tuple[AnnotatorPart, ...] = ()
    flags: tuple[str, ...] = ()  # hed: "safe"; openpose: "body", "hand", "face" drawn


_SPECS: dict[str, _Spec] = {
    "none": _Spec("none"),
    "canny": _Spec("canny"),
    "hed": _Spec("hed", ("hed",)),
    "hed_safe": _Spec("hed", ("hed",), ("safe",)),
    "openpose": _Spec("openpose", ("body",), ("body",)),
    "openpose_hand": _Spec("openpose", ("body", "hand"), ("body", "hand")),
    "openpose_face": _Spec("openpose", ("body", "face"), ("body", "face")),
    "openpose_faceonly": _Spec("openpose", ("body", "face"), ("face",)),
    "openpose_full": _Spec("openpose", ("body", "hand", "face"), ("body", "hand", "face")),
}
_ALIASES = PREPROCESSOR_ALIASES
PREPROCESSOR_NAMES: tuple[str, ...] = tuple(_SPECS)
"""The canonical preprocessor names."""

_CANNY_DEFAULTS = {"low_threshold": 100, "high_threshold": 200}


def canonical_name(name: str, *, key: str | None = None) -> str:
    """Return the canonical name of a preprocessor spelled the A1111 / Deforum / dreamreel way.

    The names are :mod:`dreamreel.settings.preprocessor_names`' (checkable without torch); a test keeps them
    equal to the detectors here.

    Raises:
        SettingsError: unknown name; the message suggests the closest names and lists them all.
    """
    return canonical_preprocessor(name, key=key)


def required_weight_files(name: str) -> tuple[str, ...]:
    """The lllyasviel/Annotators file names a preprocessor needs (empty for canny and none)."""
    return tuple(ANNOTATOR_FILES[part] for part in _SPECS[canonical_name(name)].parts)


# --- controlnet-aux networks ----------------------------------------------------------------------


def _aux(module: str) -> ModuleType:
    """Import ``controlnet_aux.<module>`` (the package imports every detector: slow, warns)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(f"controlnet_aux.{module}")
    except ImportError as error:
        raise MissingDependencyError("controlnet-aux", "The HED and OpenPose ControlNet preprocessors") from error


def new_annotator_network(part: AnnotatorPart) -> torch.nn.Module:
    """A detector network with PyTorch's default (random) initialisation, in eval mode."""
    network: torch.nn.Module  # a dynamically imported module's attributes are Any to mypy
    if part == "hed":
        network = _aux("hed").ControlNetHED_Apache2()
    elif part == "face":
        network = _aux("open_pose.face").FaceNet()
    else:
        model = _aux("open_pose.model")
        network = model.bodypose_model() if part == "body" else model.handpose_model()
    return network.eval()


def _strips_first_name(part: AnnotatorPart) -> bool:
    # the body/hand files name each weight without the network's first module name
    return part in ("body", "hand")


def annotator_state_dict(part: AnnotatorPart, network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The network's weights with the key names of the lllyasviel/Annotators file for ``part``."""
    state = network.state_dict()
    if _strips_first_name(part):
        return {key.split(".", 1)[1]: value for key, value in state.items()}
    return dict(state)


def load_annotator_network(part: AnnotatorPart, path: Path | str) -> torch.nn.Module:
    """Load one detector network from its ``.pth`` file (fp16 or fp32) with ``weights_only=True``.

    Raises:
        ModelLoadError: the file is unreadable, not a plain tensor dict, or for another network.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for bad files (pickle, zip, EOF, runtime)
        raise _bad_file(path, part, f"{type(error).__name__}: {error}") from error
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _bad_file(path, part, "it does not hold a plain dict of tensors")
    network = new_annotator_network(part)
    try:
        if _strips_first_name(part):
            state = {key: state[key.split(".", 1)[1]] for key in network.state_dict()}
        network.load_state_dict(state)
    except (KeyError, RuntimeError) as error:
        raise _bad_file(path, part, f"its weights do not fit the network ({type(error).__name__}: {error})") from error
    return network.float().eval()


def _bad_file(path: Path, part: AnnotatorPart, reason: str) -> ModelLoadError:
    reason = reason.strip().rstrip(".")[:500]
    return ModelLoadError(
        f"Could not load the annotator weights {path} ({part} detector): {reason}. Replace it with "
        f"{ANNOTATOR_FILES[part]} from {ANNOTATORS_REPO}, e.g. `hf download {ANNOTATORS_REPO} "
        f"{ANNOTATOR_FILES[part]} --local-dir {path.parent}`."
    )


def network_fingerprint(*networks: torch.nn.Module | None) -> str:
    """A short hash of the networks' weights (names, shapes and the first 1024 values of each)."""
    digest = hashlib.blake2b(digest_size=8)
    for network in networks:
        if network is None:
            digest.update(b"<none>")
            continue
        for name, tensor in network.state_dict().items():
            head = tensor.detach().reshape(-1)[:1024].to("cpu", torch.float32).contiguous()
            digest.update(f"{name}{tuple(tensor.shape)}".encode())
            digest.update(head.numpy().tobytes())
    return digest.hexdigest()


def _hub_cached(filename: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a controlnet-aux dependency
        return None
    found = try_to_load_from_cache(ANNOTATORS_REPO, filename)
    return Path(found) if isinstance(found, str) else None


def find_weight_file(filename: str, annotators: Path | str | None) -> Path | None:
    """Find an annotator file in ``annotators``, one folder below it, or the local HF cache."""
    if annotators is not None:
        folder = Path(annotators).expanduser()
        if (folder / filename).is_file():
            return folder / filename
        if folder.is_dir():
            below = sorted(p for p in folder.glob(f"*/{filename}") if p.is_file())
            if below:
                return below[0]
    return _hub_cached(filename)


def _missing_weights(name: str, missing: list[str], annotators: Path | str | None) -> ModelLoadError:
    files = " and ".join(repr(f) for f in missing)
    plural = len(missing) > 1
    it, is_ = ("they", "are") if plural else ("it", "is")
    if annotators is None:
        where = f"no annotators folder was given and {it} {is_} not in the local Hugging Face cache"
        target = "models/annotators"
        advice = f"Pass an annotators folder that holds {'them' if plural else 'it'}"
    else:
        where = f"{it} {is_} neither in the annotators folder {annotators} nor in the local Hugging Face cache"
        target = str(annotators)
        advice = f"Put {'them' if plural else 'it'} in {annotators}"
    commands = "; ".join(f"`hf download {ANNOTATORS_REPO} {f} --local-dir {target}`" for f in missing)
    return ModelLoadError(
        f"The ControlNet preprocessor {name!r} needs the weight file{'s' if plural else ''} {files}, but {where}. "
        f"dreamreel never downloads models. {advice} (with the {ANNOTATORS_REPO} file names), for example: "
        f"{commands}."
    )


# --- preprocessors --------------------------------------------------------------------------------


def _check_image(image: Image) -> Image:
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
        raise ValueError(f"a frame must be an (H, W, 3) uint8 RGB array, got {array.dtype} {array.shape}")
    return array


def map_size(width: int, height: int, detect_resolution: int) -> tuple[int, int]:
    """The (width, height) of a map: short side ``detect_resolution``, the input's aspect ratio."""
    scale = detect_resolution / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


class PassthroughPreprocessor:
    """``none``: returns the input unchanged (for control images the user supplies)."""

    name = "none"
    key = "none"

    def __call__(self, image: Image) -> Image:
        """Return ``image`` itself."""
        return _check_image(image)


class CannyPreprocessor:
    """``canny``: OpenCV Canny edges (white on black), computed at the detect resolution."""

    name = "canny"

    def __init__(
        self, *, low_threshold: float = 100, high_threshold: float = 200, detect_resolution: int = 512
    ) -> None:
        self.low_threshold = float(low_threshold)
        self.high_threshold = float(high_threshold)
        self.detect_resolution = int(detect_resolution)
        thresholds = f"low={self.low_threshold:g}|high={self.high_threshold:g}"
        self.key = f"canny|{_KEY_VERSION}|res={self.detect_resolution}|{thresholds}"

    def __call__(self, image: Image) -> Image:
        """Return the edge map, short side ``detect_resolution``."""
        image = _check_image(image)
        width, height = map_size(image.shape[1], image.shape[0], self.detect_resolution)
        edges = cv2.Canny(scale_map(image, width, height), self.low_threshold, self.high_threshold)
        return np.repeat(edges[:, :, None], 3, axis=2)


class _DetectorPreprocessor:
    """Shared part of the controlnet-aux detectors: runs ``self._detector`` and fixes the size."""

    name: str
    key: str
    detect_resolution: int
    _detector: Any

    def _options(self) -> dict[str, Any]:
        return {}

    def __call__(self, image: Image) -> Image:
        """Return the control map of ``image``: short side ``detect_resolution``, input's aspect."""
        image = _check_image(image)
        res = self.detect_resolution
        options = {"detect_resolution": res, "image_resolution": res, "output_type": "np", **self._options()}
        detected = self._detector(image, **options)
        width, height = map_size(image.shape[1], image.shape[0], res)
        return scale_map(np.asarray(detected, dtype=np.uint8), width, height)


class HedPreprocessor(_DetectorPreprocessor):
    """``hed`` / ``hed_safe``: controlnet-aux's HED soft edges from a ``ControlNetHED_Apache2`` network.

    Args:
        network: the HED network (e.g. from :func:`load_annotator_network`); moved to ``device``.
        safe: quantise the edges (A1111's ``softedge_hedsafe``).
        detect_resolution: short side the detector works at (and of the map).
        device: torch device.
    """

    def __init__(
        self, network: torch.nn.Module, *, safe: bool = False, detect_resolution: int = 512, device: str = "cpu"
    ) -> None:
        network = network.to(torch.device(device)).eval()
        self._detector = _aux("hed").HEDdetector(network)
        self.safe = bool(safe)
        self.detect_resolution = int(detect_resolution)
        self.name = "hed_safe" if self.safe else "hed"
        self.key = f"{self.name}|{_KEY_VERSION}|res={self.detect_resolution}|weights={network_fingerprint(network)}"

    def _options(self) -> dict[str, Any]:
        return {"safe": self.safe}


class OpenposePreprocessor(_DetectorPreprocessor):
    """``openpose*``: controlnet-aux's OpenPose from body (and optional hand / face) networks.

    Args:
        body: ``bodypose_model`` network (always needed: it finds people, hands and faces).
        hand: ``handpose_model`` network, needed when ``include_hand``.
        face: ``FaceNet`` network, needed when ``include_face``.
        include_body, include_hand, include_face: what is drawn.
        detect_resolution: short side the detector works at (and of the map).
        device: torch device.
    """

    def __init__(
        self,
        body: torch.nn.Module,
        hand: torch.nn.Module | None = None,
        face: torch.nn.Module | None = None,
        *,
        include_body: bool = True,
        include_hand: bool = False,
        include_face: bool = False,
        detect_resolution: int = 512,
        device: str = "cpu",
    ) -> None:
        if (include_hand and hand is None) or (include_face and face is None):
            raise ValueError("include_hand needs the hand network and include_face the face network")
        self.include = (bool(include_body), bool(include_hand), bool(include_face))
        self.detect_resolution = int(detect_resolution)
        self.name = _openpose_name(*self.include)
        self._detector = _openpose_detector(body, hand, face, torch.device(device))
        weights = network_fingerprint(body, hand if include_hand else None, face if include_face else None)
        drawn = "|".join(f"{part}={int(on)}" for part, on in zip(("body", "hand", "face"), self.include, strict=True))
        self.key = f"openpose|{_KEY_VERSION}|{drawn}|res={self.detect_resolution}|weights={weights}"

    def _options(self) -> dict[str, Any]:
        body, hand, face = self.include
        return {"include_body": body, "include_hand": hand, "include_face": face}


def _openpose_name(body: bool, hand: bool, face: bool) -> str:
    drawn = {part for part, on in (("body", body), ("hand", hand), ("face", face)) if on}
    for name, spec in _SPECS.items():
        if spec.kind == "openpose" and set(spec.flags) == drawn:
            return name
    return "openpose_custom"


def _openpose_detector(
    body: torch.nn.Module, hand: torch.nn.Module | None, face: torch.nn.Module | None, device: torch.device
) -> Any:
    """Wrap the networks in controlnet-aux's Body/Hand/Face without their file-loading constructors."""
    open_pose = _aux("open_pose")
    body_estimation = object.__new__(open_pose.Body)
    body_estimation.model = body.to(device).eval()
    hand_estimation = face_estimation = None
    if hand is not None:
        hand_estimation = object.__new__(open_pose.Hand)
        hand_estimation.model = hand.to(device).eval()
    if face is not None:
        face_module = _aux("open_pose.face")
        face_estimation = object.__new__(face_module.Face)
        face_estimation.model = face.to(device).eval()
        face_estimation.inference_size = face_module.params["inference_img_size"]
        face_estimation.sigma = face_module.params["gaussian_sigma"]
        face_estimation.threshold = face_module.params["heatmap_peak_thresh"]
    return open_pose.OpenposeDetector(body_estimation, hand_estimation, face_estimation)


def _check_options(name: str, detect_resolution: int, options: dict[str, Any], key: str | None) -> dict[str, float]:
    def where(option: str) -> str:
        return f"{key}.{option}" if key else option

    for option in options:
        if option not in _CANNY_DEFAULTS:
            raise SettingsError(
                f"the {name!r} preprocessor has no option {option!r}; the options are "
                f"{', '.join(_CANNY_DEFAULTS)} (canny only; the others ignore them).",
                key=where(option),
            )
    checked = {"detect_resolution": detect_resolution}
    if name == "canny":
        checked |= {**_CANNY_DEFAULTS, **options}
    for option, value in checked.items():
        low, high = (64, 4096) if option == "detect_resolution" else (0, 255)
        whole = option == "detect_resolution"
        if isinstance(value, bool) or not isinstance(value, int | float) or (whole and value != int(value)):
            kind = "a whole number" if whole else "a number"
            message = f"{option} of the {name!r} preprocessor must be {kind}, got {value!r}."
            raise SettingsError(message, key=where(option))
        if not low <= value <= high:
            raise SettingsError(
                f"{option} of the {name!r} preprocessor must be between {low} and {high}, got {value}.",
                key=where(option),
            )
    return {k: float(v) for k, v in checked.items() if k != "detect_resolution"}


def make_preprocessor(
    name: str,
    *,
    annotators: Path | str | None = None,
    device: str = "cpu",
    detect_resolution: int = 512,
    key: str | None = None,
    **options: Any,
) -> Preprocessor:
    """Build a preprocessor by name, loading its detector weights once.

    Args:
        name: a preprocessor name or alias (see the module docstring), any case.
        annotators: folder with lllyasviel/Annotators weight files; when a file is not there (or
            one folder below), the local Hugging Face cache of ``lllyasviel/Annotators`` is used.
        device: torch device for the detector networks.
        detect_resolution: short side of the detector's working size and of the map, 64..4096
            (A1111's "Preprocessor Resolution"); checked for every name, ``none`` ignores it.
        key: the settings key of the unit (e.g. ``"controlnet.0"``), for error messages.
        **options: ``low_threshold`` (default 100) and ``high_threshold`` (200), 0..255: canny's
            thresholds (A1111's threshold A and B). Every preprocessor accepts them (like A1111,
            which passes both to every module); only canny uses and checks them.

    Raises:
        SettingsError: unknown name, unknown option or a value out of range.
        ModelLoadError: a weight file is missing (the message says where to put it and how to get
            it) or cannot be loaded.
        MissingDependencyError: controlnet-aux is not installed (HED / OpenPose only).
    """
    canonical = canonical_name(name, key=f"{key}.preprocessor" if key else None)
    spec = _SPECS[canonical]
    values = _check_options(canonical, detect_resolution, options, key)
    if spec.kind == "none":
        return PassthroughPreprocessor()
    if spec.kind == "canny":
        return CannyPreprocessor(detect_resolution=int(detect_resolution), **values)
    paths = {part: find_weight_file(ANNOTATOR_FILES[part], annotators) for part in spec.parts}
    missing = [ANNOTATOR_FILES[part] for part, path in paths.items() if path is None]
    if missing:
        raise _missing_weights(canonical, missing, annotators)
    networks = {part: load_annotator_network(part, path) for part, path in paths.items() if path is not None}
    logger.info("Loaded %s annotator weights: %s", canonical, ", ".join(str(p) for p in paths.values()))
    if spec.kind == "hed":
        return HedPreprocessor(
            networks["hed"], safe="safe" in spec.flags, detect_resolution=int(detect_resolution), device=device
        )
    return OpenposePreprocessor(
        networks["body"],
        networks.get("hand"),
        networks.get("face"),
        include_body="body" in spec.flags,
        include_hand="hand" in spec.flags,
        include_face="face" in spec.flags,
        detect_resolution=int(detect_resolution),
        device=device,
    )
