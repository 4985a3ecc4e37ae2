"""`dreamreel plan` as a user runs it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dreamreel.cli import main
from dreamreel.keyframes import ScheduleTable
from dreamreel.plan import plot_schedules, shorten_prompt, summary_lines
from dreamreel.settings import Settings, load_settings, resolve_schedules

ROOT = Path(__file__).resolve().parents[2]
TUNNEL = ROOT / "examples" / "zoom_tunnel.json"


def test_plan_prints_summary_and_changing_schedules(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(TUNNEL), "--frames", "0-2,45"]) == 0
    out = capsys.readouterr().out
    assert "2D run: 90 frames at 15 fps (6.0 s), 512x512" in out
    assert "prompt from frame 30: an endless tunnel of ancient stone arches" in out
    header = next(line for line in out.splitlines() if line.lstrip().startswith("frame"))
    assert header.split() == ["frame", "angle", "zoom", "strength", "denoise", "seed"]
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split() and line.split()[0].isdigit()}
    assert set(rows) == {"0", "1", "2", "45"}
    assert rows["0"][2] == "1.04" and rows["45"][2] == "1.02"
    assert "translation_x=0" in out  # constant schedules are listed once, not as columns


def test_plan_csv_holds_every_frame_exactly(tmp_path: Path) -> None:
    target = tmp_path / "table.csv"
    assert main(["plan", str(TUNNEL), "--csv", str(target)]) == 0
    with target.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 90
    expected = resolve_schedules(load_settings(TUNNEL))
    loaded = ScheduleTable.from_csv(target)
    for name, column in expected.numeric.items():
        np.testing.assert_array_equal(loaded.numeric[name], column, err_msg=name)
    assert loaded.text == expected.text


def test_plan_plot_writes_a_png(tmp_path: Path) -> None:
    target = tmp_path / "plot.png"
    assert main(["plan", str(TUNNEL), "--plot", str(target)]) == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert target.stat().st_size > 10_000


def test_bad_settings_exit_2_with_one_paragraph_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"max_frames": 20, "angle": "0:(0), 10:(where(t>12, 1, 0)), 15 (1)"}))
    result = subprocess.run(
        [sys.executable, "-m", "dreamreel.cli", "plan", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {bad}: angle")
    assert "^" in result.stderr
    assert result.stdout == ""


def test_bad_frame_selection_is_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(TUNNEL), "--frames", "ten"]) == 2
    assert "--frames: cannot read 'ten'" in capsys.readouterr().err


DEFORUM_BAD = {
    "animation_mode": "2D",
    "max_frames": 12,
    "prompts": {"0": "a lighthouse"},
    "strength_schedule": "0:(1.5)",
    "cfg_scale_schedule": "0:(-5)",
    "zoom": "0:(0)",
    "cn_1_enabled": True,
    "cn_1_module": "depth",
}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, "zoom at frame 0: is 0;"),  # the first bad key in table order
        ({"zoom": "0:(1)"}, "strength_schedule at frame 0: is 1.5;"),
        ({"zoom": "0:(1)", "strength_schedule": "0:(0.6)"}, "cfg_scale_schedule at frame 0: is -5;"),
        ({"zoom": "0:(1)", "strength_schedule": "0:(0.6)", "cfg_scale_schedule": "0:(7)"},
         "cn_1_module: unknown ControlNet preprocessor 'depth'"),
        ({"zoom": "0:(1)", "strength_schedule": "0:(0.6)", "cfg_scale_schedule": "0:(7)", "cn_1_module": "canny",
          "sampler": "Eular a"}, "sampler: unknown sampler 'Eular a'."),
    ],
)  # fmt: skip
def test_plan_refuses_a_deforum_file_that_render_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, object], expected: str
) -> None:
    bad = tmp_path / "deforum_settings.txt"
    bad.write_text(json.dumps({**DEFORUM_BAD, **change}))
    assert main(["plan", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {bad}: {expected}"), captured.err
    assert captured.out == ""


def test_plan_of_a_bad_native_file_exits_2_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "native.json"
    bad.write_text(json.dumps({"dreamreel_settings": 1, "max_frames": 20, "schedules": {"contrast": "0:(1), 10:(-1)"}}))
    result = subprocess.run(
        [sys.executable, "-m", "dreamreel.cli", "plan", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {bad}: schedules.contrast at frame 6: is -0.2;"), result.stderr
    assert "at least 0" in result.stderr
    assert result.stdout == ""


def test_plan_of_a_bad_deforum_controlnet_module_exits_2_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "deforum_settings.txt"
    data = {**DEFORUM_BAD, "strength_schedule": "0:(0.6)", "cfg_scale_schedule": "0:(7)", "zoom": "0:(1)"}
    bad.write_text(json.dumps({**data, "cn_1_module": "reference_only"}))
    result = subprocess.run(
        [sys.executable, "-m", "dreamreel.cli", "plan", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {bad}: cn_1_module: unknown ControlNet preprocessor 'reference_only'")


def test_summary_names_the_model_actually_used() -> None:
    settings = load_settings(TUNNEL)
    table = resolve_schedules(settings)
    assert "model (not set)" in summary_lines(settings, table)[1]
    assert summary_lines(settings, table, model="dreamshaper_8.safetensors")[1].endswith(
        "model dreamshaper_8.safetensors"
    )


def test_summary_of_a_2d_run_lists_no_3d_constants() -> None:
    settings = load_settings(TUNNEL)
    constant = next(
        line for line in summary_lines(settings, resolve_schedules(settings)) if line.startswith("constant")
    )
    assert "translation_x=0" in constant and "cfg_scale=7" in constant
    for name in ("translation_z", "rotation_3d_x", "rotation_3d_y", "fov", "near", "far", "perspective_flip_fv"):
        assert f"{name}=" not in constant, name
    three_d = Settings(mode="3d", max_frames=3, seed=1)
    constant = next(line for line in summary_lines(three_d, resolve_schedules(three_d)) if line.startswith("constant"))
    assert "fov=70" in constant and "zoom=" not in constant and "angle=" not in constant


def test_summary_shortens_long_prompts() -> None:
    long_prompt = "a very long prompt about a lighthouse " * 700
    words = len(long_prompt.split())
    settings = Settings(max_frames=3, seed=1, prompts={"0": long_prompt}, negative_prompt="blurry " * 100)
    lines = summary_lines(settings, resolve_schedules(settings))
    prompt_line = next(line for line in lines if line.startswith("prompt from frame 0"))
    assert len(prompt_line) < 400
    assert f"… ({words} words)" in prompt_line
    assert "[negative: blurry blurry" in prompt_line and "… (100 words)]" in prompt_line
    assert shorten_prompt("short prompt") == "short prompt"


def test_plot_labels_fit_and_axes_use_plain_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    settings = Settings(
        mode="3d", max_frames=30, seed=1_234_567, seed_behavior="iter", perspective_flip=True,
        schedules={"rotation_3d_y": "0:(0), 15:(0.4)", "perspective_flip_theta": "0:(0), 20:(2)"},
    )  # fmt: skip
    table = resolve_schedules(settings)
    seen: dict[str, object] = {}
    original = Figure.savefig

    def inspect(figure: Figure, *args: object, **kwargs: object) -> None:
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
        bounds = figure.bbox
        for axis in figure.axes:
            label = axis.yaxis.label
            box = label.get_window_extent(renderer)
            assert bounds.x0 <= box.x0 and box.x1 <= bounds.x1, (label.get_text(), box, bounds)
            assert axis.yaxis.get_major_formatter().get_useOffset() is False  # type: ignore[attr-defined]
            assert axis.yaxis.get_offset_text().get_text() == "", label.get_text()
            seen[label.get_text()] = [t.get_text() for t in axis.get_yticklabels()]
        original(figure, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Figure, "savefig", inspect)
    plot_schedules(table, tmp_path / "plot.png")
    assert {"rotation_3d_y", "perspective_flip_theta", "seed"} <= set(seen)
    assert any(text.replace("\u2212", "-").startswith("12345") for text in seen["seed"])  # type: ignore[union-attr]
