"""Prompt schedules: selection, global merge, --neg, backticks, keys, blending, errors."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from dreamreel.errors import ScheduleError
from dreamreel.keyframes.prompts import (
    FramePrompt,
    format_number,
    merge_global,
    render_prompt_texts,
    resolve_prompts,
    split_negative,
)


def texts(prompts: list[FramePrompt]) -> list[str]:
    return [p.prompt for p in prompts]


# --- merge and split (catalogue §2.1, §2.3, §2.4) -------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "positive", "negative", "merged"),
    [
        ("owl --neg blur", "hq", "bad", "hq owl --neg blur  bad"),
        ("owl", "hq", "bad", "hq owl --neg bad"),
        ("owl", "", "", " owl --neg "),
        ("owl", "", "--neg bad", " owl --neg  bad"),  # a --neg typed into the negative field is dropped
    ],
)
def test_merge_global_matches_deforum_text(prompt: str, positive: str, negative: str, merged: str) -> None:
    assert merge_global(prompt, positive, negative) == merged


@pytest.mark.parametrize(
    ("prompt", "positive", "negative", "expected"),
    [
        ("owl --neg blur", "hq", "bad", ("hq owl", "blur  bad")),
        ("owl", "hq", "bad", ("hq owl", "bad")),
        ("owl", "", "", ("owl", "")),
        ("owl --neg blur", "", "", ("owl", "blur")),
        ("  owl  ", "", "nsfw, nude", ("owl", "nsfw, nude")),
        ("a --neg b --neg c", "", "", ("a", "b, c")),
        ("a --neg b --neg c", "", "bad", ("a", "b, c  bad")),
        ("a --neg --neg c", "", "", ("a", "c")),
    ],
)
def test_resolved_text_is_merged_then_split(
    prompt: str, positive: str, negative: str, expected: tuple[str, str]
) -> None:
    (frame,) = resolve_prompts({"0": prompt}, 1, positive=positive, negative=negative)
    assert (frame.prompt, frame.negative_prompt) == expected
    assert frame.parts == ()
    assert frame.negative_parts == ()


def test_split_negative_joins_every_negative_piece() -> None:
    assert split_negative(" fox --neg grainy ") == ("fox", "grainy")
    assert split_negative("fox") == ("fox", "")
    assert split_negative("fox --neg a --neg b --neg ") == ("fox", "a, b")


# --- selecting the prompt for a frame (catalogue §2.2) -----------------------------------------


def test_hard_switch_and_back_fill_before_first_key() -> None:
    result = resolve_prompts({"5": "first", "8": "second"}, 10)
    assert len(result) == 10
    assert texts(result) == ["first"] * 8 + ["second"] * 2


def test_mapping_order_does_not_matter_for_selection() -> None:
    result = resolve_prompts({"6": "b", "0": "a", "3": "c"}, 8)
    assert texts(result) == ["a", "a", "a", "c", "c", "c", "b", "b"]


def test_keys_outside_the_run_are_ignored_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dreamreel.keyframes.prompts"):
        result = resolve_prompts({"0": "a", "30": "late", "-2": "early", "4": "b"}, 10)
    assert texts(result) == ["a"] * 4 + ["b"] * 6
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'30' (frame 30)" in warnings[0].getMessage()
    assert "'-2' (frame -2)" in warnings[0].getMessage()


def test_expression_keys_including_max_f_and_leading_space() -> None:
    result = resolve_prompts({"0": "a", "3+1": "b", "max_f-2": "c", " 9": "d"}, 12)
    # "3+1" -> 4; max_f-2 = 11-2 = 9 ... and " 9" is also 9: the later key wins
    assert texts(result) == ["a"] * 4 + ["b"] * 5 + ["d"] * 3


def test_expression_key_truncates_and_uses_seed() -> None:
    result = resolve_prompts({"0": "a", "max_f/2": "b", "s": "c"}, 10, seed=7)
    # max_f/2 = 4.5 -> frame 4; s = 7
    assert texts(result) == ["a"] * 4 + ["b"] * 3 + ["c"] * 3


def test_same_frame_later_key_wins_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dreamreel.keyframes.prompts"):
        result = resolve_prompts({"0": "a", "03": "first", "3": "second"}, 5)
    assert texts(result) == ["a", "a", "a", "second", "second"]
    assert any("'03' and '3' both land on frame 3" in r.getMessage() for r in caplog.records)


def test_seconds_and_beats_keys() -> None:
    result = resolve_prompts({"0": "a", "2.5s": "b", "4b": "c"}, 25, fps=2.0, bpm=12.0)
    # 2.5 s * 2 fps = frame 5; 4 beats at 12 bpm = 20 s = frame 40 -> outside, ignored
    assert texts(result) == ["a"] * 5 + ["b"] * 20
    result = resolve_prompts({"0": "a", "2b": "b"}, 25, fps=10.0, bpm=120.0)
    assert texts(result).index("b") == 10  # 2 beats = 1 s = 10 frames


def test_seconds_key_without_fps_is_an_error() -> None:
    with pytest.raises(ScheduleError, match="positive 'fps'") as info:
        resolve_prompts({"0": "a", "2s": "b"}, 10)
    assert 'prompts["2s"]' in str(info.value)


def test_fractional_key_is_refused_with_a_seconds_hint() -> None:
    with pytest.raises(ScheduleError, match=r"not a whole frame number.*'2\.7s'"):
        resolve_prompts({"0": "a", "2.7": "b"}, 10)


def test_integer_keys_from_python_callers_work() -> None:
    assert texts(resolve_prompts({0: "a", 2: "b"}, 3)) == ["a", "a", "b"]  # type: ignore[dict-item]


# --- backticks (catalogue §2.3) ------------------------------------------------------------------


def test_backtick_sqrt_uses_the_real_variable_t() -> None:
    result = resolve_prompts({"0": "cat:`sqrt(t)`"}, 10)
    assert result[0].prompt == "cat:0"
    assert result[4].prompt == "cat:2"
    assert result[2].prompt == "cat:1.41421"
    assert result[9].prompt == "cat:3"


def test_backtick_tan_and_formatting() -> None:
    result = resolve_prompts({"0": "a:`tan(t)` b:`0.1+0.2` c:`t+1` d:`t/3`"}, 5)
    assert result[1].prompt == "a:1.55741 b:0.3 c:2 d:0.333333"
    assert result[4].prompt == "a:1.15782 b:0.3 c:5 d:1.33333"


def test_backticks_are_evaluated_per_keyframe_range_with_absolute_t() -> None:
    result = resolve_prompts({"0": "a", "10": "(dog:`1-t/30`)"}, 31)
    assert result[9].prompt == "a"
    assert result[10].prompt == "(dog:0.666667)"
    assert result[25].prompt == "(dog:0.166667)"
    assert result[30].prompt == "(dog:0)"


def test_backticks_see_max_f_and_seed() -> None:
    result = resolve_prompts({"0": "x:`max_f` y:`s*2`"}, 8, seed=21)
    assert result[3].prompt == "x:7 y:42"


def test_backticks_in_negative_text_and_global_fields() -> None:
    result = resolve_prompts({"0": "fox --neg blur:`t/2`"}, 4, positive="hq:`t`", negative="bad:`max_f-t`")
    assert (result[3].prompt, result[3].negative_prompt) == ("hq:3 fox", "blur:1.5  bad:0")
    assert (result[1].prompt, result[1].negative_prompt) == ("hq:1 fox", "blur:0.5  bad:2")


def test_render_prompt_texts_is_vectorised_over_frames() -> None:
    assert render_prompt_texts("w:`t*t`", [0, 3, 12], max_frames=20) == ["w:0", "w:9", "w:144"]


@pytest.mark.parametrize(
    ("value", "text"),
    [(5.0, "5"), (-0.0, "0"), (0.30000000000000004, "0.3"), (2 / 3, "0.666667"), (1e-7, "0.0000001"), (-1.25, "-1.25")],
)
def test_format_number(value: float, text: str) -> None:
    assert format_number(value) == text


# --- blending ------------------------------------------------------------------------------------


def test_blend_weights_between_keyframes() -> None:
    result = resolve_prompts({"2": "red --neg dull", "6": "blue --neg grey"}, 10, blend=True)
    # before the first key, at keys and after the last key: no parts
    for frame in (0, 1, 2, 6, 7, 9):
        assert result[frame].parts == (), frame
        assert result[frame].negative_parts == (), frame
    assert result[4] == FramePrompt("red", "dull", (("red", 0.5), ("blue", 0.5)), (("dull", 0.5), ("grey", 0.5)))
    assert result[3].parts == (("red", 0.75), ("blue", 0.25))
    assert result[5].negative_parts == (("dull", 0.25), ("grey", 0.75))
    # the plain texts stay the hard-switch ones
    assert texts(result) == ["red"] * 6 + ["blue"] * 4
    for frame in range(3, 6):
        assert sum(weight for _, weight in result[frame].parts) == pytest.approx(1.0)


def test_blend_equal_texts_have_no_parts() -> None:
    result = resolve_prompts({"0": "red", "4": "blue"}, 5, negative="bad", blend=True)
    assert result[2].parts == (("red", 0.5), ("blue", 0.5))
    assert result[2].negative_parts == ()  # both negatives are "bad"
    assert result[2].negative_prompt == "bad"


def test_blend_evaluates_the_next_prompts_backticks_at_the_blended_frame() -> None:
    result = resolve_prompts({"0": "a", "4": "b:`t`"}, 5, blend=True)
    assert result[1].parts == (("a", 0.75), ("b:1", 0.25))
    assert result[3].parts == (("a", 0.25), ("b:3", 0.75))
    assert result[4] == FramePrompt("b:4", "")


def test_without_blend_there_are_no_parts() -> None:
    result = resolve_prompts({"0": "red", "4": "blue"}, 5)
    assert all(p.parts == () and p.negative_parts == () for p in result)


def test_frame_prompt_is_frozen() -> None:
    prompt = FramePrompt("a", "b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        prompt.prompt = "c"  # type: ignore[misc]


# --- errors --------------------------------------------------------------------------------------


def test_unbalanced_backtick_names_the_key_with_a_caret() -> None:
    with pytest.raises(ScheduleError) as info:
        resolve_prompts({"0": "a", "30": "cat:`1-t/30 dog"}, 40)
    message = str(info.value)
    assert message.startswith('prompts["30"]: unbalanced backtick')
    lines = message.splitlines()
    assert lines[-2] == "    cat:`1-t/30 dog"
    assert lines[-1] == "    " + " " * 4 + "^"


def test_bad_backtick_expression_names_the_key_and_column() -> None:
    with pytest.raises(ScheduleError, match="unknown function 'foo'") as info:
        resolve_prompts({"0": "cat:`foo(t)`"}, 4, name="animation_prompts")
    assert info.value.key == 'animation_prompts["0"]'
    assert info.value.column == 5
    assert str(info.value).splitlines()[-1] == "    " + " " * 5 + "^"


def test_unknown_name_in_backticks_is_refused() -> None:
    with pytest.raises(ScheduleError, match="unknown name 'x'"):
        resolve_prompts({"0": "cat:`x+1`"}, 4)


def test_non_finite_backtick_value_names_the_frame() -> None:
    with pytest.raises(ScheduleError, match="evaluates to nan") as info:
        resolve_prompts({"0": "a", "2": "b:`sqrt(t-4)`"}, 8)
    assert info.value.frame == 2
    assert 'prompts["2"] at frame 2' in str(info.value)


def test_bad_backtick_in_global_field_names_the_field() -> None:
    with pytest.raises(ScheduleError, match="unbalanced backtick") as info:
        resolve_prompts({"0": "a"}, 4, negative="bad `")
    assert info.value.key == "prompts negative"


def test_non_text_prompt_names_the_key() -> None:
    with pytest.raises(ScheduleError, match="must be text, not int") as info:
        resolve_prompts({"0": "a", "5": 3}, 10)  # type: ignore[dict-item]
    assert info.value.key == 'prompts["5"]'


@pytest.mark.parametrize("prompts", [{}, None, ["a"]])
def test_no_prompts_is_an_error(prompts: object) -> None:
    with pytest.raises(ScheduleError, match="at least one prompt"):
        resolve_prompts(prompts, 5)  # type: ignore[arg-type]


def test_no_key_inside_the_run_is_an_error() -> None:
    with pytest.raises(ScheduleError, match=r"no prompt key lands inside frames 0\.\.9.*'12' \(frame 12\)"):
        resolve_prompts({"12": "a", "max_f+5": "b"}, 10)


def test_bad_key_expression_is_an_error() -> None:
    with pytest.raises(ScheduleError, match="unknown name 'frame'") as info:
        resolve_prompts({"0": "a", "frame+1": "b"}, 10)
    assert info.value.key == 'prompts["frame+1"]'


def test_max_frames_must_be_positive() -> None:
    with pytest.raises(ScheduleError, match="at least 1"):
        resolve_prompts({"0": "a"}, 0)
