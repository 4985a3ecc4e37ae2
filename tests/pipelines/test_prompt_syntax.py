"""A1111 prompt syntax: attention weights, prompt editing, alternation, LoRA tags."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dreamreel.errors import SettingsError
from dreamreel.pipelines.prompt_syntax import (
    BREAK,
    extract_lora_tags,
    parse_prompt_attention,
    prompt_at_step,
    prompt_schedule,
    split_and,
)

# ---------------------------------------------------------------------------------------------
# attention


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("[unbalanced", [("unbalanced", 1 / 1.1)]),
        ("\\(literal\\]", [("(literal]", 1.0)]),
        ("back\\\\slash", [("back\\slash", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        ("a ) b ] c", [("a ) b ] c", 1.0)]),
        ("(word:1.5)", [("word", 1.5)]),
        ("( word : 0.25 )", [(" word ", 0.25)]),
        ("(word:-1)", [("word", -1.0)]),
        ("((word))", [("word", pytest.approx(1.21))]),
        ("[[word]]", [("word", pytest.approx(1 / 1.21))]),
        ("(a:b)", [("a:b", 1.1)]),
        ("(word:1.2.3)", [("word:1.2.3", 1.1)]),
        ("a:1.5) b", [("a:1.5) b", 1.0)]),
        ("", [("", 1.0)]),
        ("a BREAK b", [("a", 1.0), BREAK, ("b", 1.0)]),
        ("BREAKFAST break", [("BREAKFAST break", 1.0)]),
        # A1111: brackets scale the BREAK run too, so inside them it is the word with weight -1.1
        ("(a BREAK b)", [("a", 1.1), ("BREAK", pytest.approx(-1.1)), ("b", 1.1)]),
        ("BREAK a BREAK", [BREAK, ("a", 1.0), BREAK]),
        # A1111 merges before empty runs go: the empty run after BREAK keeps (a) and (b) apart
        ("(a)BREAK(b)", [("a", 1.1), BREAK, ("b", 1.1)]),
        ("(a)\\q(b)", [("a", 1.1), ("q", 1.0), ("b", 1.1)]),
        ("a BREAK BREAK b", [("a", 1.0), BREAK, BREAK, ("b", 1.0)]),
    ],
)
def test_attention(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_prompt_attention(text) == expected


def test_attention_a1111_reference_example() -> None:
    result = parse_prompt_attention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).")
    assert [t for t, _ in result] == ["a ", "house", " ", "on", " a ", "hill", ", sun, ", "sky", "."]
    weights = [w for _, w in result]
    assert weights == pytest.approx([1.0, 1.3 * 1.1 * 1.1, 1.1, 1.0, 1.1, 0.55, 1.1, 1.1**4, 1.1])


def test_adjacent_runs_with_equal_weight_merge() -> None:
    assert parse_prompt_attention("(a)(b) c [d]") == [("ab", 1.1), (" c ", 1.0), ("d", pytest.approx(1 / 1.1))]


# ---------------------------------------------------------------------------------------------
# prompt editing and alternation


@pytest.mark.parametrize(
    ("text", "steps", "expected"),
    [
        ("a [b:.5] c", 10, [(5, "a  c"), (10, "a b c")]),
        ("a [b:3]", 10, [(3, "a "), (10, "a b")]),
        ("a [[[b]]:2]", 10, [(2, "a "), (10, "a [[b]]")]),
        ("[(a:2):3]", 10, [(3, ""), (10, "(a:2)")]),
        ("a[b:[c:d:2]:1]e", 10, [(1, "abe"), (2, "ace"), (10, "ade")]),
        ("((a][:b:c [d:3]", 10, [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
        ("a [cat:dog:0.25] b", 20, [(5, "a cat b"), (20, "a dog b")]),
        ("a [cat:dog:12] b", 20, [(12, "a cat b"), (20, "a dog b")]),
        ("[cat::4] dog", 10, [(4, "cat dog"), (10, " dog")]),
        ("[cat:dog: 4 ]", 10, [(4, "cat"), (10, "dog")]),
        ("[cat:dog:0]", 10, [(10, "dog")]),
        ("[cat:dog:50]", 10, [(10, "cat")]),
        ("[cat:dog:0.99]", 10, [(9, "cat"), (10, "dog")]),
        ("no syntax (at all:1.2)", 10, [(10, "no syntax (at all:1.2)")]),
        ("[a:b:c:3]", 10, [(10, "[a:b:c:3]")]),
        ("[a:b:x]", 10, [(10, "[a:b:x]")]),
        ("x [unclosed:3", 10, [(10, "x [unclosed:3")]),
        ("\\[a:b:3\\]", 10, [(10, "\\[a:b:3\\]")]),
        ("([a:b:2])", 4, [(2, "(a)"), (4, "(b)")]),
    ],
)
def test_prompt_editing(text: str, steps: int, expected: list[tuple[int, str]]) -> None:
    assert prompt_schedule(text, steps) == expected


def test_alternation_cycles_per_step() -> None:
    assert prompt_schedule("[fe|]male", 4) == [(1, "female"), (2, "male"), (3, "female"), (4, "male")]
    assert prompt_schedule("[cat|dog|fox] run", 5) == [
        (1, "cat run"),
        (2, "dog run"),
        (3, "fox run"),
        (4, "cat run"),
        (5, "dog run"),
    ]
    # consecutive equal prompts are merged: 2-4 are all "male"
    assert prompt_schedule("[fe|||]male", 6) == [(1, "female"), (4, "male"), (5, "female"), (6, "male")]
    assert prompt_schedule("[a|(b:1.1)]", 2) == [(1, "a"), (2, "(b:1.1)")]


def test_alternation_inside_editing() -> None:
    assert prompt_schedule("[[red|blue] cat:dog:2]", 4) == [(1, "red cat"), (2, "blue cat"), (4, "dog")]


def test_schedule_rejects_zero_steps() -> None:
    with pytest.raises(SettingsError, match="steps"):
        prompt_schedule("a", 0)


def test_prompt_at_step_uses_a1111_comparison() -> None:
    schedule = prompt_schedule("[cat:dog:5]", 10)
    assert [prompt_at_step(schedule, i) for i in range(10)] == ["cat"] * 6 + ["dog"] * 4
    assert prompt_at_step(schedule, 99) == "dog"


# ---------------------------------------------------------------------------------------------
# LoRA tags


def test_lora_tags_are_extracted() -> None:
    text, loras = extract_lora_tags("a cat <lora:ink_style:0.6>, <lora:film> night <lyco:glow:.5>")
    assert text == "a cat , night"
    assert loras == [("ink_style", 0.6), ("film", 1.0), ("glow", 0.5)]


def test_lora_extra_fields_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dreamreel.pipelines.prompt_syntax"):
        text, loras = extract_lora_tags("<lora:a:0.6:0.3> <lora:b:unet=0.2:te=0.7> x")
    assert text == "x"
    assert loras == [("a", 0.6), ("b", 0.7)]
    assert "0.3" in caplog.text and "unet=0.2" in caplog.text


def test_no_tags_leaves_text_alone() -> None:
    assert extract_lora_tags("a <3 heart (x:1.2)") == ("a <3 heart (x:1.2)", [])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a <hypernet:old:1>", "hypernetwork"),
        ("a <lora::0.5>", "no name"),
        ("a <lora:x:strong>", "not a number"),
    ],
)
def test_bad_tags(text: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        extract_lora_tags(text)


def test_unknown_tag_type_is_removed_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dreamreel.pipelines.prompt_syntax"):
        assert extract_lora_tags("x <foo:bar>") == ("x", [])
    assert "<foo:bar>" in caplog.text


# ---------------------------------------------------------------------------------------------
# robustness: any text parses


PROMPT_TEXT = st.text(alphabet="ab :|()[]\\.0123BREK<>lor", max_size=40)


@settings(max_examples=300, deadline=None)
@given(text=PROMPT_TEXT, steps=st.integers(1, 30))
def test_any_text_parses(text: str, steps: int) -> None:
    schedule = prompt_schedule(text, steps)
    assert schedule[-1][0] == steps
    assert [end for end, _ in schedule] == sorted({end for end, _ in schedule})
    for _, prompt in schedule:
        for run, weight in parse_prompt_attention(prompt):
            assert isinstance(run, str) and weight == weight  # not NaN


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet="abc ,.!?-", max_size=40), steps=st.integers(1, 30))
def test_text_without_syntax_is_unchanged(text: str, steps: int) -> None:
    assert prompt_schedule(text, steps) == [(steps, text)]
    assert parse_prompt_attention(text) == [(text, 1.0)]


# ---------------------------------------------------------------------------------------------
# A1111 1.6+ scheduling (get_learned_conditioning_prompt_schedules, use_old_scheduling=False):
# a ``when`` with "." is (v - flt_offset) * steps, one without is v - int_offset; then
# min(steps, int(v)), and only values >= 1 are boundaries.


@pytest.mark.parametrize(
    ("text", "steps", "expected"),
    [
        ("[a:b:5.0]", 20, [(20, "a")]),  # 5.0 * 20 = 100 -> min(20, 100): never switches
        ("[a:b:1.0]", 20, [(20, "a")]),  # a fraction, not step 1
        ("[a:b:1]", 20, [(1, "a"), (20, "b")]),  # an integer: step 1
        ("[a:b:5]", 20, [(5, "a"), (20, "b")]),
        ("[a:b:0.25]", 20, [(5, "a"), (20, "b")]),
        ("[a:b:1e1]", 20, [(10, "a"), (20, "b")]),  # SIGNED_NUMBER without ".": a step number
        ("[a:b:2.5e-1]", 20, [(5, "a"), (20, "b")]),  # with ".": a fraction
        ("[a:b:5.]", 4, [(4, "a")]),  # "5." is a DECIMAL in lark's grammar
        ("[a:b:-3]", 20, [(20, "b")]),  # below 1: no boundary, and step <= -3 never holds
        ("[a:b:1e]", 20, [(20, "[a:b:1e]")]),  # not a number: literal text
    ],
)
def test_a1111_16_scheduling(text: str, steps: int, expected: list[tuple[int, str]]) -> None:
    assert prompt_schedule(text, steps) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A1111's docstring: get_learned_conditioning_prompt_schedules([p], 10, 10): "a [b:.5] c" -> 'a b c'
        ("a [b:.5] c", [(10, "a b c")]),
        ("a [b:1.5] c", [(5, "a  c"), (10, "a b c")]),
        ("[a:b:15]", [(5, "a"), (10, "b")]),  # 15 - 10 first-pass steps
        ("[a:b:5]", [(10, "b")]),  # already past in the first pass
    ],
)
def test_hires_pass_offsets(text: str, expected: list[tuple[int, str]]) -> None:
    assert prompt_schedule(text, 10, first_pass_steps=10) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a cat AND a dog :0.5", [("a cat", 1.0), (" a dog", 0.5)]),
        ("a cat", [("a cat", 1.0)]),
        ("a cat:1.5", [("a cat", 1.5)]),  # A1111's re_weight applies without AND too
        ("a ANDROID AND b: -2", [("a ANDROID", 1.0), (" b", -2.0)]),
        ("x AND [a:b:0.5] :.5", [("x", 1.0), (" [a:b:0.5]", 0.5)]),
        ("(word:1.2)", [("(word:1.2)", 1.0)]),  # ")" after the number: not a weight suffix
    ],
)
def test_split_and(text: str, expected: list[tuple[str, float]]) -> None:
    assert split_and(text) == expected
