"""The public names other code and outside checks use must not disappear."""

from __future__ import annotations

import inspect

import dreamreel.anim
import dreamreel.keyframes
import dreamreel.settings


def test_keyframes_api() -> None:
    signature = inspect.signature(dreamreel.keyframes.parse_schedule)
    assert list(signature.parameters)[:2] == ["text", "max_frames"]
    assert signature.parameters["seed"].default == -1
    assert issubclass(dreamreel.keyframes.ScheduleError, ValueError)
    prompts = inspect.signature(dreamreel.keyframes.resolve_prompts)
    assert {"positive", "negative", "seed"} <= set(prompts.parameters)
    frame = dreamreel.keyframes.resolve_prompts({"0": "a --neg b"}, 1)[0]
    assert (frame.prompt, frame.negative_prompt) == ("a", "b")


def test_settings_and_anim_api() -> None:
    assert callable(dreamreel.settings.load_settings)
    warp = inspect.signature(dreamreel.anim.warp_2d)
    assert list(warp.parameters) == [
        "image", "angle", "zoom", "translation_x", "translation_y", "transform_center_x", "transform_center_y",
        "border",
    ]  # fmt: skip
    assert warp.parameters["border"].default == "replicate"


def test_testing_api() -> None:
    import dreamreel.testing

    signature = inspect.signature(dreamreel.testing.save_tiny_model)
    assert signature.parameters["controlnets"].default == ("openpose", "hed")
