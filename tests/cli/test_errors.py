"""Everything a user can type ends as one ``error:`` paragraph naming the option or key, status 2, no traceback."""

from __future__ import annotations

import argparse
import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dreamreel.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
TUNNEL = ROOT / "examples" / "zoom_tunnel.json"
URL = "https://example.com/v.mp4"


@pytest.fixture
def video(tmp_path: Path) -> Path:
    """A file where m2m expects a video (the errors below come before it is read)."""
    path = tmp_path / "input.mp4"
    path.write_bytes(b"not read")
    return path


def error_of(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI; it must exit 2 with exactly one ``error:`` paragraph, last on stderr."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.rstrip("\n").splitlines()
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]], err
    return lines[-1]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--steps", "0"], "error: --steps: Input should be greater than or equal to 1 (received 0)"),
        (["--size", "7x7"], "error: --size: is '7x7'; each side must be 32 to 8192 pixels"),
        (["--size", "64x9000"], "error: --size: is '64x9000'"),
        (["--batch-count", "0"], "error: --batch-count: is 0; use 1 or more"),
        (["--batch-size", "0"], "error: --batch-size: is 0; use 1 or more"),
        (["--batch-size", "two"], "error: --batch-size: is 'two', not a whole number"),
        (["--seed", str(2**40)], "error: --seed: Input should be less than or equal to"),
        (["--init", "https://example.com/i.png"], "error: --init: is a URL (https://example.com/i.png)"),
        (["--from", "https://example.com/i.png"], "error: --from: is a URL"),
        (["--models-dir", "https://example.com/a1111"], "error: --models-dir: is a URL"),
        (["--init", "missing.png"], "error: --init: missing.png does not exist"),
    ],
)
def test_still_options(capsys: pytest.CaptureFixture[str], tmp_path: Path, extra: list[str], expected: str) -> None:
    argv = ["still", "a cat", "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "o"), *extra]
    line = error_of(capsys, argv)
    assert line.startswith(expected), line
    assert "no-model" not in line  # before any model is looked at


def test_still_from_a_folder_says_it_is_a_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = error_of(capsys, ["still", "--from", str(tmp_path), "--model", "m"])
    assert line == f"error: --from: {tmp_path} is a directory; give the PNG file itself"


def test_still_out_that_cannot_be_written_names_out(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = error_of(capsys, ["still", "a cat", "--model", str(tmp_path / "m"), "--out", str(blocker / "stills")])
    assert line.startswith(f"error: --out: cannot write {blocker / 'stills'}: "), line


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_still_out_under_proc(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = error_of(capsys, ["still", "a cat", "--model", str(tmp_path / "m"), "--out", "/proc/stills"])
    assert line.startswith("error: --out: cannot write /proc/stills: "), line


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--steps", "0"], "error: --steps: Input should be greater than or equal to 1 (received 0)"),
        (["--every", "0"], "error: --every: Input should be greater than or equal to 1 (received 0)"),
        (["--fps", "0"], "error: --fps: Input should be greater than 0 (received 0.0)"),
        (["--start", "-2"], "error: --start: Input should be greater than or equal to 0"),
        (["--size", "7x7"], "error: --size: is '7x7'; each side must be 32 to 8192 pixels"),
        (["--segment-frames", "0"], "error: --segment-frames: is 0; use 1 or more"),
        (["--segment-frames", "-4"], "error: --segment-frames: is -4; use 1 or more"),
        (["--crf", "99"], "error: --crf: is 99; use 0 to 63"),
        (["--settings", "https://example.com/s.json"], "error: --settings: is a URL"),
        (["--audio", "https://example.com/a.mp3"], "error: --audio: is a URL"),
        (["--annotators", "https://example.com/ann"], "error: --annotators: is a URL"),
        (["--annotators", "no-such-folder"], "error: --annotators: the folder no-such-folder does not exist"),
        (["--settings", "no-such.json"], "error: --settings: no-such.json does not exist"),
        (["--audio", __file__, "--no-audio"], "error: --no-audio: and --audio contradict"),
    ],
)
def test_m2m_options(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, video: Path, extra: list[str], expected: str
) -> None:
    size = [] if "--size" in extra else ["--size", "64x64"]
    line = error_of(capsys, ["m2m", str(video), "--prompt", "x", *size, "--out", str(tmp_path / "o"), *extra])
    assert line.startswith(expected), line
    assert not (tmp_path / "o").exists()


def test_m2m_input_url_is_not_mangled(capsys: pytest.CaptureFixture[str]) -> None:
    line = error_of(capsys, ["m2m", URL, "--prompt", "x"])
    assert line.startswith(f"error: INPUT: is a URL ({URL}); dreamreel does not download"), line


def test_m2m_input_folder_and_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert "is a directory" in error_of(capsys, ["m2m", str(tmp_path), "--prompt", "x"])
    line = error_of(capsys, ["m2m", str(tmp_path / "gone.mp4"), "--prompt", "x"])
    assert line == f"error: INPUT: {tmp_path / 'gone.mp4'} does not exist"


def test_m2m_option_error_does_not_blame_the_settings_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, video: Path
) -> None:
    settings = tmp_path / "base.json"
    settings.write_text(json.dumps({"dreamreel_settings": 1, "steps": 10}))
    line = error_of(capsys, ["m2m", str(video), "--settings", str(settings), "--size", "64x64", "--every", "0"])
    assert line.startswith("error: --every: ") and "base.json" not in line, line


