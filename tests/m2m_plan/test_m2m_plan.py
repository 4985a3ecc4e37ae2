"""A long m2m video in chunks: the plan, the anchor, chunks in any order and interrupted, the joined video."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np
import pytest

from dreamreel.errors import ModelLoadError, RenderError, SettingsError
from dreamreel.jobs.m2m_plan import (
    M2MPlan,
    assemble,
    blended_frames,
    plan_m2m,
    render_anchor,
    render_chunk,
    split_chunks,
    unfinished_chunks,
)
from dreamreel.jobs.render import RenderOptions
from dreamreel.media.ffmpeg import probe
from dreamreel.settings import Settings

FPS = 12
FRAMES = 16
CHUNKS = [(0, 8), (6, 14), (12, 16)]  # chunk_frames 8, overlap 2


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 frames at 12 fps, 64x48, a moving gradient, with sine audio as long as the video."""
    root = tmp_path_factory.mktemp("clip")
    y, x = np.mgrid[0:48, 0:64]
    frames = [
        np.stack([(x * 4 + 9 * i) % 256, (y * 5 + 3 * i) % 256, np.full_like(x, 40 + 10 * i)], -1).astype(np.uint8)
        for i in range(FRAMES)
    ]
    raw = root / "frames.rgb"
    raw.write_bytes(b"".join(frame.tobytes() for frame in frames))
    target = root / "clip.mp4"
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "64x48",
        "-r", str(FPS), "-i", str(raw), "-f", "lavfi", "-i", f"sine=frequency=440:duration={FRAMES / FPS}",
        "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p", "-c:a", "aac", "-shortest", str(target),
    ]  # fmt: skip
    subprocess.run(command, check=True)
    return target


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dreamreel.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("m2m-plan-model") / "tiny", controlnets=())


@pytest.fixture(scope="module")
def generator(model: Path) -> Any:
    """A model loaded once, as an executor keeps it (without cross-frame attention: the chunks install it)."""
    from dreamreel.pipelines.generator import DiffusersGenerator

    return DiffusersGenerator.from_source(str(model))


def m2m_settings(clip: Path, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "mode": "video", "width": 64, "height": 48, "seed": 7, "steps": 2, "video_input": {"path": str(clip)},
        "prompts": {"0": "a red cat"}, "schedules": {"strength": "0:(0.5)"},
        "temporal": {"flow_guidance": "0:(0.3)", "cross_frame_attention": True},
    }  # fmt: skip
    return Settings(**{**values, **changes})


def stop_after(frames: int) -> Callable[[], bool]:
    """A stop flag that turns true after ``frames`` checks (one per frame)."""
    calls = iter(range(frames + 1))
    return lambda: next(calls, frames) >= frames


def test_chunks_cover_every_frame_once() -> None:
    chunks = split_chunks(FRAMES, 8, 2)
    assert [(c.start, c.end) for c in chunks] == CHUNKS
    assert [(c.core_start, c.core_end) for c in chunks] == [(0, 6), (8, 12), (14, 16)]
    assert list(chunks[0].tail) == list(chunks[1].head) == [6, 7]
    covered = sorted([f for c in chunks for f in range(c.core_start, c.core_end)] + [6, 7, 12, 13])
    assert covered == list(range(FRAMES))
    assert [(c.start, c.end) for c in split_chunks(5, 8, 2)] == [(0, 5)]
    assert [(c.start, c.end, c.core_start, c.core_end) for c in split_chunks(9, 3, 0)] == [
        (0, 3, 0, 3), (3, 6, 3, 6), (6, 9, 6, 9),
    ]  # fmt: skip


