"""Seed behaviours, cadence and the schedule table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dreamreel.keyframes.seeds import diffusion_seeds
from dreamreel.keyframes.table import NUMERIC_COLUMNS, ScheduleTable
from dreamreel.settings import Settings, resolve_schedules
from dreamreel.settings.model import NUMERIC_SCHEDULES


@pytest.mark.parametrize(
    ("behavior", "iter_n", "expected"),
    [
        ("iter", 1, [7, 8, 9, 10, 11, 12]),
        ("iter", 3, [7, 8, 8, 8, 9, 9]),
        ("fixed", 1, [7, 7, 7, 7, 7, 7]),
        ("ladder", 1, [7, 9, 8, 10, 9, 11]),
        ("alternate", 1, [7, 8, 7, 8, 7, 8]),
    ],
)
def test_seed_behaviours_match_deforum(behavior: str, iter_n: int, expected: list[int]) -> None:
    assert diffusion_seeds(7, behavior, 6, iter_n=iter_n).tolist() == expected  # type: ignore[arg-type]


def test_random_seeds_are_reproducible_and_in_range() -> None:
    first = diffusion_seeds(99, "random", 50)
    assert first[0] == 99
    assert np.array_equal(first, diffusion_seeds(99, "random", 50))
    assert ((first >= 0) & (first < 2**32)).all() and len(set(first.tolist())) > 45


def test_seeds_wrap_at_two_to_the_32() -> None:
    assert diffusion_seeds(2**32 - 1, "iter", 3).tolist() == [2**32 - 1, 0, 1]


def test_seeds_advance_per_diffusion_not_per_frame() -> None:
    table = resolve_schedules(Settings(seed=7, max_frames=10, diffusion_cadence=4))
    assert table.numeric["diffuse"].tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 1, 1]
    assert table.numeric["seed"].tolist() == [7, 7, 7, 7, 8, 8, 8, 8, 9, 10]


def test_schedule_seed_behaviour_uses_seed_schedule_with_random_for_minus_one() -> None:
    settings = Settings(seed=5, max_frames=6, seed_behavior="schedule")
    table = resolve_schedules(settings)
    seeds = table.numeric["seed"]
    # default seed schedule: s on frame 0, -1 (random) in the middle, s on the last two frames
    assert seeds[0] == 5 and seeds[4] == 5 and seeds[5] == 5
    assert all(0 <= s < 2**32 and s != 5 for s in seeds[1:4])
    assert np.array_equal(seeds, resolve_schedules(settings).numeric["seed"])


def test_minus_one_seed_is_resolved_once() -> None:
    table = resolve_schedules(Settings(seed=-1, max_frames=3, seed_behavior="fixed"))
    assert len(set(table.numeric["seed"].tolist())) == 1 and table.numeric["seed"][0] >= 0


def test_strength_and_denoise() -> None:
    table = resolve_schedules(Settings(max_frames=4, schedules={"strength": "0:(1.0), 2:(0.4)"}))
    assert table.numeric["strength"].tolist() == pytest.approx([0.0, 0.7, 0.4, 0.4])  # frame 0 txt2img
    assert table.numeric["denoise"].tolist() == pytest.approx([1.0, 0.3, 0.6, 0.6])
    with_init = resolve_schedules(Settings(max_frames=2, init_image="x.png", init_strength=0.25))
    assert with_init.numeric["strength"][0] == 0.25


def test_every_numeric_schedule_has_a_table_column() -> None:
    assert set(NUMERIC_SCHEDULES) <= set(NUMERIC_COLUMNS)


def test_csv_round_trip_is_bit_exact(tmp_path: Path) -> None:
    settings = Settings(
        max_frames=25, seed=3, prompt_blend=True,
        prompts={"0": "a, \"quoted\" cat --neg dog", "12": "a bird"},
        schedules={"zoom": "0:(1.0+0.01*sin(t/3.7))", "sampler": '0:("Euler a"), 10:("DPM++ 2M Karras")',
                   "model": '0:("a.safetensors"), 10:("b, c.safetensors")'},
    )  # fmt: skip
    table = resolve_schedules(settings)
    path = tmp_path / "schedule.csv"
    table.to_csv(path)
    loaded = ScheduleTable.from_csv(path)
    for name in NUMERIC_COLUMNS:
        assert np.array_equal(loaded.numeric[name], table.numeric[name]), name
    assert loaded.text == table.text
    assert loaded.parts == table.parts
    assert loaded.row(6) == table.row(6)
    assert table.row(6).prompt_parts[1][0] == "a bird"


def test_changing_columns_and_rows_are_read_only() -> None:
    table = resolve_schedules(Settings(max_frames=5, schedules={"angle": "0:(0), 4:(4)"}))
    assert "angle" in table.changing_columns() and "zoom" not in table.changing_columns()
    with pytest.raises(ValueError, match="read-only"):
        table.numeric["angle"][0] = 1.0
    assert table.row(2).angle == 2.0
