"""A1111 infotext: read as ``parse_generation_parameters`` reads it, written as ``create_infotext`` writes it.

The expected strings are derived by hand from A1111's ``modules/infotext_utils.py`` (``re_param``,
``quote``, ``unquote``, ``parse_generation_parameters``) and ``modules/processing.py``
(``create_infotext``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamreel.cli import main
from dreamreel.jobs.still import StillRequest
from dreamreel.pnginfo import A1111_PASTE_DEFAULTS, GenerationInfo, paste_params, png_text


def test_lines_are_stripped_before_the_negative_prompt_test() -> None:
    text = "  a red fox\n\tin the snow  \n   Negative prompt: blurry\n    lowres\nSteps: 20, Sampler: Euler a, Seed: 5"
    info = GenerationInfo.from_text(text)
    assert info.prompt == "a red fox\nin the snow"
    assert info.negative_prompt == "blurry\nlowres"
    assert info.params == {"Steps": "20", "Sampler": "Euler a", "Seed": "5"}
    assert (
        info.to_text()
        == "a red fox\nin the snow\nNegative prompt: blurry\nlowres\nSteps: 20, Sampler: Euler a, Seed: 5"
    )


def test_blank_lines_join_as_a1111_joins_them() -> None:
    # prompt += ("" if prompt == "" else "\n") + line: a blank first line adds nothing, later ones do
    info = GenerationInfo.from_text("\n \na\n\nb\nNegative prompt:\nn\nSteps: 1, Sampler: Euler, Seed: 2")
    assert info.prompt == "a\n\nb"
    assert info.negative_prompt == "n"


def test_quoted_values() -> None:
    last = (
        'Steps: 20, Lora hashes: "add_detail: 7c6bad76eb54, x: 1", Bad: "a\\qb", Half: "open, '
        'Escaped: "say \\"hi\\"", Plain: say "hi", Seed: 1'
    )
    info = GenerationInfo.from_text(f"p\n{last}")
    assert info.params["Lora hashes"] == "add_detail: 7c6bad76eb54, x: 1"
    assert info.params["Bad"] == '"a\\qb"'  # not valid JSON: kept as written, quotes included
    assert info.params["Half"] == '"open'  # no closing quote: the text up to the comma
    assert info.params["Escaped"] == 'say "hi"'
    assert info.params["Plain"] == 'say "hi"'
    assert info.params["Seed"] == "1"


def test_json_ish_values_round_trip() -> None:
    params = {"Steps": "20", "Sampler": "Euler a", "Extra": '{"a": 1, "b": [1, 2]}', "Note": "line\none", "Seed": "3"}
    info = GenerationInfo("a cat", "", params)
    text = info.to_text()
    assert text == (
        'a cat\nSteps: 20, Sampler: Euler a, Extra: "{\\"a\\": 1, \\"b\\": [1, 2]}", Note: "line\\none", Seed: 3'
    )
    assert GenerationInfo.from_text(text) == info


def test_writer_matches_create_infotext() -> None:
    params = {
        "Steps": "20",
        "Sampler": "DPM++ 2M",
        "Schedule type": "Karras",
        "Quote": 'a "b"',  # a quote alone is not quoted
        "Empty": "",  # written "Key: "
        "Tiling": "Tiling",  # key == value: the key alone
        "Model": "caf\u00e9: v2",  # a colon: JSON, ensure_ascii=False
        "Seed": "7",
    }
    text = GenerationInfo("a fox", "blur", params).to_text()
    assert text == (
        'a fox\nNegative prompt: blur\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, Quote: a "b", '
        'Empty: , Tiling, Model: "caf\u00e9: v2", Seed: 7'
    )


def test_writer_strips_the_text() -> None:
    assert GenerationInfo("", "", {"Steps": "20", "Seed": "1"}).to_text() == "Steps: 20, Seed: 1"
    assert GenerationInfo("", "neg", {"Steps": "20"}).to_text() == "Negative prompt: neg\nSteps: 20"
    assert GenerationInfo(" a fox ", "", {}).to_text() == "a fox"
    assert GenerationInfo("a fox", "", {"Steps": "20", "Seed": None}).to_text() == "a fox\nSteps: 20"  # type: ignore[dict-item]


def test_empty_values_and_bare_keys_read_as_a1111() -> None:
    text = "a fox\nSteps: 20, Hires prompt: , Tiling, Sampler: Euler a, Seed: 1"
    info = GenerationInfo.from_text(text)
    # dreamreel keeps the empty value so the text round-trips; A1111's paste drops it
    assert info.params == {"Steps": "20", "Hires prompt": "", "Sampler": "Euler a", "Seed": "1"}
    assert info.to_text() == "a fox\nSteps: 20, Hires prompt: , Sampler: Euler a, Seed: 1"
    assert "Tiling" not in paste_params(info)  # re_param needs a colon: a bare key is not read back
    assert paste_params(info)["Hires prompt"] == ""  # dropped, then A1111's default


def test_too_few_pairs_is_prompt_text() -> None:
    info = GenerationInfo.from_text("a fox\nSteps: 20, Seed: 1")
    assert info.prompt == "a fox\nSteps: 20, Seed: 1" and info.params == {}
    # re_param's key is at least two characters: "X: 1" is not a pair
    assert GenerationInfo.from_text("p\nSteps: 1, X: 2, Seed: 3").params == {}


def test_paste_defaults() -> None:
    pasted = paste_params(GenerationInfo.from_text("a\nSteps: 20, Sampler: Euler a, Seed: 1, Clip skip: 2"))
    assert pasted["Clip skip"] == "2"
    for key, value in A1111_PASTE_DEFAULTS.items():
        if key != "Clip skip":
            assert pasted[key] == value
    assert pasted["RNG"] == "GPU" and pasted["Schedule type"] == "Automatic"
    assert pasted["Hires resize-1"] == pasted["Hires resize-2"] == "0"
    assert "Cache FP16 weight for LoRA" not in pasted
    fp8 = paste_params(GenerationInfo("a", "", {"Steps": "1", "FP8 weight": "Enable"}))
    assert fp8["Cache FP16 weight for LoRA"] == "False"
    resized = paste_params(GenerationInfo("a", "", {"Hires resize": "1024x768"}))
    assert "Hires resize-1" not in resized and resized["Hires resize"] == "1024x768"


def test_from_info_applies_defaults(caplog: pytest.LogCaptureFixture) -> None:
    text = (
        "a fox\nSteps: 12, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6, Seed: 9, Size: 64x48, "
        "Denoising strength: 0.5, Hires upscale: 2, Hires upscaler: Latent, Hires prompt: , "
        "Hires sampler: Use same sampler, Hires checkpoint: Use same checkpoint"
    )
    with caplog.at_level(logging.WARNING):
        request = StillRequest.from_info(GenerationInfo.from_text(text))
    assert not caplog.records  # "Use same ..." is what dreamreel does
    assert request.sampler == "DPM++ 2M Karras"
    assert request.clip_skip == 1
    assert request.hires and request.hires_resize_x == request.hires_resize_y == 0
    assert request.hires_prompt == "" and request.hires_negative_prompt == ""
    assert request.hires_denoising_strength == 0.5
    other = StillRequest.from_info(GenerationInfo.from_text(text.replace("Use same sampler", "Euler")))
    assert other.sampler == "DPM++ 2M Karras"
    assert "'Hires sampler: Euler'" in caplog.text
    automatic = StillRequest.from_info(GenerationInfo.from_text("a\nSteps: 5, Sampler: DPM++ 2M Karras, Seed: 1"))
    assert automatic.sampler == "DPM++ 2M Karras" and automatic.clip_skip == 1


def test_still_from_applies_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dreamreel.jobs.still as still

    seen: list[StillRequest] = []

    def fake_render(request: StillRequest, out: Path, *args: object, **kwargs: object) -> list[Path]:
        seen.append(request)
        return []

    monkeypatch.setattr(still, "render_stills", fake_render)
    source = tmp_path / "in.png"
    text = (
        '  a fox\n  Negative prompt: blur\nSteps: 8, Sampler: Euler, CFG scale: 5, Seed: 4, Size: 64x64, Model: "m, x"'
    )
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(source, pnginfo=png_text({"parameters": text}))
    assert main(["still", "--from", str(source), "--model", "model", "--out", str(tmp_path / "out")]) == 0
    (request,) = seen
    assert (request.prompt, request.negative_prompt) == ("a fox", "blur")
    assert (request.sampler, request.steps, request.cfg_scale, request.seed) == ("Euler", 8, 5.0, 4)
    assert request.clip_skip == 1 and not request.hires
