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
from dreamreel.settings import load_settings, resolve_schedules

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