def test_m2m_value_from_the_settings_file_names_its_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, video: Path
) -> None:
    settings = tmp_path / "deforum.txt"
    settings.write_text(json.dumps({"animation_mode": "Video Input", "video_init_path": "x.mp4", "W": 64, "H": 64,
                                    "extract_nth_frame": 0, "prompts": {"0": "a cat"}}))  # fmt: skip
    line = error_of(capsys, ["m2m", str(video), "--settings", str(settings)])
    assert line.startswith(f"error: {settings}: extract_nth_frame: Input should be greater than or equal to 1"), line


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--frames", "0"], "error: --frames: is 0; use 1 or more"),
        (["--frames", "-1"], "error: --frames: is -1; use 1 or more"),
        (["--segment-frames", "0"], "error: --segment-frames: is 0; use 1 or more"),
        (["--crf", "-1"], "error: --crf: is -1; use 0 to 63"),
        (["--audio", "https://example.com/a.mp3"], "error: --audio: is a URL"),
        (["--annotators", "https://example.com/ann"], "error: --annotators: is a URL"),
        (["--models-dir", "https://example.com/a1111"], "error: --models-dir: is a URL"),
        (["--bogus"], "error: unrecognized arguments: --bogus"),
    ],
)
def test_render_options(capsys: pytest.CaptureFixture[str], extra: list[str], expected: str) -> None:
    line = error_of(capsys, ["render", str(TUNNEL), "--preview", *extra])
    assert line.startswith(expected), line


def test_render_crf_out_of_range_for_the_codec_names_crf(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = error_of(capsys, ["render", str(TUNNEL), "--preview", "--crf", "60", "--out", str(tmp_path / "run")])
    assert line.startswith("error: --crf: ") and "51" in line, line


@pytest.mark.parametrize("command", ["render", "plan"])
def test_settings_argument_refuses_urls(capsys: pytest.CaptureFixture[str], command: str) -> None:
    line = error_of(capsys, [command, "https://example.com/settings.json"])
    assert line.startswith("error: SETTINGS: is a URL (https://example.com/settings.json)"), line


def test_missing_settings_file_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert (
        error_of(capsys, ["plan", str(tmp_path / "x.json")]) == f"error: SETTINGS: {tmp_path / 'x.json'} does not exist"
    )


@pytest.mark.parametrize("target", ["url", "folder"])
def test_info_image(capsys: pytest.CaptureFixture[str], tmp_path: Path, target: str) -> None:
    line = error_of(capsys, ["info", "https://example.com/a.png" if target == "url" else str(tmp_path)])
    assert line.startswith("error: IMAGE: ") and ("is a URL" if target == "url" else "is a directory") in line


def test_info_of_a_png_without_parameters_names_the_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from PIL import Image

    png = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(png)
    assert "has no A1111 'parameters' text chunk" in error_of(capsys, ["info", str(png)])


@pytest.mark.parametrize("option", ["--csv", "--plot"])
def test_plan_output_that_cannot_be_written_names_the_option(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, option: str
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target = blocker / "out.csv"
    line = error_of(capsys, ["plan", str(TUNNEL), option, str(target)])
    assert line.startswith(f"error: {option}: cannot write {blocker}"), line  # the file, or the folder it needs


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_plan_csv_under_proc(capsys: pytest.CaptureFixture[str]) -> None:
    assert error_of(capsys, ["plan", str(TUNNEL), "--csv", "/proc/x.csv"]).startswith("error: --csv: cannot write")


def test_a_full_disk_says_so_and_how_to_continue(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(run / "segments" / "00003.mp4"))

    monkeypatch.setattr("dreamreel.jobs.render.render_settings", full)
    line = error_of(capsys, ["render", str(TUNNEL), "--preview", "--out", str(run)])
    assert line.startswith(f"error: --out: disk full while writing {run / 'segments' / '00003.mp4'}"), line
    assert f"free some space and continue with 'dreamreel render --resume {run}'" in line


def test_an_escaped_os_error_names_the_option_whose_path_failed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "run" / "manifest.json"))

    monkeypatch.setattr("dreamreel.jobs.render.render_settings", denied)
    line = error_of(capsys, ["render", str(TUNNEL), "--preview", "--out", str(tmp_path / "run")])
    assert line == f"error: --out: cannot write {tmp_path / 'run' / 'manifest.json'}: Permission denied"


