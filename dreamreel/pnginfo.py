"""A1111 generation parameters: the ``parameters`` PNG text chunk that PNG Info and civitai read.

Format (as the WebUI writes it)::

    a red fox in the snow, (masterpiece:1.2)
    Negative prompt: blurry, lowres
    Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234, Size: 512x768, Model hash: 6ce0161689, Model: v1-5

Writing follows A1111's ``create_infotext`` (``modules/processing.py``): the prompt, then
``"\\nNegative prompt: ..."`` when the negative prompt is not empty, then ``"\\n"`` and the pairs
joined by ``", "``, the whole text stripped (an empty prompt gives no leading newline, no pairs no
trailing one). A pair is ``Key: value``, or the key alone when the value equals the key; a None value
is left out, an empty one is written ``Key: `` (a key, a colon and a space). A value is JSON-quoted
(``json.dumps(..., ensure_ascii=False)``) only when it contains a comma, a colon or a newline
(``infotext_utils.quote``): a value with a ``"`` and none of those is written as it is.

Reading follows A1111's ``parse_generation_parameters`` (``modules/infotext_utils.py``): the last
line holds the pairs when A1111's pair pattern finds at least 3 in it; every other line is stripped,
a stripped line starting ``Negative prompt:`` starts the negative prompt, and lines are joined with
``"\\n"`` (onto a non-empty text; a blank first line adds nothing). A value in double quotes is
JSON-decoded; one that is not valid JSON stays as written, quotes included. Keys are not stripped
and values are kept exactly as the pattern finds them. Unlike A1111, which drops a pair with an empty
value (its ``v[0]`` raises and the pair is skipped), :class:`GenerationInfo` keeps it as ``""`` so
the text round-trips; :func:`paste_params` drops it as A1111 does, then fills in A1111's paste-time
defaults (:data:`A1111_PASTE_DEFAULTS`).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dreamreel.errors import SettingsError

PARAMETERS_KEY = "parameters"
_PAIR = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
"""A1111's ``re_param``: a key (a word character, then word characters, spaces, ``-`` or ``/``), a
colon, and a JSON-quoted value or anything up to the next comma."""
_NEGATIVE = "Negative prompt:"

A1111_PASTE_DEFAULTS: Mapping[str, str] = {
    "Clip skip": "1",
    "Hires resize-1": "0",
    "Hires resize-2": "0",
    "Hires sampler": "Use same sampler",
    "Hires checkpoint": "Use same checkpoint",
    "Hires prompt": "",
    "Hires negative prompt": "",
    "Mask mode": "Inpaint masked",
    "Masked content": "original",
    "Inpaint area": "Whole picture",
    "Masked area padding": "32",
    "RNG": "GPU",
    "Schedule type": "Automatic",
    "Schedule max sigma": "0",
    "Schedule min sigma": "0",
    "Schedule rho": "0",
    "VAE Encoder": "Full",
    "VAE Decoder": "Full",
    "FP8 weight": "Disable",
}
"""What A1111's ``parse_generation_parameters`` fills in for a missing key, in its order (as text;
A1111 stores some as numbers). ``Hires resize-1``/``-2`` stand for ``Hires resize``; A1111 also adds
``Cache FP16 weight for LoRA: False`` when ``FP8 weight`` is not ``Disable``."""


@dataclass(frozen=True, slots=True)
class GenerationInfo:
    """What A1111 records about one image."""

    prompt: str
    negative_prompt: str = ""
    params: dict[str, str] = field(default_factory=dict)  # "Steps" -> "20", in order

    def to_text(self) -> str:
        """The ``parameters`` text, exactly as A1111's ``create_infotext`` writes it."""
        pairs = ", ".join(
            key if key == value else f"{key}: {_quote(value)}"
            for key, value in self.params.items()
            if value is not None
        )
        negative = f"\n{_NEGATIVE} {self.negative_prompt}" if self.negative_prompt else ""
        return f"{self.prompt}{negative}\n{pairs}".strip()

    @classmethod
    def from_text(cls, text: str) -> GenerationInfo:
        """Parse A1111's ``parameters`` text (as written by A1111, civitai or dreamreel), as A1111 does."""
        *lines, last = text.strip().split("\n")
        if len(_PAIR.findall(last)) < 3:
            lines.append(last)
            last = ""
        prompt = negative = ""
        in_negative = False
        for raw in lines:
            line = raw.strip()
            if line.startswith(_NEGATIVE):
                in_negative = True
                line = line[len(_NEGATIVE) :].strip()
            if in_negative:
                negative += ("\n" if negative else "") + line
            else:
                prompt += ("\n" if prompt else "") + line
        params: dict[str, str] = {}
        for key, value in _PAIR.findall(last):
            params[key] = _unquote(value)
        return cls(prompt, negative, params)

    def number(self, key: str, default: float | None = None) -> float | None:
        """A numeric parameter, or ``default`` when absent."""
        value = self.params.get(key)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise SettingsError(f"{key!r} is {value!r}, not a number", key="parameters")
        return number

    def size(self) -> tuple[int, int] | None:
        """(width, height) from ``Size: WxH``."""
        value = self.params.get("Size")
        if not value:
            return None
        match = re.fullmatch(r"(\d+)x(\d+)", value.strip())
        if not match:
            raise SettingsError(f"'Size' is {value!r}; expected WIDTHxHEIGHT", key="parameters")
        return int(match.group(1)), int(match.group(2))