def test_planning_is_idempotent_and_another_plan_is_refused(clip: Path, model: Path, tmp_path: Path) -> None:
    options = RenderOptions(model=str(model))
    settings = m2m_settings(clip)
    plan = plan_m2m(settings, options, tmp_path / "a", chunk_frames=8, overlap=2)
    text = (tmp_path / "a" / "plan.json").read_bytes()
    assert [(c.start, c.end) for c in plan.chunks] == CHUNKS and plan.frames == plan.input_frames == FRAMES
    assert plan.anchor == 0 and plan.needs_anchor and plan.video.threads > 0
    again = plan_m2m(settings, options, tmp_path / "a", chunk_frames=8, overlap=2)
    assert again.hash == plan.hash and (tmp_path / "a" / "plan.json").read_bytes() == text
    assert M2MPlan.load(tmp_path / "a").hash == plan.hash
    # the plan does not depend on its folder
    plan_m2m(settings, options, tmp_path / "b", chunk_frames=8, overlap=2)
    assert (tmp_path / "b" / "plan.json").read_bytes() == text
    with pytest.raises(SettingsError, match=r"another m2m plan \(it differs in: chunks, overlap\)"):
        plan_m2m(settings, options, tmp_path / "a", chunk_frames=8, overlap=3)
    with pytest.raises(SettingsError, match=r"differs in: schedule_sha256, settings"):
        plan_m2m(m2m_settings(clip, prompts={"0": "a blue dog"}), options, tmp_path / "a", chunk_frames=8, overlap=2)
    assert (tmp_path / "a" / "plan.json").read_bytes() == text
    replaced = plan_m2m(settings, dataclasses.replace(options, overwrite=True), tmp_path / "a", overlap=3)
    assert replaced.overlap == 3 and M2MPlan.load(tmp_path / "a").hash == replaced.hash
    # a random seed is resolved once: planning again keeps it
    random = plan_m2m(m2m_settings(clip, seed=-1), options, tmp_path / "c", chunk_frames=8, overlap=2)
    assert random.settings.seed != -1
    assert plan_m2m(m2m_settings(clip, seed=-1), options, tmp_path / "c", chunk_frames=8, overlap=2).hash == random.hash


def test_bad_inputs_fail_before_anything_is_written(clip: Path, model: Path, tmp_path: Path) -> None:
    options = RenderOptions(model=str(model))
    out = tmp_path / "plan"
    with pytest.raises(SettingsError, match="does not exist"):
        plan_m2m(m2m_settings(tmp_path / "missing.mp4"), options, out)
    with pytest.raises(SettingsError, match="chunk_frames > 2 \\* overlap"):
        plan_m2m(m2m_settings(clip), options, out, chunk_frames=4, overlap=2)
    with pytest.raises(SettingsError, match="Video Input"):
        plan_m2m(Settings(mode="2d"), options, out)
    with pytest.raises(SettingsError, match="anchor"):
        plan_m2m(m2m_settings(clip), options, out, anchor=FRAMES)
    with pytest.raises(ModelLoadError, match="no-model"):  # as in a render
        plan_m2m(m2m_settings(clip), RenderOptions(model=str(tmp_path / "no-model")), out)
    assert not out.exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(SettingsError, match="holds no m2m plan"):
        plan_m2m(m2m_settings(clip), options, tmp_path / "busy")


