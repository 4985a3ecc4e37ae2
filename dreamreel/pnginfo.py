"""A1111 generation parameters: the ``parameters`` PNG text chunk that PNG Info and civitai read.

Format (as the WebUI writes it)::

    a red fox in the snow, (masterpiece:1.2)
    Negative prompt: blurry, lowres
    Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234, Size: 512x768, Model hash: 6ce0161689, Model: v1-5

The prompt may span several lines; the negative prompt line is omitted when empty; the last line
holds ``Key: value`` pairs separated by ``", "``, values containing commas or quotes are JSON-quoted.
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
_PAIR = re.compile(r'\s*([\w ()\-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


@dataclass(frozen=True, slots=True)
class GenerationInfo:
    """What A1111 records about one image."""

    prompt: str
    negative_prompt: str = ""
    params: dict[str, str] = field(default_factory=dict)  # "Steps" -> "20", in order

    def to_text(self) -> str:
        """The ``parameters`` text, exactly in A1111's layout."""
        lines = [self.prompt]
        if self.negative_prompt:
            lines.append(f"Negative prompt: {self.negative_prompt}")
        pairs = [f"{key}: {_quote(value)}" for key, value in self.params.items() if value not in ("", None)]
        lines.append(", ".join(pairs))
        return "\n".join(lines)

    @classmethod
    def from_text(cls, text: str) -> GenerationInfo:
        """Parse A1111's ``parameters`` text (as written by A1111, civitai or dreamreel)."""
        lines = text.strip().split("\n")
        params: dict[str, str] = {}
        if lines and len(_PAIR.findall(lines[-1])) >= 3:
            for key, value in _PAIR.findall(lines[-1]):
                params[key.strip()] = _unquote(value.strip())
            lines = lines[:-1]
        prompt_lines: list[str] = []
        negative_lines: list[str] = []
        target = prompt_lines
        for line in lines:
            if line.startswith("Negative prompt:"):
                target = negative_lines
                line = line[len("Negative prompt:") :].strip()
            target.append(line)
        return cls("\n".join(prompt_lines).strip(), "\n".join(negative_lines).strip(), params)

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


def _quote(value: object) -> str:
    text = str(value)
    if "," in text or ":" in text or '"' in text or "\n" in text:
        return json.dumps(text, ensure_ascii=False)
    return text


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return str(json.loads(value))
        except json.JSONDecodeError:
            return value[1:-1]
    return value


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
