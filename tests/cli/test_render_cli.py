"""``dreamreel render`` on the command line: failed starts, stop signals, ``--frames``."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from dreamreel.cli import _StopFlag, main


def _settings(tmp_path: Path, **overrides: object) -> Path:
    data: dict[str, object] = {
        "dreamreel_settings": 1, "mode": "2d", "width": 64, "height": 64, "max_frames": 6, "fps": 8, "seed": 7,
        "prompts": {"0": "a red cat"}, "schedules": {"zoom": "0:(1.05)"},
    }  # fmt: skip
    data.update(overrides)
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(data))
    return path


def test_device_cuda_without_cuda_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from dreamreel.testing import save_tiny_model

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = save_tiny_model(tmp_path / "tiny", controlnets=())
    out = tmp_path / "run"
    args = ["render", str(_settings(tmp_path)), "--model", str(model), "--device", "cuda", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--device" in err and "CUDA" in err and "Traceback" not in err
    assert not out.exists()
    # the next attempt is not blocked by the failed one
    assert main([*args[:-4], "--device", "cpu", "--out", str(out), "--frames", "2"]) == 0
    assert json.loads((out / "manifest.json").read_text())["status"] == "done"


def test_frames_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["render", str(_settings(tmp_path)), "--preview", "--frames", "0", "--out", str(out)]) == 2
    assert "--frames" in capsys.readouterr().err
    assert not out.exists()


def test_resume_with_another_out_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["render", str(_settings(tmp_path)), "--preview", "--out", str(run)]) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    assert main(["render", "--resume", str(run), "--out", str(tmp_path / "elsewhere")]) == 2
    assert "--out" in capsys.readouterr().err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stop_flag_handles_sigint_and_sigterm_and_restores_both(signum: int) -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    stop = _StopFlag()
    with stop.installed():
        os.kill(os.getpid(), signum)
        assert stop()  # the first signal asks for a clean stop
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signum)  # the second one stops at once
    assert {sig: signal.getsignal(sig) for sig in before} == before
