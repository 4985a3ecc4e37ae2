"""``dreamreel batch`` with the local executor: batch files and folders, sweeps, content ids, resubmitting,
resuming a half-done batch, ``--status``, the model kept loaded between jobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dreamreel.cli import main
from dreamreel.errors import SettingsError
from dreamreel.jobs.batch import read_batch, run_local, status


def _settings(folder: Path, name: str, **overrides: object) -> Path:
    data: dict[str, object] = {
        "dreamreel_settings": 1, "mode": "2d", "width": 64, "height": 48, "max_frames": 6, "fps": 6, "seed": 3,
        "steps": 2, "prompts": {"0": "a red cat"}, "schedules": {"zoom": "0:(1.04)"},
    }  # fmt: skip
    data.update(overrides)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def test_a_folder_runs_one_job_per_settings_file_and_a_second_run_skips_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "jobs"
    folder.mkdir()
    _settings(folder, "a")
    _settings(folder, "b", seed=4)
    out = tmp_path / "runs"
    assert main(["batch", str(folder), "--preview", "--out", str(out)]) == 0
    runs = sorted(p.name for p in out.iterdir())
    assert len(runs) == 2 and runs[0].startswith("a-") and runs[1].startswith("b-")
    assert all((out / run / "video.mp4").is_file() for run in runs)
    capsys.readouterr()
    assert main(["batch", str(folder), "--preview", "--out", str(out)]) == 0
    assert "2 skipped" in capsys.readouterr().out
    assert main(["batch", str(folder), "--preview", "--out", str(out), "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(" done  6/6 frames, " in line and "video.mp4" in line for line in lines)


def test_sweeps_expand_a_settings_file_and_ids_make_resubmitting_a_no_op(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "tunnel")
    jobs = read_batch(settings, defaults={"preview": True}, sweeps=["seed=1..3", "cfg=5,7"])
    assert len(jobs) == 6 and len({job.id for job in jobs}) == 6
    assert {job.settings.seed for job in jobs if job.settings} == {1, 2, 3}
    assert {job.settings.schedules.cfg_scale for job in jobs if job.settings} == {"0:(5)", "0:(7)"}
    batch = tmp_path / "batch.jsonl"
    batch.write_text('{"settings": "tunnel.json"}\n{"settings": "tunnel.json", "options": {"preview": true}}\n')
    twice = read_batch(batch, defaults={"preview": True})
    assert len(twice) == 1  # the same job twice is one job
    assert read_batch(batch, defaults={"preview": True})[0].id == twice[0].id  # ids are stable
    other = read_batch(batch, defaults={"preview": True}, sweeps=["seed=9"])
    assert other[0].id != twice[0].id


def test_toml_and_json_batches_with_paths_relative_to_the_batch_file(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    _settings(tmp_path / "s", "x")
    toml = tmp_path / "b.toml"
    toml.write_text('[[jobs]]\nsettings = "s/x.json"\nname = "first"\n[jobs.options]\npreview = true\n')
    jobs = read_batch(toml)
    assert [job.name for job in jobs] == ["first"] and jobs[0].options["preview"] is True
    listed = tmp_path / "b.json"
    listed.write_text(json.dumps({"jobs": [{"settings": "s/x.json", "sweep": {"seed": "1..2"}}]}))
    assert len(read_batch(listed, defaults={"preview": True})) == 2


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('[{"settings": "missing.json"}]', "missing.json"),
        ('[{"setings": "x.json"}]', "Did you mean one of 'settings'"),
        ('[{"settings": "x.json", "kind": "movie"}]', "kind: is 'movie'"),
        ('[{"settings": "x.json", "options": {"segment_frames": 0}}]', "--segment-frames"),
        ('[{"kind": "m2m", "settings": "x.json"}]', '"input"'),
        ("not json", "not a valid batch file"),
    ],
)
def test_a_bad_batch_is_one_clear_error_naming_the_job(tmp_path: Path, content: str, expected: str) -> None:
    _settings(tmp_path, "x")
    batch = tmp_path / "bad.json"
    batch.write_text(content)
    with pytest.raises(SettingsError, match=r"bad\.json") as error:
        read_batch(batch)
    assert expected in str(error.value)


def test_a_half_done_batch_resumes_its_interrupted_job(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "long", max_frames=12)
    jobs = read_batch(settings, defaults={"preview": True, "segment_frames": 3})
    out = tmp_path / "runs"
    calls = {"n": 0}

    def stop_after_a_few() -> bool:
        calls["n"] += 1
        return calls["n"] > 5

    first = run_local(jobs, out, should_stop=stop_after_a_few)
    assert first[0].state == "interrupted"
    [before] = status(jobs, out)
    assert before.state == "interrupted" and 0 < before.frames_done < 12
    again = run_local(jobs, out)
    assert again[0].state == "done"
    whole = run_local(read_batch(settings, defaults={"preview": True, "segment_frames": 3}), tmp_path / "whole")
    assert whole[0].video is not None and again[0].video is not None
    assert again[0].video.read_bytes() == whole[0].video.read_bytes()  # resumed = uninterrupted, bit for bit


def test_jobs_with_the_same_model_load_it_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dreamreel.pipelines.generator import DiffusersGenerator
    from dreamreel.testing import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny", controlnets=())
    loads: list[str] = []
    original = DiffusersGenerator.from_source.__func__  # type: ignore[attr-defined]

    def counting(cls: type, source: str, options: object = None) -> object:
        loads.append(source)
        return original(cls, source, options)

    monkeypatch.setattr(DiffusersGenerator, "from_source", classmethod(counting))
    settings = _settings(tmp_path, "m", max_frames=2)
    jobs = read_batch(settings, defaults={"model": str(model)}, sweeps=["seed=1..3"])
    results = run_local(jobs, tmp_path / "runs")
    assert [r.state for r in results] == ["done"] * 3 and len(loads) == 1


def test_the_local_executor_never_imports_ray(tmp_path: Path) -> None:
    import subprocess
    import sys

    settings = _settings(tmp_path, "r", max_frames=3)
    code = (
        "import sys; from pathlib import Path; import dreamreel;"
        "from dreamreel.jobs.batch import read_batch, run_local;"
        f"run_local(read_batch(Path({str(settings)!r}), defaults={{'preview': True}}), Path({str(tmp_path / 'o')!r}));"
        "print('ray' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
