import os
import stat
from pathlib import Path

import pytest

from torchsmith.interfaces import atomic_target, atomic_write, fsync_directory


def test_atomic_write_replaces_text_and_bytes(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "report.json"
    assert atomic_write(target, "first") == target
    assert target.read_text() == "first"
    atomic_write(target, b"\x00second")
    assert target.read_bytes() == b"\x00second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "state.bin"
    atomic_write(target, "good")

    def interrupted_write() -> None:
        with atomic_target(target) as tmp:
            tmp.write_text("half writ")
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        interrupted_write()
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["state.bin"]


def test_new_file_mode_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "f", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o640


def test_fsync_directory_accepts_a_directory(tmp_path: Path) -> None:
    fsync_directory(tmp_path)
    with pytest.raises(FileNotFoundError):
        fsync_directory(tmp_path / "missing")