def test_any_order_any_worker_and_interruptions_give_the_same_video(
    clip: Path, model: Path, generator: Any, tmp_path: Path
) -> None:
    options = RenderOptions(model=str(model))
    settings = m2m_settings(clip)
    # one worker, chunks in order, each call loading the model itself
    first = plan_m2m(settings, options, tmp_path / "a", chunk_frames=8, overlap=2)
    render_anchor(first)
    for index in range(3):
        assert render_chunk(first, index).finished
    video = assemble(first)
    # another "worker" with a loaded model: reverse order, the anchor first, chunk 1 stopped half-way
    second = plan_m2m(settings, options, tmp_path / "b", chunk_frames=8, overlap=2)
    with pytest.raises(RenderError, match="anchor"):
        render_chunk(second, 0, generator=generator)
    render_anchor(second, generator=generator)
    assert render_chunk(second, 2, generator=generator).finished
    stopped = render_chunk(second, 1, generator=generator, should_stop=stop_after(3))
    assert not stopped.finished and stopped.frames_rendered == 3
    with pytest.raises(RenderError, match=r"2 of the 3 chunks .* not finished: 0 \(frames 0-7\), 1 \(frames 6-13\)"):
        assemble(second)
    assert unfinished_chunks(second) == [0, 1]
    assert render_chunk(second, 1, generator=generator).finished
    # chunk 0 in another process, from nothing but the plan folder (as a Ray worker would)
    code = "import sys; from dreamreel.jobs.m2m_plan import M2MPlan, render_chunk; " \
        "assert render_chunk(M2MPlan.load(sys.argv[1]), 0).finished"  # fmt: skip
    subprocess.run(
        [sys.executable, "-c", code, str(second.root)], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert render_chunk(second, 0, generator=generator).skipped
    assert assemble(second).read_bytes() == video.read_bytes()
    # the joined video: every input frame, its rate and its sound
    info, source = probe(video), probe(clip)
    assert info.frame_count == FRAMES and info.fps == pytest.approx(FPS) and (info.width, info.height) == (64, 48)
    assert info.has_audio and source.audio_duration is not None and info.audio_duration is not None
    assert info.audio_duration == pytest.approx(source.audio_duration, abs=0.03)
    # the overlaps are cross-fades of the two chunks' own renders
    for index in (0, 1):
        blends = blended_frames(second, index)
        frames = second.chunks[index].tail
        assert len(blends) == len(frames) == 2
        for i, frame in enumerate(frames):
            tail = np.load(second.chunk_folder(index) / "frames" / f"{frame:09d}.npy").astype(np.int16)
            head = np.load(second.chunk_folder(index + 1) / "frames" / f"{frame:09d}.npy").astype(np.int16)
            assert np.abs(tail - head).max() > 0  # the two chunks rendered the frame differently
            weight = (i + 1) / 3
            expected = np.rint((1 - weight) * tail + weight * head)
            assert np.array_equal(blends[i], expected.astype(np.uint8))


def test_a_chunk_resumes_where_it_stopped(clip: Path, model: Path, generator: Any, tmp_path: Path) -> None:
    """Without cross-frame attention a stopped chunk goes on from its next frame (not from its start)."""
    options = RenderOptions(model=str(model))
    settings = m2m_settings(clip, temporal={"flow_guidance": "0:(0.5)"})
    whole = plan_m2m(settings, options, tmp_path / "whole", chunk_frames=8, overlap=2)
    parts = plan_m2m(settings, options, tmp_path / "parts", chunk_frames=8, overlap=2)
    assert not whole.cross_frame_attention
    for plan in (whole, parts):
        render_anchor(plan, generator=generator)
    assert render_chunk(whole, 1, generator=generator).frames_rendered == 8
    for frames in (2, 3):  # frames 6-7, then 8-10
        result = render_chunk(parts, 1, generator=generator, should_stop=stop_after(frames))
        assert not result.finished and result.frames_rendered == frames
    # a worker killed on this machine left its mark: a dead process is no owner, a live one is
    worker = parts.chunk_folder(1) / "worker.json"
    worker.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid()}))
    with pytest.raises(RenderError, match="being rendered by another process"):
        render_chunk(parts, 1, generator=generator)
    dead = subprocess.Popen(["true"])
    dead.wait()
    worker.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    assert render_chunk(parts, 1, generator=generator).frames_rendered == 3  # frames 11-13
    assert not worker.exists()
    for plan in (whole, parts):
        assert sorted(p.name for p in (plan.chunk_folder(1) / "frames").iterdir()) == [
            "000000006.npy", "000000007.npy", "000000012.npy", "000000013.npy",
        ]  # fmt: skip
    same = [(whole.chunk_folder(1) / name, parts.chunk_folder(1) / name) for name in ("segments/seg_000000008.ts",)]
    same += [(a, parts.chunk_folder(1) / "frames" / a.name) for a in (whole.chunk_folder(1) / "frames").iterdir()]
    for a, b in same:
        assert a.read_bytes() == b.read_bytes(), a.name


def test_another_anchor_frame(clip: Path, model: Path, generator: Any, tmp_path: Path) -> None:
    """The anchor may be any frame: it is rendered on its own and primes every chunk, also the one holding it."""
    plan = plan_m2m(m2m_settings(clip), RenderOptions(model=str(model)), tmp_path / "p", chunk_frames=8, overlap=2,
                    anchor=9)  # fmt: skip
    assert json.loads((tmp_path / "p" / "plan.json").read_text())["anchor"] == 9
    render_anchor(plan, generator=generator)
    assert json.loads((tmp_path / "p" / "anchor.json").read_text())["frame"] == 9
    assert render_chunk(plan, 1, generator=generator).finished  # frames 6-13, the anchor among them
    (tmp_path / "p" / "anchor.json").unlink()
    with pytest.raises(RenderError, match=r"anchor .* is missing"):
        assemble(plan)
