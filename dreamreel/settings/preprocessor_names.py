"""The ControlNet preprocessor names dreamreel supports, checkable without importing torch.

:mod:`dreamreel.controlnet.preprocessors` builds the detectors and imports torch; the settings
layer only needs to know whether a name (``cn_1_module``, ``controlnet[0].preprocessor``) is one
that a render can use, so that ``dreamreel plan`` and ``--preview`` refuse the same files that a
render refuses. A test keeps this list equal to the detectors'.
"""

from __future__ import annotations

import re

from dreamreel.errors import SettingsError, did_you_mean

PREPROCESSOR_NAMES: tuple[str, ...] = (
    "none",
    "canny",
    "hed",
    "hed_safe",
    "openpose",
    "openpose_hand",
    "openpose_face",
    "openpose_faceonly",
    "openpose_full",
)
"""The canonical preprocessor names."""

PREPROCESSOR_ALIASES: dict[str, str] = {"softedge_hed": "hed", "softedge_hedsafe": "hed_safe", "hedsafe": "hed_safe"}
"""Other spellings (sd-webui-controlnet's) -> canonical name."""


def canonical_preprocessor(name: str, *, key: str | None = None) -> str:
    """The canonical name of a preprocessor written the A1111 / Deforum / dreamreel way (any case).

    Raises:
        SettingsError: an unknown or unsupported name; the message suggests the closest names and
            lists every supported one.
    """
    text = str(name).strip()
    folded = re.sub(r"[\s-]+", "_", text.lower())
    folded = PREPROCESSOR_ALIASES.get(folded, folded)
    if folded in PREPROCESSOR_NAMES:
        return folded
    choices = [*PREPROCESSOR_NAMES, *PREPROCESSOR_ALIASES]
    raise SettingsError(
        f"unknown ControlNet preprocessor {text!r}.{did_you_mean(text, choices)} "
        f"dreamreel supports: {', '.join(choices)}. With 'none', the unit's input images are the control maps "
        "as they are (give the matching ControlNet model), so depth or other maps made elsewhere can be used.",
        key=key,
    )