def paste_params(info: GenerationInfo) -> dict[str, str]:
    """The parameters as A1111's paste sees them: empty values dropped, A1111's defaults filled in.

    ``Hires resize: WxH`` counts as A1111's ``Hires resize-1``/``-2`` (it is kept under its own key), so
    the ``0`` defaults are added only when it is absent. Prompt-side steps of A1111's paste (styles,
    ``Hypernet``, old hires-fix sizes, version back-compatibility, skipped fields) are not applied.
    """
    params = {key: value for key, value in info.params.items() if value != ""}
    for key, value in A1111_PASTE_DEFAULTS.items():
        if key.startswith("Hires resize-") and "Hires resize" in params:
            continue
        params.setdefault(key, value)
    if params["FP8 weight"] != "Disable":
        params.setdefault("Cache FP16 weight for LoRA", "False")
    return params


def _quote(value: object) -> str:
    """A1111's ``quote``: JSON only for a value with a comma, a newline or a colon."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _unquote(value: str) -> str:
    """A1111's ``unquote``: a double-quoted value is JSON-decoded; invalid JSON stays as written."""
    if len(value) < 1 or value[0] != '"' or value[-1] != '"':
        return value
    try:
        decoded = json.loads(value)
    except json.JSONDecodeError:
        return value
    return decoded if isinstance(decoded, str) else value


def png_text(params: Mapping[str, str]) -> object:
    """A ``PIL.PngImagePlugin.PngInfo`` holding the given text chunks (for ``Image.save(pnginfo=...)``)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in params.items():
        if value.isascii():
            info.add_text(key, value)
        else:
            info.add_itxt(key, value)
    return info


def read_info(path: str | os.PathLike[str], *, key: str | None = None) -> GenerationInfo:
    """Read the A1111 parameters of a PNG file.

    Args:
        path: the PNG.
        key: the option or setting that named the file (``--from``), for error messages.

    Raises:
        SettingsError: the file is missing, not an image, or has no ``parameters`` chunk.
    """
    from PIL import Image, UnidentifiedImageError

    file = Path(path)
    try:
        with Image.open(file) as image:
            text = image.info.get(PARAMETERS_KEY)
    except FileNotFoundError:
        raise SettingsError("file not found", key=key, source=str(file)) from None
    except IsADirectoryError:
        raise SettingsError("is a directory; give a PNG file", key=key, source=str(file)) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise SettingsError(f"not an image: {exc}", key=key, source=str(file)) from exc
    if not text:
        raise SettingsError(
            "has no A1111 'parameters' text chunk (it was not saved by A1111, dreamreel or a tool that keeps PNG info)",
            key=key, source=str(file),
        )  # fmt: skip
    return GenerationInfo.from_text(str(text))
