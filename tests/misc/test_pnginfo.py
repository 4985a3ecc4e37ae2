"""A1111 PNG info: written in A1111's layout, read back exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamreel.errors import SettingsError
from dreamreel.pnginfo import GenerationInfo, png_text, read_info

A1111_TEXT = (
    "masterpiece, a cat, (detailed:1.2)\n<lora:add_detail:0.5>\n"
    "Negative prompt: (worst quality:1.4), lowres\n"
    "Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 1234567, Size: 512x768, Model hash: 6ce0161689, "
    'Model: v1-5-pruned-emaonly, Denoising strength: 0.4, Clip skip: 2, Lora hashes: "add_detail: 7c6bad76eb54", '
    "Version: v1.6.0"
)


def test_parses_a1111_text() -> None:
    info = GenerationInfo.from_text(A1111_TEXT)
    assert info.prompt == "masterpiece, a cat, (detailed:1.2)\n<lora:add_detail:0.5>"
    assert info.negative_prompt == "(worst quality:1.4), lowres"
    assert info.params["Sampler"] == "DPM++ 2M Karras"
    assert info.number("CFG scale") == 7.5 and info.number("Seed") == 1234567
    assert info.size() == (512, 768)
    assert info.params["Lora hashes"] == "add_detail: 7c6bad76eb54"
    assert info.to_text() == A1111_TEXT


def test_no_negative_and_no_params() -> None:
    info = GenerationInfo("a fox", "", {"Steps": "20", "Sampler": "Euler a", "Seed": "1"})
    assert info.to_text() == "a fox\nSteps: 20, Sampler: Euler a, Seed: 1"
    assert GenerationInfo.from_text(info.to_text()) == info
    plain = GenerationInfo.from_text("just a prompt, with commas")
    assert plain.prompt == "just a prompt, with commas" and plain.params == {}


def test_png_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    info = GenerationInfo("a caf\u00e9 at night", "blur", {"Steps": "5", "Sampler": "Euler", "Seed": "3"})
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path, pnginfo=png_text({"parameters": info.to_text()}))
    assert read_info(path) == info


def test_missing_info_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    with pytest.raises(SettingsError, match="no A1111 'parameters'"):
        read_info(path)
    with pytest.raises(SettingsError, match="file not found"):
        read_info(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(SettingsError, match="not an image"):
        read_info(tmp_path / "text.png")