def test_usage_errors_return_2_with_a_pointer_to_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert error_of(capsys, ["plan"]) == (
        "error: the following arguments are required: SETTINGS (see 'dreamreel plan --help')"
    )
    assert error_of(capsys, []).startswith("error: the following arguments are required: COMMAND")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["still", "a cat", "--model", "m", "--steps", "0"], "error: --steps: "),
        (["still", "a cat", "--model", "m", "--size", "7x7"], "error: --size: "),
        (["m2m", URL, "--prompt", "x"], "error: INPUT: is a URL"),
        (["render", "examples/zoom_tunnel.json", "--frames", "0"], "error: --frames: "),
    ],
)
def test_no_traceback_from_a_real_process(argv: list[str], expected: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dreamreel.cli", *argv], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(expected), result.stderr


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", ["plan", "render", "still", "m2m", "info"])
def test_every_argument_has_help(command: str) -> None:
    missing = [a.dest for a in subcommands()[command]._actions if not a.help]
    assert missing == []


def test_render_and_m2m_share_the_output_options() -> None:
    shared = {"--out", "--overwrite", "--save-frames", "--codec", "--crf", "--preset", "--segment-frames",
              "--annotators", "--audio"}  # fmt: skip
    for command in ("render", "m2m"):
        options = {o for a in subcommands()[command]._actions for o in a.option_strings}
        assert shared <= options, command


def test_render_options_come_from_the_arguments(tmp_path: Path) -> None:
    from dreamreel.cli import _render_options

    args = build_parser().parse_args(
        ["render", str(TUNNEL), "--annotators", str(tmp_path), "--frames", "3", "--crf", "20", "--preset", "fast"]
    )
    options = _render_options(args)
    assert options.annotators == tmp_path and options.max_frames == 3 and options.crf == 20
    assert options.preset == "fast" and options.segment_frames == 60


def test_a_missing_soundtrack_names_the_file_the_key_and_where_it_was_looked_for(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    settings = project / "deforum_settings.txt"
    settings.write_text(
        json.dumps({"W": 64, "H": 64, "max_frames": 3, "animation_mode": "2D", "add_soundtrack": "File",
                    "soundtrack_path": "song.mp3", "prompts": {"0": "a cat"}})
    )  # fmt: skip
    monkeypatch.chdir(tmp_path)  # the soundtrack is looked for next to the settings file, not here
    line = error_of(capsys, ["render", str(settings), "--preview", "--out", str(tmp_path / "run")])
    assert line.startswith(f"error: {settings}: soundtrack_path: {project / 'song.mp3'}: "), line
    assert not (tmp_path / "run").exists()
    line = error_of(capsys, ["render", str(settings), "--preview", "--audio", "nothing.mp3", "--out", "run"])
    assert line.startswith("error: --audio: "), line  # an option is not blamed on the file
