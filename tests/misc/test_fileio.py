"""Atomic writes: the whole new file or the old one, never a temporary file left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dreamreel.fileio import atomic_open, atomic_write_bytes, atomic_write_text, fsync_dir, replace_durably


def test_writes_and_replaces_leaving_only_the_target(tmp_path: Path) -> None:
    target = tmp_path / "data.json"
    assert atomic_write_text(target, "first\n") == target
    atomic_write_bytes(target, b"second\n")
    assert target.read_bytes() == b"second\n"
    atomic_write_text(target, "h\u00e9\r\n")  # utf-8, newlines written as given
    assert target.read_bytes() == "h\u00e9\r\n".encode()
    assert [p.name for p in tmp_path.iterdir()] == ["data.json"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "frame.png"
    target.write_bytes(b"old")

    def fail_halfway() -> None:
        with atomic_open(target) as handle:
            handle.write(b"half of the new")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        fail_halfway()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["frame.png"]


def test_streaming_without_fsync_still_replaces(tmp_path: Path) -> None:
    target = tmp_path / "pending.png"
    with atomic_open(target, fsync=False) as handle:
        handle.write(b"a")
        handle.write(b"b")
    assert target.read_bytes() == b"ab"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_new_files_get_the_permissions_of_a_plain_open(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "atomic.txt", "x")
    (tmp_path / "plain.txt").write_text("x")
    assert (tmp_path / "atomic.txt").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode


def test_replace_durably_moves_a_finished_file(tmp_path: Path) -> None:
    part = tmp_path / "video.mp4.part"
    part.write_bytes(b"frames")
    replace_durably(part, tmp_path / "video.mp4")
    assert not part.exists() and (tmp_path / "video.mp4").read_bytes() == b"frames"
    fsync_dir(tmp_path / "missing")  # nothing to flush: no error


def test_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write_text(tmp_path / "no" / "file.txt", "x")


def test_importing_fileio_needs_only_the_standard_library() -> None:
    code = "import sys, dreamreel.fileio; sys.exit(any(m in sys.modules for m in ('numpy', 'torch', 'pydantic')))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_unwritable_folder_checks_by_writing_and_leaves_nothing(tmp_path: Path) -> None:
    from dreamreel.fileio import unwritable_folder

    assert unwritable_folder(tmp_path / "a" / "b" / "c") is None
    assert list(tmp_path.iterdir()) == []  # the folders it made for the check are gone again
    (tmp_path / "file").write_text("x")
    assert unwritable_folder(tmp_path / "file" / "out") == f"{tmp_path / 'file'} is not a folder"
    assert unwritable_folder(tmp_path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_unwritable_folder_under_proc_is_reported() -> None:
    from dreamreel.fileio import unwritable_folder

    assert unwritable_folder("/proc/dreamreel-stills") is not None
